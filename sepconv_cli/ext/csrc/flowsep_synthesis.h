// One output pixel of FlowSep's synthesis, shared by the CPU (flowsep_synthesis_cpu.cpp)
// and CUDA (flowsep_synthesis_cuda.cu) kernels. The definition, and the PyTorch
// composition it must match, are in sepconv_cli/ext/flowsep_synthesis.py:
//
//   r    = gate * bilinear_upsample(params)            (align_corners=False, at this pixel)
//   C_f  = dsc(frame_f; centre + r_v, centre + r_h, 2 sigmoid(r_m), flow_f + r_o) / guarded sum
//   out  = softmax(log w0 + r_l0, log(1 - w0) + r_l1, log 1e-3 + r_l2) . (C_0, C_1, splat)
//
// Doing this per pixel reads the half-resolution parameters (4 corners x P values) instead
// of writing and re-reading a P-channel full-resolution tensor several times over, which is
// what made the composition slow on the CPU. The backward recomputes the forward's per-pixel
// values and writes the gradient of the *full-resolution* gated parameters r (each owned by
// one pixel, so no atomics); the caller maps it back through the upsampling's adjoint.

#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace flowsep {

#ifndef __CUDACC__
// The float overloads (CUDA has them as device functions in the global namespace).
using std::exp;
using std::fabs;
using std::floor;
using std::log;
#endif

constexpr int kMaxTaps = 5;  // n; FlowSep ships n = 3. Bounds the per-pixel arrays below.
constexpr int kMaxParams = 2 * (2 * kMaxTaps + 3 * kMaxTaps * kMaxTaps) + 3;
constexpr double kSplatPrior = 1e-3;  // flowsep.SPLAT_PRIOR
constexpr double kTinyWeight = 1e-6;  // the clamp of the prior weights before their log
constexpr double kGuard = 0.01;       // |kernel sum| below this: not normalised

// Strides of a 4-D tensor (batch, channel, row, column), in elements.
struct Strides {
  int64_t b, c, y, x;
};

template <typename scalar_t>
struct Inputs {
  const scalar_t* frame0;   // (B, 3, H, W)
  const scalar_t* frame1;   // (B, 3, H, W)
  const scalar_t* splat;    // (B, 3, H, W)
  const scalar_t* flow0;    // (B, 2, H, W): dx, dy from t to frame 0
  const scalar_t* flow1;    // (B, 2, H, W)
  const scalar_t* weight0;  // (B, 1, H, W): the flow baseline's weight of frame 0
  const scalar_t* params;   // (B, P, h, w): the network's head, before the gate
  const scalar_t* gate;     // (B,)
  Strides s_frame0, s_frame1, s_splat, s_flow0, s_flow1, s_weight0, s_params;
  int64_t batch, height, width, low_height, low_width, taps;
};

// Source index of bilinear upsampling with align_corners=False, as ATen computes it
// (area_pixel_compute_source_index, then the low index, the high step and the lambdas).
template <typename scalar_t>
struct Source {
  int64_t low, step;
  scalar_t lambda0, lambda1;
};

template <typename scalar_t>
FS_HD Source<scalar_t> source_index(int64_t out_index, int64_t in_size, int64_t out_size) {
  const scalar_t scale = static_cast<scalar_t>(in_size) / static_cast<scalar_t>(out_size);
  scalar_t real = scale * (static_cast<scalar_t>(out_index) + scalar_t(0.5)) - scalar_t(0.5);
  real = real < scalar_t(0) ? scalar_t(0) : real;
  Source<scalar_t> s;
  s.low = static_cast<int64_t>(real);
  s.step = s.low < in_size - 1 ? 1 : 0;
  s.lambda1 = real - static_cast<scalar_t>(s.low);
  s.lambda0 = scalar_t(1) - s.lambda1;
  return s;
}

// Clamp a sample position into [0, size-1]: low/high indices, fraction, and whether the
// clamp passes a gradient (strictly inside). NaN reads index 0 and keeps a NaN fraction,
// as deformable_separable_conv does.
template <typename scalar_t>
struct Axis {
  int64_t low, high;
  scalar_t fraction;
  bool inside;
};

template <typename scalar_t>
FS_HD Axis<scalar_t> locate(scalar_t position, int64_t size) {
  const scalar_t top = static_cast<scalar_t>(size - 1);
  Axis<scalar_t> a;
  a.inside = position > scalar_t(0) && position < top;
  if (position != position) {  // NaN
    a.low = a.high = 0;
    a.fraction = position;
    return a;
  }
  const scalar_t clamped = position < scalar_t(0) ? scalar_t(0) : (position > top ? top : position);
  const scalar_t low = floor(clamped);
  a.low = static_cast<int64_t>(low);
  a.high = a.low + 1 < size ? a.low + 1 : size - 1;
  a.fraction = clamped - low;
  return a;
}

