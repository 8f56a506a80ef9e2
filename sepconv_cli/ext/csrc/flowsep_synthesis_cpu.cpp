// CPU kernels of FlowSep's fused synthesis (operator sepconv_flowsep_synthesis_cpu::forward
// and ::backward). The definition is in flowsep_synthesis.h, shared with the CUDA kernels;
// the backward loops over it pixel by pixel, one task per output row, every input read
// through its strides (the network's head comes out channels_last on the CPU, frames NCHW).
//
// The forward is the same arithmetic written out again to run in SIMD lanes (the header's,
// one pixel at a time, left the vector units idle): a task takes kLanes consecutive pixels
// of a row at a time, every per-pixel quantity a [kLanes] array. That needs
//   * the head upsampled per row into channel-major rows, so lane loops read it contiguously;
//   * an exp the compiler can vectorise (glibc's vector expf needs -ffast-math, which would
//     loosen everything else too), and clamps as selects that convert no NaN to an integer;
//   * the blend's softmax without logs: softmax(log a_q + r_q) = a_q e^(r_q - max r) / sum;
//   * the frames copied once per call pixel-major, channels padded to four, the last row and
//     column repeated: a tap's four corners are then two 8-wide loads at one offset.
// It differs from the header by vector_exp (a few float ulps), the softmax (more accurate:
// log(1e-6) alone costs ~1e-6 relative in float) and the order in which corners are summed.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <torch/library.h>

#include <cstring>
#include <limits>
#include <memory>
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

// ------------------------------------------------------------------ the vectorised forward

// 32 float lanes are two AVX-512 (four AVX2) registers per operation: enough independent work
// to hide the latency of the divisions and of the exp's polynomial.
constexpr int kLanes = 32;
constexpr int kMaxSquare = flowsep::kMaxTaps * flowsep::kMaxTaps;
constexpr int kPixel = 4;  // values per pixel of the padded frames: R, G, B, 0

// Taylor degrees for |r| <= ln2 / 2: truncation 5e-9 relative (float), 4e-18 (double). In
// [kLow, kHigh] e^x stays a normal number, so 2^n is made of exponent bits alone. Cody-Waite
// split of ln 2: n * kLn2High is exact for the n that occur.
template <typename T>
struct ExpTraits;
template <>
struct ExpTraits<float> {
  using UInt = uint32_t;
  static constexpr int kDegree = 7, kMantissa = 23, kBias = 127;
  static constexpr float kLow = -87.0f, kHigh = 88.0f, kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
};
template <>
struct ExpTraits<double> {
  using UInt = uint64_t;
  static constexpr int kDegree = 13, kMantissa = 52, kBias = 1023;
  static constexpr double kLow = -708.0, kHigh = 709.0;
  static constexpr double kLn2High = 6.93147180369123816490e-01, kLn2Low = 1.90821492927058770002e-10;
};

constexpr double inverse_factorial(int k) { return k == 0 ? 1.0 : inverse_factorial(k - 1) / k; }

// sum_{j >= k} r^(j - k) / j!, up to degree: Horner's scheme with the coefficients as
// immediates (a loop over a table of them kept GCC from vectorising the callers).
template <typename T, int k, int degree>
inline T exp_series(T r) {
  if constexpr (k == degree) {
    return static_cast<T>(inverse_factorial(k));
  } else {
    return exp_series<T, k + 1, degree>(r) * r + static_cast<T>(inverse_factorial(k));
  }
}

// e^x: x = n ln2 + r, e^r by Horner, 2^n through the exponent bits. NaN stays NaN; beyond
// [kLow, kHigh] it saturates (to ~1e-38 or ~1e38 in float), which every caller here turns
// into the same 0 or 1 as the exact value would.
template <typename T>
inline T vector_exp(T x) {
  using E = ExpTraits<T>;
  using UInt = typename E::UInt;
  x = x < E::kLow ? E::kLow : x;
  x = x > E::kHigh ? E::kHigh : x;
  // Adding 1.5 2^mantissa rounds to an integer n and leaves it in the low mantissa bits, so
  // no float-to-integer conversion is needed: that conversion of a NaN is undefined, and
  // guarding it (or calling std::floor) kept GCC 12 from vectorising the loops.
  const T magic = T(1.5) * static_cast<T>(UInt(1) << E::kMantissa);
  const T shifted = x * T(1.4426950408889634) + magic;
  const T n = shifted - magic;
  const T r = (x - n * E::kLn2High) - n * E::kLn2Low;
  UInt bits, magic_bits;
  std::memcpy(&bits, &shifted, sizeof(T));
  std::memcpy(&magic_bits, &magic, sizeof(T));
  bits = (bits - magic_bits + UInt(E::kBias)) << E::kMantissa;
  T scale;
  std::memcpy(&scale, &bits, sizeof(T));
  return exp_series<T, 0, E::kDegree>(r) * scale;
}

