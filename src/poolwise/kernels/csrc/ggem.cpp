// Fused GGeM forward and backward on the CPU, float32.
//
// x is viewed as (batch, outer, channels, inner), contiguous, and pooled over outer and inner:
// ViT tokens (B, N, C) are (B, N, C, 1); maps (B, C, H, W) are (B, 1, C, H * W); series
// (B, C, T) are (B, 1, C, T). p holds one exponent per channel.
//
//   forward   y[b, c] = (mean_n max(x, eps) ** p[c]) ** (1 / p[c])
//   backward  grad_x = (x / y) ** (p - 1) * grad_y / n   (0 where x <= eps)
//             weighted[b, c] = sum_n [z e**z - (e**z - 1)],  z = p ln(x / y)
//
// from which the caller forms dL/dp[c] = sum_b grad_y * y * weighted / (p**2 n) (see
// poolwise/pooling/functional.py for the derivation). Each pass reads x once, evaluates the
// logarithm and exponential with the polynomials of simd.h in registers and accumulates in
// float over at most kFlush rows, then in double; no temporary of x's size is written.
//
// A (b, c) whose inputs hold inf or NaN, whose sum of powers leaves [2**-63, 2**127) (a power
// overflowed, or the ones that underflowed may weigh something), or whose backward meets a
// ratio x / y below FLT_MIN, is not computed here: redo[b, c] is set to 1 and the caller
// recomputes those batch rows with its max-shifted formulation, exact for every input.

#include <cfloat>
#include <cmath>

#include "poolwise_kernels.h"
#include "simd.h"

