"""Builds, caches, verifies and loads poolwise's native library (``csrc/*.cpp``).

The library is compiled once per source text, compiler, flags and machine with the C++
compiler that ``torch.compile`` on CPU needs anyway (``$CXX``, else ``g++``, ``c++`` or
``clang++``), for the widest instruction set the CPU has (``POOLWISE_CPU_ISA`` = ``avx512``,
``avx2`` or ``baseline`` overrides it), and cached in ``$POOLWISE_CACHE`` (default
``$XDG_CACHE_HOME/poolwise`` or ``~/.cache/poolwise``).

Loading native code from a cache is running it, so the cache only loads what it built:

- the folder is created with mode 0700 and refused if it is not owned by the user or is
  writable by anyone else;
- beside each library a record ``<name>.json`` (written atomically after the library) holds
  the library's sha256, the ABI version and the build's inputs; a library is loaded only if it
  is owned by the user, not writable by others, and hashes to its record; otherwise it is
  rebuilt;
- once loaded, ``pw_abi_version()`` must return the ``PW_ABI_VERSION`` of
  ``csrc/poolwise_kernels.h``, and every function that header declares must be present.

The ctypes bindings are read from the same header, so argument and return types are declared
once, in C. Where anything fails, :func:`library` returns None after one warning that names the
path and the cause; callers keep their PyTorch paths. ``POOLWISE_NATIVE=0`` switches the native
library off without a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from poolwise._io import read_json, sha256_file, write_json

__all__ = [
    "CSRC",
    "HEADER",
    "Prototype",
    "UnsafeCacheError",
    "cache_dir",
    "instruction_set",
    "library",
    "prototypes",
    "secure_cache_dir",
]

CSRC = Path(__file__).with_name("csrc")
HEADER = CSRC / "poolwise_kernels.h"
_PREFIX = "poolwise_kernels-"

_C_TYPES = {
    "void": None,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}
# OpenMP: the library's threads then come from the OpenMP runtime PyTorch has loaded
_OPENMP = "-fopenmp"
_PROTOTYPE = re.compile(r"^(?P<ret>[\w ]+?)\s+(?P<name>pw_\w+)\((?P<args>[^)]*)\);$")


class UnsafeCacheError(RuntimeError):
    """The cache folder could be written by someone else: nothing in it may be loaded."""


@dataclass(frozen=True)
class Prototype:
    """One exported C function: its name, ctypes return type and argument types."""

    name: str
    restype: type | None
    argtypes: tuple


def _ctype(declaration: str, where: str):
    """The ctypes type of a parameter (``const float* x``) or return type (``void``); a
    pointer of any kind is passed as an address."""
    if "*" in declaration:
        return ctypes.c_void_p
    name = declaration.replace("const ", "").split()[0]
    if name not in _C_TYPES:
        raise ValueError(f"{HEADER}: unsupported C type {declaration!r} in {where}")
    return _C_TYPES[name]


@functools.cache
def prototypes() -> tuple[tuple[Prototype, ...], int]:
    """Every function declared in ``poolwise_kernels.h`` and its ``PW_ABI_VERSION``."""
    text = HEADER.read_text()
    version = re.search(r"^#define PW_ABI_VERSION (\d+)$", text, re.M)
    if version is None:
        raise ValueError(f"{HEADER} defines no PW_ABI_VERSION")
    found = []
    for line in text.splitlines():
        match = _PROTOTYPE.match(line.strip())
        if match is None:
            continue
        name, args = match["name"], match["args"].strip()
        params = [] if args in ("", "void") else [a.strip() for a in args.split(",")]
        types = tuple(_ctype(param, name) for param in params)
        found.append(Prototype(name, _ctype(match["ret"], name), types))
    return tuple(found), int(version[1])


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def instruction_set() -> str:
    """``avx512``, ``avx2`` or ``baseline``: the widest the CPU allows, or ``POOLWISE_CPU_ISA``."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    capability = torch.backends.cpu.get_cpu_capability() if x86 else "DEFAULT"
    best = {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "baseline")
    asked = os.environ.get("POOLWISE_CPU_ISA", "").lower()
    if not asked:
        return best
    order = ["baseline", "avx2", "avx512"]
    if asked not in order:
        raise ValueError(f"POOLWISE_CPU_ISA={asked!r} is not one of {order}")
    if order.index(asked) > order.index(best):
        raise ValueError(f"POOLWISE_CPU_ISA={asked!r}: this CPU supports at most {best!r}")
    return asked


def _flags(isa: str) -> list[str]:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=fast", _OPENMP]
    if isa == "avx512":
        flags += ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma",
                  "-DPW_LANES=16"]
    elif isa == "avx2":
        flags += ["-mavx2", "-mfma", "-DPW_LANES=8"]
    else:
        flags += ["-DPW_LANES=4"]
    return flags


