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

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>
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

// ---------------------------------------------------------------------------------------
// The forward, kLanes pixels of a row at a time. Scalar, a pixel cost about 20 ns per tap,
// most of it the tap's mask sigmoid (a call of glibc's exp), its two clamped positions and
// bilinear weights. Here every value of a block is an array over its pixels and each step a
// loop over them with no branches and no calls, which the compiler vectorises; only the
// frames' four-corner reads stay scalar. The arithmetic is forward_from_params's, in the
// same order, but for the exponential and logarithm below.

constexpr int kLanes = 16;

// What the branch-free exp and log need of each floating-point format.
template <typename scalar_t>
struct Format;

template <>
struct Format<float> {
  using Bits = uint32_t;
  static constexpr int kMantissa = 23;
  static constexpr Bits kBias = 127;
  static constexpr float kExpLow = -104.f, kExpHigh = 89.f;  // e^x rounds to 0 below, to inf above
  static constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;  // ln 2 = high + low
  // 1/i!: degree 7 leaves 0.1 ulp on |r| <= ln2/2; 2/(2i+1): the odd series of atanh.
  static constexpr float kExp[] = {1.f, 1.f, 1.f / 2, 1.f / 6, 1.f / 24, 1.f / 120, 1.f / 720, 1.f / 5040};
  static constexpr float kLog[] = {2.f, 2.f / 3, 2.f / 5, 2.f / 7, 2.f / 9};
};

template <>
struct Format<double> {
  using Bits = uint64_t;
  static constexpr int kMantissa = 52;
  static constexpr Bits kBias = 1023;
  static constexpr double kExpLow = -746., kExpHigh = 710.;
  static constexpr double kLn2High = 6.93147180369123816490e-01, kLn2Low = 1.90821492927058770002e-10;
  static constexpr double kExp[] = {1.,           1.,            1. / 2,         1. / 6,          1. / 24,
                                    1. / 120,     1. / 720,      1. / 5040,      1. / 40320,      1. / 362880,
                                    1. / 3628800, 1. / 39916800, 1. / 479001600, 1. / 6227020800.};
  static constexpr double kLog[] = {2.,      2. / 3,  2. / 5,  2. / 7,  2. / 9, 2. / 11,
                                    2. / 13, 2. / 15, 2. / 17, 2. / 19, 2. / 21};
};

template <typename scalar_t>
inline typename Format<scalar_t>::Bits bits_of(scalar_t value) {
  typename Format<scalar_t>::Bits bits;
  std::memcpy(&bits, &value, sizeof value);
  return bits;
}