namespace {

using pw::kLanes;
using pw::vf;
using pw::vi;

constexpr int kFlush = 8;  // float partial sums span at most this many rows (then double)
// Channels per work item in the channels-last layout: whole rows up to 2048 channels, so that
// a sample's rows stream contiguously (a row split into 4 KB pieces, every one a page of its
// own, read 35 % slower at (32, 49, 2048)); a multiple of every kLanes.
constexpr int64_t kChunk = 2048;
constexpr double kLowSum = 1.0842021724855044e-19;  // 2**-63
constexpr double kHighSum = 1.7014118346046923e38;  // 2**127

struct View {
  int64_t batch, outer, channels, inner;
  int64_t n() const { return outer * inner; }
  const float* row(const float* x, int64_t b, int64_t a) const {
    return x + (b * outer + a) * channels * inner;
  }
};

// probe + x * 0: stays 0 while every x is finite and turns NaN for good at an inf or NaN
// (one fused multiply-add; it cannot overflow as a sum of x could).
inline vf probe_finite(vf probe, vf x) { return x * 0.0f + probe; }

// max(x, eps) ** p, with x added to `probe` (probe_finite).
inline vf power(vf x, vf p, float eps, vf& probe) {
  probe = probe_finite(probe, x);
  const vf xc = pw::vmaxf(x, pw::vsplat(eps));  // NaN -> eps, flagged through the probe
  return pw::vexp2_wide(p * pw::vlog2(xc));
}

// Adds z e**z - (e**z - 1) (z = p ln(x / y)) to w and returns (x / y) ** (p - 1) * gn, given
// inv_y = 1 / y. The caller has checked eps / y >= 2 FLT_MIN, so every ratio is a normal float
// and z2 = p log2(x / y) <= log2(n); below -126, (x / y) ** p underflows to 0.
inline vf backward_terms(vf x, vf inv_y, vf p, vf gn, float eps, vf& probe, vf& w) {
  probe = probe_finite(probe, x);
  const vf xc = pw::vmaxf(x, pw::vsplat(eps));
  const vf r = xc * inv_y;
  const vf z2 = p * pw::vlog2_poly(r);  // reduced around 1: z keeps its digits near 0
  // (x / y) ** p and (x / y) ** p - 1 from the same parts, each to its own relative accuracy
  // (1 + expm1(z) would lose every digit of a power below float32's epsilon)
#ifdef PW_AVX512_MATH
  const pw::Exp2Parts e = pw::vexp2_parts_wide(z2);  // scale 0 or subnormal below 2**-126
  const vf power = e.scale * e.q + e.scale;
  const vf d = e.scale * e.q + (e.scale - 1.0f);
#else
  const vi under = z2 < -126.0f;
  const pw::Exp2Parts e = pw::vexp2_parts(under ? pw::vsplat(-126.0f) : z2);
  const vf power = under ? pw::vsplat(0.0f) : e.scale * e.q + e.scale;
  const vf d = under ? pw::vsplat(-1.0f) : e.scale * e.q + (e.scale - 1.0f);
#endif
  w += (z2 * 0.693147180559945309f) * power - d;
  const vf gx = power * pw::vrecip(r) * gn;
  return x > eps ? gx : pw::vsplat(0.0f);
}

inline bool any_non_finite(vf probe) {
  for (int i = 0; i < kLanes; ++i)
    if (!(probe[i] == 0.0f)) return true;
  return false;
}

// Whether every ratio max(x, eps) / y of a (b, c), computed as max(x, eps) * (1 / y), is a
// normal float32.
inline bool usable_output(float y, float eps) {
  return y < INFINITY && y > 0.0f && eps / y >= 2.0f * FLT_MIN;
}

inline bool usable_sum(double s) { return s >= kLowSum && s < kHighSum; }

inline float ggem_value(double sum, int64_t n, float p) {
  return static_cast<float>(std::exp(std::log(sum / static_cast<double>(n)) / p));
}

// --- channels-last (inner == 1): lanes run over channels -------------------------------------

struct Chunk {
  int64_t b, c0, width;  // channels c0 .. c0 + width - 1 of sample b
};

Chunk chunk_of(const View& v, int64_t item) {
  const int64_t per_sample = (v.channels + kChunk - 1) / kChunk;
  const int64_t b = item / per_sample, c0 = (item % per_sample) * kChunk;
  return {b, c0, std::min(kChunk, v.channels - c0)};
}

// Loads lanes j .. j + kLanes - 1 of a chunk row, padding past its width with `fill`.
inline vf load_lanes(const float* row, int64_t j, int64_t width, float fill) {
  return j + kLanes <= width ? pw::vload(row + j)
                             : pw::vload_partial(row + j, static_cast<int>(width - j), fill);
}

inline void store_lanes(float* row, int64_t j, int64_t width, vf v) {
  if (j + kLanes <= width) {
    pw::vstore(row + j, v);
  } else {
    pw::vstore_partial(row + j, v, static_cast<int>(width - j));
  }
}

// One chunk's running sums: float over at most kFlush rows (in L1, beside the row being
// read), then double; `bad` marks channels the backward leaves to the caller. Rows are read in order, each once, so x streams from memory.
struct Sums {
  float acc[kChunk];
  double total[kChunk];
  vi bad[kChunk / kLanes];
  int64_t lanes;
  explicit Sums(int64_t width) : lanes((width + kLanes - 1) / kLanes) {
    std::fill(total, total + lanes * kLanes, 0.0);
    for (int64_t l = 0; l < lanes; ++l) bad[l] = vi{};
    clear();
  }
  void clear() {
    std::fill(acc, acc + lanes * kLanes, 0.0f);
  }
  void flush() {
    for (int64_t j = 0; j < lanes * kLanes; ++j) total[j] += acc[j];
    clear();
  }
  bool bad_lane(int64_t j) const { return bad[j / kLanes][j % kLanes] != 0; }
};

// The chunk's channels padded to whole vectors (exponent 1, output 1, gradient 0 past the end).
struct Padded {
  float p[kChunk], inv_y[kChunk], gn[kChunk];
};

void forward_channels_last(const View& v, const float* x, const float* p, float eps, float* y,
                           uint8_t* redo, int64_t item) {
  const Chunk k = chunk_of(v, item);
  Sums s(k.width);
  Padded pad;
  for (int64_t j = 0; j < s.lanes * kLanes; ++j) pad.p[j] = j < k.width ? p[k.c0 + j] : 1.0f;
  const int64_t full = k.width / kLanes;
  vf probe = pw::vsplat(0.0f);  // one for the chunk: an inf or NaN redoes all of its channels
  for (int64_t a = 0; a < v.outer; ++a) {
    const float* row = v.row(x, k.b, a) + k.c0;
    for (int64_t l = 0; l < s.lanes; ++l) {
      const int64_t j = l * kLanes;
      const vf xv = l < full ? pw::vload(row + j) : load_lanes(row, j, k.width, 1.0f);
      pw::vstore(s.acc + j, pw::vload(s.acc + j) + power(xv, pw::vload(pad.p + j), eps, probe));
    }
    if ((a + 1) % kFlush == 0) s.flush();
  }
  s.flush();
  const bool chunk_bad = any_non_finite(probe);
  // y = 2 ** (log2(mean) / p) for the whole chunk with the vector polynomials: a scalar log
  // and exp per channel in double would cost as much as the pass over x at N = 49
  float mean[kChunk], out[kChunk];
  for (int64_t j = 0; j < s.lanes * kLanes; ++j)
    mean[j] = usable_sum(s.total[j]) ? static_cast<float>(s.total[j] / v.n()) : 1.0f;
  for (int64_t l = 0; l < s.lanes; ++l) {
    const vf e = pw::vlog2(pw::vload(mean + l * kLanes)) / pw::vload(pad.p + l * kLanes);
    const vf value = pw::vexp2(pw::clamp_exponent(e));
    pw::vstore(out + l * kLanes, e < 128.0f ? value : pw::vsplat(INFINITY));
  }
  for (int64_t j = 0; j < k.width; ++j) {
    const int64_t c = k.c0 + j;
    const bool ok = !chunk_bad && usable_sum(s.total[j]);
    redo[k.b * v.channels + c] = ok ? 0 : 1;
    y[k.b * v.channels + c] = ok ? out[j] : 0.0f;
  }
}

void backward_channels_last(const View& v, const float* x, const float* y, const float* grad,
                            const float* p, float eps, float* grad_x, double* weighted,
                            uint8_t* redo, int64_t item) {
  const Chunk k = chunk_of(v, item);
  const int64_t base = k.b * v.channels + k.c0;
  Sums s(k.width);
  Padded pad;
  for (int64_t j = 0; j < s.lanes * kLanes; ++j) {
    const bool in = j < k.width;
    pad.p[j] = in ? p[k.c0 + j] : 1.0f;
    pad.inv_y[j] = in ? 1.0f / y[base + j] : 1.0f;
    pad.gn[j] = in ? grad[base + j] / static_cast<float>(v.n()) : 0.0f;
    if (in && !usable_output(y[base + j], eps)) s.bad[j / kLanes][j % kLanes] = -1;
  }
  const int64_t full = k.width / kLanes;
  vf probe = pw::vsplat(0.0f);
  for (int64_t a = 0; a < v.outer; ++a) {
    const int64_t offset = (k.b * v.outer + a) * v.channels + k.c0;
    for (int64_t l = 0; l < s.lanes; ++l) {
      const int64_t j = l * kLanes;
      vf w = pw::vload(s.acc + j);
      const vf xv = l < full ? pw::vload(x + offset + j) : load_lanes(x + offset, j, k.width, 1.0f);
      const vf gx = backward_terms(xv, pw::vload(pad.inv_y + j), pw::vload(pad.p + j),
                                   pw::vload(pad.gn + j), eps, probe, w);
      pw::vstore(s.acc + j, w);
      if (l < full) {
        pw::vstore(grad_x + offset + j, gx);
      } else {
        store_lanes(grad_x + offset, j, k.width, gx);
      }
    }
    if ((a + 1) % kFlush == 0) s.flush();
  }
  s.flush();
  const bool chunk_bad = any_non_finite(probe);
  for (int64_t j = 0; j < k.width; ++j) {
    const bool ok = !chunk_bad && !s.bad_lane(j);
    redo[base + j] = ok ? 0 : 1;
    weighted[base + j] = ok ? s.total[j] : 0.0;
  }
}

// --- channels-first (inner > 1): lanes run over the contiguous inner positions --------------

void forward_inner(const View& v, const float* x, const float* p, float eps, float* y,
                   uint8_t* redo, int64_t item) {
  const int64_t b = item / v.channels, c = item % v.channels;
  const vf pv = pw::vsplat(p[c]);
  vf acc = pw::vsplat(0.0f), probe = pw::vsplat(0.0f);
  double total = 0.0;
  int steps = 0;
  for (int64_t a = 0; a < v.outer; ++a) {
    const float* row = v.row(x, b, a) + c * v.inner;
    for (int64_t j = 0; j < v.inner; j += kLanes) {
      // padded lanes hold 1.0f, finite, and their powers are masked out
      const vf t = power(load_lanes(row, j, v.inner, 1.0f), pv, eps, probe);
      acc += j + kLanes <= v.inner ? t : pw::first_lanes(t, static_cast<int>(v.inner - j));
      if (++steps == kFlush) {
        total += pw::vhsum(acc);
        acc = pw::vsplat(0.0f);
        steps = 0;
      }
    }
  }
  total += pw::vhsum(acc);
  const bool ok = !any_non_finite(probe) && usable_sum(total);
  redo[item] = ok ? 0 : 1;
  y[item] = ok ? ggem_value(total, v.n(), p[c]) : 0.0f;
}

void backward_inner(const View& v, const float* x, const float* y, const float* grad,
                    const float* p, float eps, float* grad_x, double* weighted, uint8_t* redo,
                    int64_t item) {
  const int64_t b = item / v.channels, c = item % v.channels;
  if (!usable_output(y[item], eps)) {
    redo[item] = 1;
    weighted[item] = 0.0;
    return;
  }
  const vf pv = pw::vsplat(p[c]), inv_y = pw::vsplat(1.0f / y[item]);
  const vf gn = pw::vsplat(grad[item] / static_cast<float>(v.n()));
  vf acc = pw::vsplat(0.0f), probe = pw::vsplat(0.0f);
  double total = 0.0;
  int steps = 0;
  for (int64_t a = 0; a < v.outer; ++a) {
    float* out = grad_x + ((b * v.outer + a) * v.channels + c) * v.inner;
    const float* row = x + ((b * v.outer + a) * v.channels + c) * v.inner;
    for (int64_t j = 0; j < v.inner; j += kLanes) {
      // padded lanes take x = y (finite, z about 0) and their weighted terms are masked out
      vf terms = pw::vsplat(0.0f);
      const vf gx = backward_terms(load_lanes(row, j, v.inner, y[item]), inv_y, pv, gn, eps,
                                   probe, terms);
      acc += j + kLanes <= v.inner ? terms
                                   : pw::first_lanes(terms, static_cast<int>(v.inner - j));
      store_lanes(out, j, v.inner, gx);
      if (++steps == kFlush) {
        total += pw::vhsum(acc);
        acc = pw::vsplat(0.0f);
        steps = 0;
      }
    }
  }
  total += pw::vhsum(acc);
  const bool ok = !any_non_finite(probe);
  redo[item] = ok ? 0 : 1;
  weighted[item] = ok ? total : 0.0;
}

// Enough work per thread to pay for starting it (about 64k elements).
int useful_threads(const View& v, int threads) {
  const int64_t elements = v.batch * v.n() * v.channels;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, elements >> 16)));
}

