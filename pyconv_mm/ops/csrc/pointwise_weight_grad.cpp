// Weight gradient of a 1x1 convolution (stride 1, no groups, fp32, AVX-512) from a
// channels-last input and output gradient.
//
// In channels-last memory both tensors are pixel-major matrices: x is P x C_in and the output
// gradient g is P x C_out, P = N * H * W (* T), so the weight gradient is one matrix product
// with a long inner dimension, dW[co][ci] = sum over p of g[p][co] * x[p][ci]. A tile keeps
// MR output channels x 32 input channels of dW in registers (2 x MR accumulators): each pixel
// loads 32 input channels (two 16-wide loads) and broadcasts MR gradient values, 2 * MR FMAs.
// Pixels go in chunks of kChunkPixels, whose input rows (32 channels each) stay in L1 while
// every tile of output channels reads them; the next chunk's rows are prefetched as the
// current one is worked on (stage 1's 64 -> 64 gradient at 112x112 went from 3.0 to 2.0 ms
// with it, batch 8, 2 cores, Zen 5).
//
// Against the stock backward (oneDNN), batch 8, 2 cores (Zen 5), the fifteen 1x1 shapes of
// PyConvResNet-50: 80-190 -> 190-235 GMAC/s, 118 -> 87 ms for a training step's 1x1 weight
// gradients. oneDNN is weakest where one dimension is 64 channels or 49 pixels an image.
//
// Threads split the pixels where dW is small (each adds into its own copy, summed at the end:
// stages 1 and 2, whose gradients sum over up to 100 K pixels), else the output channels
// (every thread reads all of x: stages 3 and 4, 49-196 pixels an image).
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

bool supported();  // direct_conv.cpp: this CPU has AVX-512 (F, VL) and FMA

