// CPU kernels of FlowSep's fused synthesis (operator sepconv_flowsep_synthesis_cpu::forward
// and ::backward). The per-pixel arithmetic is in flowsep_synthesis.h, shared with the CUDA
// kernels; this file only loops: one task per output row, every input read through its
// strides (the network's head comes out channels_last on the CPU, frames NCHW).
//
// Unlike the CUDA kernel, which samples the four low-resolution neighbours of every pixel
// itself, a CPU task upsamples its row's parameters once: first the vertical blend of the
// two low-resolution rows (shared by the ~4 output pixels of each low-resolution column),
// then per pixel the horizontal blend, both loops running along the contiguous channels of
// a channels_last head, which the compiler vectorises.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <torch/library.h>

#include <vector>

#include "flowsep_synthesis.h"

namespace {

flowsep::Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

template <typename scalar_t>
flowsep::Inputs<scalar_t> gather_inputs(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& splat,
                                        const at::Tensor& flow0, const at::Tensor& flow1, const at::Tensor& weight0,
                                        const at::Tensor& params, const at::Tensor& gate, int64_t taps) {
  flowsep::Inputs<scalar_t> in;
  in.frame0 = frame0.data_ptr<scalar_t>();
  in.frame1 = frame1.data_ptr<scalar_t>();
  in.splat = splat.data_ptr<scalar_t>();
  in.flow0 = flow0.data_ptr<scalar_t>();
  in.flow1 = flow1.data_ptr<scalar_t>();
  in.weight0 = weight0.data_ptr<scalar_t>();
  in.params = params.data_ptr<scalar_t>();
  in.gate = gate.data_ptr<scalar_t>();
  in.s_frame0 = strides_of(frame0);
  in.s_frame1 = strides_of(frame1);
  in.s_splat = strides_of(splat);
  in.s_flow0 = strides_of(flow0);
  in.s_flow1 = strides_of(flow1);
  in.s_weight0 = strides_of(weight0);
  in.s_params = strides_of(params);
  in.batch = frame0.size(0);
  in.height = frame0.size(2);
  in.width = frame0.size(3);
  in.low_height = params.size(2);
  in.low_width = params.size(3);
  in.taps = taps;
  return in;
}

// The gated parameters of row y, upsampled: r[x * count + c] for every x of the row.
template <typename scalar_t>
class RowParams {
 public:
  RowParams(const flowsep::Inputs<scalar_t>& in, int64_t count)
      : in_(in), count_(count), blend_(in.low_width * count), row_(in.width * count) {
    columns_.reserve(in.width);
    for (int64_t x = 0; x < in.width; ++x) {
      columns_.push_back(flowsep::source_index<scalar_t>(x, in.low_width, in.width));
    }
  }

  const scalar_t* operator()(int64_t b, int64_t y) {
    const flowsep::Source<scalar_t> sy = flowsep::source_index<scalar_t>(y, in_.low_height, in_.height);
    const flowsep::Strides& s = in_.s_params;
    const scalar_t g = in_.gate[b];
    const scalar_t top_weight = sy.lambda0 * g, bottom_weight = sy.lambda1 * g;
    const scalar_t* top = in_.params + b * s.b + sy.low * s.y;
    const scalar_t* bottom = top + sy.step * s.y;
    for (int64_t xl = 0; xl < in_.low_width; ++xl) {
      scalar_t* out = blend_.data() + xl * count_;
      const scalar_t* t = top + xl * s.x;
      const scalar_t* u = bottom + xl * s.x;
      for (int64_t c = 0; c < count_; ++c) out[c] = top_weight * t[c * s.c] + bottom_weight * u[c * s.c];
    }
    for (int64_t x = 0; x < in_.width; ++x) {
      const flowsep::Source<scalar_t>& sx = columns_[x];
      const scalar_t* left = blend_.data() + sx.low * count_;
      const scalar_t* right = left + sx.step * count_;
      scalar_t* out = row_.data() + x * count_;
      for (int64_t c = 0; c < count_; ++c) out[c] = sx.lambda0 * left[c] + sx.lambda1 * right[c];
    }
    return row_.data();
  }

