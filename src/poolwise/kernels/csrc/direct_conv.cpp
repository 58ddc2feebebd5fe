// Direct 3x3 convolution for maps with few channels (L-SFAN's 1 -> 2 -> 4 -> 8 -> 16) on the
// CPU: float32, NCHW-contiguous, stride 1, no dilation, one group, zero padding.
//
// oneDNN is tuned for many channels; with 2 to 16 it leaves most of the vector unit idle and
// needs layout copies around every call. Here each sample is first copied into a zero-padded
// buffer, then every output row is computed in tiles of 16 columns (two 8-float vectors), four
// output channels at a time, so the inner loop is branch-free fused multiply-adds on registers.
//
// Entry points (declared in poolwise_kernels.h, bound in poolwise/kernels/conv.py):
//   pw_conv_forward      y = conv(x, w) + b
//   pw_conv_weight_grad  dL/dw and dL/db
// The input gradient is pw_conv_forward applied to the output gradient with the kernel
// flipped and its channel axes swapped (conv.py). Samples are split over `threads` threads.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "poolwise_kernels.h"
#include "simd.h"

namespace {

using pw::hsum;
using pw::load;
using pw::splat;
using pw::store;
using pw::v8;

constexpr int kLanes = pw::kLanes8;
constexpr int kKernel = 3;  // 3 x 3 kernels only
constexpr int kTaps = kKernel * kKernel;
constexpr int kBlock = 32;  // padded rows hold a whole number of 32-column blocks


struct Shape {
  int batch, in_ch, height, width, out_ch, ph, pw;
  int out_h() const { return height + 2 * ph - kKernel + 1; }
  int out_w() const { return width + 2 * pw - kKernel + 1; }
  int blocks() const { return (out_w() + kBlock - 1) / kBlock; }
  int padded_h() const { return height + 2 * ph; }
  int padded_w() const { return blocks() * kBlock + kKernel - 1; }
  size_t padded_size() const { return static_cast<size_t>(in_ch) * padded_h() * padded_w(); }
};

// One sample x (in_ch, height, width) into buf (in_ch, padded_h, padded_w), zeros around it.
void pad_sample(const Shape& s, const float* x, float* buf) {
  const int hp = s.padded_h(), wp = s.padded_w();
  std::memset(buf, 0, sizeof(float) * s.padded_size());
  for (int c = 0; c < s.in_ch; ++c)
    for (int h = 0; h < s.height; ++h)
      std::memcpy(buf + (static_cast<size_t>(c) * hp + h + s.ph) * wp + s.pw,
                  x + (static_cast<size_t>(c) * s.height + h) * s.width,
                  sizeof(float) * s.width);
}

// Output channels co0 .. co0 + CB - 1 of one padded sample, in column tiles of NV vectors.
template <int CB, int NV>
void forward_channels(const Shape& s, const float* xp, const float* w, const float* bias,
                      int co0, float* y) {
  constexpr int tile = NV * kLanes;
  const int ho = s.out_h(), wo = s.out_w(), hp = s.padded_h(), wp = s.padded_w();
  const int tiles = (wo + tile - 1) / tile;
  for (int oh = 0; oh < ho; ++oh) {
    for (int t = 0; t < tiles; ++t) {
      v8 acc[CB][NV];
      for (int c = 0; c < CB; ++c)
        for (int v = 0; v < NV; ++v) acc[c][v] = splat(bias ? bias[co0 + c] : 0.f);
      for (int ci = 0; ci < s.in_ch; ++ci) {
        const float* wc = w + (static_cast<size_t>(co0) * s.in_ch + ci) * kTaps;
        for (int dh = 0; dh < kKernel; ++dh) {
          const float* row = xp + (static_cast<size_t>(ci) * hp + oh + dh) * wp + t * tile;
          for (int dw = 0; dw < kKernel; ++dw) {
            v8 xv[NV];
            for (int v = 0; v < NV; ++v) xv[v] = load(row + dw + v * kLanes);
            for (int c = 0; c < CB; ++c) {
              const v8 k = splat(wc[static_cast<size_t>(c) * s.in_ch * kTaps + dh * kKernel + dw]);
              for (int v = 0; v < NV; ++v) acc[c][v] += k * xv[v];
            }
          }
        }
      }
      const int n = std::min(tile, wo - t * tile);
      for (int c = 0; c < CB; ++c) {
        float* out = y + (static_cast<size_t>(co0 + c) * ho + oh) * wo + t * tile;
        if (n == tile) {
          for (int v = 0; v < NV; ++v) store(out + v * kLanes, acc[c][v]);
        } else {
          float tmp[tile];
          for (int v = 0; v < NV; ++v) store(tmp + v * kLanes, acc[c][v]);
          std::memcpy(out, tmp, sizeof(float) * n);
        }
      }
    }
  }
}

// dL/dw of output channels co0 .. co0 + CB - 1 for one sample, added to gw (out_ch, in_ch, 3,
// 3). gp is the sample's output gradient (out_ch, out_h, blocks * kBlock), zero past out_w.
template <int CB>
void weight_grad_channels(const Shape& s, const float* xp, const float* gp, int co0, float* gw) {
  const int ho = s.out_h(), hp = s.padded_h(), wp = s.padded_w(), wg = s.blocks() * kBlock;
  for (int ci = 0; ci < s.in_ch; ++ci) {
    for (int dh = 0; dh < kKernel; ++dh) {
      v8 acc[CB][kKernel];
      for (int c = 0; c < CB; ++c)
        for (int d = 0; d < kKernel; ++d) acc[c][d] = splat(0.f);
      for (int oh = 0; oh < ho; ++oh) {
        const float* row = xp + (static_cast<size_t>(ci) * hp + oh + dh) * wp;
        for (int j = 0; j < wg; j += kLanes) {
          v8 g[CB];
          for (int c = 0; c < CB; ++c)
            g[c] = load(gp + (static_cast<size_t>(co0 + c) * ho + oh) * wg + j);
          for (int d = 0; d < kKernel; ++d) {
            const v8 xv = load(row + j + d);
            for (int c = 0; c < CB; ++c) acc[c][d] += g[c] * xv;
          }
        }
      }
      for (int c = 0; c < CB; ++c)
        for (int d = 0; d < kKernel; ++d)
          gw[((static_cast<size_t>(co0 + c) * s.in_ch + ci) * kKernel + dh) * kKernel + d] +=
              hsum(acc[c][d]);
    }
  }
}

int clamp_threads(int threads, int batch) { return std::max(1, std::min(threads, batch)); }

}  // namespace