template <typename scalar_t>
inline scalar_t from_bits(typename Format<scalar_t>::Bits bits) {
  scalar_t value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// sum c[i] x^i by Horner's rule, written out: a loop over c would keep the loops calling
// this from being vectorised.
template <typename scalar_t, std::size_t N, std::size_t... I>
inline scalar_t horner(scalar_t x, const scalar_t (&c)[N], std::index_sequence<I...>) {
  scalar_t p = c[N - 1];
  ((p = p * x + c[N - 2 - I]), ...);
  return p;
}

template <typename scalar_t, std::size_t N>
inline scalar_t polynomial(scalar_t x, const scalar_t (&c)[N]) {
  return horner(x, c, std::make_index_sequence<N - 1>());
}

// 2^k for an integer k of at most kMantissa - 1 bits, held as k + 1.5 * 2^kMantissa.
template <typename scalar_t>
inline scalar_t power_of_two(scalar_t shifted) {
  using F = Format<scalar_t>;
  return from_bits<scalar_t>((bits_of(shifted) + F::kBias) << F::kMantissa);
}

// e^x within about an ulp, NaN, infinities and the subnormal range as std::exp gives them:
// x = k ln2 + r with |r| <= ln2/2, a Taylor polynomial for e^r, and 2^k applied as two
// factors so that a result in the subnormal range is rounded once.
template <typename scalar_t>
inline scalar_t exp_lanes(scalar_t x) {
  using F = Format<scalar_t>;
  const scalar_t shifter = scalar_t(1.5) * static_cast<scalar_t>(typename F::Bits(1) << F::kMantissa);
  x = x < F::kExpLow ? F::kExpLow : (x > F::kExpHigh ? F::kExpHigh : x);  // NaN passes
  const scalar_t k = (x * scalar_t(1.4426950408889634) + shifter) - shifter;  // round(x / ln2)
  const scalar_t r = (x - k * F::kLn2High) - k * F::kLn2Low;
  const scalar_t p = polynomial(r, F::kExp);
  const scalar_t half = k * scalar_t(0.5) + shifter;
  return p * power_of_two(half) * power_of_two(k - (half - shifter) + shifter);
}

// ln a for a positive normal a, +inf or NaN (the clamped prior weights of the logits):
// a = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1) / (m + 1)).
template <typename scalar_t>
inline scalar_t log_lanes(scalar_t a) {
  using F = Format<scalar_t>;
  using Bits = typename F::Bits;
  const Bits bits = bits_of(a);
  const Bits one = F::kBias << F::kMantissa, mantissa = (Bits(1) << F::kMantissa) - 1;
  const scalar_t unit = from_bits<scalar_t>((bits & mantissa) | one);  // [1, 2)
  // The exponent field as a float by the same shift as power_of_two: AVX2 has no vector
  // conversion from 64-bit integers.
  const scalar_t two_m = static_cast<scalar_t>(Bits(1) << F::kMantissa);
  const scalar_t field = from_bits<scalar_t>((bits >> F::kMantissa) | bits_of(two_m)) - two_m;
  const bool halve = unit > scalar_t(1.4142135623730951);
  const scalar_t m = halve ? unit * scalar_t(0.5) : unit;
  const scalar_t e = field - static_cast<scalar_t>(F::kBias) + (halve ? scalar_t(1) : scalar_t(0));
  const scalar_t s = (m - scalar_t(1)) / (m + scalar_t(1)), s2 = s * s;
  const scalar_t result = e * F::kLn2High + (e * F::kLn2Low + s * polynomial(s2, F::kLog));
  return a != a || a > std::numeric_limits<scalar_t>::max() ? a : result;
}

// flowsep::locate without its branch. A NaN position keeps its NaN fraction, so the tap's
// four weights are NaN as there; that it reads columns 0 and 1 instead of 0 and 0 changes
// nothing.
template <typename scalar_t>
inline scalar_t locate_lanes(scalar_t position, scalar_t top, int32_t size, int32_t& low, int32_t& high) {
  scalar_t clamped = position > scalar_t(0) ? position : scalar_t(0);
  clamped = clamped < top ? clamped : top;
  const scalar_t floored = std::floor(clamped);
  low = static_cast<int32_t>(floored);
  high = low + 1 < size ? low + 1 : size - 1;
  return position == position ? clamped - floored : position;
}

// The gated, upsampled parameters of a block: block[c * kLanes + l] for pixel x0 + l.
// Each low-resolution row is upsampled horizontally once, channel-major, into one of two
// slots that the output rows blending it reuse (rows run in order within a task); a block
// is then a contiguous vertical blend. Columns past the row's end repeat its last pixel.
template <typename scalar_t>
class PlanarParams {
 public:
  PlanarParams(const flowsep::Inputs<scalar_t>& in, int64_t count)
      : in_(in), count_(count), pitch_((in.width + kLanes - 1) / kLanes * kLanes), block_(count * kLanes) {
    for (int s = 0; s < 2; ++s) slots_[s].assign(count * pitch_, scalar_t(0));
    for (int64_t x = 0; x < pitch_; ++x) {
      const auto sx = flowsep::source_index<scalar_t>(std::min(x, in.width - 1), in.low_width, in.width);
      left_.push_back(sx.low * in.s_params.x);
      right_.push_back((sx.low + sx.step) * in.s_params.x);
      lambda0_.push_back(sx.lambda0);
      lambda1_.push_back(sx.lambda1);
    }
  }

  void select_row(int64_t b, int64_t y) {
    const auto sy = flowsep::source_index<scalar_t>(y, in_.low_height, in_.height);
    const int64_t top = b * in_.low_height + sy.low;
    top_ = upsampled(top, -1);
    bottom_ = upsampled(top + sy.step, top);
    weight_top_ = sy.lambda0;
    weight_bottom_ = sy.lambda1;
    gate_ = in_.gate[b];
  }

  const scalar_t* block(int64_t x0) {
    for (int64_t c = 0; c < count_; ++c) {
      const scalar_t* t = top_ + c * pitch_ + x0;
      const scalar_t* u = bottom_ + c * pitch_ + x0;
      scalar_t* out = block_.data() + c * kLanes;
      for (int l = 0; l < kLanes; ++l) out[l] = (weight_top_ * t[l] + weight_bottom_ * u[l]) * gate_;
    }
    return block_.data();
  }

 private:
  // Low row `key` (b * low_height + y) upsampled along x, computed unless a slot has it,
  // into the slot that does not hold `keep`.
  const scalar_t* upsampled(int64_t key, int64_t keep) {
    for (int s = 0; s < 2; ++s) {
      if (keys_[s] == key) return slots_[s].data();
    }
    const int s = keys_[0] == keep ? 1 : 0;
    keys_[s] = key;
    const flowsep::Strides& st = in_.s_params;
    const scalar_t* row = in_.params + key / in_.low_height * st.b + key % in_.low_height * st.y;
    scalar_t* out = slots_[s].data();
    for (int64_t x0 = 0; x0 < pitch_; x0 += kLanes) {
      for (int64_t c = 0; c < count_; ++c) {
        const scalar_t* q = row + c * st.c;
        scalar_t* o = out + c * pitch_ + x0;
        for (int l = 0; l < kLanes; ++l) {
          const int64_t x = x0 + l;
          o[l] = lambda0_[x] * q[left_[x]] + lambda1_[x] * q[right_[x]];
        }
      }
    }
    return out;
  }

  const flowsep::Inputs<scalar_t>& in_;
  int64_t count_, pitch_;
  std::vector<scalar_t> slots_[2], block_;
  int64_t keys_[2] = {-1, -1};
  const scalar_t *top_ = nullptr, *bottom_ = nullptr;
  scalar_t weight_top_ = 0, weight_bottom_ = 0, gate_ = 0;
  std::vector<int64_t> left_, right_;
  std::vector<scalar_t> lambda0_, lambda1_;
};

// One frame's candidate for a block (flowsep::candidate). r: the block's k parameters of
// this frame; columns: x0 + l as a scalar; xs: x0 + l clamped into the row.
template <typename scalar_t>
void candidate_block(const scalar_t* frame, const flowsep::Strides& sf, const scalar_t* flow,
                     const flowsep::Strides& sl, const flowsep::Inputs<scalar_t>& in, int64_t b, int64_t y,
                     const scalar_t* columns, const int64_t* xs, const scalar_t* r, scalar_t (&value)[3][kLanes]) {
  const int64_t n = in.taps, nn = n * n, radius = n / 2;
  const scalar_t top_y = static_cast<scalar_t>(in.height - 1), top_x = static_cast<scalar_t>(in.width - 1);
  const int32_t height = static_cast<int32_t>(in.height), width = static_cast<int32_t>(in.width);
  scalar_t dx[kLanes], dy[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    dx[l] = flowsep::at(flow, sl, b, 0, y, xs[l]);
    dy[l] = flowsep::at(flow, sl, b, 1, y, xs[l]);
  }
  scalar_t acc[3][kLanes] = {}, total[kLanes] = {};
  const scalar_t* f = frame + b * sf.b;
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t centre_i = i == radius ? scalar_t(1) : scalar_t(0);
    const scalar_t row = static_cast<scalar_t>(y + i - radius);
    const scalar_t* rv = r + i * kLanes;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = i * n + j;
      const scalar_t centre_j = j == radius ? scalar_t(1) : scalar_t(0);
      const scalar_t shift = static_cast<scalar_t>(j - radius);
      const scalar_t* rh = r + (n + j) * kLanes;
      const scalar_t* ry = r + (2 * n + k) * kLanes;
      const scalar_t* rx = r + (2 * n + nn + k) * kLanes;
      const scalar_t* rm = r + (2 * n + 2 * nn + k) * kLanes;
      scalar_t c00[kLanes], c01[kLanes], c10[kLanes], c11[kLanes];
      int32_t y0[kLanes], y1[kLanes], x0[kLanes], x1[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        const scalar_t mask = scalar_t(2) / (scalar_t(1) + exp_lanes(-rm[l]));
        const scalar_t weight = (centre_i + rv[l]) * (centre_j + rh[l]) * mask;
        total[l] += weight;
        const scalar_t fy = locate_lanes(dy[l] + ry[l] + row, top_y, height, y0[l], y1[l]);
        const scalar_t fx = locate_lanes(dx[l] + rx[l] + (columns[l] + shift), top_x, width, x0[l], x1[l]);
        const scalar_t wy1 = weight * fy, wy0 = weight - wy1;
        c01[l] = wy0 * fx;
        c11[l] = wy1 * fx;
        c00[l] = wy0 - c01[l];
        c10[l] = wy1 - c11[l];
      }
      for (int l = 0; l < kLanes; ++l) {
        const int64_t o00 = y0[l] * sf.y + x0[l] * sf.x, o01 = y0[l] * sf.y + x1[l] * sf.x;
        const int64_t o10 = y1[l] * sf.y + x0[l] * sf.x, o11 = y1[l] * sf.y + x1[l] * sf.x;
        for (int c = 0; c < 3; ++c) {
          const scalar_t* fc = f + c * sf.c;
          acc[c][l] += c00[l] * fc[o00] + c01[l] * fc[o01] + c10[l] * fc[o10] + c11[l] * fc[o11];
        }
      }
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    const scalar_t divisor = std::fabs(total[l]) < scalar_t(flowsep::kGuard) ? scalar_t(1) : total[l];
    for (int c = 0; c < 3; ++c) value[c][l] = acc[c][l] / divisor;
  }
}

