"""What a classification run reads: its splits, timm's transforms for decoded images, batches."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from poolwise.vision.data import ImageSplit, collate_batch, load_images
from poolwise.vision.models import PooledModel
from poolwise.vision.train.spec import RunSpec


def load_splits(spec: RunSpec) -> tuple[ImageSplit, ImageSplit]:
    image_size = spec.model_kwargs.get("img_size")
    splits = load_images(spec.data, image_size=image_size)
    train, test = splits["train"], splits["test"]
    if spec.classes is not None:
        bad = [c for c in spec.classes if not 0 <= c < len(train.classes)]
        if bad:
            raise ValueError(f"classes {bad} out of range for {len(train.classes)} classes")
        train, test = train.subset_classes(spec.classes), test.subset_classes(spec.classes)
    return train, test


def use_timm_transforms(spec: RunSpec, model: PooledModel, train: ImageSplit,
                        test: ImageSplit) -> None:
    """Decoded-image data (ImageFolder) gets timm's train and eval transforms, configured from
    the model's own data config (mean, std, interpolation, crop_pct, input size)."""
    for split, training in ((train, True), (test, False)):
        dataset = getattr(split.dataset, "dataset", split.dataset)  # a class subset wraps it
        dataset.transform = timm_transform(spec, model, training=training)


def input_size(spec: RunSpec, model: PooledModel) -> int:
    """The image side the model takes: ``spec``'s ``img_size``, else the model's data config."""
    from timm.data import resolve_data_config

    return spec.model_kwargs.get("img_size") or resolve_data_config(model=model)["input_size"][-1]


def timm_transform(spec: RunSpec, model: PooledModel, *, training: bool) -> Callable:
    """timm's train or eval transform of decoded images for ``model`` (its data config: mean,
    std, interpolation, crop_pct; the input size of ``spec``'s ``img_size`` or the model's)."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config(model=model)
    return create_transform(
        input_size=input_size(spec, model), interpolation=config["interpolation"],
        mean=config["mean"], std=config["std"], is_training=training, no_aug=not spec.augment,
        hflip=spec.hflip, auto_augment=spec.auto_augment, re_prob=spec.reprob,
        crop_pct=None if training else config["crop_pct"])


def make_loader(split: ImageSplit, batch_size: int, *, shuffle: bool, seed: int = 0,
                epoch: int = 0, world: int = 1, rank: int = 0, workers: int = 0,
                m_per_class: int | None = None) -> DataLoader:
    """Batches of ``split``; with ``m_per_class``, class-balanced batches (pytorch-metric-
    learning's MPerClassSampler, one process only)."""
    ds = split.dataset
    if m_per_class is not None:
        from poolwise.vision.retrieval.losses import class_balanced_sampler

        sampler = class_balanced_sampler(split.labels, m_per_class, batch_size)
    elif world > 1:
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        sampler = RandomSampler(ds, generator=generator)
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(ds, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      collate_fn=collate_batch, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed * 7_919 + epoch),
                      persistent_workers=False)
