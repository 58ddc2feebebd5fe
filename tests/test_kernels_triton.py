"""The fused Triton GGeM kernel (poolwise.kernels.ggem_triton), run on CPU tensors by Triton's
interpreter: that it really runs, its values against float64, strided and half-precision
inputs, the custom ops, and the first-use check that turns it off with one warning.

The shared value, gradient and property tests of tests/pooling/test_functional.py run on this
kernel too (their `triton` parameter).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from poolwise import kernels
from poolwise.kernels import ggem as native_ggem
from poolwise.kernels import ggem_triton
from poolwise.pooling import ggem, ggem_autograd, ggem_reference

pytestmark = pytest.mark.skipif(
    not ggem_triton.available(), reason="Triton is not installed (it comes with CUDA builds)"
)


@pytest.fixture
def interpreted():
    with ggem_triton.interpreted():
        yield


@pytest.fixture
def fresh_checks():
    """Each device's first-use check forgotten before and after the test."""
    ggem_triton.forget_checks()
    yield
    ggem_triton.forget_checks()


@pytest.fixture
def no_fallback(monkeypatch):
    """The PyTorch-ops path and the native kernel raise if called: what ggem returns then
    came from the Triton kernel."""

    def refuse(*args, **kwargs):
        raise AssertionError("a fallback path ran")

    for name in ("_torch_forward", "_torch_backward"):
        monkeypatch.setattr(ggem_autograd, name, refuse)
    monkeypatch.setattr(native_ggem, "forward", refuse)
    monkeypatch.setattr(native_ggem, "backward", refuse)


def _reference_grads(x, p, weights, **kwargs):
    x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
    y = ggem_reference(x64, p64, **kwargs)
    (y * weights.double()).sum().backward()
    return y.detach(), x64.grad, p64.grad


def test_the_interpreter_runs_the_triton_kernel_not_a_fallback(interpreted, no_fallback):
    from triton.runtime.interpreter import InterpretedFunction

    assert all(isinstance(k, InterpretedFunction) for k in ggem_triton._compiled())
    torch.manual_seed(0)
    x = (torch.rand(3, 21, 12) * 3 + 0.1).requires_grad_()
    p = torch.tensor([1.5, 4.0, 9.0], requires_grad=True)
    weights = torch.rand(3, 12)
    y = ggem(x, p)
    (y * weights).sum().backward()
    want, gx, gp = _reference_grads(x.detach(), p.detach(), weights)
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=0)
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(p.grad.double(), gp, rtol=1e-5, atol=1e-9)


def test_outside_the_interpreter_block_cpu_tensors_take_the_other_paths(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernel ran")

    monkeypatch.setattr(ggem_triton, "forward", refuse)
    x = torch.rand(2, 5, 4)
    assert not ggem_triton.supports(x, 1e-6)
    ggem(x, torch.tensor([3.0]))


def test_hand_computed_value(interpreted, no_fallback):
    # channel 0: (mean of 1, 4, 9, 16) ** (1/2) = sqrt(7.5); channel 1: p = 1 gives the mean
    x = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.0]]])
    y = ggem_triton.forward(x, torch.tensor([2.0, 1.0]), 1e-6, 2)
    torch.testing.assert_close(y, torch.tensor([[math.sqrt(7.5), 5.0]]))


@pytest.mark.parametrize("positions", [1, 15, 16, 17, 300])
@pytest.mark.parametrize("channels", [1, 16, 130])
def test_tiles_and_their_tails(interpreted, no_fallback, positions, channels):
    """Positions and channels below, at and beyond one tile (masks on both axes): float64's
    values and gradients."""
    g = torch.Generator().manual_seed(positions * 1000 + channels)
    x = torch.rand(2, positions, channels, generator=g) * 5 + 0.01
    p = torch.rand(channels, generator=g) * 7 + 0.5
    weights = torch.rand(2, channels, generator=g)
    x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
    y = ggem(x32, p32)
    (y * weights).sum().backward()
    want, gx, gp = _reference_grads(x, p, weights)
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=0)
    torch.testing.assert_close(x32.grad.double(), gx, rtol=2e-5, atol=1e-9)
    torch.testing.assert_close(p32.grad.double(), gp, rtol=2e-5, atol=1e-9)


