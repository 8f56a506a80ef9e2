// CUDA kernels of the local separable convolution (SepConv):
//
//   out[b,c,y,x] = sum_{i<k} sum_{j<k} vertical[b,i,y,x] * horizontal[b,j,y,x] * frame[b,c,y+i,x+j]
//
// frame (B, C, H+k-1, W+k-1), vertical and horizontal (B, k, H, W), all contiguous.
//
// Every kernel runs one thread per pixel and loops over all channels, so the per-pixel
// kernel taps are read once per group of kChannelBlock channels instead of once per
// channel. Threads adjacent in x read adjacent addresses in every array, so loads
// coalesce. Offsets are 64-bit: a batch of 4K frames with k = 51 taps already exceeds
// 2^31 kernel elements. Grid-stride loops keep the grid within launch limits for any size.
//
// The frame gradient is a gather (each frame pixel sums the outputs it contributed to)
// rather than a scatter with atomicAdd: deterministic, and no float64 atomics needed.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

namespace {

constexpr int kThreads = 256;
// Accumulators per thread: 4 covers RGB in one pass and keeps register use low enough
// for full occupancy.
constexpr int kChannelBlock = 4;
// Grid-stride loops make any grid size correct; past this many blocks every SM is busy.
constexpr int64_t kMaxBlocks = 1 << 16;

// std::min/max are host functions; these work in device code without
// --expt-relaxed-constexpr.
__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

int blocks_for(int64_t items) {
  return static_cast<int>(min64((items + kThreads - 1) / kThreads, kMaxBlocks));
}

struct Geometry {
  int64_t batch, channels, height, width, k;
  __host__ __device__ int64_t padded_height() const { return height + k - 1; }
  __host__ __device__ int64_t padded_width() const { return width + k - 1; }
  __host__ __device__ int64_t plane() const { return height * width; }
  __host__ __device__ int64_t padded_plane() const { return padded_height() * padded_width(); }
};

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ frame, const scalar_t* __restrict__ vertical,
                               const scalar_t* __restrict__ horizontal, scalar_t* __restrict__ out, Geometry g) {
  const int64_t plane = g.plane(), padded_plane = g.padded_plane(), padded_width = g.padded_width();
  const int64_t total = g.batch * plane;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = index / plane, pixel = index % plane;
    const int64_t y = pixel / g.width, x = pixel % g.width;
    const scalar_t* v = vertical + b * g.k * plane + pixel;  // tap i at v[i * plane]
    const scalar_t* h = horizontal + b * g.k * plane + pixel;
    for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock) {
      const int64_t count = min64(kChannelBlock, g.channels - c0);
      const scalar_t* f = frame + (b * g.channels + c0) * padded_plane + y * padded_width + x;
      scalar_t acc[kChannelBlock] = {};
      for (int64_t i = 0; i < g.k; ++i) {
        // Horizontal pass over row y+i first, then one multiply by the vertical tap:
        // k*k + k multiplies instead of 2*k*k, and the same order as the PyTorch path.
        scalar_t row[kChannelBlock] = {};
        const scalar_t* f_row = f + i * padded_width;
        for (int64_t j = 0; j < g.k; ++j) {
          const scalar_t hj = h[j * plane];
#pragma unroll
          for (int cc = 0; cc < kChannelBlock; ++cc) {
            if (cc < count) row[cc] += hj * f_row[cc * padded_plane + j];
          }
        }
        const scalar_t vi = v[i * plane];
#pragma unroll
        for (int cc = 0; cc < kChannelBlock; ++cc) acc[cc] += vi * row[cc];
      }
      scalar_t* o = out + (b * g.channels + c0) * plane + pixel;
#pragma unroll
      for (int cc = 0; cc < kChannelBlock; ++cc) {
        if (cc < count) o[cc * plane] = acc[cc];
      }
    }
  }
}

