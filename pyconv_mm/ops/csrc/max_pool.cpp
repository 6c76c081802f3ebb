// A 2D max pool that keeps one byte per output element for its backward pass (fp32,
// channels_last, AVX-512).
//
// A stock max pool keeps an int64 index per output element. This forward pass stores, with each
// window's maximum, the maximum's position in the window (ky * kw + kx) as one byte per output
// element and channel: an eighth of the bytes. The backward pass (a task per input row, which
// it owns: no two tasks write one row) gives each input element the sum of the output
// gradients of the windows whose maximum it is, gathered in registers and stored once. Both
// are the stock results bit for bit: the first maximum of a window in row-major order wins, a
// NaN wins over numbers, and the gradients of windows sharing a maximum are summed in output
// order, as in ATen's kernels.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

#include "streaming.h"

namespace {

struct PoolWindow {
  int64_t kh, kw, sh, sw, ph, pw;
};

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

// One output row of one image, B blocks of 16 channels at a time (independent chains for the
// out-of-order core; 8 blocks beat 4 and 1 on PyConvResNet's shortcut pools): each window's
// maximum into `out` and, with kPositions, its position in the unclipped window into `where`.
template <int B, bool kPositions>
void pool_row(const float* x, float* out, uint8_t* where, int64_t oy, int64_t H, int64_t W,
              int64_t Wo, int64_t C, const PoolWindow& p) {
  const int64_t y0 = oy * p.sh - p.ph;
  const int64_t y_lo = std::max<int64_t>(y0, 0), y_hi = std::min(y0 + p.kh, H);
  for (int64_t ox = 0; ox < Wo; ++ox) {
    const int64_t x0 = ox * p.sw - p.pw;
    const int64_t x_lo = std::max<int64_t>(x0, 0), x_hi = std::min(x0 + p.kw, W);
    for (int64_t c0 = 0; c0 < C; c0 += 16 * B) {
      __m512 best[B];
      __m512i at[B];
      const float* first = x + (y_lo * W + x_lo) * C + c0;
      const __m512i first_at = _mm512_set1_epi32(static_cast<int>((y_lo - y0) * p.kw + x_lo - x0));
#pragma GCC unroll 8
      for (int b = 0; b < B; ++b) {
        best[b] = _mm512_loadu_ps(first + 16 * b);
        at[b] = first_at;
      }
      for (int64_t y = y_lo; y < y_hi; ++y)
        for (int64_t ix = (y == y_lo ? x_lo + 1 : x_lo); ix < x_hi; ++ix) {
          const float* in = x + (y * W + ix) * C + c0;
          const __m512i here = _mm512_set1_epi32(static_cast<int>((y - y0) * p.kw + ix - x0));
#pragma GCC unroll 8
          for (int b = 0; b < B; ++b) {
            const __m512 v = _mm512_loadu_ps(in + 16 * b);
            const __mmask16 wins = _mm512_cmp_ps_mask(v, best[b], _CMP_GT_OQ) |
                                   _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            best[b] = _mm512_mask_mov_ps(best[b], wins, v);
            if (kPositions) at[b] = _mm512_mask_mov_epi32(at[b], wins, here);
          }
        }
#pragma GCC unroll 8
      for (int b = 0; b < B; ++b) {
        _mm512_storeu_ps(out + ox * C + c0 + 16 * b, best[b]);
        if (kPositions)
          _mm_storeu_si128(reinterpret_cast<__m128i*>(where + ox * C + c0 + 16 * b),
                           _mm512_cvtepi32_epi8(at[b]));
      }
    }
  }
}

// One input row `iy` of one image: each element's gradient, the sum of the output gradients
// of the windows whose maximum it is, in output order (as ATen sums them). With `stream`,
// 64-byte aligned 16-channel blocks are stored non-temporally (streaming.h).
void grad_row(const uint8_t* where, const float* grad, float* grad_x, int64_t iy, int64_t W,
              int64_t Ho, int64_t Wo, int64_t C, const PoolWindow& p,
              std::vector<std::pair<int64_t, int>>& windows, bool stream) {
  float* row = grad_x + iy * W * C;
  // window rows oy with oy * sh - ph <= iy < oy * sh - ph + kh (numerators below 0 give 0)
  const int64_t oy_lo = std::max<int64_t>((iy + p.ph - p.kh + p.sh) / p.sh, 0);
  const int64_t oy_hi = std::min<int64_t>((iy + p.ph) / p.sh + 1, Ho);
  for (int64_t ix = 0; ix < W; ++ix) {
    const int64_t ox_lo = std::max<int64_t>((ix + p.pw - p.kw + p.sw) / p.sw, 0);
    const int64_t ox_hi = std::min<int64_t>((ix + p.pw) / p.sw + 1, Wo);
    windows.clear();  // (output element, position of (iy, ix) in its window), output order
    for (int64_t oy = oy_lo; oy < oy_hi; ++oy)
      for (int64_t ox = ox_lo; ox < ox_hi; ++ox)
        windows.emplace_back((oy * Wo + ox) * C, static_cast<int>(
            (iy - (oy * p.sh - p.ph)) * p.kw + ix - (ox * p.sw - p.pw)));
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      __m512 sum = _mm512_setzero_ps();
      for (const auto& [offset, position] : windows) {
        const __m512i codes = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(where + offset + c0)));
        const __mmask16 here = _mm512_cmpeq_epi32_mask(codes, _mm512_set1_epi32(position));
        sum = _mm512_mask_add_ps(sum, here, sum, _mm512_loadu_ps(grad + offset + c0));
      }
      pyconv_mm::store_line(row + ix * C + c0, sum, stream);
    }
  }
}

#pragma GCC pop_options