extern "C" {

// x (B, Ci, H, W), w (Co, Ci, 3, 3), bias (Co) or null -> y (B, Co, Ho, Wo).
void pw_conv_forward(const float* x, const float* w, const float* bias, float* y, int32_t batch,
                     int32_t in_ch, int32_t height, int32_t width, int32_t out_ch, int32_t ph,
                     int32_t pw, int32_t threads) {
  const Shape s{batch, in_ch, height, width, out_ch, ph, pw};
  const size_t in_size = static_cast<size_t>(in_ch) * height * width;
  const size_t out_size = static_cast<size_t>(out_ch) * s.out_h() * s.out_w();
  pw::parallel_ranges(batch, clamp_threads(threads, batch), [&](int, int64_t begin, int64_t end) {
    std::vector<float> buf(s.padded_size());
    for (int64_t b = begin; b < end; ++b) {
      pad_sample(s, x + b * in_size, buf.data());
      float* yb = y + b * out_size;
      int co = 0;
      for (; co + 4 <= out_ch; co += 4) forward_channels<4, 2>(s, buf.data(), w, bias, co, yb);
      for (; co + 2 <= out_ch; co += 2) forward_channels<2, 2>(s, buf.data(), w, bias, co, yb);
      if (co < out_ch) forward_channels<1, 2>(s, buf.data(), w, bias, co, yb);
    }
  });
}

// x (B, Ci, H, W), grad (B, Co, Ho, Wo) -> gw (Co, Ci, 3, 3) and gb (Co), both overwritten.
void pw_conv_weight_grad(const float* x, const float* grad, float* gw, float* gb,
                         int32_t batch, int32_t in_ch, int32_t height, int32_t width,
                         int32_t out_ch, int32_t ph, int32_t pw, int32_t threads) {
  const Shape s{batch, in_ch, height, width, out_ch, ph, pw};
  const int ho = s.out_h(), wo = s.out_w(), wg = s.blocks() * kBlock;
  const size_t in_size = static_cast<size_t>(in_ch) * height * width;
  const size_t out_size = static_cast<size_t>(out_ch) * ho * wo;
  const size_t w_size = static_cast<size_t>(out_ch) * in_ch * kTaps;
  threads = clamp_threads(threads, batch);
  // per thread: the weight gradient, then the bias gradient
  std::vector<std::vector<float>> partial(threads, std::vector<float>(w_size, 0.f));
  // the bias gradient is a plain sum of B * Ho * Wo values: rows in float, the rest in double
  std::vector<std::vector<double>> bias_partial(threads, std::vector<double>(out_ch, 0.0));
  pw::parallel_ranges(batch, threads, [&](int id, int64_t begin, int64_t end) {
    std::vector<float> buf(s.padded_size());
    std::vector<float> gp(static_cast<size_t>(out_ch) * ho * wg, 0.f);
    float* acc = partial[id].data();
    for (int64_t b = begin; b < end; ++b) {
      pad_sample(s, x + b * in_size, buf.data());
      for (int co = 0; co < out_ch; ++co) {
        double bias_sum = 0.0;
        for (int oh = 0; oh < ho; ++oh) {
          const size_t r = static_cast<size_t>(co) * ho + oh;
          std::memcpy(gp.data() + r * wg, grad + b * out_size + r * wo, sizeof(float) * wo);
          v8 row_sum = splat(0.f);
          for (int j = 0; j < wg; j += kLanes) row_sum += load(gp.data() + r * wg + j);
          bias_sum += hsum(row_sum);
        }
        bias_partial[id][co] += bias_sum;
      }
      int co = 0;
      for (; co + 4 <= out_ch; co += 4) weight_grad_channels<4>(s, buf.data(), gp.data(), co, acc);
      for (; co + 2 <= out_ch; co += 2) weight_grad_channels<2>(s, buf.data(), gp.data(), co, acc);
      if (co < out_ch) weight_grad_channels<1>(s, buf.data(), gp.data(), co, acc);
    }
  });
  for (int i = 1; i < threads; ++i) {
    for (size_t j = 0; j < w_size; ++j) partial[0][j] += partial[i][j];
    for (int co = 0; co < out_ch; ++co) bias_partial[0][co] += bias_partial[i][co];
  }
  std::memcpy(gw, partial[0].data(), sizeof(float) * w_size);
  for (int co = 0; co < out_ch; ++co) gb[co] = static_cast<float>(bias_partial[0][co]);
}

}  // extern "C"
