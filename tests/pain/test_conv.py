"""The pain CNN's compiled layers: the layout-choosing op, the C++ direct convolution and the
row max-pool give the values and gradients of nn.Conv2d / nn.MaxPool2d."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from poolwise.kernels import conv as native
from poolwise.kernels import use_native
from poolwise.pain.models import create_model
from poolwise.pain.models.conv import ConvStack, LayoutConv2d, RowMaxPool2d, conv2d_in_layout

HAS_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None
needs_native = pytest.mark.skipif(
    not HAS_COMPILER or native.library() is None, reason="the C++ convolution needs a compiler"
)


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


def test_layout_conv_is_nn_conv2d_in_traces_and_without_the_kernels():
    """Eager calls run on the C++ kernel (nn.Conv2d's values to float32 rounding); a trace, and
    any call with the kernels switched off, is nn.Conv2d itself, so graphs keep standard ops."""
    conv = LayoutConv2d(2, 3, 3, padding=(0, 1))
    plain = torch.nn.Conv2d(2, 3, 3, padding=(0, 1))
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 2, 8, 5)
    out = conv(x)
    if native.available():
        assert "conv2d_direct" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, plain(x))
    with use_native(False):
        assert torch.equal(conv(x), plain(x))
    traced = torch.jit.trace(conv, x)
    assert "poolwise::" not in str(traced.graph) and torch.equal(traced(x), plain(x))
    assert set(conv.state_dict()) == {"weight", "bias"}


def test_row_max_pool_is_max_pool2d_in_eager_calls():
    pool = RowMaxPool2d((2, 1))
    x = torch.randn(3, 4, 9, 5)
    assert torch.equal(pool(x), torch.nn.functional.max_pool2d(x, (2, 1)))


def _direct_against_float64(x, w, b, padding, threads):
    """The float32 op against F.conv2d in float64: output and all three gradients."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = native.conv2d_direct(*leaves, padding)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
        ours = torch.autograd.grad(out, leaves, grad)
        exact = [t.double().requires_grad_() for t in (x, w, b)]
        ref = F.conv2d(*exact, padding=padding)
        theirs = torch.autograd.grad(ref, exact, grad.double())
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for name, a, t in zip(("x", "weight", "bias"), ours, theirs, strict=True):
        scale = float(t.abs().max()) + 1.0
        torch.testing.assert_close(a.double() / scale, t / scale, rtol=0, atol=2e-6, msg=name)


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("batch", "in_ch", "out_ch", "height", "width", "padding"),
    [
        (40, 1, 2, 180, 30, [0, 1]),  # L-SFAN's first conv, at training batch size
        (3, 8, 16, 86, 30, [0, 1]),  # its last
        (2, 3, 5, 7, 37, [1, 1]),  # rows longer than one 32-column block
        (3, 2, 7, 5, 3, [1, 0]),  # odd channel counts, no column padding
        (1, 6, 1, 3, 16, [0, 0]),  # one output row
    ],
)
def test_direct_conv_matches_conv2d(batch, in_ch, out_ch, height, width, padding, threads):
    g = torch.Generator().manual_seed(batch * 100 + in_ch)
    x = torch.randn(batch, in_ch, height, width, generator=g)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=g)
    b = torch.randn(out_ch, generator=g)
    _direct_against_float64(x, w, b, padding, threads)


@needs_native
@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    in_ch=st.integers(1, 9),
    out_ch=st.integers(1, 9),
    height=st.integers(1, 12),
    width=st.integers(1, 40),
    padding=st.lists(st.integers(0, 1), min_size=2, max_size=2),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_direct_conv_property(batch, in_ch, out_ch, height, width, padding, threads, seed):
    x = torch.randn(1, 1, 1, 1)
    if height + 2 * padding[0] < 3 or width + 2 * padding[1] < 3:
        assert not native.supports(x.expand(batch, in_ch, height, width), x, padding)
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_ch, height, width, generator=g)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=g)
    b = torch.randn(out_ch, generator=g)
    assert native.supports(x, w, padding)
    _direct_against_float64(x, w, b, padding, threads)