template <typename scalar_t>
FS_HD scalar_t sigmoid(scalar_t z) {
  return scalar_t(1) / (scalar_t(1) + exp(-z));
}

// The gated, upsampled parameters of pixel (b, y, x): r[0..P).
template <typename scalar_t>
FS_HD void sample_params(const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, int64_t count, scalar_t* r) {
  const Source<scalar_t> sy = source_index<scalar_t>(y, in.low_height, in.height);
  const Source<scalar_t> sx = source_index<scalar_t>(x, in.low_width, in.width);
  const Strides& s = in.s_params;
  const scalar_t* p = in.params + b * s.b;
  const int64_t top = sy.low * s.y, bottom = (sy.low + sy.step) * s.y;
  const int64_t left = sx.low * s.x, right = (sx.low + sx.step) * s.x;
  const scalar_t g = in.gate[b];
  for (int64_t c = 0; c < count; ++c) {
    const scalar_t* q = p + c * s.c;
    // ATen's order of operations, so the two agree to the last bit or nearly.
    const scalar_t value = sy.lambda0 * (sx.lambda0 * q[top + left] + sx.lambda1 * q[top + right]) +
                           sy.lambda1 * (sx.lambda0 * q[bottom + left] + sx.lambda1 * q[bottom + right]);
    r[c] = value * g;
  }
}

// Element (b, c, y, x) of a tensor read through its strides.
template <typename scalar_t>
FS_HD scalar_t at(const scalar_t* base, const Strides& s, int64_t b, int64_t c, int64_t y, int64_t x) {
  return base[b * s.b + c * s.c + y * s.y + x * s.x];
}

// One frame's candidate: the normalised deformable separable convolution at (b, y, x).
// r points at this frame's k = 2n + 3n^2 parameters. Returns the kernel sum used as divisor
// (1 where guarded) through `divisor` and whether it was guarded.
template <typename scalar_t>
FS_HD void candidate(const scalar_t* frame, const Strides& sf, const scalar_t* flow, const Strides& sl,
                     const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, const scalar_t* r, scalar_t* value,
                     scalar_t& divisor, bool& guarded) {
  const int64_t n = in.taps, nn = n * n, radius = n / 2;
  const scalar_t dx = at(flow, sl, b, 0, y, x), dy = at(flow, sl, b, 1, y, x);
  scalar_t acc[3] = {0, 0, 0};
  scalar_t total = 0;
  const scalar_t* f = frame + b * sf.b;
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t vi = (i == radius ? scalar_t(1) : scalar_t(0)) + r[i];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = i * n + j;
      const scalar_t hj = (j == radius ? scalar_t(1) : scalar_t(0)) + r[n + j];
      const scalar_t mk = scalar_t(2) * sigmoid(r[2 * n + 2 * nn + k]);
      const Axis<scalar_t> ay = locate<scalar_t>(dy + r[2 * n + k] + static_cast<scalar_t>(y + i - radius), in.height);
      const Axis<scalar_t> ax =
          locate<scalar_t>(dx + r[2 * n + nn + k] + static_cast<scalar_t>(x + j - radius), in.width);
      const scalar_t weight = vi * hj * mk;
      total += weight;
      const scalar_t wy1 = weight * ay.fraction, wy0 = weight - wy1;
      const scalar_t c01 = wy0 * ax.fraction, c11 = wy1 * ax.fraction;
      const scalar_t c00 = wy0 - c01, c10 = wy1 - c11;
      const int64_t o00 = ay.low * sf.y + ax.low * sf.x, o01 = ay.low * sf.y + ax.high * sf.x;
      const int64_t o10 = ay.high * sf.y + ax.low * sf.x, o11 = ay.high * sf.y + ax.high * sf.x;
      for (int c = 0; c < 3; ++c) {
        const scalar_t* fc = f + c * sf.c;
        acc[c] += c00 * fc[o00] + c01 * fc[o01] + c10 * fc[o10] + c11 * fc[o11];
      }
    }
  }
  // As torch.where(total.abs() < 0.01, 1, total): a NaN sum is not < 0.01, so it is kept.
  guarded = fabs(total) < scalar_t(kGuard);
  divisor = guarded ? scalar_t(1) : total;
  for (int c = 0; c < 3; ++c) value[c] = acc[c] / divisor;
}

