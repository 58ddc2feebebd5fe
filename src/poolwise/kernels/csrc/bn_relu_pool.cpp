// Training-mode batch norm, ReLU and, optionally, a (2, 1) max-pool over rows, fused, on the
// CPU: float32, NCHW-contiguous x (B, C, H, W).
//
//   y = maxpool_rows(relu((x - mean_c) / sqrt(var_c + eps) * gamma_c + beta_c))
//
// with the batch statistics of channel c over (B, H, W). Each channel is handled whole, by one
// thread: its statistics pass and its output pass (and, backward, its two gradient passes) read
// the same B * H * W values, which for L-SFAN's maps (0.4 to 0.9 MB per channel at batch 40)
// are still in the core's L2 cache on the second pass. The pool keeps the first row on ties,
// as nn.MaxPool2d does; an odd last row is dropped.
//
// Entry points (declared in poolwise_kernels.h, bound in poolwise/kernels/conv.py):
//   pw_bn_relu_pool_forward   y, and the batch mean and (biased) variance per channel
//   pw_bn_relu_pool_backward  dL/dx, dL/dgamma, dL/dbeta from dL/dy

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "poolwise_kernels.h"
#include "simd.h"

namespace {

using pw::hsum;
using pw::load;
using pw::splat;
using pw::store;
using pw::v8;
using pw::vmax;

constexpr int kLanes = pw::kLanes8;

// f(j) for j = 0, 8, 16, ... covering [0, n) with 8-wide steps, the last one moved back to
// n - 8 (so it overlaps the one before): only for idempotent, element-wise f and n >= 8.
template <typename F>
inline void overlapping_steps(int n, F f) {
  int j = 0;
  for (; j + kLanes <= n; j += kLanes) f(j);
  if (j < n) f(n - kLanes);
}

struct Map {
  int batch, channels, height, width;
  bool pool;
  size_t plane() const { return static_cast<size_t>(height) * width; }
  int out_h() const { return pool ? height / 2 : height; }
  size_t out_plane() const { return static_cast<size_t>(out_h()) * width; }
  const float* in(const float* x, int b, int c) const {
    return x + (static_cast<size_t>(b) * channels + c) * plane();
  }
  float* in(float* x, int b, int c) const {
    return x + (static_cast<size_t>(b) * channels + c) * plane();
  }
  const float* out(const float* y, int b, int c) const {
    return y + (static_cast<size_t>(b) * channels + c) * out_plane();
  }
  float* out(float* y, int b, int c) const {
    return y + (static_cast<size_t>(b) * channels + c) * out_plane();
  }
};

// Sums of x and x^2 over one plane, 8 lanes in float, then double.
void plane_moments(const float* p, size_t n, double& sum, double& sumsq) {
  v8 s = splat(0.f), q = splat(0.f);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const v8 v = load(p + i);
    s += v;
    q += v * v;
  }
  sum += hsum(s);
  sumsq += hsum(q);
  for (; i < n; ++i) {
    sum += p[i];
    sumsq += static_cast<double>(p[i]) * p[i];
  }
}

}  // namespace