// Per-task scratch of one block of pixels, every array [kLanes] wide.
template <typename T>
struct Block {
  alignas(64) T flow[2][2][kLanes], weight0[kLanes], splat[3][kLanes];  // flow[frame][dx, dy]
  alignas(64) T corner[4][kMaxSquare][kLanes];  // bilinear weight x kernel weight, per tap
  alignas(64) int32_t offset[kMaxSquare][kLanes];  // of the top-left corner in the padded frame
  alignas(64) T total[2][kLanes], acc[2][3][kLanes];  // per frame: kernel sum, unnormalised RGB
};

// Index of a clamped position and its fraction: the header's locate, as selects. Its high
// index is always low + 1 here, in the padding past the last pixel when low is the last
// (the fraction is then 0, so that corner adds 0 x a copy of the same pixel, as the header's
// high = low does). A NaN position reads index 0 with a NaN fraction; the index comes from a
// second clamp that maps NaN to 0, since converting a NaN to an integer is undefined and a
// guard on the conversion itself kept GCC from vectorising the loop.
template <typename T>
inline void clamp_axis(T position, T top, int32_t& low, T& fraction) {
  T clamped = position < T(0) ? T(0) : position;
  clamped = clamped > top ? top : clamped;
  T safe = position > T(0) ? position : T(0);
  safe = safe < top ? safe : top;
  low = static_cast<int32_t>(safe);  // the floor: safe >= 0
  const T floor = static_cast<T>(low);
  fraction = clamped - floor;
}

// out[3h + c] = the sum over the taps of lane l + h's four weighted corners, h = 0, 1 (two
// lanes at a time: two independent accumulations in flight). A tap's top (and bottom)
// corners are 2 x kPixel adjacent values of the padded frame, one 8-wide load; GCC 12 does
// not form such operations from per-channel statements (the loop-carried accumulator stops
// its SLP vectoriser), so where vector extensions exist they say it.
#if defined(__GNUC__)
template <typename T>
inline void accumulate_taps(const T* frame, int32_t row_stride, const Block<T>& s, int nn, int l, T* out) {
  typedef T Pair __attribute__((vector_size(2 * kPixel * sizeof(T))));
  Pair acc[2] = {};
  for (int k = 0; k < nn; ++k) {
    for (int h = 0; h < 2; ++h) {
      const T* p = frame + s.offset[k][l + h];
      Pair top, bottom;
      std::memcpy(&top, p, sizeof(Pair));
      std::memcpy(&bottom, p + row_stride, sizeof(Pair));
      const T w00 = s.corner[0][k][l + h], w01 = s.corner[1][k][l + h];
      const T w10 = s.corner[2][k][l + h], w11 = s.corner[3][k][l + h];
      const Pair w_top = {w00, w00, w00, w00, w01, w01, w01, w01};
      const Pair w_bottom = {w10, w10, w10, w10, w11, w11, w11, w11};
      acc[h] += w_top * top + w_bottom * bottom;
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int c = 0; c < 3; ++c) out[3 * h + c] = acc[h][c] + acc[h][kPixel + c];
  }
}
#else
template <typename T>
inline void accumulate_taps(const T* frame, int32_t row_stride, const Block<T>& s, int nn, int l, T* out) {
  for (int c = 0; c < 6; ++c) out[c] = 0;
  for (int k = 0; k < nn; ++k) {
    for (int h = 0; h < 2; ++h) {
      const T *p = frame + s.offset[k][l + h], *q = p + row_stride;
      const T w00 = s.corner[0][k][l + h], w01 = s.corner[1][k][l + h];
      const T w10 = s.corner[2][k][l + h], w11 = s.corner[3][k][l + h];
      for (int c = 0; c < 3; ++c) out[3 * h + c] += w00 * p[c] + w01 * p[kPixel + c] + w10 * q[c] + w11 * q[kPixel + c];
    }
  }
}
#endif

