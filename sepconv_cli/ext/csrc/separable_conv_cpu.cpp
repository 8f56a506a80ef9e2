// CPU kernel of the local separable convolution (SepConv), registered as the operator
// sepconv_separable_conv_cpu::forward:
//
//   out[b,c,y,x] = sum_{i<k} sum_{j<k} vertical[b,i,y,x] * horizontal[b,j,y,x] * frame[b,c,y+i,x+j]
//
// The PyTorch reference (separable_conv.py) turns this into banded matrix products,
// which waste 1.6x the multiply-adds and spend a third of their time copying; here each
// output pixel is computed directly, reordered so that the innermost loop is a
// contiguous vector multiply-add:
//
//   u[j]  = sum_i vertical[i] * frame[c, y+i, x+j]      (k rows, j vectorised)
//   out   = sum_j horizontal[j] * u[j]                  (one dot product)
//
// u is a fixed-size array of KPad >= k floats (56 for k = 51: seven AVX registers), so
// the compiler keeps it in registers and the frame row is read with whole-vector
// loads. Reading KPad columns where only k are needed would run past the frame's right
// edge, so the frame is first copied into a buffer with KPad - k zero columns of slack
// per row (3 channels: a few milliseconds at 1080p), which also makes any input layout
// contiguous. The kernels are read through their strides, so the channels_last tensors
// the network produces on CPU are used as they are, with no 51-channel copy.
//
// Built with -march=native by _build.py (the binary is cached per CPU type) and run on
// ATen's intra-op thread pool, one output row per task. It registers a TORCH_LIBRARY
// operator instead of a pybind11 module and includes only the ATen headers it uses:
// the first build then takes about 10 s instead of 45 s.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

namespace {

struct Strides {
  int64_t batch, tap, row, col;
};

Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Output pixels per block: their taps are gathered once into small local arrays and
// then reused for every channel.
constexpr int64_t kBlock = 16;

// One output row of one batch item, for every channel. `frame` points at this batch
// item's padded copy: rows of `row_stride` elements, planes of `plane` elements.
//
// Channels loop inside a block of pixels, not around single pixels: one channel's
// window for a block (k rows of kBlock + KPad floats, 16 KB at k = 51) fits in L1,
// while all three channels' windows for one pixel (45 KB) did not and ran at half
// the speed from L2.
template <typename scalar_t, int KPad>
void forward_row(const scalar_t* frame, int64_t row_stride, int64_t plane, int64_t channels,
                 const scalar_t* vertical, const scalar_t* horizontal, Strides vs, Strides hs, int64_t k, int64_t width,
                 int64_t y, scalar_t* out, int64_t out_plane) {
  alignas(64) scalar_t v[kBlock][KPad];
  alignas(64) scalar_t h[kBlock][KPad];
  for (int64_t x0 = 0; x0 < width; x0 += kBlock) {
    const int64_t n = std::min(kBlock, width - x0);
    for (int64_t p = 0; p < n; ++p) {
      const scalar_t* vx = vertical + y * vs.row + (x0 + p) * vs.col;
      const scalar_t* hx = horizontal + y * hs.row + (x0 + p) * hs.col;
      for (int64_t j = 0; j < k; ++j) {
        v[p][j] = vx[j * vs.tap];
        h[p][j] = hx[j * hs.tap];
      }
      // The slack lanes of u hold sums of real frame values: zero taps cancel them.
      for (int64_t j = k; j < KPad; ++j) h[p][j] = scalar_t(0);
    }
    for (int64_t c = 0; c < channels; ++c) {
      const scalar_t* f = frame + c * plane + y * row_stride + x0;
      scalar_t* o = out + c * out_plane + y * width + x0;
      for (int64_t p = 0; p < n; ++p) {
        scalar_t u[KPad] = {};
        for (int64_t i = 0; i < k; ++i) {
          const scalar_t vi = v[p][i];
          const scalar_t* r = f + p + i * row_stride;
#pragma omp simd
          for (int m = 0; m < KPad; ++m) u[m] += vi * r[m];
        }
        scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int m = 0; m < KPad; ++m) acc += h[p][m] * u[m];
        o[p] = acc;
      }
    }
  }
}

