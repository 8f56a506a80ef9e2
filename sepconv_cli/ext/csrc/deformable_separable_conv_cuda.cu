// CUDA kernels of the deformable separable convolution (DSepConv synthesis).
//
//   out[b,c,y,x] = sum_{i,j} v[b,i,y,x] h[b,j,y,x] m[b,k,y,x]
//                  * bilinear(frame[b,c], y + i - r + dy[b,k,y,x], x + j - r + dx[b,k,y,x]),  k = i*n + j
//
// Sample positions are clamped into [0, H-1] x [0, W-1] (replicate padding). Offset gradients
// pass the clamp only strictly inside (0, size-1); at interior integer positions the derivative
// is the one-sided f[p+1] - f[p]. These match the PyTorch path in deformable_separable_conv.py,
// which is the reference for both.
//
// Kernels: forward, one thread per output pixel over all channels (in chunks of kChannelChunk
// held in registers); backward, one thread per pixel gathering the gradients of v, h, offsets
// and mask (each is owned by exactly one pixel), and a separate kernel scattering the frame
// gradient with atomicAdd: the frame pixels a given pixel reads depend on learned offsets, so
// inverting that map for a gather is impractical. float and double.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;  // the kernels stride over the pixels beyond this
constexpr int kChannelChunk = 4;

template <typename scalar_t>
struct Axis {
  int64_t low;
  int64_t high;
  scalar_t fraction;
  bool inside;  // strictly inside (0, size - 1): the clamp passes the gradient
};

// Clamp a sample position into [0, size - 1] and split it into the two neighbouring indices
// and the fraction between them. fmax/fmin drop a NaN operand, so a NaN position reads index
// 0 (never out of bounds) and keeps a NaN fraction, which makes the output NaN.
template <typename scalar_t>
__device__ __forceinline__ Axis<scalar_t> locate(scalar_t position, int64_t size) {
  const scalar_t top = static_cast<scalar_t>(size - 1);
  Axis<scalar_t> axis;
  axis.inside = position > scalar_t(0) && position < top;
  const scalar_t clamped = fmin(fmax(position, scalar_t(0)), top);
  const scalar_t low = floor(clamped);
  axis.low = static_cast<int64_t>(low);
  axis.high = axis.low + 1 < size ? axis.low + 1 : size - 1;
  axis.fraction = isnan(position) ? position : clamped - low;
  return axis;
}

// Everything one tap of one pixel needs: the four flat frame indices and their coefficients
// (tap weight v*h*m times the bilinear weight), computed in the same order as the PyTorch path.
template <typename scalar_t>
struct Tap {
  int64_t index[4];
  scalar_t coefficient[4];
  Axis<scalar_t> y;
  Axis<scalar_t> x;
};

template <typename scalar_t>
__device__ __forceinline__ Tap<scalar_t> make_tap(scalar_t weight, int64_t y, int64_t x, int i, int j, int radius,
                                                  scalar_t dy, scalar_t dx, int64_t height, int64_t width) {
  Tap<scalar_t> tap;
  tap.y = locate<scalar_t>(static_cast<scalar_t>(y + i - radius) + dy, height);
  tap.x = locate<scalar_t>(static_cast<scalar_t>(x + j - radius) + dx, width);
  const scalar_t wy1 = weight * tap.y.fraction;
  const scalar_t wy0 = weight - wy1;
  const scalar_t fx = tap.x.fraction;
  tap.coefficient[0] = wy0 - wy0 * fx;
  tap.coefficient[1] = wy0 * fx;
  tap.coefficient[2] = wy1 - wy1 * fx;
  tap.coefficient[3] = wy1 * fx;
  tap.index[0] = tap.y.low * width + tap.x.low;
  tap.index[1] = tap.y.low * width + tap.x.high;
  tap.index[2] = tap.y.high * width + tap.x.low;
  tap.index[3] = tap.y.high * width + tap.x.high;
  return tap;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ frame, const scalar_t* __restrict__ vertical,
                               const scalar_t* __restrict__ horizontal, const scalar_t* __restrict__ offset_y,
                               const scalar_t* __restrict__ offset_x, const scalar_t* __restrict__ mask,
                               scalar_t* __restrict__ out, int64_t batch, int64_t channels, int64_t height,
                               int64_t width, int taps) {
  const int64_t plane = height * width;
  const int64_t total = batch * plane;
  const int64_t taps2 = static_cast<int64_t>(taps) * taps;
  const int radius = taps / 2;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = index / plane;
    const int64_t pixel = index - b * plane;
    const int64_t y = pixel / width;
    const int64_t x = pixel - y * width;
    const scalar_t* v = vertical + b * taps * plane + pixel;
    const scalar_t* h = horizontal + b * taps * plane + pixel;
    const scalar_t* dy = offset_y + b * taps2 * plane + pixel;
    const scalar_t* dx = offset_x + b * taps2 * plane + pixel;
    const scalar_t* m = mask + b * taps2 * plane + pixel;
    for (int64_t c0 = 0; c0 < channels; c0 += kChannelChunk) {
      const int64_t chunk = channels - c0 < kChannelChunk ? channels - c0 : kChannelChunk;
      const scalar_t* f = frame + (b * channels + c0) * plane;
      scalar_t acc[kChannelChunk];
#pragma unroll
      for (int c = 0; c < kChannelChunk; ++c) acc[c] = scalar_t(0);
      for (int i = 0; i < taps; ++i) {
        const scalar_t vi = v[i * plane];
        for (int j = 0; j < taps; ++j) {
          const int64_t k = static_cast<int64_t>(i) * taps + j;
          const scalar_t weight = vi * h[j * plane] * m[k * plane];
          const Tap<scalar_t> tap =
              make_tap<scalar_t>(weight, y, x, i, j, radius, dy[k * plane], dx[k * plane], height, width);
#pragma unroll
          for (int c = 0; c < kChannelChunk; ++c) {
            if (c < chunk) {
              const scalar_t* fc = f + c * plane;
              acc[c] += tap.coefficient[0] * fc[tap.index[0]] + tap.coefficient[1] * fc[tap.index[1]] +
                        tap.coefficient[2] * fc[tap.index[2]] + tap.coefficient[3] * fc[tap.index[3]];
            }
          }
        }
      }
#pragma unroll
      for (int c = 0; c < kChannelChunk; ++c) {
        if (c < chunk) out[(b * channels + c0 + c) * plane + pixel] = acc[c];
      }
    }
  }
}