@needs_native
def test_direct_conv_passes_opcheck():
    g = torch.Generator().manual_seed(3)
    args = (
        torch.randn(2, 3, 9, 6, generator=g),
        torch.randn(4, 3, 3, 3, generator=g),
        torch.randn(4, generator=g),
        [0, 1],
    )
    torch.library.opcheck(native.conv2d_direct, args)


def _bn_against_float64(x, w, b, pool, threads):
    """The fused float32 op against batch norm + ReLU (+ max-pool) in float64."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out, mean, var = native.bn_relu_pool(*leaves, 1e-5, pool)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        ours = torch.autograd.grad(out, leaves, grad)
    finally:
        torch.set_num_threads(before)
    exact = [t.double().requires_grad_() for t in (x, w, b)]
    ref = F.relu(F.batch_norm(exact[0], None, None, exact[1], exact[2], True, 0.0, 1e-5))
    ref = F.max_pool2d(ref, (2, 1)) if pool else ref
    theirs = torch.autograd.grad(ref, exact, grad.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    xd = x.double()
    torch.testing.assert_close(mean.double(), xd.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var.double(), xd.var((0, 2, 3), correction=0), rtol=1e-5, atol=1e-6)
    # The input gradient is w / std * (g - mean g - xhat mean(g xhat)): terms of size
    # |w| |g| / std that cancel (exactly, for two values per channel), so float32 is held to
    # the size of those terms, not to the (possibly near-zero) result.
    std = (xd.var((0, 2, 3), correction=0) + 1e-5).sqrt()
    terms = float((w.double().abs() / std).max()) * float(grad.abs().max())
    for name, a, t in zip(("x", "weight", "bias"), ours, theirs, strict=True):
        scale = float(t.abs().max()) + 1.0 + (terms if name == "x" else 0.0)
        torch.testing.assert_close(a.double() / scale, t / scale, rtol=0, atol=2e-6, msg=name)


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize(
    ("batch", "channels", "height", "width"),
    [(40, 16, 84, 30), (3, 5, 7, 9), (2, 3, 4, 5), (4, 2, 2, 8)],  # L-SFAN's last map, odd/short
)
def test_bn_relu_pool_matches_reference(batch, channels, height, width, pool, threads):
    g = torch.Generator().manual_seed(batch + channels)
    x = torch.randn(batch, channels, height, width, generator=g) * 2 + 0.5
    w, b = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
    _bn_against_float64(x, w, b, pool, threads)


@needs_native
@settings(max_examples=30, deadline=None)
@example(batch=1, channels=1, height=2, width=1, pool=False, threads=1, seed=458)  # 2 values
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 6),
    height=st.integers(2, 11),
    width=st.integers(1, 20),
    pool=st.booleans(),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_bn_relu_pool_property(batch, channels, height, width, pool, threads, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g)
    w, b = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
    _bn_against_float64(x, w, b, pool, threads)


@needs_native
def test_bn_relu_pool_ties_go_to_the_first_row():
    """Equal row pairs: nn.MaxPool2d sends the gradient to the first row; so does the op."""
    g = torch.Generator().manual_seed(2)
    half = torch.randn(2, 3, 4, 9, generator=g)
    x = half.repeat_interleave(2, dim=2)  # rows 2h and 2h + 1 equal
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    _bn_against_float64(x, w, b, True, 1)  # F.max_pool2d's first-row choice, in float64
    leaf = x.clone().requires_grad_()
    out, _, _ = native.bn_relu_pool(leaf, w, b, 1e-5, True)
    out.sum().backward()
    # shared equally, the two rows of a pair would get the same gradient
    assert not torch.allclose(leaf.grad[:, :, 0::2], leaf.grad[:, :, 1::2])


@needs_native
def test_bn_relu_pool_passes_opcheck():
    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(2, 3, 6, 9, generator=g), torch.randn(3, generator=g), torch.randn(3)
    torch.library.opcheck(native.bn_relu_pool, (x, w, b, 1e-5, True))


def test_supports_only_what_the_kernel_computes():
    x, w = torch.randn(2, 3, 9, 6), torch.randn(4, 3, 3, 3)
    available = native.library() is not None
    assert native.supports(x, w, [0, 1]) is available
    assert not native.supports(x.double(), w.double(), [0, 1])
    assert not native.supports(x, torch.randn(4, 3, 5, 5), [0, 1])
    assert not native.supports(x, w, [2, 1])


@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("height", [8, 9])
def test_row_max_pool_compiled_matches_max_pool2d(height):
    pool = RowMaxPool2d((2, 1))
    x = torch.randn(3, 4, height, 5, requires_grad=True)
    eager = F.max_pool2d(x, (2, 1))
    grad = torch.randn(eager.shape)
    (expected,) = torch.autograd.grad(eager, x, grad)
    compiled = torch.compile(pool, dynamic=False, fullgraph=True)(x)
    (ours,) = torch.autograd.grad(compiled, x, grad)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    assert torch.equal(pool(x), eager)  # outside compile it is nn.MaxPool2d


@pytest.fixture(params=["native", "pytorch"])
def kernels(request, monkeypatch):
    """The compiled CNN on the C++ kernels, and on the fallback (POOLWISE_NATIVE=0)."""
    if request.param == "pytorch":
        monkeypatch.setenv("POOLWISE_NATIVE", "0")
    native.library.cache_clear()
    torch._dynamo.reset()
    yield request.param
    monkeypatch.delenv("POOLWISE_NATIVE", raising=False)
    native.library.cache_clear()
    torch._dynamo.reset()


@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_lsfan_step_matches_eager(kernels):
    """Under torch.compile every conv, and where the C++ kernels are built every batch norm +
    ReLU (+ pool), runs through a custom op; logits, parameter gradients and the running
    statistics stay those of the eager model (no dropout, so both see the same function)."""
    torch.manual_seed(0)
    model = create_model("lsfan", dropout=0.0).train()
    assert isinstance(model.cnn, ConvStack)
    start_buffers = {n: b.clone() for n, b in model.named_buffers()}
    x = torch.randn(8, 30, 180)
    eager = model(x)
    eager.square().sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    eager_buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.zero_grad(set_to_none=True)
    model.load_state_dict({**model.state_dict(), **start_buffers})
    compiled = torch.compile(model, dynamic=False)(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    for name, buffer in model.named_buffers():  # batch norm's running statistics
        torch.testing.assert_close(buffer, eager_buffers[name], rtol=1e-5, atol=1e-6, msg=name)
    conv_biases = {f"cnn.{i}.bias" for i, m in enumerate(model.cnn) if isinstance(m, LayoutConv2d)}
    for name, param in model.named_parameters():
        if name in conv_biases:
            # a conv bias right before batch norm has a zero gradient: compare absolutely
            torch.testing.assert_close(param.grad, expected[name], rtol=0, atol=1e-4)
            continue
        # float32 sums over ~10^4 terms in another order (the C++ convolution, inductor's
        # batch norm): compare relative to the largest entry
        scale = float(expected[name].abs().max())
        torch.testing.assert_close(
            param.grad / scale, expected[name] / scale, rtol=0, atol=1e-4, msg=name
        )
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0
    code = "".join(str(g.code) for g in explained.graphs)
    if kernels == "native" and native.library() is not None:
        assert code.count("poolwise.conv2d_direct") == 4  # every conv of the CNN took the op
        assert code.count("poolwise.bn_relu_pool") == 4  # and every norm-ReLU(-pool) run
    else:
        assert code.count("poolwise.conv2d_in_layout") == 4
        assert "poolwise.bn_relu_pool" not in code
