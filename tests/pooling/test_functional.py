"""GGeM kernel: closed-form values, gradients, identities and numerical safety.

Every test runs three times, through the `kernel_path` fixture: on the fused native kernel
(float32 / float16 / bfloat16 on CPU; float64 always takes the PyTorch path), on the fused Triton
kernel run by Triton's interpreter on CPU tensors (the kernel that serves CUDA tensors), and on the
PyTorch fallback.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from poolwise import kernels
from poolwise.kernels import ggem_triton
from poolwise.pooling import functional as PF
from poolwise.pooling import ggem_autograd
from poolwise.pooling.functional import gem, ggem, ggem_reference

F64 = torch.float64


@pytest.fixture(params=["native", "triton", "torch"], autouse=True)
def kernel_path(request):
    if request.param == "native" and kernels.library() is None:
        pytest.skip("the native library is not built here (no C++ compiler)")
    if request.param == "triton":
        if not ggem_triton.available():
            pytest.skip("Triton is not installed (it comes with PyTorch's CUDA builds)")
        with ggem_triton.interpreted():
            yield request.param
        return
    with kernels.use_native(request.param == "native"):
        yield request.param


def test_hand_computed_value():
    # channel 0: (mean of 1, 4, 9, 16) ** (1/2) = sqrt(7.5); channel 1: p = 1 gives the mean
    x = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.0]]], dtype=F64)
    y = ggem(x, torch.tensor([2.0, 1.0], dtype=F64))
    torch.testing.assert_close(y, torch.tensor([[math.sqrt(7.5), 5.0]], dtype=F64))


@pytest.mark.parametrize("group_order", ["contiguous", "interleaved"])
@pytest.mark.parametrize("shape,channel_dim", [((3, 5, 6), -1), ((2, 6, 3, 4), 1), ((2, 6, 7), 1)])
def test_gradcheck_x_and_p(shape, channel_dim, group_order):
    torch.manual_seed(0)
    x = (torch.rand(shape, dtype=F64) * 3 + 0.1).requires_grad_()
    p = torch.tensor([1.5, 4.0, 2.5], dtype=F64, requires_grad=True)

    def f(a, b):
        return ggem(a, b, channel_dim=channel_dim, group_order=group_order)

    assert torch.autograd.gradcheck(f, (x, p))
    # and the closed-form gradients equal plain autograd through the reference formulation
    grads = torch.autograd.grad(f(x, p).square().sum(), (x, p))
    ref = ggem_reference(x, p, channel_dim=channel_dim, group_order=group_order).square().sum()
    for g, r in zip(grads, torch.autograd.grad(ref, (x, p)), strict=True):
        torch.testing.assert_close(g, r)


def test_gradcheck_with_clamped_entries():
    # half of the entries sit below eps: the clamp must pass no gradient there
    x = torch.rand(2, 6, 4, dtype=F64) + 0.2
    x[:, ::2] = -1.0
    x.requires_grad_()
    p = torch.tensor([3.0, 2.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ggem(a, b), (x, p))
    ggem(x, p).sum().backward()
    assert torch.all(x.grad[:, ::2] == 0)


positive = arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(1, 7), st.sampled_from([2, 4, 6])),
    elements=st.floats(0.01, 10.0),
)


@settings(max_examples=40, deadline=None)
@given(positive)
def test_p_one_is_mean(a):
    x = torch.from_numpy(a)
    torch.testing.assert_close(ggem(x, torch.ones(2, dtype=F64)), x.mean(1))


@settings(max_examples=40, deadline=None)
@given(positive)
def test_large_p_approaches_max(a):
    x = torch.from_numpy(a)
    n = x.shape[1]
    y = ggem(x, torch.full((2,), 400.0, dtype=F64))
    mx = x.amax(1)
    # mean of x**p >= max**p / n, so max * n**(-1/p) <= y <= max
    assert torch.all(y <= mx * (1 + 1e-12))
    assert torch.all(y >= mx * n ** (-1 / 400.0) * (1 - 1e-12))


@settings(max_examples=40, deadline=None)
@given(positive, st.floats(1.0, 8.0))
def test_one_group_is_gem_and_c_groups_is_cgem(a, p):
    x = torch.from_numpy(a)
    c = x.shape[-1]
    torch.testing.assert_close(ggem(x, torch.tensor([p], dtype=F64)), gem(x, p))
    per_channel = torch.linspace(1.0, p, c, dtype=F64)
    expected = torch.stack(
        [gem(x[..., i : i + 1], float(per_channel[i])).squeeze(-1) for i in range(c)], -1
    )
    torch.testing.assert_close(ggem(x, per_channel), expected)


@settings(max_examples=40, deadline=None)
@given(positive, st.randoms(use_true_random=False))
def test_token_order_invariance(a, rnd):
    x = torch.from_numpy(a)
    order = list(range(x.shape[1]))
    rnd.shuffle(order)
    p = torch.tensor([2.0, 5.0], dtype=F64)
    torch.testing.assert_close(ggem(x[:, order], p), ggem(x, p))


@settings(max_examples=40, deadline=None)
@given(positive, st.floats(0.05, 50.0))
def test_positive_homogeneity(a, scale):
    x = torch.from_numpy(a)
    p = torch.tensor([1.5, 6.0], dtype=F64)
    torch.testing.assert_close(ggem(scale * x, p), scale * ggem(x, p))


@settings(max_examples=40, deadline=None)
@given(positive)
def test_interleaved_equals_contiguous_after_permutation(a):
    x = torch.from_numpy(a)
    c = x.shape[-1]
    p = torch.tensor([1.5, 6.0], dtype=F64)
    perm = list(PF.permutation_for_group_order(c, 2))
    torch.testing.assert_close(ggem(x[..., perm], p),
                               ggem(x, p, group_order="interleaved")[..., perm])


def test_channel_dim_layouts_agree():
    x = torch.rand(2, 5, 7, 6, dtype=F64) + 0.1  # (B, H, W, C)
    p = torch.tensor([2.0, 3.0, 4.0], dtype=F64)
    tokens = ggem(x.flatten(1, 2), p)
    torch.testing.assert_close(ggem(x.permute(0, 3, 1, 2), p, channel_dim=1), tokens)
    torch.testing.assert_close(ggem(x, p, channel_dim=3), tokens)


def test_many_batch_chunks_match_one(monkeypatch):
    x = torch.rand(7, 9, 4, dtype=F64) + 0.1
    p = torch.tensor([2.0, 3.0], dtype=F64)
    whole = ggem(x, p)
    monkeypatch.setattr(ggem_autograd, "_CHUNK_ELEMENTS", 40)  # one or two rows per chunk
    torch.testing.assert_close(ggem(x, p), whole)


def test_float32_matches_float64_with_clamped_entries():
    """Values and gradients of a float32 input against float64, clamped entries included."""
    torch.manual_seed(0)
    x = torch.randn(5, 40, 12) * 3
    p = torch.tensor([1.5, 3.0, 7.0])
    x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
    ggem(x32, p32).sum().backward()
    x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
    want = ggem_reference(x64, p64)
    want.sum().backward()
    torch.testing.assert_close(ggem(x, p).double(), want.detach(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-4, atol=1e-6)


float32_inputs = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 40), st.sampled_from([4, 12, 20, 36])),
    elements=st.floats(-2.0, 50.0, width=32),
)


@settings(max_examples=60, deadline=None)
@given(float32_inputs, st.lists(st.floats(0.5, 12.0), min_size=4, max_size=4),
       st.sampled_from([-1, 1]))
def test_float32_within_2e_6_of_float64(a, exponents, channel_dim):
    """Outputs within 2e-6 relative of float64 (the issue's accuracy target), for tokens and, with
    channel_dim=1, for the channels-first layout, any length, tails included."""
    x = torch.from_numpy(a)
    if channel_dim == 1:
        x = x.transpose(1, 2).contiguous()
    p = torch.tensor(exponents)
    want = ggem_reference(x.double(), p.double(), channel_dim=channel_dim)
    torch.testing.assert_close(ggem(x, p, channel_dim=channel_dim).double(), want,
                               rtol=2e-6, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_give_what_torch_gives(bad):
    """A NaN or +inf input gives NaN in its (b, c), as the plain formulation does (inf / inf in
    the max shift); every other value is exact."""
    x = torch.rand(3, 20, 8) + 0.5
    x[1, 4, 3] = bad
    p = torch.tensor([2.0, 5.0])
    y = ggem(x, p)
    want = ggem_reference(x.double(), p.double())
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=0, equal_nan=True)
    assert torch.isnan(y[1, 3]) and torch.isfinite(y[[0, 2]]).all()


def test_rows_wider_than_one_work_item():
    """The native kernel splits channels-last rows wider than 2048 channels into work items;
    2048 + 40 channels (the second item partial, not a whole vector) give float64's values and
    gradients, and a NaN in the second item leaves the first item's channels exact."""
    torch.manual_seed(0)
    x = torch.rand(2, 9, 2088) * 4 + 0.05
    p = torch.rand(8) * 6 + 1.0
    x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
    (ggem(x32, p32) * torch.linspace(0.5, 1.5, 2088)).sum().backward()
    x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
    want = ggem_reference(x64, p64)
    (want * torch.linspace(0.5, 1.5, 2088, dtype=F64)).sum().backward()
    torch.testing.assert_close(ggem(x, p).double(), want.detach(), rtol=2e-6, atol=0)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-4, atol=1e-9)
    x[1, 3, 2050] = float("nan")
    y = ggem(x, p)
    assert torch.isnan(y[1, 2050]) and torch.isfinite(y[1, :2048]).all()
    torch.testing.assert_close(y.double(), ggem_reference(x.double(), p.double()), rtol=2e-6,
                               atol=0, equal_nan=True)


