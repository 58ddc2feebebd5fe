"""Grad-CAM and attention maps: identities and contracts."""

import pytest
import torch

from poolwise.pain.deploy.explain import attention_weights, grad_cam
from poolwise.pain.models import create_model


def test_grad_cam_sums_to_the_logit_without_attention():
    # CNN-TAP: logit = sum_{k,s} W[k,s] mean_t A[k,t,s] + b, so the raw map sums to logit - b
    torch.manual_seed(0)
    model = create_model("cnn_tap").eval()
    x = torch.randn(3, 30, 180)
    raw = grad_cam(model, x, target=1, raw=True)
    with torch.no_grad():
        logit = model(x)[:, 1] - model.classifier[1].bias[1]
    torch.testing.assert_close(raw.sum((1, 2)), logit, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lsfan", "lsfan_ggem", "cnn_tap", "cnn_sap"])
def test_grad_cam_shape_and_sign(name):
    model = create_model(name)
    cam = grad_cam(model, torch.randn(2, 30, 180))
    assert cam.shape == (2, 180, 30) and (cam >= 0).all() and torch.isfinite(cam).all()
    assert all(p.grad is None for p in model.parameters())


def test_attention_rows_are_distributions():
    weights = attention_weights(create_model("lsfan"), torch.randn(4, 30, 180))
    assert weights.shape == (4, 16, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 16))


def test_models_without_a_cnn_or_attention_say_so():
    with pytest.raises(ValueError, match="L-SFAN family"):
        grad_cam(create_model("gru"), torch.randn(1, 30, 180))
    with pytest.raises(ValueError, match="no attention"):
        attention_weights(create_model("cnn_tap"), torch.randn(1, 30, 180))


def test_explanation_figures_state_their_scales(tmp_path):
    """Grad-CAM panels carry a colorbar and say how they are normalised; the attention maps
    share one colour scale with the uniform level marked; every figure has an SVG twin."""
    import numpy as np

    from poolwise.pain.data.layout import CHANNEL_NAMES
    from poolwise.pain.deploy.explain import write_explanations

    rng = np.random.default_rng(0)
    arrays = {"channel_names": np.array(CHANNEL_NAMES), "frame_rate": np.array(60.0)}
    for key in ("protective", "healthy"):
        arrays[f"cam_{key}"] = rng.random((180, 30)).astype(np.float32)
        arrays[f"n_{key}"] = np.array(5)
        arrays[f"attention_{key}"] = rng.dirichlet(np.ones(16), 16).astype(np.float32)
    names = sorted(p.name for p in write_explanations(arrays, tmp_path))
    assert names == ["attention.png", "attention.svg", "explanations.npz", "gradcam.png",
                     "gradcam.svg"]
    gradcam = (tmp_path / "gradcam.svg").read_text()
    assert "its maximum in this panel" in gradcam and "angle_00" in gradcam
    assert "signal column" in gradcam and "time in window (s)" in gradcam
    attention = (tmp_path / "attention.svg").read_text()
    assert attention.count("attention weight, one scale for all") == 1  # one shared colorbar
    assert "uniform, 1/16" in attention