// Gradients of vertical, horizontal, offsets and mask: all of a pixel's belong to that pixel,
// so one thread computes them without atomics.
template <typename scalar_t>
__global__ void backward_parameters_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ frame, const scalar_t* __restrict__ vertical,
    const scalar_t* __restrict__ horizontal, const scalar_t* __restrict__ offset_y,
    const scalar_t* __restrict__ offset_x, const scalar_t* __restrict__ mask, scalar_t* __restrict__ grad_vertical,
    scalar_t* __restrict__ grad_horizontal, scalar_t* __restrict__ grad_offset_y,
    scalar_t* __restrict__ grad_offset_x, scalar_t* __restrict__ grad_mask, int64_t batch, int64_t channels,
    int64_t height, int64_t width, int taps) {
  const int64_t plane = height * width;
  const int64_t total = batch * plane;
  const int64_t taps2 = static_cast<int64_t>(taps) * taps;
  const int radius = taps / 2;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = index / plane;
    const int64_t pixel = index - b * plane;
    const int64_t y = pixel / width;
    const int64_t x = pixel - y * width;
    const int64_t kernel_base = b * taps * plane + pixel;
    const int64_t tap_base = b * taps2 * plane + pixel;
    const scalar_t* g = grad_out + b * channels * plane + pixel;
    const scalar_t* f = frame + b * channels * plane;
    for (int i = 0; i < taps; ++i) {
      const scalar_t vi = vertical[kernel_base + i * plane];
      scalar_t grad_vi = scalar_t(0);
      for (int j = 0; j < taps; ++j) {
        const int64_t k = static_cast<int64_t>(i) * taps + j;
        const scalar_t hj = horizontal[kernel_base + j * plane];
        const scalar_t mk = mask[tap_base + k * plane];
        // Unit weight: the coefficients are then the plain bilinear weights.
        const Tap<scalar_t> tap = make_tap<scalar_t>(scalar_t(1), y, x, i, j, radius, offset_y[tap_base + k * plane],
                                                     offset_x[tap_base + k * plane], height, width);
        const scalar_t fy = tap.y.fraction;
        const scalar_t fx = tap.x.fraction;
        scalar_t grad_w = scalar_t(0), grad_fy = scalar_t(0), grad_fx = scalar_t(0);
        for (int64_t c = 0; c < channels; ++c) {
          const scalar_t* fc = f + c * plane;
          const scalar_t f00 = fc[tap.index[0]], f01 = fc[tap.index[1]];
          const scalar_t f10 = fc[tap.index[2]], f11 = fc[tap.index[3]];
          const scalar_t top = f00 + fx * (f01 - f00);
          const scalar_t bottom = f10 + fx * (f11 - f10);
          const scalar_t go = g[c * plane];
          grad_w += go * (top + fy * (bottom - top));
          grad_fy += go * (bottom - top);
          grad_fx += go * ((f01 - f00) + fy * ((f11 - f10) - (f01 - f00)));
        }
        const scalar_t vh = vi * hj;
        const scalar_t weight = vh * mk;
        grad_mask[tap_base + k * plane] = vh * grad_w;
        grad_offset_y[tap_base + k * plane] = tap.y.inside ? weight * grad_fy : scalar_t(0);
        grad_offset_x[tap_base + k * plane] = tap.x.inside ? weight * grad_fx : scalar_t(0);
        grad_vi += hj * mk * grad_w;
        const scalar_t grad_hj = vi * mk * grad_w;
        scalar_t* gh = grad_horizontal + kernel_base + j * plane;
        *gh = i == 0 ? grad_hj : *gh + grad_hj;
      }
      grad_vertical[kernel_base + i * plane] = grad_vi;
    }
  }
}

