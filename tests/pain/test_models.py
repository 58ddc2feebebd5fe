"""Pain models: published L-SFAN, reference-checkpoint mapping, ablations, baselines."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from poolwise.pain.models import (
    LSFAN,
    count_parameters,
    create_model,
    list_models,
    model_entry,
    model_input_kwargs,
)
from poolwise.pooling import list_pools

NETWORKS = [n for n in list_models() if not model_entry(n).closed_form]
CLOSED_FORM = [n for n in list_models() if model_entry(n).closed_form]

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference"


def test_published_parameter_count():
    model = LSFAN()
    assert count_parameters(model) == 8282
    assert count_parameters(model.cnn) == 1620
    assert count_parameters(model.encoder) == 5700
    assert count_parameters(model.classifier) == 962


def test_feature_shapes_follow_the_paper():
    model = LSFAN()
    x = torch.randn(2, 30, 180)
    assert model.cnn(x.transpose(1, 2).unsqueeze(1)).shape == (2, 16, 42, 30)
    assert model.tokens(x).shape == (2, 16, 30)
    sap = create_model("cnn_sap")
    assert sap.tokens(x).shape == (2, 16, 42)  # sensors pooled, time kept


def test_oriented_pool_is_the_time_mean():
    model = LSFAN().eval()
    x = torch.randn(3, 30, 180)
    fmap = model.cnn(x.transpose(1, 2).unsqueeze(1))
    torch.testing.assert_close(model.tokens(x), fmap.mean(2))
    sap = create_model("cnn_sap").eval()
    fmap = sap.cnn(x.transpose(1, 2).unsqueeze(1))
    torch.testing.assert_close(sap.tokens(x), fmap.mean(3))


def test_instances_share_no_parameter_storage():
    a, b = LSFAN(), LSFAN()
    ptrs_a = {p.untyped_storage().data_ptr() for p in a.parameters()}
    ptrs_b = {p.untyped_storage().data_ptr() for p in b.parameters()}
    assert not ptrs_a & ptrs_b
    assert not torch.equal(a.cnn[0].weight, b.cnn[0].weight)  # fresh initialisation


def authors_layout_model() -> nn.Module:
    """A module with the key layout of the authors' release (DESIGN.md), written here."""
    m = nn.Module()
    m.FrameFeatureExtractor = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=(0, 1)), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Conv2d(2, 4, 3, padding=(0, 1)), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d((2, 1)),
        nn.Conv2d(4, 8, 3, padding=(0, 1)), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=(0, 1)), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d((2, 1)),
    )  # fmt: skip
    layer = nn.TransformerEncoderLayer(30, 5, 30, 0.2, batch_first=True)
    m.encoderlayer = layer
    m.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    m.Classifier = nn.Sequential(nn.Flatten(), nn.Linear(480, 2))
    return m