// grad_vertical[b,i,y,x]   = sum_c grad[b,c,y,x] sum_j horizontal[b,j,y,x] frame[b,c,y+i,x+j]
// grad_horizontal[b,j,y,x] = sum_c grad[b,c,y,x] sum_i vertical[b,i,y,x]   frame[b,c,y+i,x+j]
// Each thread owns its pixel's 2k kernel gradients, so there are no write conflicts.
template <typename scalar_t>
__global__ void kernel_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ frame,
                                   const scalar_t* __restrict__ vertical, const scalar_t* __restrict__ horizontal,
                                   scalar_t* __restrict__ grad_vertical, scalar_t* __restrict__ grad_horizontal,
                                   Geometry g, bool need_vertical, bool need_horizontal) {
  const int64_t plane = g.plane(), padded_plane = g.padded_plane(), padded_width = g.padded_width();
  const int64_t total = g.batch * plane;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = index / plane, pixel = index % plane;
    const int64_t y = pixel / g.width, x = pixel % g.width;
    const int64_t kernel_offset = b * g.k * plane + pixel;
    const scalar_t* v = vertical + kernel_offset;
    const scalar_t* h = horizontal + kernel_offset;
    const scalar_t* f = frame + b * g.channels * padded_plane + y * padded_width + x;
    const scalar_t* gr = grad + b * g.channels * plane + pixel;

    if (need_vertical) {
      for (int64_t i = 0; i < g.k; ++i) {
        scalar_t sum = 0;
        for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock) {
          const int64_t count = min64(kChannelBlock, g.channels - c0);
          const scalar_t* f_row = f + c0 * padded_plane + i * padded_width;
          scalar_t row[kChannelBlock] = {};
          for (int64_t j = 0; j < g.k; ++j) {
            const scalar_t hj = h[j * plane];
#pragma unroll
            for (int cc = 0; cc < kChannelBlock; ++cc) {
              if (cc < count) row[cc] += hj * f_row[cc * padded_plane + j];
            }
          }
#pragma unroll
          for (int cc = 0; cc < kChannelBlock; ++cc) {
            if (cc < count) sum += gr[(c0 + cc) * plane] * row[cc];
          }
        }
        grad_vertical[kernel_offset + i * plane] = sum;
      }
    }

    if (need_horizontal) {
      for (int64_t j = 0; j < g.k; ++j) {
        scalar_t sum = 0;
        for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock) {
          const int64_t count = min64(kChannelBlock, g.channels - c0);
          const scalar_t* f_col = f + c0 * padded_plane + j;
          scalar_t col[kChannelBlock] = {};
          for (int64_t i = 0; i < g.k; ++i) {
            const scalar_t vi = v[i * plane];
#pragma unroll
            for (int cc = 0; cc < kChannelBlock; ++cc) {
              if (cc < count) col[cc] += vi * f_col[cc * padded_plane + i * padded_width];
            }
          }
#pragma unroll
          for (int cc = 0; cc < kChannelBlock; ++cc) {
            if (cc < count) sum += gr[(c0 + cc) * plane] * col[cc];
          }
        }
        grad_horizontal[kernel_offset + j * plane] = sum;
      }
    }
  }
}

