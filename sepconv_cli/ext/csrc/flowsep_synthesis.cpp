// Python bindings and argument checks of FlowSep's fused synthesis, CUDA kernels.
// Definition: sepconv_cli/ext/flowsep_synthesis.py; per-pixel code: flowsep_synthesis.h.

#include <torch/extension.h>

at::Tensor flowsep_synthesis_forward_cuda(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& splat,
                                          const at::Tensor& flow0, const at::Tensor& flow1,
                                          const at::Tensor& weight0, const at::Tensor& params,
                                          const at::Tensor& gate, int64_t taps);

at::Tensor flowsep_synthesis_backward_cuda(const at::Tensor& grad_out, const at::Tensor& frame0,
                                           const at::Tensor& frame1, const at::Tensor& splat,
                                           const at::Tensor& flow0, const at::Tensor& flow1,
                                           const at::Tensor& weight0, const at::Tensor& params,
                                           const at::Tensor& gate, int64_t taps);

namespace {

constexpr int64_t kMaxTaps = 5;  // flowsep::kMaxTaps

void check_inputs(std::initializer_list<const torch::Tensor*> tensors, const torch::Tensor& params, int64_t taps) {
  const torch::Tensor& first = **tensors.begin();
  for (const torch::Tensor* t : tensors) {
    TORCH_CHECK(t->is_cuda(), "flowsep_synthesis: all inputs must be CUDA tensors");
    TORCH_CHECK(t->device() == first.device(), "flowsep_synthesis: inputs on different devices");
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), "flowsep_synthesis: inputs must share a dtype");
  }
  TORCH_CHECK(first.scalar_type() == torch::kFloat || first.scalar_type() == torch::kDouble,
              "flowsep_synthesis: the CUDA kernels take float32 or float64, got ", first.scalar_type());
  TORCH_CHECK(taps % 2 == 1 && taps <= kMaxTaps, "flowsep_synthesis: taps must be odd and at most ", kMaxTaps);
  TORCH_CHECK(params.dim() == 4 && params.size(1) == 2 * (2 * taps + 3 * taps * taps) + 3,
              "flowsep_synthesis: params must be (B, 2(2n+3n^2)+3, h, w), got ", params.sizes());
}

torch::Tensor forward(const torch::Tensor& frame0, const torch::Tensor& frame1, const torch::Tensor& splat,
                      const torch::Tensor& flow0, const torch::Tensor& flow1, const torch::Tensor& weight0,
                      const torch::Tensor& params, const torch::Tensor& gate, int64_t taps) {
  check_inputs({&frame0, &frame1, &splat, &flow0, &flow1, &weight0, &params, &gate}, params, taps);
  TORCH_CHECK(gate.dim() == 1 && gate.is_contiguous(), "flowsep_synthesis: gate must be a contiguous (B,)");
  return flowsep_synthesis_forward_cuda(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
}

torch::Tensor backward(const torch::Tensor& grad_out, const torch::Tensor& frame0, const torch::Tensor& frame1,
                       const torch::Tensor& splat, const torch::Tensor& flow0, const torch::Tensor& flow1,
                       const torch::Tensor& weight0, const torch::Tensor& params, const torch::Tensor& gate,
                       int64_t taps) {
  check_inputs({&grad_out, &frame0, &frame1, &splat, &flow0, &flow1, &weight0, &params, &gate}, params, taps);
  TORCH_CHECK(gate.dim() == 1 && gate.is_contiguous(), "flowsep_synthesis: gate must be a contiguous (B,)");
  TORCH_CHECK(grad_out.sizes() == frame0.sizes(), "flowsep_synthesis: grad_out must match the output");
  return flowsep_synthesis_backward_cuda(grad_out, frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "FlowSep's fused synthesis, forward (CUDA)");
  m.def("backward", &backward,
        "FlowSep's fused synthesis, backward (CUDA): grad of the upsampled, ungated params at full resolution");
}
