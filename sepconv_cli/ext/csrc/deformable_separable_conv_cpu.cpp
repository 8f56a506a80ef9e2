// CPU kernel of the deformable separable convolution (DSepConv), registered as the
// operator sepconv_deformable_separable_conv_cpu::forward. For n taps, r = n / 2:
//
//   out[b,c,y,x] = sum_{i,j<n} v[i] h[j] m[k] bilinear(frame[b,c], y+i-r+dy[k], x+j-r+dx[k]),  k = i*n+j
//
// with every sample position clamped into the frame first (replicate borders); the
// exact conventions are in deformable_separable_conv.py, whose PyTorch path is the
// reference this kernel is tested against.
//
// The PyTorch path runs 4*n*n full-frame gathers and multiply-adds, each a pass over
// memory. Here one task computes a row of output pixels: per pixel and tap the two
// clamped positions and the four bilinear weights are computed once, then applied to
// every channel. The frame is first copied channels-last, so the C values at a corner
// share a cache line. Offsets, masks and kernels are read through their strides, so the
// channels_last tensors the network produces on the CPU need no copy. The positions
// are data-dependent, which rules out SIMD along the taps as in separable_conv_cpu.cpp;
// the compiler vectorises what it can.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/library.h>

namespace {

struct Strides {
  int64_t batch, tap, row, col;
};

Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Clamp `position` into [0, size-1]; the low and high sample indices and the fraction
// between them. NaN keeps its NaN fraction (a NaN output, as in the PyTorch path) but
// reads index 0, so a bad offset never reads out of bounds.
template <typename scalar_t>
inline void axis(scalar_t position, int64_t size, int64_t& low, int64_t& high, scalar_t& fraction) {
  if (std::isnan(position)) {
    low = high = 0;
    fraction = position;
    return;
  }
  const scalar_t clamped = std::min(std::max(position, scalar_t(0)), static_cast<scalar_t>(size - 1));
  const scalar_t floor = std::floor(clamped);
  low = static_cast<int64_t>(floor);
  high = std::min(low + 1, size - 1);
  fraction = clamped - floor;
}

struct Inputs {
  Strides v, h, oy, ox, m;
};

template <typename scalar_t>
void forward_row(const scalar_t* frame /* (H, W, C) */, const scalar_t* v, const scalar_t* h, const scalar_t* oy,
                 const scalar_t* ox, const scalar_t* m, const Inputs& s, int64_t taps, int64_t channels,
                 int64_t height, int64_t width, int64_t y, scalar_t* out /* (C, H, W) */, scalar_t* acc) {
  const int64_t radius = taps / 2;
  for (int64_t x = 0; x < width; ++x) {
    std::fill(acc, acc + channels, scalar_t(0));
    const int64_t vp = y * s.v.row + x * s.v.col, hp = y * s.h.row + x * s.h.col;
    const int64_t oyp = y * s.oy.row + x * s.oy.col, oxp = y * s.ox.row + x * s.ox.col;
    const int64_t mp = y * s.m.row + x * s.m.col;
    for (int64_t i = 0; i < taps; ++i) {
      const scalar_t vi = v[vp + i * s.v.tap];
      for (int64_t j = 0; j < taps; ++j) {
        const int64_t k = i * taps + j;
        int64_t y0, y1, x0, x1;
        scalar_t fy, fx;
        axis<scalar_t>(oy[oyp + k * s.oy.tap] + static_cast<scalar_t>(y + i - radius), height, y0, y1, fy);
        axis<scalar_t>(ox[oxp + k * s.ox.tap] + static_cast<scalar_t>(x + j - radius), width, x0, x1, fx);
        // The same weight arithmetic as the PyTorch path, so the two agree to rounding.
        const scalar_t weight = vi * h[hp + j * s.h.tap] * m[mp + k * s.m.tap];
        const scalar_t wy1 = weight * fy, wy0 = weight - wy1;
        const scalar_t c01 = wy0 * fx, c11 = wy1 * fx;
        const scalar_t c00 = wy0 - c01, c10 = wy1 - c11;
        const scalar_t* p00 = frame + (y0 * width + x0) * channels;
        const scalar_t* p01 = frame + (y0 * width + x1) * channels;
        const scalar_t* p10 = frame + (y1 * width + x0) * channels;
        const scalar_t* p11 = frame + (y1 * width + x1) * channels;
        for (int64_t c = 0; c < channels; ++c) {
          acc[c] += c00 * p00[c] + c01 * p01[c] + c10 * p10[c] + c11 * p11[c];
        }
      }
    }
    for (int64_t c = 0; c < channels; ++c) out[(c * height + y) * width + x] = acc[c];
  }
}

template <typename scalar_t>
void forward_impl(const at::Tensor& frame_hwc, const at::Tensor& vertical, const at::Tensor& horizontal,
                  const at::Tensor& offset_y, const at::Tensor& offset_x, const at::Tensor& mask, at::Tensor& out) {
  const int64_t batch = out.size(0), channels = out.size(1), height = out.size(2), width = out.size(3);
  const int64_t taps = vertical.size(1);
  const Inputs s{strides_of(vertical), strides_of(horizontal), strides_of(offset_y), strides_of(offset_x),
                 strides_of(mask)};
  const scalar_t* frame = frame_hwc.data_ptr<scalar_t>();
  const scalar_t* v = vertical.data_ptr<scalar_t>();
  const scalar_t* h = horizontal.data_ptr<scalar_t>();
  const scalar_t* oy = offset_y.data_ptr<scalar_t>();
  const scalar_t* ox = offset_x.data_ptr<scalar_t>();
  const scalar_t* m = mask.data_ptr<scalar_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const int64_t plane = height * width;
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> acc(channels);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / height, y = row % height;
      forward_row<scalar_t>(frame + b * plane * channels, v + b * s.v.batch, h + b * s.h.batch,
                            oy + b * s.oy.batch, ox + b * s.ox.batch, m + b * s.m.batch, s, taps, channels, height,
                            width, y, o + b * channels * plane, acc.data());
    }
  });
}