PoolWindow window_of(const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                     const std::vector<int64_t>& padding) {
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "pyconv max pool: give 2 kernel sizes, strides and paddings");
  const PoolWindow p{kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
  TORCH_CHECK(p.kh > 0 && p.kw > 0 && p.sh > 0 && p.sw > 0 && p.ph >= 0 && p.pw >= 0 &&
                  2 * p.ph <= p.kh && 2 * p.pw <= p.kw,
              "pyconv max pool: bad window: kernel ", kernel, ", stride ", stride, ", padding ",
              padding);
  TORCH_CHECK(p.kh * p.kw <= 256, "pyconv max pool: windows of at most 256 elements, got ",
              p.kh * p.kw);
  return p;
}

void check_channels_last(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == torch::kFloat && t.device().is_cpu() &&
                  t.size(1) % 16 == 0 && t.is_contiguous(torch::MemoryFormat::ChannelsLast),
              "pyconv max pool: expected the ", what, " as a 4D float32 CPU channels_last "
              "tensor of whole 16-channel blocks, got ", t.sizes(), " ", t.scalar_type());
}

// The pool's output and, with `positions`, where each maximum lies in its window (uint8, (N,
// Ho, Wo, C)); else an empty tensor.
std::vector<torch::Tensor> pool(const torch::Tensor& x, const std::vector<int64_t>& kernel,
                                const std::vector<int64_t>& stride,
                                const std::vector<int64_t>& padding, bool positions) {
  check_channels_last(x, "input");
  const PoolWindow p = window_of(kernel, stride, padding);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H + 2 * p.ph >= p.kh && W + 2 * p.pw >= p.kw, "pyconv max pool: input ",
              x.sizes(), " smaller than the window");
  const int64_t Ho = (H + 2 * p.ph - p.kh) / p.sh + 1, Wo = (W + 2 * p.pw - p.kw) / p.sw + 1;
  auto out = torch::empty({N, C, Ho, Wo}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  auto where = positions ? torch::empty({N, Ho, Wo, C}, x.options().dtype(torch::kUInt8))
                         : torch::empty({0}, x.options().dtype(torch::kUInt8));
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  uint8_t* at = where.data_ptr<uint8_t>();
  using RowFn = decltype(&pool_row<1, true>);
  const RowFn row = C % 128 == 0 ? (positions ? &pool_row<8, true> : &pool_row<8, false>)
                    : C % 64 == 0 ? (positions ? &pool_row<4, true> : &pool_row<4, false>)
                                  : (positions ? &pool_row<1, true> : &pool_row<1, false>);
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / Ho, oy = task % Ho;
      const int64_t offset = (n * Ho + oy) * Wo * C;
      row(src + n * H * W * C, dst + offset, positions ? at + offset : nullptr, oy, H, W, Wo, C,
          p);
    }
  });
  return {out, where};
}

}  // namespace

// max_pool2d(x, kernel, stride, padding) (dilation 1, floor mode) and the position of each
// maximum in its window (uint8, (N, Ho, Wo, C)); x contiguous channels_last float32, channels
// a multiple of 16.
std::vector<torch::Tensor> max_pool2d_with_positions(const torch::Tensor& x,
                                                     const std::vector<int64_t>& kernel,
                                                     const std::vector<int64_t>& stride,
                                                     const std::vector<int64_t>& padding) {
  return pool(x, kernel, stride, padding, true);
}

// The same pool's output alone (inference: no backward pass needs the positions).
torch::Tensor max_pool2d(const torch::Tensor& x, const std::vector<int64_t>& kernel,
                         const std::vector<int64_t>& stride, const std::vector<int64_t>& padding) {
  return pool(x, kernel, stride, padding, false)[0];
}

// Input gradient (N, C, H, W) of max_pool2d_with_positions for the output gradient `grad`
// (channels_last float32) from its positions.
torch::Tensor max_pool2d_grad(const torch::Tensor& positions, const torch::Tensor& grad,
                              int64_t H, int64_t W, const std::vector<int64_t>& kernel,
                              const std::vector<int64_t>& stride,
                              const std::vector<int64_t>& padding) {
  check_channels_last(grad, "output gradient");
  const PoolWindow p = window_of(kernel, stride, padding);
  const int64_t N = grad.size(0), C = grad.size(1), Ho = grad.size(2), Wo = grad.size(3);
  TORCH_CHECK(positions.dim() == 4 && positions.scalar_type() == torch::kUInt8 &&
                  positions.is_contiguous() &&
                  positions.sizes() == torch::IntArrayRef({N, Ho, Wo, C}),
              "pyconv max pool: positions ", positions.sizes(), " do not match the gradient ",
              grad.sizes());
  TORCH_CHECK(H > 0 && W > 0 && Ho == (H + 2 * p.ph - p.kh) / p.sh + 1 &&
                  Wo == (W + 2 * p.pw - p.kw) / p.sw + 1,
              "pyconv max pool: gradient ", grad.sizes(), " does not match the input size (", H,
              ", ", W, ")");
  auto grad_x = torch::empty({N, C, H, W}, grad.options().memory_format(torch::MemoryFormat::ChannelsLast));
  const uint8_t* at = positions.data_ptr<uint8_t>();
  const float* g = grad.data_ptr<float>();
  float* dst = grad_x.data_ptr<float>();
  const bool stream = grad_x.numel() >= pyconv_mm::kStreamedPassFloats;
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<int64_t, int>> windows;
    windows.reserve(p.kh * p.kw);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / H, iy = task % H;
      grad_row(at + n * Ho * Wo * C, g + n * Ho * Wo * C, dst + n * H * W * C, iy, W, Ho, Wo,
               C, p, windows, stream);
    }
    if (stream) _mm_sfence();  // the streamed stores are visible before the call returns
  });
  return grad_x;
}