// One frame's taps for the block at x0: positions, clamps and weights in lanes, then per pixel
// the four corners of every tap. r: this frame's parameter rows, r[c * stride + x].
template <typename T>
void candidate_block(const flowsep::Inputs<T>& in, const T* frame, const T* r, int64_t stride, int f, int64_t y,
                     int64_t x0, Block<T>& s) {
  const int n = static_cast<int>(in.taps), nn = n * n, radius = n / 2;
  const int32_t row_stride = static_cast<int32_t>((in.width + 1) * kPixel);
  const T top_y = static_cast<T>(in.height - 1), top_x = static_cast<T>(in.width - 1);
  const T *dx = s.flow[f][0], *dy = s.flow[f][1];
  T* total = s.total[f];
  for (int l = 0; l < kLanes; ++l) total[l] = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const int k = i * n + j;
      const T centre_i = i == radius ? T(1) : T(0), centre_j = j == radius ? T(1) : T(0);
      const T *rv = r + i * stride + x0, *rh = r + (n + j) * stride + x0;
      const T *ry = r + (2 * n + k) * stride + x0, *rx = ry + nn * stride, *rm = rx + nn * stride;
      const T row = static_cast<T>(y + i - radius);
      const int64_t column = x0 + j - radius;
      T *c00 = s.corner[0][k], *c01 = s.corner[1][k], *c10 = s.corner[2][k], *c11 = s.corner[3][k];
      int32_t* offset = s.offset[k];
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const T mask = T(2) / (T(1) + vector_exp(-rm[l]));
        const T weight = (centre_i + rv[l]) * (centre_j + rh[l]) * mask;
        total[l] += weight;
        int32_t ly, lx;
        T fy, fx;
        clamp_axis<T>(dy[l] + ry[l] + row, top_y, ly, fy);
        clamp_axis<T>(dx[l] + rx[l] + static_cast<T>(column + l), top_x, lx, fx);
        const T wy1 = weight * fy, wy0 = weight - wy1;
        const T w01 = wy0 * fx, w11 = wy1 * fx;
        c00[l] = wy0 - w01, c01[l] = w01, c10[l] = wy1 - w11, c11[l] = w11;
        offset[l] = ly * row_stride + lx * kPixel;
      }
    }
  }
  for (int l = 0; l < kLanes; l += 2) {
    T acc[6];
    accumulate_taps(frame, row_stride, s, nn, l, acc);
    for (int c = 0; c < 3; ++c) s.acc[f][c][l] = acc[c], s.acc[f][c][l + 1] = acc[3 + c];
  }
}

// The gated parameters of a task's rows, upsampled channel-major: row()[c * stride() + x],
// x up to a multiple of kLanes (the columns past the end repeat the last one).
template <typename T>
class RowUpsampler {
 public:
  RowUpsampler(const flowsep::Inputs<T>& in, int64_t count)
      : in_(in), count_(count), stride_((in.width + kLanes - 1) / kLanes * kLanes), blend_(count * in.low_width),
        row_(count * stride_) {
    for (auto& low : low_) low.data.resize(count * in.low_width);
    for (int64_t x = 0; x < in.width; ++x) columns_.push_back(flowsep::source_index<T>(x, in.low_width, in.width));
    // FlowSep's head is at exactly half the width: then the pixels 2m+1 and 2m+2 take the
    // low columns m and m+1 with two fixed pairs of weights, a loop without gathers.
    doubled_ = in.width >= 4 && in.width == 2 * in.low_width;
    for (int64_t x = 1; doubled_ && x + 1 < in.width; ++x) {
      const flowsep::Source<T>& sx = columns_[x];
      const flowsep::Source<T>& model = columns_[2 - x % 2];
      doubled_ = sx.low == (x - 1) / 2 && sx.step == 1 && sx.lambda0 == model.lambda0 && sx.lambda1 == model.lambda1;
    }
  }

  int64_t stride() const { return stride_; }

