// Gradient of a 2D max pool from its input alone (fp32, channels_last, AVX-512).
//
// The index-free max pools (pyconv_mm/ops/pool.py) keep their input instead of int64 argmax
// indices. The stock way back from there is the pool again with int64 indices, a zero-filled
// gradient and the scatter of the output gradient. Here pass 1 (a task per output row) stores
// each window's argmax per channel as one byte, its position in the window; pass 2 (a task per
// input row, which it owns: no two tasks write one row) zeroes the row and adds the output
// gradient of every window whose argmax lies in it. The result is the stock one bit for bit:
// the first maximum of a window in row-major order wins, a NaN wins over numbers, and the
// gradients of windows sharing an argmax are summed in output order, as in ATen's kernels.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>

namespace {

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

struct PoolWindow {
  int64_t kh, kw, sh, sw, ph, pw;
};

// Pass 1, one output row of one image (all channels, a multiple of 16): the argmax of every
// window and channel as its position ky * kw + kx in the unclipped window, one byte each.
void argmax_row(const float* x, uint8_t* where, int64_t oy, int64_t H, int64_t W, int64_t Wo,
                int64_t C, const PoolWindow& p) {
  const int64_t y0 = oy * p.sh - p.ph;
  const int64_t y_lo = std::max<int64_t>(y0, 0), y_hi = std::min(y0 + p.kh, H);
  for (int64_t ox = 0; ox < Wo; ++ox) {
    const int64_t x0 = ox * p.sw - p.pw;
    const int64_t x_lo = std::max<int64_t>(x0, 0), x_hi = std::min(x0 + p.kw, W);
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      __m512 best = _mm512_loadu_ps(x + (y_lo * W + x_lo) * C + c0);
      __m512i at = _mm512_set1_epi32(static_cast<int>((y_lo - y0) * p.kw + x_lo - x0));
      for (int64_t y = y_lo; y < y_hi; ++y)
        for (int64_t ix = (y == y_lo ? x_lo + 1 : x_lo); ix < x_hi; ++ix) {
          const __m512 v = _mm512_loadu_ps(x + (y * W + ix) * C + c0);
          const __mmask16 wins = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                                 _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          best = _mm512_mask_mov_ps(best, wins, v);
          at = _mm512_mask_mov_epi32(
              at, wins, _mm512_set1_epi32(static_cast<int>((y - y0) * p.kw + ix - x0)));
        }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(where + ox * C + c0),
                       _mm512_cvtepi32_epi8(at));
    }
  }
}

// Pass 2, one input row `iy` of one image: zeroed, then the output gradient of every window
// whose argmax lies in it added there, windows in output order (as ATen sums them).
void grad_row(const uint8_t* where, const float* grad, float* grad_x, int64_t iy, int64_t W,
              int64_t Ho, int64_t Wo, int64_t C, const PoolWindow& p) {
  float* row = grad_x + iy * W * C;
  std::fill_n(row, W * C, 0.f);
  // windows oy with oy * sh - ph <= iy < oy * sh - ph + kh
  const int64_t oy_lo = std::max<int64_t>((iy + p.ph - p.kh + p.sh) / p.sh, 0);
  const int64_t oy_hi = std::min<int64_t>((iy + p.ph) / p.sh + 1, Ho);
  for (int64_t oy = oy_lo; oy < oy_hi; ++oy) {
    const int64_t ky = iy - (oy * p.sh - p.ph);
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const int64_t x0 = ox * p.sw - p.pw;
      const int64_t kx_lo = std::max<int64_t>(-x0, 0), kx_hi = std::min(p.kw, W - x0);
      const uint8_t* at = where + (oy * Wo + ox) * C;
      const float* g = grad + (oy * Wo + ox) * C;
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        const __m512i codes = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + c0)));
        const __m512 gv = _mm512_loadu_ps(g + c0);
        for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
          const __mmask16 here = _mm512_cmpeq_epi32_mask(
              codes, _mm512_set1_epi32(static_cast<int>(ky * p.kw + kx)));
          if (here == 0) continue;
          float* dst = row + (x0 + kx) * C + c0;
          const __m512 old = _mm512_loadu_ps(dst);
          _mm512_storeu_ps(dst, _mm512_mask_add_ps(old, here, old, gv));
        }
      }
    }
  }
}

#pragma GCC pop_options

}  // namespace

// Input gradient of max_pool2d(x, kernel, stride, padding) (dilation 1, floor mode) for the
// output gradient `grad`: x and grad contiguous channels_last float32, channels a multiple of
// 16.
torch::Tensor max_pool2d_grad(const torch::Tensor& x, const torch::Tensor& grad,
                              const std::vector<int64_t>& kernel,
                              const std::vector<int64_t>& stride,
                              const std::vector<int64_t>& padding) {
  TORCH_CHECK(x.dim() == 4 && grad.dim() == 4 && x.scalar_type() == torch::kFloat &&
                  grad.scalar_type() == torch::kFloat && x.device().is_cpu() &&
                  grad.device().is_cpu(),
              "pyconv max-pool gradient: expected 4D float32 CPU tensors");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "pyconv max-pool gradient: give 2 kernel sizes, strides and paddings");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = grad.size(2), Wo = grad.size(3);
  const PoolWindow p{kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
  TORCH_CHECK(p.kh > 0 && p.kw > 0 && p.sh > 0 && p.sw > 0 && p.ph >= 0 && p.pw >= 0 &&
                  2 * p.ph <= p.kh && 2 * p.pw <= p.kw,
              "pyconv max-pool gradient: bad window");
  TORCH_CHECK(grad.size(0) == N && grad.size(1) == C &&
                  Ho == (H + 2 * p.ph - p.kh) / p.sh + 1 && Wo == (W + 2 * p.pw - p.kw) / p.sw + 1,
              "pyconv max-pool gradient: gradient ", grad.sizes(), " does not match the input ",
              x.sizes());
  TORCH_CHECK(C % 16 == 0 && x.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
                  grad.is_contiguous(torch::MemoryFormat::ChannelsLast),
              "pyconv max-pool gradient: expected channels_last tensors of whole 16-channel "
              "blocks");
  TORCH_CHECK(p.kh * p.kw <= 256, "pyconv max-pool gradient: windows of at most 256 elements");
  auto grad_x = torch::empty_like(x, torch::MemoryFormat::ChannelsLast);
  auto where = torch::empty({N, Ho, Wo, C}, x.options().dtype(torch::kUInt8));
  const float* src = x.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* dst = grad_x.data_ptr<float>();
  uint8_t* at = where.data_ptr<uint8_t>();
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / Ho, oy = task % Ho;
      argmax_row(src + n * H * W * C, at + (n * Ho + oy) * Wo * C, oy, H, W, Wo, C, p);
    }
  });
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / H, iy = task % H;
      grad_row(at + n * Ho * Wo * C, g + n * Ho * Wo * C, dst + n * H * W * C, iy, W, Ho, Wo,
               C, p);
    }
  });
  return grad_x;
}