template <typename scalar_t, int KPad>
void forward_impl(const at::Tensor& padded, const at::Tensor& vertical, const at::Tensor& horizontal,
                  at::Tensor& out) {
  const int64_t batch = out.size(0), channels = out.size(1), height = out.size(2), width = out.size(3);
  const int64_t k = vertical.size(1);
  const int64_t row_stride = padded.stride(2), plane = padded.stride(1), frame_batch = padded.stride(0);
  const Strides vs = strides_of(vertical), hs = strides_of(horizontal);
  const scalar_t* frame = padded.data_ptr<scalar_t>();
  const scalar_t* v = vertical.data_ptr<scalar_t>();
  const scalar_t* h = horizontal.data_ptr<scalar_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const int64_t out_plane = height * width;
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / height, y = row % height;
      forward_row<scalar_t, KPad>(frame + b * frame_batch, row_stride, plane, channels, v + b * vs.batch,
                                  h + b * hs.batch, vs, hs, k, width, y, o + b * channels * out_plane, out_plane);
    }
  });
}

// The widths compiled: every k up to 64, rounded up to a multiple of 8 floats (one
// AVX register) so that no lane is wasted beyond the round-up.
constexpr int kMaxTaps = 64;

template <typename scalar_t>
void dispatch_width(int64_t k, const at::Tensor& padded, const at::Tensor& vertical,
                    const at::Tensor& horizontal, at::Tensor& out) {
  switch ((k + 7) / 8) {
    case 1: return forward_impl<scalar_t, 8>(padded, vertical, horizontal, out);
    case 2: return forward_impl<scalar_t, 16>(padded, vertical, horizontal, out);
    case 3: return forward_impl<scalar_t, 24>(padded, vertical, horizontal, out);
    case 4: return forward_impl<scalar_t, 32>(padded, vertical, horizontal, out);
    case 5: return forward_impl<scalar_t, 40>(padded, vertical, horizontal, out);
    case 6: return forward_impl<scalar_t, 48>(padded, vertical, horizontal, out);
    case 7: return forward_impl<scalar_t, 56>(padded, vertical, horizontal, out);
    case 8: return forward_impl<scalar_t, 64>(padded, vertical, horizontal, out);
    default: TORCH_CHECK(false, "separable_conv (CPU): compiled for at most ", kMaxTaps, " taps, got ", k);
  }
}

at::Tensor forward(const at::Tensor& frame, const at::Tensor& vertical, const at::Tensor& horizontal) {
  TORCH_CHECK(frame.device().is_cpu() && vertical.device().is_cpu() && horizontal.device().is_cpu(),
              "separable_conv (CPU): all inputs must be CPU tensors");
  TORCH_CHECK(frame.scalar_type() == at::kFloat || frame.scalar_type() == at::kDouble,
              "separable_conv (CPU): only float32 and float64 are compiled, got ", frame.scalar_type());
  TORCH_CHECK(vertical.scalar_type() == frame.scalar_type() && horizontal.scalar_type() == frame.scalar_type(),
              "separable_conv (CPU): inputs must share a dtype, got ", frame.scalar_type(), ", ",
              vertical.scalar_type(), " and ", horizontal.scalar_type());
  TORCH_CHECK(frame.dim() == 4 && vertical.dim() == 4 && vertical.sizes() == horizontal.sizes(),
              "separable_conv (CPU): expected frame (B, C, H+k-1, W+k-1) and kernels (B, k, H, W), got ",
              frame.sizes(), ", ", vertical.sizes(), " and ", horizontal.sizes());
  const int64_t batch = vertical.size(0), k = vertical.size(1), height = vertical.size(2), width = vertical.size(3);
  TORCH_CHECK(k >= 1 && k <= kMaxTaps, "separable_conv (CPU): compiled for 1 to ", kMaxTaps, " taps, got ", k);
  TORCH_CHECK(frame.size(0) == batch && frame.size(2) == height + k - 1 && frame.size(3) == width + k - 1,
              "separable_conv (CPU): frame ", frame.sizes(), " does not match kernels ", vertical.sizes(),
              " (expected (B, C, H+k-1, W+k-1))");
  const int64_t channels = frame.size(1);
  const int64_t slack = (k + 7) / 8 * 8 - k;
  at::Tensor padded = at::zeros({batch, channels, height + k - 1, width + k - 1 + slack}, frame.options());
  padded.narrow(3, 0, width + k - 1).copy_(frame);
  at::Tensor out = at::empty({batch, channels, height, width}, frame.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "separable_conv_cpu_forward",
                             [&] { dispatch_width<scalar_t>(k, padded, vertical, horizontal, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY(sepconv_separable_conv_cpu, m) {
  m.def("forward(Tensor frame, Tensor vertical, Tensor horizontal) -> Tensor");
}

TORCH_LIBRARY_IMPL(sepconv_separable_conv_cpu, CPU, m) { m.impl("forward", &forward); }