extern "C" {

// x (B, C, H, W), gamma/beta (C) -> y (B, C, H or H / 2, W), mean/var (C).
void pw_bn_relu_pool_forward(const float* x, const float* gamma, const float* beta, float eps,
                             int32_t pool, float* y, float* mean, float* var, int32_t batch,
                             int32_t channels, int32_t height, int32_t width, int32_t threads) {
  const Map m{batch, channels, height, width, pool != 0};
  const double count = static_cast<double>(batch) * m.plane();
  pw::parallel_round_robin(channels, threads, [&](int64_t c) {
    double sum = 0.0, sumsq = 0.0;
    for (int b = 0; b < batch; ++b) plane_moments(m.in(x, b, c), m.plane(), sum, sumsq);
    const double mu = sum / count;
    const double v = std::max(sumsq / count - mu * mu, 0.0);
    mean[c] = static_cast<float>(mu);
    var[c] = static_cast<float>(v);
    const float scale = static_cast<float>(gamma[c] / std::sqrt(v + eps));
    const float shift = static_cast<float>(beta[c] - mu * scale);
    const v8 vscale = splat(scale), vshift = splat(shift), zero = splat(0.f);
    for (int b = 0; b < batch; ++b) {
      const float* p = m.in(x, b, c);
      float* q = m.out(y, b, c);
      if (!m.pool) {
        for (size_t i = 0; i < m.plane(); ++i) q[i] = std::max(p[i] * scale + shift, 0.f);
        continue;
      }
      for (int h = 0; h < m.out_h(); ++h) {
        const float* r0 = p + static_cast<size_t>(2 * h) * width;
        const float* r1 = r0 + width;
        float* o = q + static_cast<size_t>(h) * width;
        if (width < kLanes) {
          for (int j = 0; j < width; ++j)
            o[j] = std::max(std::max(r0[j] * scale + shift, r1[j] * scale + shift), 0.f);
          continue;
        }
        overlapping_steps(width, [&](int j) {
          const v8 z0 = load(r0 + j) * vscale + vshift, z1 = load(r1 + j) * vscale + vshift;
          store(o + j, vmax(vmax(z0, z1), zero));
        });
      }
    }
  });
}

// grad (dL/dy), x, gamma, beta, mean, var -> grad_x (B, C, H, W), grad_gamma, grad_beta (C).
void pw_bn_relu_pool_backward(const float* grad, const float* x, const float* gamma,
                              const float* beta, const float* mean, const float* var, float eps,
                              int32_t pool, float* grad_x, float* grad_gamma, float* grad_beta,
                              int32_t batch, int32_t channels, int32_t height, int32_t width,
                              int32_t threads) {
  const Map m{batch, channels, height, width, pool != 0};
  const double count = static_cast<double>(batch) * m.plane();
  pw::parallel_round_robin(channels, threads, [&](int64_t c) {
    const float invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
    const float scale = gamma[c] * invstd;
    const float shift = beta[c] - mean[c] * scale;
    const float mu = mean[c];
    // dL/dz of one plane into gz, z = x * scale + shift being the pre-ReLU value; the pool
    // sends a row pair's gradient to the first row on ties, as nn.MaxPool2d does, and an odd
    // last row gets none
    std::vector<float> gz(m.plane());
    const v8 vscale = splat(scale), vshift = splat(shift), zero = splat(0.f);
    auto grad_z = [&](const float* p, const float* g) {
      if (!m.pool) {
        for (size_t i = 0; i < m.plane(); ++i) gz[i] = p[i] * scale + shift > 0.f ? g[i] : 0.f;
        return;
      }
      for (int h = 0; h < m.out_h(); ++h) {
        const size_t r0 = static_cast<size_t>(2 * h) * width, r1 = r0 + width;
        const float* go = g + static_cast<size_t>(h) * width;
        if (width < kLanes) {
          for (int j = 0; j < width; ++j) {
            const float z0 = std::max(p[r0 + j] * scale + shift, 0.f);
            const float z1 = std::max(p[r1 + j] * scale + shift, 0.f);
            gz[r0 + j] = z0 >= z1 && z0 > 0.f ? go[j] : 0.f;
            gz[r1 + j] = z0 < z1 ? go[j] : 0.f;  // z0 < z1 implies z1 > 0
          }
          continue;
        }
        overlapping_steps(width, [&](int j) {
          const v8 z0 = vmax(load(p + r0 + j) * vscale + vshift, zero);
          const v8 z1 = vmax(load(p + r1 + j) * vscale + vshift, zero);
          const v8 gj = load(go + j);
          store(gz.data() + r0 + j, (z0 >= z1) & (z0 > zero) ? gj : zero);
          store(gz.data() + r1 + j, z0 < z1 ? gj : zero);
        });
      }
      std::fill(gz.begin() + static_cast<size_t>(2 * m.out_h()) * width, gz.end(), 0.f);
    };
    double dbeta = 0.0, dgamma = 0.0;  // sums of dL/dz and of dL/dz * (x - mean)
    for (int b = 0; b < batch; ++b) {
      const float* p = m.in(x, b, c);
      grad_z(p, m.out(grad, b, c));
      const v8 vmu = splat(mu);
      v8 sg = splat(0.f), sgx = splat(0.f);
      size_t i = 0;
      for (; i + kLanes <= m.plane(); i += kLanes) {
        const v8 gv = load(gz.data() + i);
        sg += gv;
        sgx += gv * (load(p + i) - vmu);
      }
      dbeta += hsum(sg);
      dgamma += hsum(sgx);
      for (; i < m.plane(); ++i) {
        dbeta += gz[i];
        dgamma += gz[i] * (p[i] - mu);
      }
    }
    dgamma *= invstd;
    grad_beta[c] = static_cast<float>(dbeta);
    grad_gamma[c] = static_cast<float>(dgamma);
    const float mean_g = static_cast<float>(dbeta / count);
    const float mean_gx = static_cast<float>(dgamma / count) * invstd;
    for (int b = 0; b < batch; ++b) {
      const float* p = m.in(x, b, c);
      float* dx = m.in(grad_x, b, c);
      grad_z(p, m.out(grad, b, c));
      for (size_t i = 0; i < m.plane(); ++i)
        dx[i] = scale * (gz[i] - mean_g - (p[i] - mu) * mean_gx);
    }
  });
}

}  // extern "C"