  const T* operator()(int64_t b, int64_t y) {
    const flowsep::Source<T> sy = flowsep::source_index<T>(y, in_.low_height, in_.height);
    const T* top = low_row(b, sy.low, -1);
    const T* bottom = low_row(b, sy.low + sy.step, sy.low);
    const T g = in_.gate[b];
    const T top_weight = sy.lambda0 * g, bottom_weight = sy.lambda1 * g;
    const int64_t lw = in_.low_width, width = in_.width;
    T* blend = blend_.data();
#pragma omp simd
    for (int64_t i = 0; i < count_ * lw; ++i) blend[i] = top_weight * top[i] + bottom_weight * bottom[i];
    for (int64_t c = 0; c < count_; ++c) {
      const T* bc = blend + c * lw;
      T* rc = row_.data() + c * stride_;
      const auto column = [&](int64_t x) {
        const flowsep::Source<T>& sx = columns_[x];
        return sx.lambda0 * bc[sx.low] + sx.lambda1 * bc[sx.low + sx.step];
      };
      if (doubled_) {
        const T a0 = columns_[1].lambda0, a1 = columns_[1].lambda1, b0 = columns_[2].lambda0, b1 = columns_[2].lambda1;
        for (int64_t m = 0; m + 1 < lw; ++m) {
          rc[2 * m + 1] = a0 * bc[m] + a1 * bc[m + 1];
          rc[2 * m + 2] = b0 * bc[m] + b1 * bc[m + 1];
        }
        rc[0] = column(0), rc[width - 1] = column(width - 1);
      } else {
        for (int64_t x = 0; x < width; ++x) rc[x] = column(x);
      }
      for (int64_t x = width; x < stride_; ++x) rc[x] = rc[width - 1];
    }
    return row_.data();
  }

 private:
  struct LowRow {
    int64_t key = -1;  // b * low_height + yl
    std::vector<T> data;  // data[c * low_width + xl]
  };

  // Low row yl of batch b, channel-major. A task's output rows are consecutive, so each low
  // row is transposed once for its ~4 output rows; `keep` is the other row in use.
  const T* low_row(int64_t b, int64_t yl, int64_t keep) {
    const int64_t key = b * in_.low_height + yl, kept = b * in_.low_height + keep;
    for (auto& low : low_) {
      if (low.key == key) return low.data.data();
    }
    LowRow& slot = low_[0].key == kept && keep >= 0 ? low_[1] : low_[0];
    slot.key = key;
    const flowsep::Strides& s = in_.s_params;
    const T* src = in_.params + b * s.b + yl * s.y;
    const int64_t lw = in_.low_width;
    // In tiles of 16 columns: whole cache lines written, the tile's reads within L1.
    for (int64_t x0 = 0; x0 < lw; x0 += 16) {
      const int64_t tile = lw - x0 < 16 ? lw - x0 : 16;
      for (int64_t c = 0; c < count_; ++c) {
        T* dst = slot.data.data() + c * lw + x0;
        const T* from = src + x0 * s.x + c * s.c;
        for (int64_t t = 0; t < tile; ++t) dst[t] = from[t * s.x];
      }
    }
    return slot.data.data();
  }

  const flowsep::Inputs<T>& in_;
  int64_t count_, stride_;
  std::vector<flowsep::Source<T>> columns_;
  std::vector<T> blend_, row_;
  LowRow low_[2];
  bool doubled_;
};

// Pixel-major copies of both frames, (2, B, H + 1, W + 1, kPixel), the fourth channel 0 and
// the last row and column repeated once (see clamp_axis).
template <typename T>
at::Tensor pad_frames(const flowsep::Inputs<T>& in, const at::TensorOptions& options) {
  const int64_t height = in.height, width = in.width;
  at::Tensor out = at::empty({2, in.batch, height + 1, width + 1, kPixel}, options);
  T* o = out.data_ptr<T>();
  const T* frames[2] = {in.frame0, in.frame1};
  const flowsep::Strides strides[2] = {in.s_frame0, in.s_frame1};
  at::parallel_for(0, 2 * in.batch * (height + 1), 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / (height + 1), y = row % (height + 1);
      const int64_t f = image / in.batch, b = image % in.batch;
      const flowsep::Strides& s = strides[f];
      const T* src = frames[f] + b * s.b + (y < height ? y : height - 1) * s.y;
      T* dst = o + row * (width + 1) * kPixel;
      for (int64_t x = 0; x <= width; ++x) {
        const int64_t from = (x < width ? x : width - 1) * s.x;
        for (int c = 0; c < 3; ++c) dst[x * kPixel + c] = src[c * s.c + from];
        dst[x * kPixel + 3] = 0;
      }
    }
  });
  return out;
}

// dst[l] = the pixel x0 + l of a row read with stride sx, the last pixel repeated past the end.
template <typename T>
inline void load_lanes(const T* src, int64_t sx, int64_t x0, int64_t width, T* dst) {
  if (sx == 1 && x0 + kLanes <= width) {
    for (int l = 0; l < kLanes; ++l) dst[l] = src[x0 + l];
  } else {
    for (int l = 0; l < kLanes; ++l) dst[l] = src[(x0 + l < width ? x0 + l : width - 1) * sx];
  }
}