// grad_frame[b,c,Y,X] = sum over the outputs (y,x) = (Y-i, X-j) inside the image of
//                       vertical[b,i,y,x] * horizontal[b,j,y,x] * grad[b,c,y,x]
// One thread per padded-frame pixel gathers its (at most k*k) contributions.
template <typename scalar_t>
__global__ void frame_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ vertical,
                                  const scalar_t* __restrict__ horizontal, scalar_t* __restrict__ grad_frame,
                                  Geometry g) {
  const int64_t plane = g.plane(), padded_plane = g.padded_plane(), padded_width = g.padded_width();
  const int64_t total = g.batch * padded_plane;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = index / padded_plane, padded_pixel = index % padded_plane;
    const int64_t Y = padded_pixel / padded_width, X = padded_pixel % padded_width;
    // Taps i with 0 <= Y - i < H, and j with 0 <= X - j < W.
    const int64_t i_begin = max64(0, Y - g.height + 1), i_end = min64(g.k, Y + 1);
    const int64_t j_begin = max64(0, X - g.width + 1), j_end = min64(g.k, X + 1);
    const scalar_t* v = vertical + b * g.k * plane;
    const scalar_t* h = horizontal + b * g.k * plane;
    for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock) {
      const int64_t count = min64(kChannelBlock, g.channels - c0);
      const scalar_t* gr = grad + (b * g.channels + c0) * plane;
      scalar_t acc[kChannelBlock] = {};
      for (int64_t i = i_begin; i < i_end; ++i) {
        const int64_t row_offset = (Y - i) * g.width;
        for (int64_t j = j_begin; j < j_end; ++j) {
          const int64_t pixel = row_offset + X - j;
          const scalar_t weight = v[i * plane + pixel] * h[j * plane + pixel];
#pragma unroll
          for (int cc = 0; cc < kChannelBlock; ++cc) {
            if (cc < count) acc[cc] += weight * gr[cc * plane + pixel];
          }
        }
      }
      scalar_t* out = grad_frame + (b * g.channels + c0) * padded_plane + padded_pixel;
#pragma unroll
      for (int cc = 0; cc < kChannelBlock; ++cc) {
        if (cc < count) out[cc * padded_plane] = acc[cc];
      }
    }
  }
}

Geometry geometry_of(const at::Tensor& frame, const at::Tensor& vertical) {
  return Geometry{frame.size(0), frame.size(1), vertical.size(2), vertical.size(3), vertical.size(1)};
}

}  // namespace

at::Tensor separable_conv_cuda_forward(const at::Tensor& frame, const at::Tensor& vertical,
                                       const at::Tensor& horizontal) {
  const c10::cuda::OptionalCUDAGuard device_guard(at::device_of(frame));
  const Geometry g = geometry_of(frame, vertical);
  auto out = at::empty({g.batch, g.channels, g.height, g.width}, frame.options());
  const int64_t total = g.batch * g.plane();
  if (total == 0 || g.channels == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "separable_conv_cuda_forward", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        frame.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(), horizontal.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> separable_conv_cuda_backward(const at::Tensor& grad_out, const at::Tensor& frame,
                                                     const at::Tensor& vertical, const at::Tensor& horizontal,
                                                     bool need_frame, bool need_vertical, bool need_horizontal) {
  const c10::cuda::OptionalCUDAGuard device_guard(at::device_of(frame));
  const Geometry g = geometry_of(frame, vertical);
  // Kernels write every element of a requested gradient; unrequested ones stay zero.
  auto grad_frame = need_frame ? at::empty_like(frame) : at::zeros_like(frame);
  auto grad_vertical = need_vertical ? at::empty_like(vertical) : at::zeros_like(vertical);
  auto grad_horizontal = need_horizontal ? at::empty_like(horizontal) : at::zeros_like(horizontal);
  const int64_t pixels = g.batch * g.plane();
  const int64_t padded_pixels = g.batch * g.padded_plane();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(frame.scalar_type(), "separable_conv_cuda_backward", [&] {
    if ((need_vertical || need_horizontal) && pixels > 0) {
      kernel_grad_kernel<scalar_t><<<blocks_for(pixels), kThreads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), frame.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(),
          horizontal.data_ptr<scalar_t>(), grad_vertical.data_ptr<scalar_t>(), grad_horizontal.data_ptr<scalar_t>(),
          g, need_vertical, need_horizontal);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (need_frame && padded_pixels > 0) {
      frame_grad_kernel<scalar_t><<<blocks_for(padded_pixels), kThreads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), vertical.data_ptr<scalar_t>(), horizontal.data_ptr<scalar_t>(),
          grad_frame.data_ptr<scalar_t>(), g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_frame, grad_vertical, grad_horizontal};
}