def authors_forward(m: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Their input is (n, 1, time, columns)."""
    fmap = m.FrameFeatureExtractor(windows.unsqueeze(1))
    return m.Classifier(m.encoder(fmap.mean(2)))


def test_reference_checkpoint_reproduces_the_authors_logits(tmp_path):
    torch.manual_seed(0)
    ref = authors_layout_model()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in ref.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
    path = tmp_path / "fold0.pth"
    torch.save(ref.state_dict(), path)
    windows = torch.randn(16, 180, 30)  # time x columns, as the authors lay them out
    with torch.no_grad():
        expected = authors_forward(ref.eval(), windows)
        ours = LSFAN.from_reference_checkpoint(path)(windows.transpose(1, 2))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/reference not beside the checkout")
def test_released_checkpoint_fidelity():
    model = LSFAN.from_reference_checkpoint(SHARED / "lsfan_authors_fold0.pth")
    io = np.load(SHARED / "lsfan_authors_fold0_io.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(io["windows"]).transpose(1, 2))
    np.testing.assert_allclose(logits.numpy(), io["logits"], rtol=0, atol=1e-5)


def test_reference_checkpoint_with_wrong_keys_is_refused(tmp_path):
    state = authors_layout_model().state_dict()
    del state["Classifier.1.bias"]
    state["Head.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken\.pth.*classifier\.1\.bias.*Head\.weight"):
        LSFAN.from_reference_checkpoint(path)


def ready(name: str, n_channels: int = 30, window: int = 180, n_classes: int = 2,
          **kwargs) -> nn.Module:
    """A model able to score windows: a new network, or a closed-form model fitted on noise."""
    model = create_model(name, **model_input_kwargs(name, n_channels, window),
                         n_classes=n_classes, **kwargs)
    if model_entry(name).closed_form:
        rng = np.random.default_rng(0)
        y = np.arange(24) % n_classes
        model.fit_windows(rng.normal(size=(24, n_channels, window)).astype(np.float32), y,
                          np.ones(24), seed=0)
    return model


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name):
    torch.manual_seed(0)
    model = ready(name)
    x = torch.randn(4, 30, 180)
    out = model(x)
    assert out.shape == (4, 2)
    if name in NETWORKS:
        out.sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, pname
    else:
        assert not list(model.parameters()) and count_parameters(model) > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected 30 signal channels.*got 29"):
        model(torch.randn(2, 29, 180))
    with pytest.raises(ValueError, match=r"shape \(30, 180\)"):
        model(torch.randn(30, 180))


@pytest.mark.parametrize("name", ["lsfan", "cnn_tap", "lsfan_ggem"])
def test_too_short_window_is_refused(name):
    with pytest.raises(ValueError, match=r"window of 15 frames is too short.*at least 16"):
        create_model(name)(torch.randn(2, 30, 15))
    assert create_model(name)(torch.randn(2, 30, 16)).shape == (2, 2)  # (16-4)//2-4 = 2 -> 1


def test_temporal_ggem_crossover_has_one_p_per_cnn_channel():
    model = create_model("lsfan_ggem")
    assert model.pool.p.shape == (16,)
    assert count_parameters(model) == 8282 + 16


@pytest.mark.parametrize("channels,heads", [(30, 5), (6, 3), (12, 4), (7, 1), (2, 2), (20, 5)])
def test_lsfan_heads_default_to_the_largest_divisor_up_to_five(channels, heads):
    model = LSFAN(n_channels=channels, n_classes=4)
    assert model.encoder.layers[0].self_attn.num_heads == heads
    assert model(torch.randn(2, channels, 180)).shape == (2, 4)


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_any_channel_count_and_class_count(name):
    kwargs = {"n_segments": 3} if name == "banet" else {}
    model = ready(name, n_channels=6, n_classes=4, **kwargs)
    assert model(torch.randn(3, 6, 180)).shape == (3, 4)


@pytest.mark.parametrize("name", ["lsfan", "lsfan_ggem"])
def test_an_encoder_over_one_channel_is_refused_and_says_why(name):
    with pytest.raises(ValueError, match="layer norm turns a one-feature token into a constant"):
        create_model(name, n_channels=1)
    with pytest.raises(ValueError, match="needs at least 2 channels"):
        create_model("banet", n_channels=1)
    assert create_model("cnn_tap", n_channels=1)(torch.randn(2, 1, 180)).shape == (2, 2)


def test_banet_segments_say_what_to_pass():
    with pytest.raises(ValueError, match=r"pass n_segments between 1 and 3 \(EmoPain's 30"):
        create_model("banet", n_channels=6)


def test_configurable_network():
    model = LSFAN(n_channels=12, window=120, widths=(4, 8), heads=3, layers=2)
    assert model(torch.randn(2, 12, 120)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"heads=7 must be a positive divisor of the encoder's "
                       r"token size 30 \(the channel count\); heads=None picks the largest "
                       r"divisor up to 5 \(5\)"):
        LSFAN(heads=7)
    with pytest.raises(ValueError, match="unknown pain model 'vit'"):
        create_model("vit")


@pytest.mark.parametrize("name", list_pools())
def test_every_pool_is_an_lsfan_oriented_pool(name):
    torch.manual_seed(0)
    model = LSFAN(pool=name)
    logits = model(torch.randn(3, 30, 180))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