// Work items: (sample, channel chunk) for channels-last, (sample, channel) otherwise.
int64_t work_items(const View& v) {
  return v.inner == 1 ? v.batch * ((v.channels + kChunk - 1) / kChunk) : v.batch * v.channels;
}

// body(item) for every work item of v, on up to `threads` threads.
template <typename Body>
void over_items(const View& v, int threads, Body body) {
  pw::parallel_ranges(work_items(v), useful_threads(v, threads),
                      [&](int, int64_t begin, int64_t end) {
                        for (int64_t item = begin; item < end; ++item) body(item);
                      });
}

int64_t redo_count(const uint8_t* redo, int64_t n) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += redo[i];
  return count;
}

}  // namespace

extern "C" {

int64_t pw_ggem_forward(const float* x, const float* p, float eps, float* y, uint8_t* redo,
                     int64_t batch, int64_t outer, int64_t channels, int64_t inner,
                     int32_t threads) {
  const View v{batch, outer, channels, inner};
  over_items(v, threads, [&](int64_t item) {
    if (inner == 1) {
      forward_channels_last(v, x, p, eps, y, redo, item);
    } else {
      forward_inner(v, x, p, eps, y, redo, item);
    }
  });
  return redo_count(redo, batch * channels);
}

int64_t pw_ggem_backward(const float* x, const float* y, const float* grad, const float* p,
                      float eps, float* grad_x, double* weighted, uint8_t* redo, int64_t batch,
                      int64_t outer, int64_t channels, int64_t inner, int32_t threads) {
  const View v{batch, outer, channels, inner};
  over_items(v, threads, [&](int64_t item) {
    if (inner == 1) {
      backward_channels_last(v, x, y, grad, p, eps, grad_x, weighted, redo, item);
    } else {
      backward_inner(v, x, y, grad, p, eps, grad_x, weighted, redo, item);
    }
  });
  return redo_count(redo, batch * channels);
}

}  // extern "C"
