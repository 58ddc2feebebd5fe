// SIMD and threading helpers shared by every poolwise kernel.
//
// Vectors are GCC/Clang vector extensions, so the same source compiles to AVX-512, AVX2, SSE
// or NEON; build.py picks the instruction set and PW_LANES (floats per `vf`: 16 for AVX-512,
// 8 for AVX2, 4 elsewhere). `v8` is a fixed 8-float vector for kernels tiled by 8 columns.
//
// vlog2 / vexp2 are float32 log2 and exp2 on whole vectors, branch-free range reductions and
// polynomials that stay in registers; tools/fit_kernel_polynomials.py fits and checks their
// coefficients. With AVX-512, vlog2 reduces by a 16-entry table in one register and a short
// polynomial (vlog2_table), and vexp2_wide scales with scalef; elsewhere vlog2_poly.

#ifndef POOLWISE_SIMD_H_
#define POOLWISE_SIMD_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef PW_LANES
#define PW_LANES 8
#endif

namespace pw {

// --- fixed 8-float vectors -------------------------------------------------------------------

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned access
constexpr int kLanes8 = 8;

inline v8 load(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void store(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
inline v8 splat(float a) { return v8{a, a, a, a, a, a, a, a}; }
inline v8 vmax(v8 a, v8 b) { return a > b ? a : b; }

// The lanes' sum, accumulated in double.
inline double hsum(v8 v) {
  double s = 0.0;
  for (int i = 0; i < kLanes8; ++i) s += v[i];
  return s;
}

// --- native-width vectors --------------------------------------------------------------------

constexpr int kLanes = PW_LANES;
typedef float vf __attribute__((vector_size(4 * PW_LANES)));
typedef float vfu __attribute__((vector_size(4 * PW_LANES), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * PW_LANES)));

inline vf vload(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf vsplat(float a) { return vf{} + a; }

// The first n lanes from p, `fill` in the others (n < kLanes: a row's tail).
inline vf vload_partial(const float* p, int n, float fill) {
  float tmp[kLanes];
  for (int i = 0; i < kLanes; ++i) tmp[i] = i < n ? p[i] : fill;
  return vload(tmp);
}

inline void vstore_partial(float* p, vf v, int n) {
  float tmp[kLanes];
  vstore(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * n);
}

// v with the lanes from n on set to 0.
inline vf first_lanes(vf v, int n) {
  vi index;
  for (int i = 0; i < kLanes; ++i) index[i] = i;
  return index < n ? v : vsplat(0.0f);
}

inline double vhsum(vf v) {
  double s = 0.0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Lane-wise min and max. Where the instruction set has them they are one instruction that
// returns the second operand when either is NaN (callers flag NaN inputs separately); the
// portable form is a compare and a select with the same NaN rule.
inline vf vmin(vf a, vf b) {
#if PW_LANES == 16 && defined(__AVX512F__)
  return (vf)_mm512_min_ps((__m512)a, (__m512)b);
#elif PW_LANES == 8 && defined(__AVX2__)
  return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}

inline vf vmaxf(vf a, vf b) {
#if PW_LANES == 16 && defined(__AVX512F__)
  return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif PW_LANES == 8 && defined(__AVX2__)
  return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}

inline vf bits_to_float(vi v) { return (vf)v; }  // same bits, other lane type
inline vi float_to_bits(vf v) { return (vi)v; }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }

// log2(x) for normal, finite x > 0 (callers clamp x to a normal floor and flag inf / NaN).
// x = m * 2**e with m in [sqrt(1/2), sqrt(2)), found by subtracting sqrt(1/2)'s bits; then
// log2(x) = e + t * P(t), t = m - 1 (exact), P of degree 7 (tools/fit_kernel_polynomials.py:
// relative error 2.0e-7 on the quotient, so |error| < 1e-7 in log2 units).
inline vf vlog2_poly(vf x) {
  const vi shifted = float_to_bits(x) - 0x3f3504f3;
  const vf e = __builtin_convertvector(shifted >> 23, vf);
  const vf t = bits_to_float((shifted & 0x007fffff) + 0x3f3504f3) - 1.0f;
  vf poly = vsplat(-1.423764825e-01f);
  poly = poly * t + 2.324782908e-01f;
  poly = poly * t - 2.493215352e-01f;
  poly = poly * t + 2.873127460e-01f;
  poly = poly * t - 3.602233529e-01f;
  poly = poly * t + 4.809158742e-01f;
  poly = poly * t - 7.213529348e-01f;
  poly = poly * t + 1.442695022e+00f;
  return t * poly + e;
}

#if PW_LANES == 16 && defined(__AVX512F__)
#define PW_AVX512_MATH 1

// vlog2_table's reduction (tools/fit_kernel_polynomials.py): 1 / c[i] rounded to float32, c[i]
// the midpoint of the i-th sixteenth of [1, 2), and log2_c[i] = -log2(inv_c[i]).
alignas(64) constexpr float kLog2InvC[16] = {
    9.696969986e-01f, 9.142857194e-01f, 8.648648858e-01f, 8.205128312e-01f,
    7.804877758e-01f, 7.441860437e-01f, 7.111111283e-01f, 6.808510423e-01f,
    6.530612111e-01f, 6.274510026e-01f, 6.037735939e-01f, 5.818181634e-01f,
    5.614035130e-01f, 5.423728824e-01f, 5.245901346e-01f, 5.079365373e-01f};
alignas(64) constexpr float kLog2C[16] = {
    4.439407587e-02f, 1.292830110e-01f, 2.094533294e-01f, 2.854022086e-01f,
    3.575520515e-01f, 4.262647629e-01f, 4.918530583e-01f, 5.545889139e-01f,
    6.147098541e-01f, 6.724252701e-01f, 7.279204130e-01f, 7.813597322e-01f,
    8.328899741e-01f, 8.826430440e-01f, 9.307374358e-01f, 9.772798419e-01f};

// log2(x) for finite x > 0 with AVX-512's exponent and permute instructions: e = getexp(x),
// m = getmant(x) in [1, 2), i = m's top 4 mantissa bits, r = m * inv_c[i] - 1 (one rounding,
// |r| < 0.0304); log2(x) = e + log2_c[i] + r * T(r), T quadratic (relative error 1.8e-6 on
// the quotient, |error| < 1.2e-7 in log2 units with the table's rounding: vlog2_poly's
// accuracy with 3 multiply-adds instead of 8).
inline vf vlog2_table(vf x) {
  const __m512 xs = (__m512)x;
  const __m512 e = _mm512_getexp_ps(xs);
  const __m512 m = _mm512_getmant_ps(xs, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  const __m512i index = _mm512_srli_epi32(_mm512_castps_si512(xs), 19);  // low 4 bits used
  const __m512 inv_c = _mm512_permutexvar_ps(index, _mm512_load_ps(kLog2InvC));
  const __m512 log2_c = _mm512_permutexvar_ps(index, _mm512_load_ps(kLog2C));
  const vf r = (vf)_mm512_fmsub_ps(m, inv_c, _mm512_set1_ps(1.0f));
  vf poly = vsplat(4.810805619e-01f);
  poly = poly * r - 7.215960026e-01f;
  poly = poly * r + 1.442695022e+00f;
  return r * poly + (vf)log2_c + (vf)e;
}

inline vf vlog2(vf x) { return vlog2_table(x); }

// 1 / x: the 14-bit estimate and one Newton step (about 2**-27 relative).
inline vf vrecip(vf x) {
  const vf r = (vf)_mm512_rcp14_ps((__m512)x);
  return r * (2.0f - x * r);
}
#else
inline vf vlog2(vf x) { return vlog2_poly(x); }
inline vf vrecip(vf x) { return 1.0f / x; }
#endif

// 2**z = 2**k * (1 + q) with k = round(z), r = z - k in [-1/2, 1/2], q = 2**r - 1 = r * Q(r),
// Q of degree 5 (relative error 2e-8, so q keeps its digits near r = 0, as expm1 does).
// Valid for z in [-126, 127] (callers clamp): 2**k is then a normal float.
struct Exp2Parts {
  vf scale;  // 2**k
  vf q;      // 2**r - 1
};

// 2**r - 1 for r in [-1/2, 1/2].
inline vf vexp2m1_reduced(vf r) {
  vf poly = vsplat(1.539525256e-04f);
  poly = poly * r + 1.339070033e-03f;
  poly = poly * r + 9.618262760e-03f;
  poly = poly * r + 5.550357699e-02f;
  poly = poly * r + 2.402264923e-01f;
  poly = poly * r + 6.931471825e-01f;
  return r * poly;
}

inline Exp2Parts vexp2_parts(vf z) {
  const vf shifter = vsplat(12582912.0f);  // 1.5 * 2**23: adding it rounds z to an integer
  const vf shifted = z + shifter;           // whose low mantissa bits then hold k
  const vf r = z - (shifted - shifter);
  return {bits_to_float((float_to_bits(shifted) << 23) + 0x3f800000), vexp2m1_reduced(r)};
}

inline vf clamp_exponent(vf z) { return vmin(vmaxf(z, vsplat(-126.0f)), vsplat(127.0f)); }

// 2**z for z in [-126, 127].
inline vf vexp2(vf z) {
  const Exp2Parts e = vexp2_parts(z);
  return e.scale * e.q + e.scale;
}

#ifdef PW_AVX512_MATH
// vexp2_parts for any finite z <= 127: scale = 2**round(z) from scalef, 0 or a subnormal
// below float32's normal range.
inline Exp2Parts vexp2_parts_wide(vf z) {
  const __m512 k = _mm512_roundscale_ps((__m512)z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return {(vf)_mm512_scalef_ps(_mm512_set1_ps(1.0f), k), vexp2m1_reduced(z - (vf)k)};
}
#endif

// 2**z for any finite z, at least where float32 holds it: with AVX-512, scalef scales 1 + q by
// 2**round(z) (not 2**k times 1 + q, which is NaN where 2**k overflows and q < 0) and gives
// inf above the range and 0 or a subnormal below it; elsewhere z is clamped to [-126, 127], so
// the result is 2**127 above and 2**-126 below the range. Either way a power above 2**127 reads
// as an overflow and one below 2**-126 weighs nothing beside a normal one.
inline vf vexp2_wide(vf z) {
#ifdef PW_AVX512_MATH
  const __m512 k = _mm512_roundscale_ps((__m512)z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return (vf)_mm512_scalef_ps((__m512)(vexp2m1_reduced(z - (vf)k) + 1.0f), k);
#else
  return vexp2(clamp_exponent(z));
#endif
}

// --- threads ---------------------------------------------------------------------------------
//
// With OpenMP (build.py compiles with -fopenmp where the compiler has it) the work runs on the
// OpenMP runtime PyTorch itself has loaded (same soname, so the same library and the same warm
// threads): no threads are started per call and none compete with PyTorch's spinning workers.
// Without it, std::thread.

// body(thread_id, begin, end) over [0, items) split into at most `threads` contiguous ranges.
template <typename Body>
void parallel_ranges(int64_t items, int threads, Body body) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
  if (threads == 1) {
    body(0, int64_t{0}, items);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), n = omp_get_num_threads();
    body(static_cast<int>(id), items * id / n, items * (id + 1) / n);
  }
#else
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back(body, i, items * i / threads, items * (i + 1) / threads);
  body(0, int64_t{0}, items / threads);
  for (auto& th : pool) th.join();
#endif
}

// body(item) for every item in [0, items), dealt round-robin to at most `threads` threads.
template <typename Body>
void parallel_round_robin(int64_t items, int threads, Body body) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
  parallel_ranges(threads, threads, [&](int, int64_t first, int64_t end) {
    for (int64_t id = first; id < end; ++id)
      for (int64_t i = id; i < items; i += threads) body(i);
  });
}

}  // namespace pw

#endif  // POOLWISE_SIMD_H_