at::Tensor forward(const at::Tensor& frame, const at::Tensor& vertical, const at::Tensor& horizontal,
                   const at::Tensor& offset_y, const at::Tensor& offset_x, const at::Tensor& mask) {
  const at::Tensor* all[] = {&frame, &vertical, &horizontal, &offset_y, &offset_x, &mask};
  for (const at::Tensor* t : all) {
    TORCH_CHECK(t->device().is_cpu(), "deformable_separable_conv (CPU): all inputs must be CPU tensors");
    TORCH_CHECK(t->scalar_type() == frame.scalar_type(), "deformable_separable_conv (CPU): inputs must share a dtype");
    TORCH_CHECK(t->dim() == 4, "deformable_separable_conv (CPU): inputs must be 4-D, got ", t->sizes());
  }
  TORCH_CHECK(frame.scalar_type() == at::kFloat || frame.scalar_type() == at::kDouble,
              "deformable_separable_conv (CPU): only float32 and float64 are compiled, got ", frame.scalar_type());
  const int64_t batch = frame.size(0), height = frame.size(2), width = frame.size(3);
  const int64_t taps = vertical.size(1);
  TORCH_CHECK(taps % 2 == 1, "deformable_separable_conv (CPU): the kernel needs an odd number of taps");
  for (const at::Tensor* t : {&vertical, &horizontal}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({batch, taps, height, width}),
                "deformable_separable_conv (CPU): kernels must be (B, n, H, W), got ", t->sizes());
  }
  for (const at::Tensor* t : {&offset_y, &offset_x, &mask}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({batch, taps * taps, height, width}),
                "deformable_separable_conv (CPU): offsets and mask must be (B, n*n, H, W), got ", t->sizes());
  }
  at::Tensor out = at::empty(frame.sizes(), frame.options());
  if (out.numel() == 0) return out;
  const at::Tensor frame_hwc = frame.permute({0, 2, 3, 1}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "deformable_separable_conv_cpu_forward", [&] {
    forward_impl<scalar_t>(frame_hwc, vertical, horizontal, offset_y, offset_x, mask, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(sepconv_deformable_separable_conv_cpu, m) {
  m.def(
      "forward(Tensor frame, Tensor vertical, Tensor horizontal, Tensor offset_y, Tensor offset_x, Tensor mask) -> "
      "Tensor");
}

TORCH_LIBRARY_IMPL(sepconv_deformable_separable_conv_cpu, CPU, m) { m.impl("forward", &forward); }
