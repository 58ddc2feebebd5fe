"""The layout-choosing convolution of the pain CNN: same values and gradients as nn.Conv2d."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from poolwise.pain.models import create_model
from poolwise.pain.models.conv import LayoutConv2d, conv2d_in_layout


@pytest.mark.parametrize(
    ("in_channels", "channels_last"), [(1, False), (1, True), (3, True), (3, False)]
)
def test_op_matches_conv2d_and_passes_opcheck(in_channels, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, in_channels, 9, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, in_channels, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = conv2d_in_layout(x, w, b, [0, 1], channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=(0, 1)))
    assert out.is_contiguous()
    assert torch.autograd.gradcheck(
        lambda *t: conv2d_in_layout(*t, [0, 1], channels_last), (x, w, b)
    )
    args = (x.float(), w.float(), b.float(), [0, 1], channels_last)
    torch.library.opcheck(conv2d_in_layout, args)


def test_single_channel_weight_gradient_without_input_gradient():
    """The first layer's data input needs no gradient: its own weight-gradient path."""
    torch.manual_seed(1)
    x = torch.randn(5, 1, 12, 7, dtype=torch.float64)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(5, 2, 10, 7, dtype=torch.float64)
    ours = torch.autograd.grad(conv2d_in_layout(x, w, b, [0, 1], False), (w, b), grad)
    theirs = torch.autograd.grad(F.conv2d(x, w, b, padding=(0, 1)), (w, b), grad)
    for a, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, t)


def test_layout_conv_is_nn_conv2d_outside_compile():
    conv = LayoutConv2d(2, 3, 3, padding=(0, 1))
    plain = torch.nn.Conv2d(2, 3, 3, padding=(0, 1))
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 2, 8, 5)
    assert torch.equal(conv(x), plain(x))
    assert set(conv.state_dict()) == {"weight", "bias"}


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_lsfan_step_matches_eager():
    """Under torch.compile every conv runs through the op; logits and parameter gradients stay
    those of the eager model (no dropout, so both see the same function)."""
    torch.manual_seed(0)
    model = create_model("lsfan", dropout=0.0).train()
    x = torch.randn(8, 30, 180)
    eager = model(x)
    eager.square().sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, dynamic=False)(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    conv_biases = {f"cnn.{i}.bias" for i, m in enumerate(model.cnn) if isinstance(m, LayoutConv2d)}
    for name, param in model.named_parameters():
        if name in conv_biases:
            # a conv bias right before batch norm has a zero gradient: compare absolutely
            torch.testing.assert_close(param.grad, expected[name], rtol=0, atol=1e-4)
            continue
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-5, msg=name)
    graphs = torch._dynamo.explain(model)(x).graphs
    calls = sum(str(g.code).count("poolwise.conv2d_in_layout") for g in graphs)
    assert calls == 4  # every conv of the CNN took the op
