// Python bindings and input checks for the local separable convolution CUDA kernels.
//
// The Python custom op sepconv::separable_conv (separable_conv.py) owns the autograd,
// autocast and torch.compile registrations and calls forward()/backward() below from
// its CUDA kernel, so this module only has to be correct for the CUDA tensors it is
// handed; the checks here are a safety net for direct callers.

#include <torch/extension.h>

#include <vector>

// Launchers, defined in separable_conv_cuda.cu. Inputs must be contiguous, on one CUDA
// device, float32 or float64, with shapes already checked.
torch::Tensor separable_conv_cuda_forward(const torch::Tensor& frame, const torch::Tensor& vertical,
                                          const torch::Tensor& horizontal);
std::vector<torch::Tensor> separable_conv_cuda_backward(const torch::Tensor& grad_out, const torch::Tensor& frame,
                                                        const torch::Tensor& vertical,
                                                        const torch::Tensor& horizontal, bool need_frame,
                                                        bool need_vertical, bool need_horizontal);

namespace {

void check_inputs(const torch::Tensor& frame, const torch::Tensor& vertical, const torch::Tensor& horizontal) {
  TORCH_CHECK(frame.is_cuda() && vertical.is_cuda() && horizontal.is_cuda(),
              "separable_conv (CUDA): all inputs must be CUDA tensors");
  TORCH_CHECK(frame.device() == vertical.device() && frame.device() == horizontal.device(),
              "separable_conv (CUDA): inputs must be on one device, got ", frame.device(), ", ",
              vertical.device(), " and ", horizontal.device());
  TORCH_CHECK(frame.scalar_type() == at::kFloat || frame.scalar_type() == at::kDouble,
              "separable_conv (CUDA): only float32 and float64 are compiled, got ", frame.scalar_type());
  TORCH_CHECK(vertical.scalar_type() == frame.scalar_type() && horizontal.scalar_type() == frame.scalar_type(),
              "separable_conv (CUDA): inputs must share a dtype, got ", frame.scalar_type(), ", ",
              vertical.scalar_type(), " and ", horizontal.scalar_type());
  TORCH_CHECK(frame.dim() == 4, "separable_conv (CUDA): frame must be (B, C, H+k-1, W+k-1), got ",
              frame.sizes());
  TORCH_CHECK(vertical.dim() == 4 && vertical.sizes() == horizontal.sizes(),
              "separable_conv (CUDA): vertical and horizontal must both be (B, k, H, W), got ", vertical.sizes(),
              " and ", horizontal.sizes());
  const int64_t k = vertical.size(1);
  TORCH_CHECK(k >= 1, "separable_conv (CUDA): the kernels need at least one tap");
  TORCH_CHECK(frame.size(0) == vertical.size(0) && frame.size(2) == vertical.size(2) + k - 1 &&
                  frame.size(3) == vertical.size(3) + k - 1,
              "separable_conv (CUDA): frame ", frame.sizes(), " does not match kernels ", vertical.sizes(),
              " (expected (B, C, H+k-1, W+k-1))");
}

torch::Tensor forward(const torch::Tensor& frame, const torch::Tensor& vertical, const torch::Tensor& horizontal) {
  check_inputs(frame, vertical, horizontal);
  return separable_conv_cuda_forward(frame.contiguous(), vertical.contiguous(), horizontal.contiguous());
}

std::vector<torch::Tensor> backward(const torch::Tensor& grad_out, const torch::Tensor& frame,
                                    const torch::Tensor& vertical, const torch::Tensor& horizontal,
                                    const std::vector<bool>& output_mask) {
  check_inputs(frame, vertical, horizontal);
  TORCH_CHECK(output_mask.size() == 3, "separable_conv (CUDA): output_mask needs 3 entries, got ",
              output_mask.size());
  TORCH_CHECK(grad_out.device() == frame.device() && grad_out.scalar_type() == frame.scalar_type(),
              "separable_conv (CUDA): grad_out must match the frame's device and dtype");
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == frame.size(0) && grad_out.size(1) == frame.size(1) &&
                  grad_out.size(2) == vertical.size(2) && grad_out.size(3) == vertical.size(3),
              "separable_conv (CUDA): grad_out must be (B, C, H, W), got ", grad_out.sizes());
  return separable_conv_cuda_backward(grad_out.contiguous(), frame.contiguous(), vertical.contiguous(),
                                      horizontal.contiguous(), output_mask[0], output_mask[1], output_mask[2]);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Local separable convolution (SepConv) CUDA kernels";
  m.def("forward", &forward, "out[b,c,y,x] = sum_ij v[b,i,y,x] h[b,j,y,x] frame[b,c,y+i,x+j]",
        py::arg("frame"), py::arg("vertical"), py::arg("horizontal"));
  m.def("backward", &backward,
        "[grad_frame, grad_vertical, grad_horizontal]; entries whose output_mask is false are zeros",
        py::arg("grad_out"), py::arg("frame"), py::arg("vertical"), py::arg("horizontal"),
        py::arg("output_mask"));
}