 private:
  const flowsep::Inputs<scalar_t>& in_;
  int64_t count_;
  std::vector<scalar_t> blend_, row_;
  std::vector<flowsep::Source<scalar_t>> columns_;
};

void check(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& splat, const at::Tensor& flow0,
           const at::Tensor& flow1, const at::Tensor& weight0, const at::Tensor& params, const at::Tensor& gate,
           int64_t taps) {
  const at::Tensor* all[] = {&frame0, &frame1, &splat, &flow0, &flow1, &weight0, &params, &gate};
  for (const at::Tensor* t : all) {
    TORCH_CHECK(t->device().is_cpu(), "flowsep_synthesis (CPU): all inputs must be CPU tensors");
    TORCH_CHECK(t->scalar_type() == frame0.scalar_type(), "flowsep_synthesis (CPU): inputs must share a dtype");
  }
  TORCH_CHECK(frame0.scalar_type() == at::kFloat || frame0.scalar_type() == at::kDouble,
              "flowsep_synthesis (CPU): only float32 and float64 are compiled");
  TORCH_CHECK(taps % 2 == 1 && taps <= flowsep::kMaxTaps, "flowsep_synthesis (CPU): taps must be odd and at most ",
              flowsep::kMaxTaps);
  TORCH_CHECK(params.dim() == 4 && params.size(1) == 2 * (2 * taps + 3 * taps * taps) + 3,
              "flowsep_synthesis (CPU): params must be (B, 2(2n+3n^2)+3, h, w)");
  TORCH_CHECK(gate.dim() == 1 && gate.is_contiguous(), "flowsep_synthesis (CPU): gate must be a contiguous (B,)");
}

at::Tensor forward(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& splat,
                   const at::Tensor& flow0, const at::Tensor& flow1, const at::Tensor& weight0,
                   const at::Tensor& params, const at::Tensor& gate, int64_t taps) {
  check(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
  at::Tensor out = at::empty(frame0.sizes(), frame0.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cpu_forward", [&] {
    const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t height = in.height, width = in.width, plane = height * width;
    const int64_t count = params.size(1);
    at::parallel_for(0, in.batch * height, 1, [&](int64_t begin, int64_t end) {
      RowParams<scalar_t> row_params(in, count);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / height, y = row % height;
        const scalar_t* r = row_params(b, y);
        scalar_t* ob = o + b * 3 * plane + y * width;
        for (int64_t x = 0; x < width; ++x) {
          scalar_t value[3];
          flowsep::forward_from_params<scalar_t>(in, b, y, x, r + x * count, value);
          for (int c = 0; c < 3; ++c) ob[c * plane + x] = value[c];
        }
      }
    });
  });
  return out;
}

// dL/d(the upsampled, ungated params) at full resolution, (B, P, H, W) stored channels-last.
at::Tensor backward(const at::Tensor& grad_out, const at::Tensor& frame0, const at::Tensor& frame1,
                    const at::Tensor& splat, const at::Tensor& flow0, const at::Tensor& flow1,
                    const at::Tensor& weight0, const at::Tensor& params, const at::Tensor& gate, int64_t taps) {
  check(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
  TORCH_CHECK(grad_out.scalar_type() == frame0.scalar_type() && grad_out.sizes() == frame0.sizes(),
              "flowsep_synthesis (CPU): grad_out must match the output");
  const int64_t batch = frame0.size(0), height = frame0.size(2), width = frame0.size(3);
  const int64_t count = params.size(1);
  at::Tensor grad = at::empty({batch, height, width, count}, params.options());
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cpu_backward", [&] {
      const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
      const flowsep::Strides sg = strides_of(grad_out);
      const scalar_t* go = grad_out.data_ptr<scalar_t>();
      scalar_t* g = grad.data_ptr<scalar_t>();
      at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
        RowParams<scalar_t> row_params(in, count);
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / height, y = row % height;
          const scalar_t* r = row_params(b, y);
          for (int64_t x = 0; x < width; ++x) {
            scalar_t grad3[3];
            for (int c = 0; c < 3; ++c) grad3[c] = flowsep::at(go, sg, b, c, y, x);
            flowsep::backward_from_params<scalar_t>(in, b, y, x, r + x * count, grad3,
                                                    g + ((b * height + y) * width + x) * count);
          }
        }
      });
    });
  }
  return grad.permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY(sepconv_flowsep_synthesis_cpu, m) {
  m.def(
      "forward(Tensor frame0, Tensor frame1, Tensor splat, Tensor flow0, Tensor flow1, Tensor weight0, "
      "Tensor params, Tensor gate, int taps) -> Tensor");
  m.def(
      "backward(Tensor grad_out, Tensor frame0, Tensor frame1, Tensor splat, Tensor flow0, Tensor flow1, "
      "Tensor weight0, Tensor params, Tensor gate, int taps) -> Tensor");
}

TORCH_LIBRARY_IMPL(sepconv_flowsep_synthesis_cpu, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}