# --- numerical safety ---------------------------------------------------------------------


def test_fp16_values_around_100_do_not_overflow():
    torch.manual_seed(0)
    x = torch.rand(4, 49, 8) * 40 + 80  # x ** 3 ~ 1e6 > fp16 max 65504
    p = torch.tensor([3.0, 3.0])
    assert not torch.isfinite(x.half() ** 3).all()  # the plain formula overflows in fp16
    y = ggem(x.half(), p)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ggem(x, p), rtol=1e-3, atol=0)


@pytest.mark.parametrize("fill", [0.0, -3.0])
def test_all_zero_and_all_negative_inputs(fill):
    x = torch.full((2, 10, 4), fill, requires_grad=True)
    p = torch.tensor([3.0, 8.0], requires_grad=True)
    y = ggem(x, p)
    torch.testing.assert_close(y, torch.full((2, 4), 1e-6))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(p.grad).all()


def test_dead_channel_at_p8():
    x = torch.rand(3, 16, 4) + 0.5
    x[..., 1] = -torch.rand(3, 16)  # every value <= eps
    x.requires_grad_()
    p = torch.full((4,), 8.0, requires_grad=True)
    y = ggem(x, p)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(p.grad).all()
    assert torch.all(x.grad[..., 1] == 0) and abs(float(p.grad[1])) < 1e-9