// Frame gradient: each pixel scatters grad_out * coefficient to the four corners of each tap.
template <typename scalar_t>
__global__ void backward_frame_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ vertical,
                                      const scalar_t* __restrict__ horizontal, const scalar_t* __restrict__ offset_y,
                                      const scalar_t* __restrict__ offset_x, const scalar_t* __restrict__ mask,
                                      scalar_t* __restrict__ grad_frame, int64_t batch, int64_t channels,
                                      int64_t height, int64_t width, int taps) {
  const int64_t plane = height * width;
  const int64_t total = batch * plane;
  const int64_t taps2 = static_cast<int64_t>(taps) * taps;
  const int radius = taps / 2;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = index / plane;
    const int64_t pixel = index - b * plane;
    const int64_t y = pixel / width;
    const int64_t x = pixel - y * width;
    const int64_t kernel_base = b * taps * plane + pixel;
    const int64_t tap_base = b * taps2 * plane + pixel;
    const scalar_t* g = grad_out + b * channels * plane + pixel;
    scalar_t* gf = grad_frame + b * channels * plane;
    for (int i = 0; i < taps; ++i) {
      const scalar_t vi = vertical[kernel_base + i * plane];
      for (int j = 0; j < taps; ++j) {
        const int64_t k = static_cast<int64_t>(i) * taps + j;
        const scalar_t weight = vi * horizontal[kernel_base + j * plane] * mask[tap_base + k * plane];
        const Tap<scalar_t> tap = make_tap<scalar_t>(weight, y, x, i, j, radius, offset_y[tap_base + k * plane],
                                                     offset_x[tap_base + k * plane], height, width);
        for (int64_t c = 0; c < channels; ++c) {
          const scalar_t go = g[c * plane];
          scalar_t* gfc = gf + c * plane;
#pragma unroll
          for (int corner = 0; corner < 4; ++corner) {
            // Integer positions and zero weights leave corners with coefficient 0: skip their atomics.
            if (tap.coefficient[corner] != scalar_t(0)) {
              atomicAdd(gfc + tap.index[corner], go * tap.coefficient[corner]);
            }
          }
        }
      }
    }
  }
}

int blocks_for(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

at::Tensor deformable_separable_conv_forward_cuda(const at::Tensor& frame, const at::Tensor& vertical,
                                                  const at::Tensor& horizontal, const at::Tensor& offset_y,
                                                  const at::Tensor& offset_x, const at::Tensor& mask) {
  const c10::cuda::CUDAGuard guard(frame.device());
  const int64_t batch = frame.size(0), channels = frame.size(1), height = frame.size(2), width = frame.size(3);
  const int taps = static_cast<int>(vertical.size(1));
  at::Tensor out = at::empty_like(frame);
  const int64_t total = batch * height * width;
  if (total == 0 || channels == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "deformable_separable_conv_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        frame.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(), horizontal.data_ptr<scalar_t>(),
        offset_y.data_ptr<scalar_t>(), offset_x.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), batch, channels, height, width, taps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> deformable_separable_conv_backward_cuda(const at::Tensor& grad_out, const at::Tensor& frame,
                                                               const at::Tensor& vertical,
                                                               const at::Tensor& horizontal,
                                                               const at::Tensor& offset_y, const at::Tensor& offset_x,
                                                               const at::Tensor& mask, bool frame_grad) {
  const c10::cuda::CUDAGuard guard(frame.device());
  const int64_t batch = frame.size(0), channels = frame.size(1), height = frame.size(2), width = frame.size(3);
  const int taps = static_cast<int>(vertical.size(1));
  at::Tensor grad_frame = at::zeros_like(frame);
  at::Tensor grad_vertical = at::zeros_like(vertical);
  at::Tensor grad_horizontal = at::zeros_like(horizontal);
  at::Tensor grad_offset_y = at::zeros_like(offset_y);
  at::Tensor grad_offset_x = at::zeros_like(offset_x);
  at::Tensor grad_mask = at::zeros_like(mask);
  const int64_t total = batch * height * width;
  if (total > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "deformable_separable_conv_backward_cuda", [&] {
      backward_parameters_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), frame.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(),
          horizontal.data_ptr<scalar_t>(), offset_y.data_ptr<scalar_t>(), offset_x.data_ptr<scalar_t>(),
          mask.data_ptr<scalar_t>(), grad_vertical.data_ptr<scalar_t>(), grad_horizontal.data_ptr<scalar_t>(),
          grad_offset_y.data_ptr<scalar_t>(), grad_offset_x.data_ptr<scalar_t>(), grad_mask.data_ptr<scalar_t>(),
          batch, channels, height, width, taps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (frame_grad && channels > 0) {
        backward_frame_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            grad_out.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(), horizontal.data_ptr<scalar_t>(),
            offset_y.data_ptr<scalar_t>(), offset_x.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
            grad_frame.data_ptr<scalar_t>(), batch, channels, height, width, taps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  return {grad_frame, grad_vertical, grad_horizontal, grad_offset_y, grad_offset_x, grad_mask};
}