def test_tokens_after_the_cls_token_are_read_in_place(interpreted, no_fallback):
    """x[:, 1:] (a strided view) is read without a copy and gives the contiguous result; a
    layout whose dims do not merge (a map cut in width) is copied first, same values."""
    torch.manual_seed(0)
    tokens = torch.rand(3, 50, 24) + 0.1
    p = torch.tensor([2.0, 5.0, 3.0])
    sliced = tokens[:, 1:]
    assert not sliced.is_contiguous()
    assert ggem_triton._view4(sliced, 2).data_ptr() == sliced.data_ptr()
    torch.testing.assert_close(ggem(sliced, p), ggem(sliced.contiguous(), p), rtol=0, atol=0)
    maps = (torch.rand(2, 12, 7, 9) + 0.1)[..., :5]  # inner dims (7, 5) with strides (9, 1)
    assert ggem_triton._view4(maps, 1).data_ptr() != maps.data_ptr()
    want = ggem_reference(maps.double(), p.double(), channel_dim=1)
    torch.testing.assert_close(ggem(maps, p, channel_dim=1).double(), want, rtol=2e-6, atol=0)


def test_interleaved_groups(interpreted, no_fallback):
    torch.manual_seed(0)
    x = torch.rand(2, 30, 12) + 0.1
    p = torch.tensor([1.5, 6.0, 3.0])
    want = ggem_reference(x.double(), p.double(), group_order="interleaved")
    got = ggem(x, p, group_order="interleaved").double()
    torch.testing.assert_close(got, want, rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_near_the_top_of_fp16_with_large_p(interpreted, no_fallback, dtype):
    """fp16 values near 65504 at p = 24 (x ** p far beyond float32's range): read in their own
    dtype, accumulated max-shifted in float32, the gradient returned in the input dtype."""
    torch.manual_seed(0)
    x = (60000 + torch.rand(2, 40, 8) * 5000).to(dtype)
    x[0, :, 1] = torch.rand(40).to(dtype) * 4
    p = torch.tensor([24.0, 3.0])
    xg, pg = x.clone().requires_grad_(), p.clone().requires_grad_()
    y = ggem(xg, pg)
    y.float().sum().backward()
    assert y.dtype == dtype and xg.grad.dtype == dtype
    want, gx, gp = _reference_grads(x, p, torch.ones(2, 8))
    assert torch.isfinite(y).all() and torch.isfinite(xg.grad).all()
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(y.double(), want.to(dtype).double(), rtol=tolerance, atol=0)
    torch.testing.assert_close(pg.grad.double(), gp, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(xg.grad.double(), gx.to(dtype).double(), rtol=tolerance,
                               atol=1e-30)  # a power below 1e-38, 0 or subnormal


def test_float64_and_integer_inputs(interpreted):
    """float64 is not the kernel's: it takes the PyTorch-ops path (exact gradcheck); integers
    get ggem's own error."""
    x = torch.rand(2, 5, 4, dtype=torch.float64) + 0.1
    assert not ggem_triton.supports(x, 1e-6)
    assert torch.autograd.gradcheck(
        lambda a: ggem(a, torch.tensor([2.0, 3.0], dtype=torch.float64)), (x.requires_grad_(),)
    )
    with pytest.raises(ValueError, match="floating-point"):
        ggem(torch.ones(2, 5, 4, dtype=torch.int64), torch.tensor([2.0]))
    with pytest.raises(ValueError, match=r"C=4 .* G=3"):
        ggem(torch.rand(2, 5, 4), torch.ones(3))


def test_custom_ops_pass_opcheck_on_the_triton_kernel(interpreted, no_fallback):
    """One op for every device: poolwise::ggem_forward / ggem_backward, served here by the
    Triton kernel (nothing left to redo), agree with their fake versions."""
    x = torch.rand(3, 7, 12) + 0.1
    p = torch.full((12,), 3.0)
    y, redo = native_ggem.ggem_forward(x, p, 1e-6, 2)
    assert not redo.any()
    torch.testing.assert_close(y, ggem_triton.forward(x, p, 1e-6, 2), rtol=0, atol=0)
    torch.library.opcheck(native_ggem.ggem_forward, (x, p, 1e-6, 2))
    grad = torch.rand(3, 12)
    torch.library.opcheck(native_ggem.ggem_backward, (x, y, grad, p, 1e-6, 2))
    _, weighted, redo = native_ggem.ggem_backward(x, y, grad, p, 1e-6, 2)
    assert weighted.dtype == torch.float64 and not redo.any()


def test_the_first_use_check_compares_with_float64():
    x, p, grad, eps = ggem_triton.check_case(torch.device("cpu"))
    y, grad_x, weighted = ggem_triton.expected(x, p, grad, eps)
    x64 = x.double().requires_grad_()
    p64 = p.double().requires_grad_()
    want = ggem_reference(x64, p64.reshape(48), group_order="contiguous")
    torch.testing.assert_close(y, want.detach())
    (want * grad.double()).sum().backward()
    torch.testing.assert_close(grad_x, x64.grad)
    n = x.shape[1]
    torch.testing.assert_close((grad.double() * y * weighted).sum(0) / (p.double() ** 2 * n),
                               p64.grad)


def test_a_kernel_that_fails_to_compile_is_turned_off_with_one_warning(
    interpreted, fresh_checks, monkeypatch
):
    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("ptxas fatal: unresolved extern function\nmore lines")

            return launch

    monkeypatch.setattr(ggem_triton, "_compiled", lambda: (Broken(), Broken()))
    x = (torch.rand(2, 9, 6) + 0.1).requires_grad_()
    p = torch.tensor([2.0, 4.0], requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"not used on cpu \(RuntimeError: ptxas fatal: "
                      r"unresolved extern function\); GGeM there takes the PyTorch-ops path"):
        y = ggem(x, p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device
        y.sum().backward()
        ggem(x, p)
    want = ggem_reference(x.detach().double(), p.detach().double())
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=0)


def test_a_kernel_that_gives_wrong_values_is_turned_off(interpreted, fresh_checks, monkeypatch):
    """A mismatch at first use (here a forward 1 % off) means the kernel never serves the
    device: the result is the PyTorch-ops path's, never the wrong one."""
    right = ggem_triton.forward
    monkeypatch.setattr(ggem_triton, "forward", lambda *a: right(*a) * 1.01)
    x = torch.rand(2, 9, 6) + 0.1
    p = torch.tensor([2.0, 4.0])
    with pytest.warns(RuntimeWarning, match=r"its y differs from float64 by a relative 0\.01"):
        y = ggem(x, p)
    want = ggem_reference(x.double(), p.double())
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=0)  # not 1 % off
    assert ggem_triton._checked == {"cpu": "its y differs from float64 by a relative 0.01"}


def test_switched_off_by_poolwise_native_0(interpreted, fresh_checks, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernel ran")

    monkeypatch.setattr(ggem_triton, "forward", refuse)
    monkeypatch.setenv("POOLWISE_NATIVE", "0")
    x = torch.rand(2, 9, 6) + 0.1
    assert not ggem_triton.supports(x, 1e-6)
    ggem(x, torch.tensor([2.0, 4.0]))
    assert ggem_triton._checked == {}  # not even checked
    with kernels.use_native(False):
        monkeypatch.delenv("POOLWISE_NATIVE")
        assert not ggem_triton.supports(x, 1e-6)


def test_the_interpreter_block_names_what_it_needs():
    """Without TRITON_INTERPRET=1 before torch is imported, interpreted() refuses, saying so."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from poolwise.kernels import ggem_triton\n"
            "with ggem_triton.interpreted():\n    pass\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1
    assert "RuntimeError: Triton's interpreter is off: set TRITON_INTERPRET=1 in the " \
        "environment before torch and Triton are imported" in done.stderr


@pytest.mark.parametrize("budget", [ggem_triton.FORWARD_TILE, ggem_triton.BACKWARD_TILE])
def test_tile_sizes_are_powers_of_two_within_their_budget(budget):
    for channels in (1, 3, 16, 100, 128, 768, 4096):
        for positions in (1, 7, 49, 196, 1024, 5000):
            block_n, block_c = ggem_triton.tile_sizes(channels, positions, budget)
            assert block_n & (block_n - 1) == 0 and block_c & (block_c - 1) == 0
            assert 16 <= block_c <= 128 and block_n >= 16 and block_n * block_c <= budget
            assert block_c >= min(channels, 128) and block_n >= min(positions, budget // block_c)


def _smoke(*args, env=None):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_gpu_smoke_script_runs_every_section_on_the_cpu():
    """The dry run: the engine against the plain loop, the probe's token pass, GGeM through
    Triton's interpreter and DDP over gloo with two processes, each a table."""
    done = _smoke("--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "first-use check of the Triton GGeM on cpu: passed" in out
    rows = [line for line in out.splitlines() if line.startswith("| (2, 9, 24)")]
    assert len(rows) == 3 * 2  # G in {1, 12, 24} x {float32, bfloat16}
    for header in ("### train: vit_tiny_patch16_224 (GGeM head) at 32, batch 4, bf16",
                   "### probe: the token pass", "### ggem:", "### ddp: the engine on 2 "
                   "processes over gloo"):
        assert header in out
    engine = next(line for line in out.splitlines() if line.startswith("| poolwise engine |"))
    assert float(engine.split("|")[2]) > 0
    ddp = next(line for line in out.splitlines() if line.startswith("| 2 |"))
    assert float(ddp.split("|")[2]) > 0


def test_the_gpu_smoke_script_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    done = _smoke(env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert "no CUDA device here" in done.stderr and "--dry-run" in done.stderr