// The blend's three logits at a pixel: prior plus the network's residual.
template <typename scalar_t>
FS_HD void logits(scalar_t w0, const scalar_t* r3, scalar_t* l) {
  const scalar_t tiny = static_cast<scalar_t>(kTinyWeight);
  const scalar_t a = w0 < tiny ? tiny : w0;
  const scalar_t one_minus = scalar_t(1) - w0;
  const scalar_t c = one_minus < tiny ? tiny : one_minus;
  l[0] = log(a) + r3[0];
  l[1] = log(c) + r3[1];
  l[2] = static_cast<scalar_t>(log(kSplatPrior)) + r3[2];
}

template <typename scalar_t>
FS_HD void softmax3(const scalar_t* l, scalar_t* s) {
  scalar_t top = l[0] > l[1] ? l[0] : l[1];
  top = top > l[2] ? top : l[2];
  const scalar_t e0 = exp(l[0] - top), e1 = exp(l[1] - top), e2 = exp(l[2] - top);
  const scalar_t sum = e0 + e1 + e2;
  s[0] = e0 / sum;
  s[1] = e1 / sum;
  s[2] = e2 / sum;
}

// Forward of one pixel from its gated, upsampled parameters r[0..P): writes out3[0..3).
template <typename scalar_t>
FS_HD void forward_from_params(const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, const scalar_t* r,
                               scalar_t* out3) {
  const int64_t k = 2 * in.taps + 3 * in.taps * in.taps;
  scalar_t c0[3], c1[3], d0, d1;
  bool g0, g1;
  candidate(in.frame0, in.s_frame0, in.flow0, in.s_flow0, in, b, y, x, r, c0, d0, g0);
  candidate(in.frame1, in.s_frame1, in.flow1, in.s_flow1, in, b, y, x, r + k, c1, d1, g1);
  scalar_t l[3], s[3];
  logits(at(in.weight0, in.s_weight0, b, 0, y, x), r + 2 * k, l);
  softmax3(l, s);
  for (int c = 0; c < 3; ++c) {
    out3[c] = s[0] * c0[c] + s[1] * c1[c] + s[2] * at(in.splat, in.s_splat, b, c, y, x);
  }
}

// Forward of one pixel, sampling its parameters itself (the CUDA kernel's way).
template <typename scalar_t>
FS_HD void forward_pixel(const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, scalar_t* out3) {
  scalar_t r[kMaxParams];
  const int64_t k = 2 * in.taps + 3 * in.taps * in.taps;
  sample_params(in, b, y, x, 2 * k + 3, r);
  forward_from_params(in, b, y, x, r, out3);
}

// Backward of one candidate: given dL/dC (3 values), adds dL/dr for this frame's k params.
template <typename scalar_t>
FS_HD void candidate_backward(const scalar_t* frame, const Strides& sf, const scalar_t* flow, const Strides& sl,
                              const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, const scalar_t* r,
                              const scalar_t* value, scalar_t divisor, bool guarded, const scalar_t* grad_value,
                              scalar_t* grad_r) {
  const int64_t n = in.taps, nn = n * n, radius = n / 2;
  const scalar_t dx = at(flow, sl, b, 0, y, x), dy = at(flow, sl, b, 1, y, x);
  scalar_t g_acc[3];
  scalar_t g_total = 0;
  for (int c = 0; c < 3; ++c) {
    g_acc[c] = grad_value[c] / divisor;
    g_total -= grad_value[c] * value[c] / divisor;  // d(acc/T)/dT = -C/T
  }
  if (guarded) g_total = 0;
  const scalar_t* f = frame + b * sf.b;
  for (int64_t i = 0; i < 2 * n; ++i) grad_r[i] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t vi = (i == radius ? scalar_t(1) : scalar_t(0)) + r[i];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = i * n + j;
      const scalar_t hj = (j == radius ? scalar_t(1) : scalar_t(0)) + r[n + j];
      const scalar_t sk = sigmoid(r[2 * n + 2 * nn + k]);
      const scalar_t mk = scalar_t(2) * sk;
      const Axis<scalar_t> ay = locate<scalar_t>(dy + r[2 * n + k] + static_cast<scalar_t>(y + i - radius), in.height);
      const Axis<scalar_t> ax =
          locate<scalar_t>(dx + r[2 * n + nn + k] + static_cast<scalar_t>(x + j - radius), in.width);
      const int64_t o00 = ay.low * sf.y + ax.low * sf.x, o01 = ay.low * sf.y + ax.high * sf.x;
      const int64_t o10 = ay.high * sf.y + ax.low * sf.x, o11 = ay.high * sf.y + ax.high * sf.x;
      scalar_t g_sample = 0, g_fy = 0, g_fx = 0;
      for (int c = 0; c < 3; ++c) {
        const scalar_t* fc = f + c * sf.c;
        const scalar_t p00 = fc[o00], p01 = fc[o01], p10 = fc[o10], p11 = fc[o11];
        const scalar_t top = p00 + ax.fraction * (p01 - p00);
        const scalar_t bottom = p10 + ax.fraction * (p11 - p10);
        g_sample += g_acc[c] * (top + ay.fraction * (bottom - top));
        g_fy += g_acc[c] * (bottom - top);
        g_fx += g_acc[c] * ((p01 - p00) + ay.fraction * ((p11 - p10) - (p01 - p00)));
      }
      const scalar_t weight = vi * hj * mk;
      const scalar_t g_weight = g_sample + g_total;
      grad_r[i] += g_weight * hj * mk;
      grad_r[n + j] += g_weight * vi * mk;
      grad_r[2 * n + k] = ay.inside ? weight * g_fy : scalar_t(0);
      grad_r[2 * n + nn + k] = ax.inside ? weight * g_fx : scalar_t(0);
      // m = 2 sigmoid(z): dm/dz = 2 s (1 - s)
      grad_r[2 * n + 2 * nn + k] = g_weight * vi * hj * scalar_t(2) * sk * (scalar_t(1) - sk);
    }
  }
}

