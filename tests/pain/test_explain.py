"""Grad-CAM and attention maps: identities and contracts."""

import pytest
import torch

from poolwise.pain.explain import attention_weights, grad_cam
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
