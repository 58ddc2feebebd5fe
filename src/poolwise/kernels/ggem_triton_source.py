"""The Triton source of the fused GGeM kernels (see :mod:`poolwise.kernels.ggem_triton`, which
compiles them for the GPU or runs them through Triton's interpreter, and launches them).

Plain functions, not decorated: :mod:`~poolwise.kernels.ggem_triton` wraps them in
``triton.jit`` (which Triton's interpreter replaces when ``TRITON_INTERPRET=1``). Importing this
module needs Triton.

A tile is (channels, positions): sums run along its last axis, which Triton reduces as a tree
and numpy (the interpreter) pairwise; across tiles, per-channel sums are compensated (Kahan), so
the float32 accumulation stays within a few units in the last place for any length.
"""

import triton.language as tl

__all__: list[str] = []  # read by poolwise.kernels.ggem_triton only


def _ggem_forward(x_ptr, p_ptr, y_ptr, channels, inner, positions,
                  stride_b, stride_o, stride_c, stride_i, eps,
                  BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < channels
    p = tl.load(p_ptr + cs, mask=cmask, other=1.0).to(tl.float32)
    top = tl.full([BLOCK_C], float("-inf"), tl.float32)  # running max of log2 x
    total = tl.full([BLOCK_C], 0.0, tl.float32)  # sum of 2 ** (p (log2 x - top))
    carry = tl.full([BLOCK_C], 0.0, tl.float32)  # its compensation
    bad = tl.full([BLOCK_C], 0, tl.int32)
    base = x_ptr + row.to(tl.int64) * stride_b
    for start in range(0, positions, BLOCK_N):
        ns = start + tl.arange(0, BLOCK_N)
        nmask = ns < positions
        offsets = (cs * stride_c)[:, None] \
            + ((ns // inner) * stride_o + (ns % inner) * stride_i)[None, :]
        mask = cmask[:, None] & nmask[None, :]
        x = tl.load(base + offsets, mask=mask, other=1.0).to(tl.float32)
        nonfinite = (x != x) | (x == float("inf"))
        bad = tl.maximum(bad, tl.max(nonfinite.to(tl.int32), axis=1))
        clamped = tl.where(x < eps, eps, x)
        logs = tl.log2(tl.where(nonfinite, 1.0, clamped))
        logs = tl.where(nmask[None, :], logs, float("-inf"))
        new_top = tl.maximum(top, tl.max(logs, axis=1))
        powers = tl.exp2(p[:, None] * (logs - new_top[:, None]))  # in (0, 1]; 0 off the mask
        rescale = tl.exp2(p * (top - new_top))  # 1, or 0 on the first tile
        total = total * rescale
        carry = carry * rescale
        addend = tl.sum(powers, axis=1) - carry
        summed = total + addend
        carry = (summed - total) - addend
        total = summed
        top = new_top
    y = tl.exp2(top + tl.log2(total / positions) / p)
    y = tl.where(bad > 0, float("nan"), y)
    tl.store(y_ptr + row.to(tl.int64) * channels + cs, y, mask=cmask)


def _ggem_backward(x_ptr, y_ptr, g_ptr, p_ptr, dx_ptr, w_ptr, channels, inner, positions,
                   stride_b, stride_o, stride_c, stride_i,
                   dstride_b, dstride_o, dstride_c, dstride_i, eps, tiny,
                   BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < channels
    p = tl.load(p_ptr + cs, mask=cmask, other=1.0).to(tl.float32)[:, None]
    y = tl.load(y_ptr + row.to(tl.int64) * channels + cs, mask=cmask, other=1.0)[:, None]
    g = tl.load(g_ptr + row.to(tl.int64) * channels + cs, mask=cmask, other=0.0).to(tl.float32)
    scale = (g / positions)[:, None]
    log_y = tl.log(y)
    weighted = tl.full([BLOCK_C], 0.0, tl.float32)
    carry = tl.full([BLOCK_C], 0.0, tl.float32)
    base = x_ptr + row.to(tl.int64) * stride_b
    dbase = dx_ptr + row.to(tl.int64) * dstride_b
    for start in range(0, positions, BLOCK_N):
        ns = start + tl.arange(0, BLOCK_N)
        nmask = ns < positions
        outer_at, inner_at = ns // inner, ns % inner
        offsets = (cs * stride_c)[:, None] + (outer_at * stride_o + inner_at * stride_i)[None, :]
        mask = cmask[:, None] & nmask[None, :]
        x = tl.load(base + offsets, mask=mask, other=1.0).to(tl.float32)
        x = tl.where(mask, x, y)  # off the mask x = y: z = 0, no overflow in the unused lanes
        clamped = tl.where(x < eps, eps, x)
        ratio = clamped / y
        # ln(x / y) = 2 atanh(s), s = d / (2 + d), d = (x - y) / y, by its series near 1
        # (|d| < 1/4: |s| < 1/7, six terms, 1e-9); from the two logarithms where x / y is below
        # float32's normal range
        d = (clamped - y) / y
        s = d / (2.0 + d)
        s2 = s * s
        near = 2.0 * s * (1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (
            1.0 / 9 + s2 * (1.0 / 11))))))
        log_ratio = tl.where(tl.abs(d) < 0.25, near, tl.log(ratio))
        log_ratio = tl.where(ratio < tiny, tl.log(clamped) - log_y, log_ratio)
        z = p * log_ratio
        e = tl.exp(z)  # (x / y) ** p <= n
        # z e**z - (e**z - 1) = sum_{k>=2} (k - 1) z**k / k!, by its series where |z| < 1/2
        series = z * z * (1.0 / 2 + z * (1.0 / 3 + z * (1.0 / 8 + z * (1.0 / 30 + z * (
            1.0 / 144 + z * (1.0 / 840 + z * (1.0 / 5760 + z * (1.0 / 45360))))))))
        direct = z * e - (e - 1.0)  # z is finite: log_ratio never takes log(0)
        term = tl.where(tl.abs(z) < 0.5, series, direct)
        addend = tl.sum(tl.where(mask, term, 0.0), axis=1) - carry
        summed = weighted + addend
        carry = (summed - weighted) - addend
        weighted = summed
        dx = tl.exp(z - log_ratio) * scale  # (x / y) ** (p - 1) * grad / n
        dx = tl.where(x <= eps, 0.0, dx)  # the clamp passes no gradient below eps
        doffsets = (cs * dstride_c)[:, None] \
            + (outer_at * dstride_o + inner_at * dstride_i)[None, :]
        tl.store(dbase + doffsets, dx, mask=mask)  # converted to dx's dtype
    tl.store(w_ptr + row.to(tl.int64) * channels + cs, weighted, mask=cmask)
