"""The native-kernel layer: bindings read from the header, a cache that loads only what it
built, and fallbacks that warn once."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from poolwise import kernels
from poolwise._io import sha256_file
from poolwise.kernels import build
from poolwise.pooling import ggem, ggem_reference

COMPILER = shutil.which("g++") or shutil.which("c++")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="needs a C++ compiler")

PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
  const char* path = getenv("POOLWISE_TEST_MARKER");
  FILE* f = path ? fopen(path, "w") : NULL;
  if (f) { fputs("planted code ran", f); fclose(f); }
}
extern "C" int pw_abi_version(void) { return %d; }
"""


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh cache folder and a fresh library() for the test; the process's own afterwards."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("POOLWISE_CACHE", str(folder))
    monkeypatch.delenv("POOLWISE_NATIVE", raising=False)
    build.library.cache_clear()
    yield folder
    build.library.cache_clear()


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """A cache folder holding the library this machine builds, compiled once for the tests
    that start from a built cache (each copies it, so the compiler runs once, not per test)."""
    folder = tmp_path_factory.mktemp("built") / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POOLWISE_CACHE", str(folder))
        patch.delenv("POOLWISE_NATIVE", raising=False)
        build.library.cache_clear()
        assert build.library() is not None
    build.library.cache_clear()
    return folder


def _planted_library(path, abi: int = 2) -> None:
    source = path.with_suffix(".cpp")
    source.write_text(PLANTED % abi)
    subprocess.run([COMPILER, "-shared", "-fPIC", "-o", str(path), str(source)], check=True)
    source.unlink()


def _built(folder):
    (library,) = folder.glob("poolwise_kernels-*.so")
    return library, library.with_suffix(".json")


def test_prototypes_come_from_the_header():
    found, abi = build.prototypes()
    by_name = {p.name: p for p in found}
    assert abi >= 1 and by_name["pw_abi_version"].restype is ctypes.c_int32
    forward = by_name["pw_ggem_forward"]
    assert forward.restype is ctypes.c_int64
    assert forward.argtypes == (
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32,
    )
    assert {"pw_conv_forward", "pw_bn_relu_pool_backward", "pw_ggem_backward"} <= set(by_name)


@needs_compiler
def test_built_once_into_a_private_folder_with_its_hash(cache):
    assert build.library() is not None
    library, record = _built(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    facts = json.loads(record.read_text())
    assert facts["sha256"] == sha256_file(library) and facts["abi"] == build.prototypes()[1]
    stamp = library.stat().st_mtime_ns
    build.library.cache_clear()
    assert build.library() is not None
    assert library.stat().st_mtime_ns == stamp  # verified and loaded, not rebuilt


@needs_compiler
@pytest.mark.parametrize("record", ["kept", "missing", "forged-abi"])
def test_a_planted_library_never_runs(cache, built_once, monkeypatch, tmp_path, record):
    """A library swapped in under the cached name (its record then names another hash, or is
    gone, or claims another ABI) is rebuilt, never loaded: its constructor must not run."""
    shutil.copytree(built_once, cache)  # modes kept: a private folder of private files
    assert build.library() is not None
    library, record_path = _built(cache)
    stamp = library.stat().st_mtime_ns
    build.library.cache_clear()
    assert build.library() is not None and library.stat().st_mtime_ns == stamp  # loaded
    _planted_library(library)
    if record == "missing":
        record_path.unlink()
    elif record == "forged-abi":
        facts = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**facts, "sha256": sha256_file(library), "abi": 0}))
    marker = tmp_path / "marker"
    monkeypatch.setenv("POOLWISE_TEST_MARKER", str(marker))
    build.library.cache_clear()
    assert build.library() is not None
    assert not marker.exists()
    assert json.loads(record_path.read_text())["sha256"] == sha256_file(library)


@needs_compiler
def test_a_folder_others_can_write_is_refused(cache):
    cache.mkdir(mode=0o700)
    cache.chmod(0o777)
    with pytest.warns(UserWarning, match=rf"{cache} is writable by others .*chmod go-w"):
        assert build.library() is None
    assert list(cache.iterdir()) == []
    with kernels.use_native(True):  # the op still works, on the PyTorch path
        x, p = torch.rand(2, 9, 8), torch.tensor([2.0, 3.0])
        torch.testing.assert_close(ggem(x, p), ggem_reference(x, p))


@needs_compiler
def test_a_folder_owned_by_someone_else_is_refused(cache, monkeypatch):
    cache.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: cache.stat().st_uid + 1)
    with pytest.warns(UserWarning, match=rf"{cache} is owned by uid .*POOLWISE_CACHE"):
        assert build.library() is None


@needs_compiler
def test_missing_symbol_and_wrong_abi_name_the_library(tmp_path):
    _, abi = build.prototypes()
    wrong = tmp_path / "wrong_abi.so"
    _planted_library(wrong, abi=abi + 1)
    lib = ctypes.CDLL(str(wrong))
    with pytest.raises(OSError, match=rf"{wrong} has no symbol pw_conv_forward"):
        build._bind(lib, wrong, abi)
    source = tmp_path / "full.cpp"
    source.write_text(
        "#include <stdint.h>\n"
        + "".join(
            f"extern \"C\" void {p.name}() {{}}\n"
            for p in build.prototypes()[0]
            if p.name != "pw_abi_version"
        )
        + f'extern "C" int32_t pw_abi_version(void) {{ return {abi + 1}; }}\n'
    )
    full = tmp_path / "full.so"
    subprocess.run(
        [COMPILER, "-shared", "-fPIC", "-o", str(full), str(source)],
        check=True, capture_output=True,
    )
    with pytest.raises(OSError, match=rf"{full} was built for ABI version {abi + 1}"):
        build._bind(ctypes.CDLL(str(full)), full, abi)


