// CPU kernel of sepconv_cli.flow.splat (operator sepconv_splat_cpu::forward): both frames
// splatted forward to time t, weighted by photometric consistency. The definition, and the
// PyTorch code this must match, are in flow.py. There it takes a dozen full-size temporaries
// per frame and corner and eight index_add_ passes; here each source pixel is read once,
// its consistency error computed on the spot (bilinear, border-clamped: grid_sample with
// align_corners=True and padding_mode="border") and its four bilinear shares added to an
// (H, W, 4) accumulator. The scatter targets are data-dependent, so each thread splats a
// band of source rows into an accumulator of its own and the accumulators are summed after.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <vector>

#include <torch/library.h>

namespace {

template <typename scalar_t>
struct Plane {  // one (C, H, W) image read through strides
  const scalar_t* data;
  int64_t c, y, x;
  scalar_t operator()(int64_t channel, int64_t row, int64_t col) const { return data[channel * c + row * y + col * x]; }
};

template <typename scalar_t>
Plane<scalar_t> plane(const at::Tensor& t, int64_t b) {
  return {t.data_ptr<scalar_t>() + b * t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Bilinear sample of channel c at (py, px), positions clamped into the frame.
template <typename scalar_t>
scalar_t sample(const Plane<scalar_t>& image, int64_t channel, scalar_t py, scalar_t px, int64_t height,
                int64_t width) {
  py = std::min(std::max(py, scalar_t(0)), static_cast<scalar_t>(height - 1));
  px = std::min(std::max(px, scalar_t(0)), static_cast<scalar_t>(width - 1));
  const int64_t y0 = static_cast<int64_t>(std::floor(py)), x0 = static_cast<int64_t>(std::floor(px));
  const int64_t y1 = std::min(y0 + 1, height - 1), x1 = std::min(x0 + 1, width - 1);
  const scalar_t fy = py - static_cast<scalar_t>(y0), fx = px - static_cast<scalar_t>(x0);
  const scalar_t top = image(channel, y0, x0) * (1 - fx) + image(channel, y0, x1) * fx;
  const scalar_t bottom = image(channel, y1, x0) * (1 - fx) + image(channel, y1, x1) * fx;
  return top * (1 - fy) + bottom * fy;
}

template <typename scalar_t>
void splat_rows(const Plane<scalar_t>& source, const Plane<scalar_t>& other, const Plane<scalar_t>& flow,
                scalar_t factor, scalar_t time_weight, int64_t height, int64_t width, int64_t first, int64_t last,
                scalar_t* total) {
  for (int64_t y = first; y < last; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      const scalar_t fx = flow(0, y, x), fy = flow(1, y, x);
      if (!std::isfinite(fx) || !std::isfinite(fy)) continue;
      scalar_t value[3], error = 0;
      for (int c = 0; c < 3; ++c) {
        value[c] = source(c, y, x);
        error += std::fabs(value[c] - sample(other, c, y + fy, x + fx, height, width));
      }
      const scalar_t weight = std::exp(scalar_t(-10) * (error / 3)) * time_weight;
      const scalar_t qx = x + factor * fx, qy = y + factor * fy;
      const scalar_t x0 = std::floor(qx), y0 = std::floor(qy);
      for (int dy = 0; dy < 2; ++dy) {
        const scalar_t cy = y0 + dy;
        if (cy < 0 || cy > height - 1) continue;
        const scalar_t wy = 1 - std::fabs(qy - cy);
        for (int dx = 0; dx < 2; ++dx) {
          const scalar_t cx = x0 + dx;
          if (cx < 0 || cx > width - 1) continue;
          const scalar_t bilinear = wy * (1 - std::fabs(qx - cx));
          if (!(bilinear > 0)) continue;
          scalar_t* cell = total + (static_cast<int64_t>(cy) * width + static_cast<int64_t>(cx)) * 4;
          const scalar_t share = weight * bilinear;
          for (int c = 0; c < 3; ++c) cell[c] += value[c] * share;
          cell[3] += share;
        }
      }
    }
  }
}

// frame0, frame1 (B, 3, H, W); f01, f10 (B, 2, H, W); t (B,). Returns (image (B, 3, H, W),
// coverage (B, 1, H, W)); image is 0 where coverage <= 1e-3.
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& f01,
                                           const at::Tensor& f10, const at::Tensor& t) {
  for (const at::Tensor* x : {&frame0, &frame1, &f01, &f10, &t}) {
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == frame0.scalar_type(),
                "splat (CPU): inputs must be CPU tensors of one dtype");
  }
  TORCH_CHECK(frame0.scalar_type() == at::kFloat || frame0.scalar_type() == at::kDouble,
              "splat (CPU): only float32 and float64 are compiled");
  TORCH_CHECK(frame0.dim() == 4 && frame0.size(1) == 3 && frame1.sizes() == frame0.sizes() && f01.dim() == 4 &&
                  f01.size(1) == 2 && f10.sizes() == f01.sizes() && t.dim() == 1 && t.size(0) == frame0.size(0),
              "splat (CPU): expected frames (B, 3, H, W), flows (B, 2, H, W) and t (B,)");
  const int64_t batch = frame0.size(0), height = frame0.size(2), width = frame0.size(3);
  at::Tensor image = at::empty({batch, 3, height, width}, frame0.options());
  at::Tensor coverage = at::empty({batch, 1, height, width}, frame0.options());
  if (image.numel() == 0) return {image, coverage};
  const at::Tensor times = t.contiguous();
  const int64_t pixels = height * width;
  const int threads = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "splat_cpu", [&] {
    std::vector<std::vector<scalar_t>> totals(threads, std::vector<scalar_t>(pixels * 4));
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t tb = times.data_ptr<scalar_t>()[b];
      const auto p0 = plane<scalar_t>(frame0, b), p1 = plane<scalar_t>(frame1, b);
      const auto g01 = plane<scalar_t>(f01, b), g10 = plane<scalar_t>(f10, b);
      for (auto& total : totals) std::fill(total.begin(), total.end(), scalar_t(0));
      at::parallel_for(0, height, 16, [&](int64_t first, int64_t last) {
        scalar_t* total = totals[at::get_thread_num()].data();
        splat_rows<scalar_t>(p0, p1, g01, tb, 1 - tb, height, width, first, last, total);
        splat_rows<scalar_t>(p1, p0, g10, 1 - tb, tb, height, width, first, last, total);
      });
      scalar_t* im = image.data_ptr<scalar_t>() + b * 3 * pixels;
      scalar_t* cov = coverage.data_ptr<scalar_t>() + b * pixels;
      at::parallel_for(0, pixels, 4096, [&](int64_t first, int64_t last) {
        for (int64_t p = first; p < last; ++p) {
          scalar_t cell[4] = {0, 0, 0, 0};
          for (const auto& total : totals) {
            for (int c = 0; c < 4; ++c) cell[c] += total[p * 4 + c];
          }
          const scalar_t w = cell[3];
          cov[p] = w;
          for (int c = 0; c < 3; ++c) im[c * pixels + p] = w > scalar_t(1e-3) ? cell[c] / w : scalar_t(0);
        }
      });
    }
  });
  return {image, coverage};
}

}  // namespace

TORCH_LIBRARY(sepconv_splat_cpu, m) {
  m.def("forward(Tensor frame0, Tensor frame1, Tensor f01, Tensor f10, Tensor t) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sepconv_splat_cpu, CPU, m) { m.impl("forward", &forward); }