def cache_dir() -> Path:
    """Where built libraries live (not created here)."""
    if os.environ.get("POOLWISE_CACHE"):
        return Path(os.environ["POOLWISE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "poolwise"


def _check_private(path: Path, what: str) -> None:
    info = path.stat()
    if info.st_uid != os.getuid():
        raise UnsafeCacheError(
            f"{what} {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}): "
            "poolwise loads native code only from a folder only you can write; set "
            "POOLWISE_CACHE to a folder of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(
            f"{what} {path} is writable by others (mode {stat.filemode(info.st_mode)}): "
            f"poolwise loads native code only from a folder only you can write; run "
            f"`chmod go-w {path}` or set POOLWISE_CACHE to a folder of your own"
        )


def secure_cache_dir() -> Path:
    """The cache folder, created with mode 0700 where missing.

    Raises:
        UnsafeCacheError: if it is not owned by the user or is writable by others.
    """
    folder = cache_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    _check_private(folder, "the kernel cache folder")
    return folder


def _build_key(compiler: str, flags: list[str]) -> str:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    parts = [HEADER.read_text(), (CSRC / "simd.h").read_text()]
    parts += [f"{s.name}\0{s.read_text()}" for s in _sources()]
    parts += [compiler, *version, *flags, platform.machine()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.cpp"))


def _compile(compiler: str, flags: list[str], output: Path) -> list[str]:
    """Compiles the library; without OpenMP where the compiler has none. Returns the flags
    used."""
    command = [compiler, *flags, f"-I{CSRC}", "-o", str(output), *map(str, _sources())]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        return flags
    except subprocess.CalledProcessError:
        if _OPENMP not in flags:
            raise
    plain = [flag for flag in flags if flag != _OPENMP]
    return _compile(compiler, plain, output)


@contextlib.contextmanager
def _building(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<folder>/.build.lock`` for the block: processes that start
    together (test workers, DDP ranks) build the library once, not over each other."""
    import fcntl

    fd = os.open(folder / ".build.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _build(compiler: str, flags: list[str], target: Path, record: Path, abi: int) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        flags = _compile(compiler, flags, partial)
        os.chmod(partial, 0o700)
        digest = sha256_file(partial)
        os.replace(partial, target)
    write_json(record, {"abi": abi, "compiler": compiler, "flags": flags, "sha256": digest})
    os.chmod(record, 0o600)


def _verified(target: Path, record: Path, abi: int) -> bool:
    """Whether ``target`` is the library this cache built (see the module docstring)."""
    if not (target.is_file() and record.is_file()):
        return False
    try:
        facts = read_json(record, "kernel library record")
        _check_private(target, "the cached library")
        _check_private(record, "the cached library's record")
    except (ValueError, OSError, UnsafeCacheError):
        return False
    return (
        isinstance(facts, dict)
        and facts.get("abi") == abi
        and facts.get("sha256") == sha256_file(target)
    )


def _bind(lib: ctypes.CDLL, path: Path, abi: int) -> None:
    """Checks the ABI version and declares every function's types; raises OSError naming
    the library and the symbol at fault."""
    found, _ = prototypes()
    for proto in found:
        try:
            function = getattr(lib, proto.name)
        except AttributeError as error:
            raise OSError(f"{path} has no symbol {proto.name}, which {HEADER.name} declares") \
                from error
        function.restype = proto.restype
        function.argtypes = list(proto.argtypes)
    built = lib.pw_abi_version()
    if built != abi:
        raise OSError(f"{path} was built for ABI version {built}, {HEADER.name} is at {abi}")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded, verified library, building it if needed; None (after one warning) where it
    cannot be built, verified or loaded, and silently with ``POOLWISE_NATIVE=0``."""
    if os.environ.get("POOLWISE_NATIVE", "1") == "0":
        return None
    names = ", ".join(source.name for source in _sources())
    fallback = "poolwise keeps its PyTorch kernels"
    compiler = _compiler()
    if compiler is None:
        warnings.warn(f"no C++ compiler found for {names}: {fallback}", stacklevel=2)
        return None
    try:
        flags = _flags(instruction_set())
        _, abi = prototypes()
        folder = secure_cache_dir()
        key = _build_key(compiler, flags)
        target = folder / f"{_PREFIX}{key}.so"
        record = folder / f"{_PREFIX}{key}.json"
        if not _verified(target, record, abi):
            with _building(folder):  # one builder at a time; the others then find its library
                if not _verified(target, record, abi):
                    _build(compiler, flags, target, record, abi)
            if not _verified(target, record, abi):
                raise OSError(f"{target} does not match the hash recorded when it was built")
        lib = ctypes.CDLL(str(target))
        _bind(lib, target, abi)
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or str(error)).strip()[-500:]
        warnings.warn(f"building {names} with {compiler} failed, {fallback}: {detail}",
                      stacklevel=2)
        return None
    except (OSError, UnsafeCacheError, ValueError) as error:
        warnings.warn(f"native kernels unavailable ({error}); {fallback}", stacklevel=2)
        return None
    return lib
