"""Log records of other libraries that mislead on the machines poolwise targets."""

from __future__ import annotations

import logging

_CUDA_NOTICE = "No CUDA runtime is found"


def _not_cuda_home_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CUDA_NOTICE)


def hide_cuda_home_notice() -> None:
    """Drops ``torch.utils.cpp_extension``'s "No CUDA runtime is found, using CUDA_HOME=..."
    warning, which ``torch.compile`` triggers on every CPU-only run where a CUDA toolkit is
    installed: poolwise compiles C++ for the CPU there, and the CUDA toolkit is not used.
    Idempotent; other records of that logger pass."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if _not_cuda_home_notice not in logger.filters:
        logger.addFilter(_not_cuda_home_notice)
