"""The fused GGeM ops for GPUs, written in Triton: one pass over x forward, one backward.

The same contract as the native CPU kernel (:mod:`poolwise.kernels.ggem`): x with channels at
``cdim`` (any dims before and after, viewed as ``(B, outer, C, inner)``), per-channel exponents
(C,) (so contiguous and interleaved groups alike), ``eps``; float32, float16 or bfloat16 x, read
in its own dtype and accumulated in float32. Strided inputs whose dims merge into that view
(tokens after the CLS token is sliced off, say) are read in place; others are made contiguous
first.

- **Forward**, one program per (sample, block of channels): a running max-shifted sum over
  tiles of positions, ``m = max log2 x`` and ``s = sum 2 ** (p (log2 x - m))``, rescaled when a
  tile raises m, so every power lies in (0, 1] and no input or p overflows or underflows (the
  CPU kernel needs a second, shifted pass for those rows; here there is none). A channel that
  holds NaN or +inf gives NaN, as the plain formula does.
- **Backward**, the same grid: dx = (x / y) ** (p - 1) * grad / n (0 where x <= eps) and, per
  (b, c), ``weighted = sum_n [z e**z - (e**z - 1)]`` with ``z = p ln(x / y)``, from which the
  caller forms dL/dp. ``ln(x / y)`` near 0 comes from ``2 atanh(d / (2 + d))``, d = (x - y) / y,
  and the summand near z = 0 from its series (z**2 / 2 + z**3 / 3 + ...), so nearly constant
  channels keep their digits even where the GPU's ``log`` and ``exp`` are approximations.

No N x C temporary is written; the outputs are y (B, C) float32, dx like x, weighted (B, C)
float32.

Before the kernel serves a device for the first time, it runs once on a small input on that
device and is compared with float64 plain PyTorch ops; a compile error or a mismatch turns it off
for that device with one warning naming the reason, and GGeM there takes the PyTorch-ops path.
``POOLWISE_NATIVE=0`` (or :func:`poolwise.kernels.use_native`) turns it off like the CPU kernel.

Triton's interpreter runs the same kernels on CPU tensors (numpy semantics): within
:func:`interpreted`, CPU inputs are served by the interpreted kernels, which is how the tests
prove the arithmetic, masking, grid and autograd wiring on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import threading
import warnings
from collections.abc import Iterator
from functools import lru_cache

import torch
from torch import Tensor

from poolwise import kernels

__all__ = [
    "available", "backward", "failure", "forward", "interpreted", "ready", "supports", "tile_sizes",
]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLOAT32_TINY = torch.finfo(torch.float32).tiny
_interpret = {"on": False}
_checked: dict[str, str | None] = {}  # device -> None when the kernel passed, else the reason
_lock = threading.Lock()


def available() -> bool:
    """Whether Triton is installed and the fused kernels are not switched off."""
    return kernels.enabled() and _triton_installed()


@lru_cache(maxsize=1)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@contextlib.contextmanager
def interpreted() -> Iterator[None]:
    """Within the block, CPU inputs are served by the Triton kernels run through Triton's
    interpreter (numpy semantics, slow): for tests on machines without a GPU.

    Raises:
        RuntimeError: if Triton is missing, or its interpreter is off (``TRITON_INTERPRET=1``
            must be in the environment before Triton is first imported).
    """
    if not _triton_installed():
        raise RuntimeError("Triton's interpreter needs Triton: pip install triton")
    if not interpreter_on():
        raise RuntimeError(
            "Triton's interpreter is off: set TRITON_INTERPRET=1 in the environment before "
            "torch and Triton are imported (Triton wraps its library functions for the compiler "
            "or the interpreter at import)"
        )
    before = _interpret["on"]
    _interpret["on"] = True
    try:
        yield
    finally:
        _interpret["on"] = before


def supports(x: Tensor, eps: float) -> bool:
    """Whether the Triton kernel serves this input: a CUDA tensor (or a CPU tensor within
    :func:`interpreted`) of float32 / float16 / bfloat16, ``eps`` a normal float32, Triton
    installed and switched on, and the device's first-use check passed."""
    on_device = x.device.type == "cuda" or (x.device.type == "cpu" and _interpret["on"])
    return (
        on_device
        and x.dtype in DTYPES
        and _FLOAT32_TINY <= eps < math.inf
        and available()
        and ready(x.device)
    )