// Pixels x0 .. x0 + kLanes of row y (flowsep::forward_from_params): the first `valid` into
// out (channel c at out[c * plane + l]).
template <typename scalar_t>
void forward_block(const flowsep::Inputs<scalar_t>& in, int64_t b, int64_t y, int64_t x0, const scalar_t* r,
                   int64_t valid, scalar_t* out, int64_t plane) {
  const int64_t k = 2 * in.taps + 3 * in.taps * in.taps;
  scalar_t columns[kLanes];
  int64_t xs[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    columns[l] = static_cast<scalar_t>(x0 + l);
    xs[l] = std::min<int64_t>(x0 + l, in.width - 1);
  }
  scalar_t c0[3][kLanes], c1[3][kLanes];
  candidate_block(in.frame0, in.s_frame0, in.flow0, in.s_flow0, in, b, y, columns, xs, r, c0);
  candidate_block(in.frame1, in.s_frame1, in.flow1, in.s_flow1, in, b, y, columns, xs, r + k * kLanes, c1);
  scalar_t w0[kLanes], splat[3][kLanes];
  for (int l = 0; l < kLanes; ++l) {
    w0[l] = flowsep::at(in.weight0, in.s_weight0, b, 0, y, xs[l]);
    for (int c = 0; c < 3; ++c) splat[c][l] = flowsep::at(in.splat, in.s_splat, b, c, y, xs[l]);
  }
  const scalar_t* rl = r + 2 * k * kLanes;
  const scalar_t tiny = static_cast<scalar_t>(flowsep::kTinyWeight);
  const scalar_t log_prior = static_cast<scalar_t>(std::log(flowsep::kSplatPrior));
  scalar_t blend[3][kLanes];
  for (int l = 0; l < kLanes; ++l) {  // flowsep::logits and softmax3
    const scalar_t one_minus = scalar_t(1) - w0[l];
    const scalar_t l0 = log_lanes(w0[l] < tiny ? tiny : w0[l]) + rl[l];
    const scalar_t l1 = log_lanes(one_minus < tiny ? tiny : one_minus) + rl[kLanes + l];
    const scalar_t l2 = log_prior + rl[2 * kLanes + l];
    scalar_t top = l0 > l1 ? l0 : l1;
    top = top > l2 ? top : l2;
    const scalar_t e0 = exp_lanes(l0 - top), e1 = exp_lanes(l1 - top), e2 = exp_lanes(l2 - top);
    const scalar_t sum = e0 + e1 + e2;
    const scalar_t s0 = e0 / sum, s1 = e1 / sum, s2 = e2 / sum;
    for (int c = 0; c < 3; ++c) blend[c][l] = s0 * c0[c][l] + s1 * c1[c][l] + s2 * splat[c][l];
  }
  for (int c = 0; c < 3; ++c) {
    for (int64_t l = 0; l < valid; ++l) out[c * plane + l] = blend[c][l];
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
  at::Tensor out = at::empty(frame0.sizes(), frame0.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(frame0.scalar_type(), "flowsep_synthesis_cpu_forward", [&] {
    const auto in = gather_inputs<scalar_t>(frame0, frame1, splat, flow0, flow1, weight0, params, gate, taps);
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t height = in.height, width = in.width, plane = height * width;
    const int64_t count = params.size(1);
    at::parallel_for(0, in.batch * height, 1, [&](int64_t begin, int64_t end) {
      PlanarParams<scalar_t> row_params(in, count);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / height, y = row % height;
        row_params.select_row(b, y);
        scalar_t* ob = o + b * 3 * plane + y * width;
        for (int64_t x0 = 0; x0 < width; x0 += kLanes) {
          const int64_t valid = std::min<int64_t>(kLanes, width - x0);
          forward_block<scalar_t>(in, b, y, x0, row_params.block(x0), valid, ob + x0, plane);
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
