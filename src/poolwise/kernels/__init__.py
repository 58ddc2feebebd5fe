"""poolwise's native CPU kernels: one library built from ``csrc/``, one loader, one switch.

- :mod:`poolwise.kernels.build` builds, caches, verifies and loads the library (see there for
  the cache's safety rules and ``POOLWISE_NATIVE`` / ``POOLWISE_CPU_ISA`` / ``POOLWISE_CACHE``);
- :mod:`poolwise.kernels.conv` registers the pain CNN's convolution and batch-norm ops;
- :mod:`poolwise.kernels.ggem` registers the fused GGeM forward and backward (the native
  kernel on CPU, the Triton kernel of :mod:`poolwise.kernels.ggem_triton` on CUDA).

Every op has a PyTorch fallback that its caller uses where its kernel is not available.
``POOLWISE_NATIVE=0`` and :func:`use_native` switch every fused kernel off, CPU and GPU alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from poolwise.kernels.build import library

__all__ = ["available", "enabled", "library", "use_native"]

_switch = {"on": True}


def enabled() -> bool:
    """Whether fused kernels may be used: not switched off by :func:`use_native` or by
    ``POOLWISE_NATIVE=0``."""
    return _switch["on"] and os.environ.get("POOLWISE_NATIVE", "1") != "0"


def available() -> bool:
    """Whether the native CPU library is loaded and not switched off by :func:`use_native`."""
    return _switch["on"] and library() is not None


@contextlib.contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Within the block, native kernels are used (where built) or not: for tests and
    benchmarks that compare the two paths."""
    before = _switch["on"]
    _switch["on"] = bool(enabled)
    try:
        yield
    finally:
        _switch["on"] = before