# Elements per tile: the forward keeps about eight values per element live, the backward about
# fifteen; with 8 warps (256 threads) these budgets hold 16 and 8 elements per thread.
FORWARD_TILE, BACKWARD_TILE, WARPS = 4096, 2048, 8


def tile_sizes(channels: int, positions: int, elements: int = FORWARD_TILE) -> tuple[int, int]:
    """(positions, channels) per tile: up to 128 channels and ``elements`` elements, powers of
    two, at least 16 each."""
    from triton import next_power_of_2

    block_c = max(16, min(128, next_power_of_2(channels)))
    block_n = max(16, min(elements // block_c, next_power_of_2(positions)))
    return block_n, block_c


@lru_cache(maxsize=1)
def _compiled():
    """(forward, backward) kernels through ``triton.jit``: compiled for the GPU, or run by
    Triton's interpreter when ``TRITON_INTERPRET=1``. Imported on first use, so that importing
    poolwise never needs Triton."""
    import triton

    from poolwise.kernels import ggem_triton_source as source

    return triton.jit(source._ggem_forward), triton.jit(source._ggem_backward)


def interpreter_on() -> bool:
    """Whether Triton runs kernels through its interpreter: ``TRITON_INTERPRET=1`` now, and when
    Triton was imported (its own library functions, ``tl.max`` say, are wrapped then; importing
    torch's compiler imports Triton, so the variable must be set before torch is imported)."""
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return bool(triton.knobs.runtime.interpret) and isinstance(tl.max, InterpretedFunction)


# --- launchers ---------------------------------------------------------------------------------


def _view4(x: Tensor, cdim: int) -> Tensor:
    """x as (B, outer, C, inner), in place where its strides allow, else a contiguous copy."""
    shape = (x.shape[0], math.prod(x.shape[1:cdim]), x.shape[cdim], math.prod(x.shape[cdim + 1:]))
    try:
        return x.view(shape)
    except RuntimeError:
        return x.contiguous().view(shape)


def _launch(kernel, grid, x: Tensor, *args, **meta) -> None:
    context = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with context:
        kernel[grid](*args, **meta, num_warps=WARPS)


def forward(x: Tensor, p: Tensor, eps: float, cdim: int) -> Tensor:
    """y (B, C) float32 for x of float32 / float16 / bfloat16 and per-channel p (C,); every
    (b, c) is final (nothing is left to the caller, unlike the CPU kernel)."""
    import triton

    v = _view4(x, cdim)
    batch, outer, channels, inner = v.shape
    y = torch.empty(batch, channels, dtype=torch.float32, device=x.device)
    block_n, block_c = tile_sizes(channels, outer * inner)
    kernel, _ = _compiled()
    grid = (batch, triton.cdiv(channels, block_c))
    _launch(kernel, grid, x, v, p.to(torch.float32).contiguous(), y, channels, inner,
            outer * inner, *v.stride(), float(eps), BLOCK_N=block_n, BLOCK_C=block_c)
    return y


def backward(
    x: Tensor, y: Tensor, grad: Tensor, p: Tensor, eps: float, cdim: int
) -> tuple[Tensor, Tensor]:
    """(grad_x, contiguous, in x's dtype; weighted (B, C) float32), where
    ``weighted[b, c] = sum_n [z e**z - (e**z - 1)]``, ``z = p ln(x / y)``, from which
    ``dL/dp = sum_b grad * y * weighted / (p**2 n)``."""
    import triton

    v = _view4(x, cdim)
    batch, outer, channels, inner = v.shape
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dv = grad_x.view(v.shape)
    weighted = torch.empty(batch, channels, dtype=torch.float32, device=x.device)
    block_n, block_c = tile_sizes(channels, outer * inner, BACKWARD_TILE)
    _, kernel = _compiled()
    grid = (batch, triton.cdiv(channels, block_c))
    _launch(kernel, grid, x, v, y.to(torch.float32).contiguous(), grad.contiguous(),
            p.to(torch.float32).contiguous(), dv, weighted, channels, inner, outer * inner,
            *v.stride(), *dv.stride(), float(eps), _FLOAT32_TINY,
            BLOCK_N=block_n, BLOCK_C=block_c)
    return grad_x, weighted


# --- first use on a device -----------------------------------------------------------------


def ready(device: torch.device) -> bool:
    """Whether the kernel passed its first-use check on ``device``; runs the check the first
    time a device is asked about and warns once, naming the reason, where it fails."""
    key = _device_key(device)
    with _lock:
        if key not in _checked:
            reason = _first_use_failure(torch.device(key))
            _checked[key] = reason
            if reason is not None:
                warnings.warn(
                    f"poolwise: the Triton GGeM kernel is not used on {key} ({reason}); GGeM "
                    "there takes the PyTorch-ops path, with the same results, more slowly. "
                    "POOLWISE_NATIVE=0 turns the fused kernels off without this check.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return _checked[key] is None


def failure(device: torch.device) -> str | None:
    """Why the kernel does not serve ``device`` (its first-use check's finding), or None."""
    with _lock:
        return _checked.get(_device_key(device))


def _device_key(device: torch.device) -> str:
    """``cuda`` without an index names the current CUDA device."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def forget_checks() -> None:
    """Forgets every device's first-use check (for tests that inject a failure)."""
    with _lock:
        _checked.clear()


def check_case(device: torch.device) -> tuple[Tensor, Tensor, Tensor, float]:
    """The first-use check's input: (x (3, 37, 48) float32 with clamped entries, a nearly
    constant channel and a large-p group; p (48,) from 6 groups; grad (3, 48); eps)."""
    g = torch.Generator().manual_seed(20221208)
    x = torch.rand(3, 37, 48, generator=g) * 4 + 0.05
    x[:, ::5, 3] = -1.0  # clamped
    x[..., 7] = 600.0 + torch.rand(3, 37, generator=g)  # nearly constant
    x[1, :, 40:] *= 1e3  # large values at p = 24
    p = torch.tensor([1.0, 1.5, 3.0, 4.5, 8.0, 24.0]).repeat_interleave(8)
    grad = torch.rand(3, 48, generator=g) - 0.5
    return x.to(device), p.to(device), grad.to(device), 1e-6


def expected(x: Tensor, p: Tensor, grad: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(y, grad_x, weighted) of tokens x (B, N, C) in float64 from plain PyTorch ops."""
    x64, p64, g64 = x.double(), p.double(), grad.double()
    clamped = x64.clamp(min=eps)
    top = clamped.amax(1, keepdim=True)
    y = (top * (clamped / top).pow(p64).mean(1, keepdim=True).pow(1 / p64)).squeeze(1)
    z = p64 * torch.log(clamped / y[:, None])
    weighted = (z * torch.exp(z) - torch.expm1(z)).sum(1)
    grad_x = (clamped / y[:, None]).pow(p64 - 1) * (g64 / x.shape[1])[:, None]
    return y, grad_x.masked_fill(x64 <= eps, 0.0), weighted


def _first_use_failure(device: torch.device) -> str | None:
    """None when the kernels compile and agree with float64 plain ops on :func:`check_case`;
    else the reason, in a few words."""
    try:
        x, p, grad, eps = check_case(device)
        y = forward(x, p, eps, 2)
        grad_x, weighted = backward(x, y, grad, p, eps, 2)
        want = expected(x, p, grad, eps)
        for name, got, ref in zip(("y", "grad_x", "weighted"), (y, grad_x, weighted), want,
                                  strict=True):
            scale = ref.abs().amax().clamp(min=1e-30)
            error = ((got.double() - ref).abs() / (ref.abs() + 1e-6 * scale)).amax()
            if not bool(torch.isfinite(got).all()) or float(error) > 1e-4:
                return f"its {name} differs from float64 by a relative {float(error):.2g}"
    except Exception as error:  # a compile error, a missing driver, a launch failure
        first = (str(error).strip().splitlines() or [""])[0][:200]
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    return None