// Backward of one pixel: dL/d(upsampled, ungated params) at this pixel into g[0..P).
// r: the pixel's gated, upsampled parameters.
template <typename scalar_t>
FS_HD void backward_from_params(const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, const scalar_t* r,
                                const scalar_t* grad_out3, scalar_t* g) {
  const int64_t k = 2 * in.taps + 3 * in.taps * in.taps;
  const int64_t count = 2 * k + 3;
  scalar_t c0[3], c1[3], d0, d1;
  bool g0, g1;
  candidate(in.frame0, in.s_frame0, in.flow0, in.s_flow0, in, b, y, x, r, c0, d0, g0);
  candidate(in.frame1, in.s_frame1, in.flow1, in.s_flow1, in, b, y, x, r + k, c1, d1, g1);
  scalar_t l[3], s[3];
  logits(at(in.weight0, in.s_weight0, b, 0, y, x), r + 2 * k, l);
  softmax3(l, s);
  scalar_t splat[3];
  for (int c = 0; c < 3; ++c) splat[c] = at(in.splat, in.s_splat, b, c, y, x);
  // out = sum_q s_q X_q: dL/ds_q = <g, X_q>; softmax: dL/dl_q = s_q (dL/ds_q - sum s dL/ds)
  scalar_t gs[3] = {0, 0, 0};
  for (int c = 0; c < 3; ++c) {
    gs[0] += grad_out3[c] * c0[c];
    gs[1] += grad_out3[c] * c1[c];
    gs[2] += grad_out3[c] * splat[c];
  }
  const scalar_t mean = s[0] * gs[0] + s[1] * gs[1] + s[2] * gs[2];
  for (int q = 0; q < 3; ++q) g[2 * k + q] = s[q] * (gs[q] - mean);
  scalar_t gc0[3], gc1[3];
  for (int c = 0; c < 3; ++c) {
    gc0[c] = s[0] * grad_out3[c];
    gc1[c] = s[1] * grad_out3[c];
  }
  candidate_backward(in.frame0, in.s_frame0, in.flow0, in.s_flow0, in, b, y, x, r, c0, d0, g0, gc0, g);
  candidate_backward(in.frame1, in.s_frame1, in.flow1, in.s_flow1, in, b, y, x, r + k, c1, d1, g1, gc1, g + k);
  const scalar_t gate = in.gate[b];
  for (int64_t c = 0; c < count; ++c) g[c] *= gate;
}

// Backward of one pixel, sampling its parameters itself (the CUDA kernel's way).
template <typename scalar_t>
FS_HD void backward_pixel(const Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x, const scalar_t* grad_out3,
                          scalar_t* g) {
  scalar_t r[kMaxParams];
  const int64_t k = 2 * in.taps + 3 * in.taps * in.taps;
  sample_params(in, b, y, x, 2 * k + 3, r);
  backward_from_params(in, b, y, x, r, grad_out3, g);
}

}  // namespace flowsep
