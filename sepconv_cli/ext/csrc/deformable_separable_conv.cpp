// Python bindings and argument checks of the deformable separable convolution CUDA kernels.
// Semantics, border and gradient conventions: sepconv_cli/ext/deformable_separable_conv.py.

#include <torch/extension.h>

#include <vector>

torch::Tensor deformable_separable_conv_forward_cuda(const torch::Tensor& frame, const torch::Tensor& vertical,
                                                     const torch::Tensor& horizontal, const torch::Tensor& offset_y,
                                                     const torch::Tensor& offset_x, const torch::Tensor& mask);

std::vector<torch::Tensor> deformable_separable_conv_backward_cuda(
    const torch::Tensor& grad_out, const torch::Tensor& frame, const torch::Tensor& vertical,
    const torch::Tensor& horizontal, const torch::Tensor& offset_y, const torch::Tensor& offset_x,
    const torch::Tensor& mask, bool frame_grad);

namespace {

void check_tensor(const torch::Tensor& t, const char* name, const torch::Tensor& frame) {
  TORCH_CHECK(t.is_cuda(), "deformable_separable_conv: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "deformable_separable_conv: ", name, " must be contiguous");
  TORCH_CHECK(t.dim() == 4, "deformable_separable_conv: ", name, " must have 4 dimensions, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == frame.scalar_type(), "deformable_separable_conv: ", name, " is ",
              t.scalar_type(), " but frame is ", frame.scalar_type());
  TORCH_CHECK(t.device() == frame.device(), "deformable_separable_conv: ", name, " is on ", t.device(),
              " but frame is on ", frame.device());
}

void check_inputs(const torch::Tensor& frame, const torch::Tensor& vertical, const torch::Tensor& horizontal,
                  const torch::Tensor& offset_y, const torch::Tensor& offset_x, const torch::Tensor& mask) {
  check_tensor(frame, "frame", frame);
  TORCH_CHECK(frame.scalar_type() == torch::kFloat || frame.scalar_type() == torch::kDouble,
              "deformable_separable_conv: the CUDA kernels take float32 or float64, got ", frame.scalar_type());
  check_tensor(vertical, "vertical", frame);
  check_tensor(horizontal, "horizontal", frame);
  check_tensor(offset_y, "offset_y", frame);
  check_tensor(offset_x, "offset_x", frame);
  check_tensor(mask, "mask", frame);
  const int64_t batch = frame.size(0), height = frame.size(2), width = frame.size(3);
  const int64_t taps = vertical.size(1);
  TORCH_CHECK(taps % 2 == 1, "deformable_separable_conv: the kernel needs an odd number of taps, got ", taps);
  const std::vector<int64_t> kernel_shape{batch, taps, height, width};
  const std::vector<int64_t> tap_shape{batch, taps * taps, height, width};
  TORCH_CHECK(vertical.sizes() == kernel_shape, "deformable_separable_conv: vertical must be ", kernel_shape,
              ", got ", vertical.sizes());
  TORCH_CHECK(horizontal.sizes() == kernel_shape, "deformable_separable_conv: horizontal must be ", kernel_shape,
              ", got ", horizontal.sizes());
  TORCH_CHECK(offset_y.sizes() == tap_shape, "deformable_separable_conv: offset_y must be ", tap_shape, ", got ",
              offset_y.sizes());
  TORCH_CHECK(offset_x.sizes() == tap_shape, "deformable_separable_conv: offset_x must be ", tap_shape, ", got ",
              offset_x.sizes());
  TORCH_CHECK(mask.sizes() == tap_shape, "deformable_separable_conv: mask must be ", tap_shape, ", got ",
              mask.sizes());
}

torch::Tensor forward(const torch::Tensor& frame, const torch::Tensor& vertical, const torch::Tensor& horizontal,
                      const torch::Tensor& offset_y, const torch::Tensor& offset_x, const torch::Tensor& mask) {
  check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask);
  return deformable_separable_conv_forward_cuda(frame, vertical, horizontal, offset_y, offset_x, mask);
}

std::vector<torch::Tensor> backward(const torch::Tensor& grad_out, const torch::Tensor& frame,
                                    const torch::Tensor& vertical, const torch::Tensor& horizontal,
                                    const torch::Tensor& offset_y, const torch::Tensor& offset_x,
                                    const torch::Tensor& mask, bool frame_grad) {
  check_inputs(frame, vertical, horizontal, offset_y, offset_x, mask);
  check_tensor(grad_out, "grad_out", frame);
  TORCH_CHECK(grad_out.sizes() == frame.sizes(), "deformable_separable_conv: grad_out must be ", frame.sizes(),
              ", got ", grad_out.sizes());
  return deformable_separable_conv_backward_cuda(grad_out, frame, vertical, horizontal, offset_y, offset_x, mask,
                                                 frame_grad);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "deformable separable convolution, forward (CUDA)");
  m.def("backward", &backward,
        "deformable separable convolution, backward (CUDA): grads of frame, vertical, horizontal, offset_y, "
        "offset_x, mask");
}
