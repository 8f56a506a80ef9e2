// CUDA kernels of FlowSep's fused synthesis: one thread per output pixel, the per-pixel
// arithmetic shared with the CPU kernel (flowsep_synthesis.h). The backward writes the
// gradient of the full-resolution parameters, one pixel's P values per thread, so it needs
// no atomics; the Python side applies the upsampling's adjoint. float and double.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "flowsep_synthesis.h"

namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 1 << 20;  // the kernels stride over the pixels beyond this

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

template <typename scalar_t>
__global__ void forward_kernel(const flowsep::Inputs<scalar_t> in, scalar_t* __restrict__ out) {
  const int64_t plane = in.height * in.width, total = in.batch * plane;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = p / plane, y = (p % plane) / in.width, x = p % in.width;
    scalar_t value[3];
    flowsep::forward_pixel<scalar_t>(in, b, y, x, value);
    for (int c = 0; c < 3; ++c) out[(b * 3 + c) * plane + y * in.width + x] = value[c];
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const flowsep::Inputs<scalar_t> in, const scalar_t* __restrict__ grad_out,
                                const flowsep::Strides sg, int64_t count, scalar_t* __restrict__ grad) {
  const int64_t plane = in.height * in.width, total = in.batch * plane;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = p / plane, y = (p % plane) / in.width, x = p % in.width;
    scalar_t grad3[3];
    for (int c = 0; c < 3; ++c) grad3[c] = flowsep::at(grad_out, sg, b, c, y, x);
    flowsep::backward_pixel<scalar_t>(in, b, y, x, grad3, grad + p * count);  // (B, H, W, P) layout
  }
}

int blocks_for(int64_t pixels) {
  return static_cast<int>(std::min<int64_t>((pixels + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

at::Tensor flowsep_synthesis_forward_cuda(const at::Tensor& frame0, const at::Tensor& frame1, const at::Tensor& splat,
                                          const at::Tensor& flow0, const at::Tensor& flow1,
                                          const at::Tensor& weight0, const at::Tensor& params,
                                          const at::Tensor& gate, int64_t taps) {
  const c10::cuda::CUDAGuard guard(frame0.device());
  at::Tensor out = at::empty(frame0.sizes(), frame0.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cuda_forward", [&] {
    const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
    forward_kernel<scalar_t><<<blocks_for(in.batch * in.height * in.width), kThreads, 0,
                               c10::cuda::getCurrentCUDAStream()>>>(in, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor flowsep_synthesis_backward_cuda(const at::Tensor& grad_out, const at::Tensor& frame0,
                                           const at::Tensor& frame1, const at::Tensor& splat,
                                           const at::Tensor& flow0, const at::Tensor& flow1,
                                           const at::Tensor& weight0, const at::Tensor& params,
                                           const at::Tensor& gate, int64_t taps) {
  const c10::cuda::CUDAGuard guard(frame0.device());
  const int64_t batch = frame0.size(0), height = frame0.size(2), width = frame0.size(3);
  const int64_t count = params.size(1);
  at::Tensor grad = at::empty({batch, height, width, count}, params.options());
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cuda_backward", [&] {
      const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
      backward_kernel<scalar_t><<<blocks_for(batch * height * width), kThreads, 0,
                                  c10::cuda::getCurrentCUDAStream()>>>(
          in, grad_out.data_ptr<scalar_t>(), strides_of(grad_out), count, grad.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return grad.permute({0, 3, 1, 2});
}