@pytest.mark.parametrize("base", [60000.0, 1.0, 1e-3])
def test_p_gradient_of_nearly_constant_channels_is_accurate_in_float32(base):
    """x = base + U(0, base / 600): every (x / y) ** p is near 1, where the textbook form
    mean[(x / y) ** p ln(x / y)] loses its digits (about 10 % off in float32 at base 60000)."""
    g = torch.Generator().manual_seed(0)
    x = base + torch.rand(8, 196, 12, generator=g) * (base / 600)
    p = torch.tensor([3.0, 1.5, 8.0])
    x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
    x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
    ggem(x32, p32).sum().backward()
    ggem(x64, p64).sum().backward()
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=2e-5, atol=0)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=2e-5, atol=1e-9)


def test_input_gradient_of_small_powers_keeps_its_digits():
    """(x / y) ** (p - 1) where (x / y) ** p is far below float32's epsilon (x = 0.007 beside
    values near 4, p = 3) is computed from its own exponential, not as 1 + expm1(z)."""
    x = torch.full((2, 35, 4), 3.5)
    x[:, 7] = 0.007
    p = torch.tensor([3.0, 3.0])
    x32 = x.clone().requires_grad_()
    ggem(x32, p).square().sum().backward()
    x64 = x.double().requires_grad_()
    ggem_reference(x64, p.double()).square().sum().backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=0)


