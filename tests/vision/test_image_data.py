import gzip

import numpy as np
import pytest
import torch

from poolwise.vision.data import images as vd


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def _fake_fashion_mnist(folder, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = vd.FASHION_MNIST_FILES[split]
        _write_idx(folder / images_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(folder / labels_name, (np.arange(n) % 10).astype(np.uint8))


def test_read_idx_round_trips_and_names_the_file_at_fault(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.idx", array, code=0x0C)
    np.testing.assert_array_equal(vd.read_idx(tmp_path / "a.idx"), array)
    u8 = np.arange(6, dtype=np.uint8).reshape(2, 3)
    _write_idx(tmp_path / "b.idx.gz", u8)
    np.testing.assert_array_equal(vd.read_idx(tmp_path / "b.idx.gz"), u8)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match=r"bad\.idx: not an idx file"):
        vd.read_idx(tmp_path / "bad.idx")
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-4])
    with pytest.raises(ValueError, match=r"short\.idx: header says shape \(2, 3, 4\)"):
        vd.read_idx(tmp_path / "short.idx")


def test_fashion_mnist_is_found_in_the_given_folder_else_every_place_is_named(tmp_path,
                                                                               monkeypatch):
    _fake_fashion_mnist(tmp_path)
    splits = vd.load_fashion_mnist(tmp_path, download=False)
    assert len(splits["train"]) == 20 and len(splits["test"]) == 10
    image, label = splits["train"].dataset[3]
    assert image.shape == (1, 28, 28) and label == 3
    expected = (splits["train"].dataset.images[3].float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(image, expected)
    assert vd.load_images(str(tmp_path))["train"].source.startswith("fashion-mnist:")

    monkeypatch.setattr(vd, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("POOLWISE_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError) as error:
        vd.load_fashion_mnist(tmp_path / "empty", download=False)
    message = str(error.value)
    for place in ("empty", "nowhere", "home/.cache/poolwise"):
        assert place in message
    assert "train-images-idx3-ubyte.gz" in message


def test_embedded_subset_is_the_documented_one():
    splits = vd.load_embedded()
    train, test = splits["train"], splits["test"]
    assert len(train) == 3000 and len(test) == 1000
    assert np.bincount(train.labels).tolist() == [300] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert train.classes == vd.FASHION_MNIST_CLASSES and train.image_size == 28
    if vd._has_files(vd.DEBIAN_FASHION_MNIST):  # the shipped images are the first per class
        full = vd.load_fashion_mnist(vd.DEBIAN_FASHION_MNIST, download=False)["test"]
        with np.load(vd.EMBEDDED) as arrays:
            index = arrays["test_index"]
        first = np.sort(np.concatenate(
            [np.flatnonzero(full.labels == c)[:100] for c in range(10)]))
        np.testing.assert_array_equal(index, first)
        assert torch.equal(test.dataset.images, full.dataset.images[index])


def test_subset_classes_renumbers_labels():
    test = vd.load_embedded()["test"]
    sub = test.subset_classes([7, 2])
    assert sub.classes == ("Sneaker", "Pullover") and len(sub) == 200
    _, labels = sub.dataset.__getitems__(list(range(len(sub))))
    assert labels.tolist() == sub.labels.tolist() and set(sub.labels.tolist()) == {0, 1}
    original = test.dataset.images[np.flatnonzero(test.labels == 7)[0]]
    assert torch.equal(sub.dataset.images[np.flatnonzero(sub.labels == 0)[0]], original)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png")
    splits = vd.load_images(str(tmp_path), image_size=16)
    assert splits["train"].classes == ("cat", "dog") and len(splits["test"]) == 6
    image, label = splits["train"].dataset[4]
    assert image.shape == (3, 16, 16) and label == 1
    (tmp_path / "val" / "bird").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "val" / "bird" / "0.png")
    with pytest.raises(ValueError, match=r"share 2 class folders \(cat, dog\) but not all"):
        vd.load_images(str(tmp_path))


def _tree(root, layout):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(10 if split == "train" else 3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")


def test_class_disjoint_layouts_as_the_benchmarks_ship_them(tmp_path):
    # CUB / Cars / SOP: train/ and test/ hold disjoint classes
    _tree(tmp_path / "cub", {"train": ["a", "b"], "test": ["c", "d", "e"]})
    splits = vd.load_images(str(tmp_path / "cub"), image_size=8)
    assert splits["train"].classes == ("a", "b") and splits["retrieval"].classes == (
        "c", "d", "e")
    # every 10th training image of a class is held out for the classification accuracy
    assert (len(splits["train"]), len(splits["test"]), len(splits["retrieval"])) == (18, 2, 9)
    assert splits["test"].labels.tolist() == [0, 1]
    image, label = splits["test"].dataset[1]
    assert image.shape == (3, 8, 8) and label == 1
    # In-Shop: query/ and gallery/ labelled against one class list
    _tree(tmp_path / "shop", {"train": ["a"], "query": ["x", "z"], "gallery": ["x", "y", "z"]})
    splits = vd.load_images(str(tmp_path / "shop"), image_size=8)
    assert splits["query"].classes == splits["gallery"].classes == ("x", "y", "z")
    assert sorted(set(splits["query"].labels.tolist())) == [0, 2]
    assert [splits["query"].dataset[i][1] for i in (0, 3)] == [0, 2]
    (tmp_path / "half").mkdir()
    _tree(tmp_path / "half", {"train": ["a"], "query": ["x"]})
    with pytest.raises(FileNotFoundError, match="gallery/ is missing"):
        vd.load_images(str(tmp_path / "half"))


def test_random_crop_flip_is_a_shifted_crop_or_its_mirror():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5) + 1
    out = vd.random_crop_flip(images, 2, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):
        crops = [padded[b, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], c) or torch.equal(out[b], c.flip(-1)) for c in crops)
    same = vd.random_crop_flip(images, 0, torch.Generator().manual_seed(0))
    for b in range(2):
        assert torch.equal(same[b], images[b]) or torch.equal(same[b], images[b].flip(-1))


def test_hflip_is_an_option():
    images = torch.arange(4 * 1 * 3 * 3, dtype=torch.float32).reshape(4, 1, 3, 3)
    assert torch.equal(vd.random_crop_flip(images, 0, torch.Generator(), hflip=0.0), images)
    assert torch.equal(vd.random_crop_flip(images, 0, torch.Generator(), hflip=1.0),
                       images.flip(-1))


def test_image_folder_trains_with_timm_transforms_and_spawned_workers(tmp_path):
    """ImageFolder data goes through timm's create_transform (RandAugment, RandomErasing, the
    model's mean/std; eval resize + centre crop) and loads in DataLoader workers started by
    spawn, for training and evaluation."""
    import pickle

    from PIL import Image

    from poolwise.vision.train.classification import load_trained, run_classification
    from poolwise.vision.train.inputs import load_splits, use_timm_transforms
    from poolwise.vision.train.spec import RunSpec

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("dark", "light"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(6):
                level = 40 if cls == "dark" else 210
                pixels = np.clip(rng.normal(level, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.png")
    spec = RunSpec(model="vit_tiny_patch16_224", data=str(tmp_path / "data"),
                   model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1,
                                 "num_heads": 2}, epochs=1, batch_size=4,
                   auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    train, _ = load_splits(spec)
    pickle.dumps(train.dataset)  # what a spawned worker receives
    import torch.multiprocessing as mp

    original = mp.get_start_method(allow_none=True)
    mp.set_start_method("spawn", force=True)
    try:
        result = run_classification(spec, tmp_path / "run", workers=2)
    finally:
        mp.set_start_method(original, force=True)
    assert result["n"] == 12 and 0 <= result["accuracy"] <= 1
    model, _ = load_trained(tmp_path / "run")
    train, test = load_splits(spec)
    use_timm_transforms(spec, model, train, test)
    names = [type(t).__name__ for t in train.dataset.transform.transforms]
    assert "RandomResizedCropAndInterpolation" in names and "RandAugment" in names
    assert "RandomErasing" in names
    eval_names = [type(t).__name__ for t in test.dataset.transform.transforms]
    assert "CenterCrop" in eval_names and "RandAugment" not in eval_names
    normalize = test.dataset.transform.transforms[-1]
    assert tuple(normalize.mean.tolist()) == pytest.approx((0.5, 0.5, 0.5))  # ViT's, not ImageNet's


def _in_shop(root, rows, count=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)).save(root / name)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join(lines + [" ".join(r) for r in rows]) + "\n")


IN_SHOP = [(f"img/{item}/{i}.jpg", item, status)
           for item, status in (("id_1", "train"), ("id_2", "train"), ("id_3", "query"),
                                ("id_3", "gallery"), ("id_4", "gallery"))
           for i in range(10 if status == "train" else 2)]


def test_in_shop_partition_lists_load_as_query_and_gallery(tmp_path):
    _in_shop(tmp_path, IN_SHOP)
    splits = vd.load_images(str(tmp_path), image_size=8)
    assert splits["train"].classes == ("id_1", "id_2") and len(splits["test"]) == 2
    assert splits["query"].classes == splits["gallery"].classes == ("id_3", "id_4")
    assert splits["query"].labels.tolist() == [0, 0]
    assert splits["gallery"].labels.tolist() == [0, 0, 1, 1]
    image, label = splits["gallery"].dataset[3]
    assert image.shape == (3, 8, 8) and label == 1


@pytest.mark.parametrize("change,error,match", [
    (lambda rows: [*rows[:-1], ("img/none.jpg", "id_4", "gallery")], FileNotFoundError,
     r"list_eval_partition\.txt names 1 image\(s\) that do not exist \(first: .*none\.jpg"),
    (lambda rows: [*rows, ("img/id_1/0.jpg", "id_1", "query")], ValueError,
     r"1 item\(s\) are both training and query/gallery items \(id_1\)"),
    (lambda rows: [*rows, ("img/id_4/0.jpg", "id_4", "test")], ValueError,
     r"list_eval_partition\.txt:\d+: evaluation_status 'test' is not one of"),
])
def test_bad_partition_lists_name_the_file_and_value(tmp_path, change, error, match):
    rows = change(list(IN_SHOP))
    _in_shop(tmp_path, [r for r in rows if r[0] != "img/none.jpg"])
    text = tmp_path / "Eval" / "list_eval_partition.txt"
    text.write_text("\n".join([str(len(rows)), "image_name item_id evaluation_status"]
                              + [" ".join(r) for r in rows]))
    with pytest.raises(error, match=match):
        vd.load_images(str(tmp_path), image_size=8)


def test_a_partition_count_that_differs_is_refused(tmp_path):
    _in_shop(tmp_path, IN_SHOP, count=7)
    with pytest.raises(ValueError, match=r"line 1 says 7 images, the list holds 26"):
        vd.load_images(str(tmp_path), image_size=8)
