// The C ABI of poolwise's native library: every exported function, one prototype per line.
//
// poolwise/kernels/build.py reads this file to declare the ctypes bindings (argument and
// return types), so a prototype changed here changes the bindings with it; the definitions in
// the .cpp files include this header, so the compiler refuses a definition that differs from
// its prototype. PW_ABI_VERSION is compiled into the library (pw_abi_version) and checked
// against this header's value when the library is loaded.
//
// Conventions: tensors are float32, contiguous, row-major; sizes are int64_t; `threads` is the
// number of threads to use, the caller's included.

#ifndef POOLWISE_KERNELS_H_
#define POOLWISE_KERNELS_H_

#include <stdint.h>

#define PW_ABI_VERSION 3

#ifdef __cplusplus
extern "C" {
#endif

int32_t pw_abi_version(void);

// direct_conv.cpp: 3x3, stride-1, one-group convolution with zero padding (ph, pw).
void pw_conv_forward(const float* x, const float* w, const float* bias, float* y, int32_t batch, int32_t in_ch, int32_t height, int32_t width, int32_t out_ch, int32_t ph, int32_t pw, int32_t threads);
void pw_conv_weight_grad(const float* x, const float* grad, float* gw, float* gb, int32_t batch, int32_t in_ch, int32_t height, int32_t width, int32_t out_ch, int32_t ph, int32_t pw, int32_t threads);

// bn_relu_pool.cpp: training-mode batch norm, ReLU and an optional (2, 1) row max-pool.
void pw_bn_relu_pool_forward(const float* x, const float* gamma, const float* beta, float eps, int32_t pool, float* y, float* mean, float* var, int32_t batch, int32_t channels, int32_t height, int32_t width, int32_t threads);
void pw_bn_relu_pool_backward(const float* grad, const float* x, const float* gamma, const float* beta, const float* mean, const float* var, float eps, int32_t pool, float* grad_x, float* grad_gamma, float* grad_beta, int32_t batch, int32_t channels, int32_t height, int32_t width, int32_t threads);

// ggem.cpp: GGeM over x viewed as (batch, outer, channels, inner), pooled over outer and inner;
// each returns how many (b, c) it left to the caller (redo[b, c] = 1).
int64_t pw_ggem_forward(const float* x, const float* p, float eps, float* y, uint8_t* redo, int64_t batch, int64_t outer, int64_t channels, int64_t inner, int32_t threads);
int64_t pw_ggem_backward(const float* x, const float* y, const float* grad, const float* p, float eps, float* grad_x, double* weighted, uint8_t* redo, int64_t batch, int64_t outer, int64_t channels, int64_t inner, int32_t threads);

#ifdef __cplusplus
}
#endif

#endif  // POOLWISE_KERNELS_H_