@pytest.mark.parametrize("p_value", [30.0, 100.0])
def test_large_p_float32_close_to_float64(p_value):
    torch.manual_seed(0)
    x = torch.rand(4, 50, 6) * 20  # 20 ** 100 overflows float32 but not float64
    p = torch.full((3,), p_value)
    x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
    y32 = ggem(x32, p32)
    y32.square().sum().backward()
    x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
    ggem_reference(x64, p64).square().sum().backward()
    assert torch.isfinite(y32).all() and torch.isfinite(x32.grad).all()
    torch.testing.assert_close(
        y32.double(), ggem_reference(x.double(), p.double()), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("case", ["overflow", "underflow", "clean"])
def test_every_chunk_is_exact_whichever_path_it_takes(monkeypatch, case):
    """The kernel sums x ** p unshifted and recomputes a chunk with the max shift only where a
    (b, c) overflowed or underflowed; one odd entry in one chunk must not change the others."""
    monkeypatch.setattr(ggem_autograd, "_CHUNK_ELEMENTS", 2 * 30 * 8)  # 3 chunks of two rows
    torch.manual_seed(0)
    x = torch.rand(6, 30, 8) + 0.5
    p = torch.tensor([12.0, 20.0])
    if case == "overflow":
        x[3, 7, 2] = 1e4  # 1e4 ** 12 > float32 max
    elif case == "underflow":
        x[4, :, 5] = 1e-3  # every 1e-3 ** 20 is below float32's smallest normal
    want = ggem_reference(x.double(), p.double())
    torch.testing.assert_close(ggem(x, p).double(), want, rtol=2e-6, atol=0)


def test_bf16_gradient_of_p_close_to_float64():
    torch.manual_seed(0)
    x = torch.rand(8, 64, 12) * 4 + 0.05
    xb = x.bfloat16()
    pb = torch.tensor([1.5, 3.0, 6.0], requires_grad=True)
    ggem(xb, pb).float().sum().backward()
    p64 = pb.detach().double().requires_grad_()
    ggem_reference(xb.double(), p64).sum().backward()  # same (rounded) input, exact math
    torch.testing.assert_close(pb.grad.double(), p64.grad, rtol=1e-2, atol=0)


def test_autocast_computes_in_float32_and_returns_input_dtype():
    x = torch.rand(2, 30, 4) * 50 + 60
    p = torch.tensor([3.0, 3.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ggem(x, p)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ggem(x, p))


# --- bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,p,match",
    [
        (torch.rand(2, 3, 10), torch.ones(3), r"C=10 .* G=3"),
        (torch.rand(2, 3, 6), torch.ones(2, 3), r"1-D .* shape \(2, 3\)"),
        (torch.rand(2, 3, 6), torch.ones(0), r"1-D"),
        (torch.rand(2, 6), torch.ones(3), r"shape \(2, 6\)"),
    ],
)
def test_bad_arguments_name_the_value(x, p, match):
    with pytest.raises(ValueError, match=match):
        ggem(x, p)


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf"), float("-inf")])
def test_exponents_must_be_finite_and_positive(value):
    p = torch.tensor([3.0, value])
    with pytest.raises(ValueError, match=r"every GGeM exponent p must be finite and > 0; got "
                       rf"\[{value}\]"):
        ggem(torch.rand(2, 5, 4), p)


def test_bad_channel_dim_and_group_order():
    with pytest.raises(ValueError, match="batch dim"):
        ggem(torch.rand(2, 3, 4), torch.ones(1), channel_dim=0)
    with pytest.raises(ValueError, match="out of range"):
        ggem(torch.rand(2, 3, 4), torch.ones(1), channel_dim=3)
    with pytest.raises(ValueError, match="'diagonal'"):
        ggem(torch.rand(2, 3, 4), torch.ones(2), group_order="diagonal")


def test_the_former_keyword_layout_still_works_and_warns():
    x, p = torch.rand(2, 5, 6, dtype=F64), torch.tensor([1.5, 4.0], dtype=F64)
    want = ggem(x, p, group_order="interleaved")
    with pytest.warns(DeprecationWarning, match="layout= is renamed group_order="):
        torch.testing.assert_close(ggem(x, p, layout="interleaved"), want)
    with pytest.warns(DeprecationWarning, match="layout= is renamed group_order="):
        torch.testing.assert_close(ggem_reference(x, p, layout="interleaved"), want)
    with pytest.warns(DeprecationWarning, match="permutation_for_group_order"):
        assert PF.permutation_for_layout(6, 2) == PF.permutation_for_group_order(6, 2)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="pass group_order="):
        ggem(x, p, layout="contiguous", group_order="interleaved")


# tracing reads the shape checks as constants, which this fixed-shape check means
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_plain_ops_path_used_in_exports_matches_the_kernel():
    g = torch.Generator().manual_seed(0)
    for x in (torch.rand(3, 17, 12, generator=g) * 20, torch.randn(2, 12, 5, 5, generator=g)):
        cdim = -1 if x.ndim == 3 else 1
        p = torch.tensor([1.0, 3.0, 30.0])
        expected = ggem(x, p, channel_dim=cdim)
        torch.testing.assert_close(ggem_reference(x, p, channel_dim=cdim), expected)
    traced = torch.jit.trace(lambda t: ggem(t, torch.tensor([2.0, 4.0])), torch.rand(2, 5, 8))
    assert "prim::PythonOp" not in str(traced.graph)  # no custom autograd function
    x = torch.rand(2, 5, 8)
    torch.testing.assert_close(traced(x), ggem(x, torch.tensor([2.0, 4.0])))