def test_switched_off_quietly_and_a_failing_compiler_warns_once(cache, monkeypatch):
    monkeypatch.setenv("POOLWISE_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.library() is None
    monkeypatch.delenv("POOLWISE_NATIVE")
    monkeypatch.setenv("CXX", shutil.which("false") or "false")
    build.library.cache_clear()
    with pytest.warns(UserWarning, match=r"building .*ggem\.cpp.* failed") as caught:
        assert build.library() is None
        assert build.library() is None
    assert len(caught) == 1
    assert not list(cache.glob("*.so"))


def test_an_unknown_instruction_set_is_named(cache, monkeypatch):
    monkeypatch.setenv("POOLWISE_CPU_ISA", "sse9")
    with pytest.warns(UserWarning, match=r"POOLWISE_CPU_ISA='sse9' is not one of"):
        assert build.library() is None


@needs_compiler
@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_narrower_builds_give_the_same_values(cache, monkeypatch, isa):
    """The portable 4-lane build (any CPU) and the AVX2 build agree with float64."""
    if isa == "avx2" and build.instruction_set() == "baseline":
        pytest.skip("this CPU has no AVX2")
    monkeypatch.setenv("POOLWISE_CPU_ISA", isa)
    assert build.library() is not None
    torch.manual_seed(0)
    p = torch.tensor([0.7, 3.0, 9.0])
    for x, cdim in ((torch.rand(3, 37, 21) * 4, -1), (torch.rand(2, 21, 7, 5) * 4, 1)):
        x32, p32 = x.clone().requires_grad_(), p.clone().requires_grad_()
        ggem(x32, p32, channel_dim=cdim).square().sum().backward()
        x64, p64 = x.double().requires_grad_(), p.double().requires_grad_()
        want = ggem_reference(x64, p64, channel_dim=cdim)
        want.square().sum().backward()
        got = ggem(x, p, channel_dim=cdim).double()
        torch.testing.assert_close(got, want.detach(), rtol=2e-6, atol=0)
        torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-4, atol=1e-6)


def _coefficients(text: str, function: str) -> list[float]:
    """The Horner coefficients of one simd.h function, lowest degree first."""
    body = text.split(f"inline {function}", 1)[1].split("\n}\n", 1)[0]
    first = re.search(r"vf poly = vsplat\(([-+0-9.e]+)f\);", body)
    steps = re.findall(r"poly = poly \* \w ([-+]) ([0-9.e+-]+)f;", body)
    values = [float(first[1])] + [float(v) * (-1 if sign == "-" else 1) for sign, v in steps]
    return values[::-1]


def test_simd_polynomials_are_the_fitted_ones():
    """simd.h holds the coefficients tools/fit_kernel_polynomials.py fits, with its error."""
    path = Path(__file__).parents[1] / "tools" / "fit_kernel_polynomials.py"
    spec = importlib.util.spec_from_file_location("fit_kernel_polynomials", path)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    text = (build.CSRC / "simd.h").read_text()
    inv_c, log2_c, lo_r, hi_r = fit.log2_table()
    assert -0.0304 < lo_r < 0 < hi_r < 0.0304
    cases = [
        ("vf vlog2_poly(vf x)", fit.log2_quotient, np.sqrt(0.5) - 1, np.sqrt(2) - 1, 7, 2.1e-7),
        ("vf vexp2m1_reduced(vf r)", fit.exp2_quotient, -0.5, 0.5, 5, 2.1e-8),
        ("vf vlog2_table(vf x)", fit.log2_quotient, lo_r, hi_r, 2, 1.8e-6),
    ]
    for function, quotient, lo, hi, degree, bound in cases:
        fitted, error = fit.fit(quotient, lo, hi, degree)
        assert error < bound
        np.testing.assert_allclose(_coefficients(text, function), fitted, rtol=1e-8)
    for name, values in (("kLog2InvC", inv_c), ("kLog2C", log2_c)):
        body = re.search(name + r"\[16\] = \{([^}]*)\}", text).group(1)
        np.testing.assert_array_equal(
            np.array([float(v.strip().rstrip("f")) for v in body.split(",")], np.float32),
            values.astype(np.float32))


@needs_compiler
def test_ggem_ops_pass_opcheck_and_count_what_they_leave():
    """The custom ops agree with their fake versions (torch.library.opcheck), and the eager
    calls return how many (b, c) they left to the caller: none for plain input, one per
    channel of the chunk (the whole 12-channel row here) where an inf sits."""
    from poolwise.kernels import ggem as native_ggem

    x = torch.rand(3, 7, 12) + 0.1
    p = torch.full((12,), 3.0)
    y, redo, count = native_ggem.forward(x, p, 1e-6, 2)
    assert count == 0 and not redo.any()
    torch.library.opcheck(native_ggem.ggem_forward, (x, p, 1e-6, 2))
    grad = torch.rand(3, 12)
    torch.library.opcheck(native_ggem.ggem_backward, (x, y, grad, p, 1e-6, 2))
    x[1, 2, 5] = float("inf")
    _, redo, count = native_ggem.forward(x, p, 1e-6, 2)
    assert count == int(redo.sum()) == 12 and redo[1].all()
    _, _, redo, count = native_ggem.backward(x, y, grad, p, 1e-6, 2)
    assert count == int(redo.sum()) == 12 and redo[1].all()