template <typename T>
void forward_rows(const flowsep::Inputs<T>& in, const T* padded, T* o, int64_t begin, int64_t end) {
  const int64_t height = in.height, width = in.width, plane = height * width;
  const int n = static_cast<int>(in.taps), k = 2 * n + 3 * n * n;
  RowUpsampler<T> upsample(in, 2 * k + 3);
  const int64_t stride = upsample.stride();
  auto block = std::make_unique<Block<T>>();
  Block<T>& s = *block;
  const T tiny = static_cast<T>(flowsep::kTinyWeight), prior = static_cast<T>(flowsep::kSplatPrior);
  const T guard = static_cast<T>(flowsep::kGuard);
  const int64_t padded_plane = (height + 1) * (width + 1) * kPixel;
  const T* flows[2] = {in.flow0, in.flow1};
  const flowsep::Strides* flow_strides[2] = {&in.s_flow0, &in.s_flow1};
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / height, y = row % height;
    const T* r = upsample(b, y);
    const T* frames[2] = {padded + b * padded_plane, padded + (in.batch + b) * padded_plane};
    for (int64_t x0 = 0; x0 < width; x0 += kLanes) {
      for (int f = 0; f < 2; ++f) {
        const flowsep::Strides& sf = *flow_strides[f];
        for (int axis = 0; axis < 2; ++axis) {
          load_lanes(flows[f] + b * sf.b + axis * sf.c + y * sf.y, sf.x, x0, width, s.flow[f][axis]);
        }
      }
      const flowsep::Strides &sw = in.s_weight0, &ss = in.s_splat;
      load_lanes(in.weight0 + b * sw.b + y * sw.y, sw.x, x0, width, s.weight0);
      for (int c = 0; c < 3; ++c) load_lanes(in.splat + b * ss.b + c * ss.c + y * ss.y, ss.x, x0, width, s.splat[c]);
      candidate_block(in, frames[0], r, stride, 0, y, x0, s);
      candidate_block(in, frames[1], r + k * stride, stride, 1, y, x0, s);
      const T *r0 = r + 2 * k * stride + x0, *r1 = r0 + stride, *r2 = r1 + stride;
      alignas(64) T out[3][kLanes];
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        // As torch.where(total.abs() < 0.01, 1, total): a NaN sum is not < 0.01, so it is kept.
        const T t0 = s.total[0][l], t1 = s.total[1][l];
        const T d0 = std::abs(t0) < guard ? T(1) : t0;
        const T d1 = std::abs(t1) < guard ? T(1) : t1;
        const T w0 = s.weight0[l], one_minus = T(1) - w0;
        const T a0 = w0 < tiny ? tiny : w0;
        const T a1 = one_minus < tiny ? tiny : one_minus;
        T top = r0[l] > r1[l] ? r0[l] : r1[l];
        top = top > r2[l] ? top : r2[l];
        const T e0 = a0 * vector_exp(r0[l] - top), e1 = a1 * vector_exp(r1[l] - top);
        const T e2 = prior * vector_exp(r2[l] - top);
        const T sum = e0 + e1 + e2;
        const T s0 = e0 / sum, s1 = e1 / sum, s2 = e2 / sum;
        for (int c = 0; c < 3; ++c) {
          out[c][l] = s0 * (s.acc[0][c][l] / d0) + s1 * (s.acc[1][c][l] / d1) + s2 * s.splat[c][l];
        }
      }
      const int64_t lanes = width - x0 < kLanes ? width - x0 : kLanes;
      T* ob = o + b * 3 * plane + y * width + x0;
      for (int c = 0; c < 3; ++c) {
        for (int64_t l = 0; l < lanes; ++l) ob[c * plane + l] = out[c][l];
      }
    }
  }
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
  // The taps' offsets into a padded frame are 32-bit lanes.
  TORCH_CHECK((frame0.size(2) + 1) * (frame0.size(3) + 1) * kPixel < std::numeric_limits<int32_t>::max(),
              "flowsep_synthesis (CPU): frames of at most 2^29 pixels");
  at::Tensor out = at::empty(frame0.sizes(), frame0.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cpu_forward", [&] {
    const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
    const at::Tensor padded = pad_frames(in, frame0.options());
    const scalar_t* frames = padded.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, in.batch * in.height, 1,
                     [&](int64_t begin, int64_t end) { forward_rows<scalar_t>(in, frames, o, begin, end); });
  });
  return out;
}

// ------------------------------------------------------------------ the backward, per pixel

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
