// CPU kernels of FlowSep's fused synthesis (operator sepconv_flowsep_synthesis_cpu::forward
// and ::backward). The per-pixel arithmetic is in flowsep_synthesis.h, shared with the CUDA
// kernels; this file only loops: one task per output row, every input read through its
// strides (the network's head comes out channels_last on the CPU, frames NCHW).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <torch/library.h>

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
    at::parallel_for(0, in.batch * height, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / height, y = row % height;
        scalar_t* ob = o + b * 3 * plane + y * width;
        for (int64_t x = 0; x < width; ++x) {
          scalar_t value[3];
          flowsep::forward_pixel<scalar_t>(in, b, y, x, value);
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
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / height, y = row % height;
          for (int64_t x = 0; x < width; ++x) {
            scalar_t grad3[3];
            for (int c = 0; c < 3; ++c) grad3[c] = flowsep::at(go, sg, b, c, y, x);
            flowsep::backward_pixel<scalar_t>(in, b, y, x, grad3, g + ((b * height + y) * width + x) * count);
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