namespace {

constexpr const char* kWhat = "pyconv pointwise weight gradient: ";

// Pixels of a chunk: its 32-channel input rows (16 KB) stay in L1 for all output tiles.
constexpr int64_t kChunkPixels = 128;

// Output channels of a full tile: 24 accumulators, 2 input vectors and a broadcast in the 32
// registers.
constexpr int kTileRows = 12;

// Weight gradients of at most this many floats are split by pixels (a copy per thread).
constexpr int64_t kSplitPixelsMaxWeight = 128 << 10;

// Split by output channels, a thread's rows of dW (1 to 4 MB at stages 3 and 4) leave L2 and
// are loaded and stored again for every chunk: over at most kLongChunksMaxPixels pixels
// (PyConvHGResNet's stages 3 and 4 at 224x224: 1568 and 392), chunks are the pixels cut evenly
// into pieces of at most kLongChunkPixels (392 each), whose 32-channel input rows (50 KB)
// still come from L2. Batch 8, 2 cores (Zen 5), caches flushed between calls, paired medians:
// 7x7 1024 -> 2048 and 2048 -> 1024 x1.29-1.31, 14x14 1024 -> 512, 1024 -> 1024 and
// 512 -> 1024 x1.02-1.06; at 28x28 (6272 pixels) long chunks lost (x0.94-0.97).
constexpr int64_t kLongChunkPixels = 512;
constexpr int64_t kLongChunksMaxPixels = 2048;

// Pixels of a chunk for a thread summing `pixels` pixels into `weight_floats` floats of dW.
int64_t chunk_pixels(int64_t pixels, int64_t weight_floats) {
  if (weight_floats <= kSplitPixelsMaxWeight || pixels > kLongChunksMaxPixels)
    return kChunkPixels;
  const int64_t chunks = (pixels + kLongChunkPixels - 1) / kLongChunkPixels;
  return (pixels + chunks - 1) / chunks;
}

// The two matrices, pixel-major: g[p * ldg + co], x[p * ldx + ci].
struct Operands {
  const float* g;
  int64_t ldg;
  const float* x;
  int64_t ldx;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")

// dW[m][16 v ...] (+)= sum over `pixels` pixels of g[p][m] * x[p][16 v ...] for MR rows m of
// `dw` (`ldw` floats apart) and NV vectors v; the accumulators start at zero when `first`,
// else from `dw`. `prefetch_g` / `prefetch_x` (floats, 0 for none): how far ahead of each
// pixel's g and x reads to prefetch one line of g and the NV lines of x.
template <int MR, int NV>
inline void weight_tile(const float* __restrict g, int64_t ldg, const float* __restrict x,
                        int64_t ldx, int64_t pixels, float* __restrict dw, int64_t ldw,
                        bool first, int64_t prefetch_g, int64_t prefetch_x) {
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      acc[m][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(dw + m * ldw + 16 * v);
  for (int64_t p = 0; p < pixels; ++p) {
    const float* gp = g + p * ldg;
    const float* xp = x + p * ldx;
    if (prefetch_g) _mm_prefetch(reinterpret_cast<const char*>(gp + prefetch_g), _MM_HINT_T0);
    __m512 in[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (prefetch_x)
        _mm_prefetch(reinterpret_cast<const char*>(xp + prefetch_x + 16 * v), _MM_HINT_T0);
      in[v] = _mm512_loadu_ps(xp + 16 * v);
    }
#pragma GCC unroll 12
    for (int m = 0; m < MR; ++m) {
      const __m512 a = _mm512_set1_ps(gp[m]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(a, in[v], acc[m][v]);
    }
  }
#pragma GCC unroll 12
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(dw + m * ldw + 16 * v, acc[m][v]);
}

// The tiles of output channels [m0, m1) for the NV vectors of input channels from `n`, over
// one chunk of pixels from `p` (kTileRows at a time, then 4, then 1).
template <int NV>
void chunk_tiles(const Operands& op, int64_t p, int64_t pixels, int64_t n, int64_t m0,
                 int64_t m1, float* dw, int64_t ldw, bool first, bool prefetch, int64_t chunk) {
  const float* g = op.g + p * op.ldg;
  const float* x = op.x + p * op.ldx + n;
  // the next chunk's g rows are prefetched by the tiles of the first input vectors, its x
  // rows by the first tile of each
  const int64_t ahead_g = prefetch && n == 0 ? chunk * op.ldg : 0;
  const int64_t ahead_x = prefetch ? chunk * op.ldx : 0;
  int64_t m = m0;
  for (; m + kTileRows <= m1; m += kTileRows)
    weight_tile<kTileRows, NV>(g + m, op.ldg, x, op.ldx, pixels, dw + m * ldw + n, ldw, first,
                               ahead_g, m == m0 ? ahead_x : 0);
  for (; m + 4 <= m1; m += 4)
    weight_tile<4, NV>(g + m, op.ldg, x, op.ldx, pixels, dw + m * ldw + n, ldw, first, ahead_g,
                       m == m0 ? ahead_x : 0);
  for (; m < m1; ++m)
    weight_tile<1, NV>(g + m, op.ldg, x, op.ldx, pixels, dw + m * ldw + n, ldw, first, ahead_g,
                       m == m0 ? ahead_x : 0);
}

// dw[m0:m1][0:N] = sum over pixels [p0, p1) of g[p][m] * x[p][0:N] (N a multiple of 16;
// p0 < p1), `chunk` pixels at a time.
void weight_grad_range(const Operands& op, int64_t N, int64_t p0, int64_t p1, int64_t m0,
                       int64_t m1, float* dw, int64_t chunk) {
  for (int64_t p = p0; p < p1; p += chunk) {
    const int64_t pixels = std::min(chunk, p1 - p);
    const bool first = p == p0, prefetch = p + chunk < p1;
    int64_t n = 0;
    for (; n + 32 <= N; n += 32) chunk_tiles<2>(op, p, pixels, n, m0, m1, dw, N, first, prefetch,
                                                     chunk);
    if (n < N) chunk_tiles<1>(op, p, pixels, n, m0, m1, dw, N, first, prefetch, chunk);
  }
}

#pragma GCC pop_options

bool channels_last_dense(const torch::Tensor& t) {
  return t.dim() == 4 ? t.is_contiguous(at::MemoryFormat::ChannelsLast)
                      : t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
}

}  // namespace

// Weight gradient (C_out, C_in, 1, 1[, 1]) of a 1x1 convolution with stride 1 and no groups,
// from its input x (N, C_in, *S) and output gradient grad (N, C_out, *S), both float32,
// channels-last (4D or 5D) and dense; C_in a multiple of 16.
torch::Tensor pointwise_weight_grad(const torch::Tensor& x, const torch::Tensor& grad) {
  TORCH_CHECK(supported(), kWhat, "this CPU has no AVX-512");
  TORCH_CHECK((x.dim() == 4 || x.dim() == 5) && grad.dim() == x.dim(), kWhat,
              "x and grad must both be 4D or 5D, got ", x.sizes(), " and ", grad.sizes());
  TORCH_CHECK(x.device().is_cpu() && grad.device().is_cpu() &&
                  x.scalar_type() == torch::kFloat && grad.scalar_type() == torch::kFloat,
              kWhat, "x and grad must be float32 CPU tensors, got ", x.scalar_type(), " and ",
              grad.scalar_type());
  for (int64_t d = 0; d < x.dim(); ++d)
    TORCH_CHECK(d == 1 || x.size(d) == grad.size(d), kWhat,
                "x and grad differ outside the channel dimension: ", x.sizes(), " and ",
                grad.sizes(), " (a 1x1 convolution with stride 1 keeps the size)");
  TORCH_CHECK(channels_last_dense(x) && channels_last_dense(grad), kWhat,
              "x and grad must be dense in channels-last memory format");
  const int64_t N = x.size(1), M = grad.size(1), P = x.numel() / std::max<int64_t>(N, 1);
  TORCH_CHECK(N % 16 == 0 && N > 0 && M > 0, kWhat,
              "input channels must be a positive multiple of 16, got ", N);
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = M;
  shape[1] = N;
  auto dw = torch::empty(shape, x.options());
  if (P == 0) return dw.zero_();
  const Operands op{grad.data_ptr<float>(), M, x.data_ptr<float>(), N};
  float* out = dw.data_ptr<float>();
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), P);
  const int64_t chunk = chunk_pixels(P, M * N);
  if (M * N <= kSplitPixelsMaxWeight) {  // pixels split, a copy of dW per thread after the first
    std::vector<float> copies((threads - 1) * M * N);
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        weight_grad_range(op, N, P * t / threads, P * (t + 1) / threads, 0, M,
                          t == 0 ? out : copies.data() + (t - 1) * M * N, chunk);
    });
    for (int64_t t = 1; t < threads; ++t) {
      const float* copy = copies.data() + (t - 1) * M * N;
      for (int64_t i = 0; i < M * N; ++i) out[i] += copy[i];
    }
  } else {  // output channels split, in multiples of 4 where there are enough
    const int64_t units = (M + 3) / 4;
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t m0 = std::min(M, units * t / threads * 4);
        const int64_t m1 = std::min(M, units * (t + 1) / threads * 4);
        if (m0 < m1) weight_grad_range(op, N, 0, P, m0, m1, out, chunk);
      }
    });
  }
  return dw;
}
