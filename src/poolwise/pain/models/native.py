"""The C++ direct convolution of ``direct_conv.cpp``: built on first use, loaded with ctypes.

The library is compiled once per source version, compiler and CPU class with the C++ compiler
that ``torch.compile`` on CPU needs anyway (``$CXX``, else ``g++``, ``c++`` or ``clang++``) and
cached in ``$POOLWISE_CACHE`` (default ``~/.cache/poolwise``), written atomically. Where no
compiler works, :func:`library` returns None with a warning and callers keep oneDNN's
convolution. ``POOLWISE_NATIVE_CONV=0`` switches the native path off.

:func:`conv2d_direct` is a ``torch.library`` custom op (opaque to ``torch.compile``) for 3x3,
stride-1, one-group float32 convolutions on CPU; its backward is a second op.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "conv2d_direct", "conv2d_direct_backward", "library", "supports"]

SOURCE = Path(__file__).with_name("direct_conv.cpp")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _flags() -> list[str]:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread"]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def cache_dir() -> Path:
    if os.environ.get("POOLWISE_CACHE"):
        return Path(os.environ["POOLWISE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "poolwise"


def _build(compiler: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        subprocess.run(
            [compiler, *flags, "-o", str(partial), str(SOURCE)],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(partial, target)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded library, building it if needed; None where it cannot be built or loaded."""
    if os.environ.get("POOLWISE_NATIVE_CONV", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        warnings.warn("no C++ compiler: the pain CNN keeps oneDNN's convolution", stacklevel=2)
        return None
    flags = _flags()
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), compiler, *flags, platform.machine()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"direct_conv-{key}.so"
    try:
        if not target.exists():
            _build(compiler, flags, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(
            f"building {SOURCE.name} with {compiler} failed, the pain CNN keeps oneDNN's "
            f"convolution: {detail.strip()[-500:]}",
            stacklevel=2,
        )
        return None
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    for function in (lib.pw_conv_forward, lib.pw_conv_weight_grad):
        function.argtypes = [pointer] * 4 + [integer] * 8
        function.restype = None
    return lib


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the library is built and loaded (a constant to ``torch.compile``)."""
    return library() is not None


def supports(x: Tensor, weight: Tensor, padding: list[int]) -> bool:
    """Whether :func:`conv2d_direct` handles this call (3x3 float32 CPU, padding 0 or 1)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and tuple(weight.shape[2:]) == (3, 3)
        and all(p in (0, 1) for p in padding)
        and x.shape[2] + 2 * padding[0] >= 3
        and x.shape[3] + 2 * padding[1] >= 3
        and available()
    )


def _output_size(x: Tensor, weight: Tensor, padding: list[int]) -> tuple[int, int, int, int]:
    height = x.shape[2] + 2 * padding[0] - weight.shape[2] + 1
    width = x.shape[3] + 2 * padding[1] - weight.shape[3] + 1
    return x.shape[0], weight.shape[0], height, width


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding: list[int]) -> Tensor:
    x, weight = x.contiguous(), weight.contiguous()
    out = x.new_empty(_output_size(x, weight, padding))
    if out.numel() == 0:
        return out
    library().pw_conv_forward(
        x.data_ptr(),
        weight.data_ptr(),
        None if bias is None else bias.contiguous().data_ptr(),
        out.data_ptr(),
        *x.shape,
        weight.shape[0],
        *padding,
        torch.get_num_threads(),
    )
    return out


@torch.library.custom_op("poolwise::conv2d_direct", mutates_args=())
def conv2d_direct(x: Tensor, weight: Tensor, bias: Tensor, padding: list[int]) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` by the C++ kernel; see :func:`supports`."""
    return _forward(x, weight, bias, padding)


@conv2d_direct.register_fake
def _(x, weight, bias, padding):
    return x.new_empty(_output_size(x, weight, padding))


@torch.library.custom_op("poolwise::conv2d_direct_backward", mutates_args=())
def conv2d_direct_backward(
    grad: Tensor, x: Tensor, weight: Tensor, padding: list[int], need_input_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for (x, weight, bias) of :func:`conv2d_direct`; the x gradient is zeros when
    ``need_input_grad`` is False. The x gradient is the forward kernel run on the output
    gradient with the kernel flipped in both axes and its channel axes swapped."""
    grad, x = grad.contiguous(), x.contiguous()
    if need_input_grad:
        flipped = weight.flip(2, 3).transpose(0, 1)
        grad_x = _forward(grad, flipped, None, [2 - padding[0], 2 - padding[1]])
    else:
        grad_x = x.new_zeros(x.shape)
    grad_w, grad_b = weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])
    library().pw_conv_weight_grad(
        x.data_ptr(),
        grad.data_ptr(),
        grad_w.data_ptr(),
        grad_b.data_ptr(),
        *x.shape,
        weight.shape[0],
        *padding,
        torch.get_num_threads(),
    )
    return grad_x, grad_w, grad_b


@conv2d_direct_backward.register_fake
def _(grad, x, weight, padding, need_input_grad):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, padding = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding = padding


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0]
    grad_x, grad_w, grad_b = conv2d_direct_backward(grad, x, weight, ctx.padding, need_x)
    return (grad_x if need_x else None), grad_w, grad_b, None


conv2d_direct.register_autograd(_backward, setup_context=_setup_context)
