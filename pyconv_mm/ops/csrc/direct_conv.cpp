// Direct CPU kernel for the grouped levels of a PyConv (fp32, AVX-512), with its gradients.
//
// The stock CPU kernels run grouped convolutions whose groups have few channels (PyConv's
// 5x5/G4, 7x7/G8 and 9x9/G16 levels) at a fraction of the rate of a dense convolution. This
// kernel vectorises over 16 output columns instead of over channels, so the size of a group
// does not matter: for each output channel, input channel of its group and kernel tap, one
// 16-wide load of an input row is multiplied by one broadcast weight. A tile keeps R output
// rows x CO output channels (of one group) x 16 columns in registers; a row's last block of at
// most 8 columns runs 8 wide (see Lanes8).
//
// Work is split in tasks of (image, band of 8 output rows). A task first copies the input rows
// the band reads into a buffer of its thread (all channels, zero padded for the widest level,
// planar, columns split in S stride phases so that a strided convolution reads contiguous
// columns too), then runs the tiles of every level and group from that buffer, which stays in
// cache: the input is read from memory once for all levels. Each level writes its channels of
// one output tensor (NCHW or channels_last): a PyConv needs no concatenation. channels_last
// bands of whole 16-channel blocks move in and out by 16 x 16 transposes in registers (the
// output through a planar band buffer of the thread).
//
// Only the kernel functions are compiled for AVX-512 (pragma region below); `supported()` tells
// Python whether this CPU can run them, so the module imports on any x86-64 CPU.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "streaming.h"

namespace {

constexpr int64_t kBandRows = 8;  // output rows of a task; every tile height divides it

// What one tile reads and writes.
struct Tile {
  const float* input;     // buffer plane of the group's first input channel, phase 0
  int64_t plane;          // floats of one phase plane; a channel has S of them
  int64_t width;          // floats per buffer row
  int64_t in_channels;    // input channels of the group
  int64_t in_y;           // buffer row of the tile's first output row (before the taps)
  const float* weight;    // (C_in / G, KH, KW) weight of the tile's first output channel
  int64_t weight_stride;  // floats between output channels
  int64_t kernel_h, kernel_w, dilation;
  int64_t offset_y, offset_x;  // buffer padding minus the level's padding above and left
  const float* bias;  // bias of the tile's first output channel, or null
  // with `scale` (null: none), outputs are stored as max(v * scale[co] + shift[co], 0), v
  // with the bias added: a batch norm (eval) and a ReLU after the convolution
  const float* scale;
  const float* shift;
  float* out;         // output element (n, first channel, first row, column 0)
  int64_t out_stride_c, out_stride_h, out_stride_w, out_width;
  int rows;         // output rows to store
  bool accumulate;  // add to the output instead of overwriting it
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")

// max(v * a + b, 0): an eval-mode batch norm and a ReLU; a NaN stays NaN, as in torch (MAXPS
// returns its second operand when one is NaN).
inline __m512 affine_relu(__m512 v, __m512 a, __m512 b) {
  return _mm512_max_ps(_mm512_setzero_ps(), _mm512_fmadd_ps(v, a, b));
}

// The registers a tile computes in: 16 columns (one AVX-512 register), or 8 (its lower half,
// AVX-512VL) for a row's last block of at most 8 columns. A 56-column row then runs as 3 x 16
// + 8 columns instead of 4 x 16: on CPUs whose AVX-512 units are 256 bits wide (AMD Zen 4) an
// 8-wide FMA costs half a 16-wide one, and the stage-1 PyConvs of a 224x224 image (56 output
// columns) computed 64 columns for 56.
struct Lanes16 {
  using T = __m512;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T load_aligned(const float* p) { return _mm512_load_ps(p); }
  static void store_aligned(float* p, T v) { _mm512_store_ps(p, v); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static __m512 widen(T v) { return v; }
  static float sum(T v) { return _mm512_reduce_add_ps(v); }
};

struct Lanes8 {
  using T = __m256;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T load_aligned(const float* p) { return _mm256_load_ps(p); }
  static void store_aligned(float* p, T v) { _mm256_store_ps(p, v); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static __m512 widen(T v) { return _mm512_zextps256_ps512(v); }  // upper lanes not stored
  static float sum(T v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
  }
};

// Where a row of `width` columns ends its 16-wide blocks: before a last block of at most 8
// columns, which runs 8 wide; else at `width` rounded up to 16 (a last block of 9 to 15
// columns runs 16 wide).
inline int64_t wide_columns_end(int64_t width) {
  const int64_t whole = width / 16 * 16;
  return width - whole <= 8 ? whole : whole + 16;
}

// Calls block(Lanes16{}, ox0) for the 16-wide blocks of `width` columns, then
// block(Lanes8{}, ox0) for an 8-wide last one (wide_columns_end).
template <typename Block>
inline void for_column_blocks(int64_t width, Block block) {
  const int64_t wide_end = wide_columns_end(width);
  for (int64_t ox0 = 0; ox0 < wide_end; ox0 += 16) block(Lanes16{}, ox0);
  if (wide_end < width) block(Lanes8{}, wide_end);
}

template <class V, int R, int CO>
inline void store_tile(const Tile& t, typename V::T (&acc)[R][CO], int64_t ox0) {
  alignas(64) float lanes[16];
  const int64_t cols = std::min<int64_t>(16, t.out_width - ox0);
  const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1u);
  for (int r = 0; r < t.rows; ++r) {
    for (int co = 0; co < CO; ++co) {
      __m512 v = V::widen(acc[r][co]);
      if (t.bias != nullptr) v = _mm512_add_ps(v, _mm512_set1_ps(t.bias[co]));
      if (t.scale != nullptr)
        v = affine_relu(v, _mm512_set1_ps(t.scale[co]), _mm512_set1_ps(t.shift[co]));
      float* dst = t.out + co * t.out_stride_c + r * t.out_stride_h + ox0 * t.out_stride_w;
      if (t.out_stride_w == 1) {
        if (t.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst));
        _mm512_mask_storeu_ps(dst, mask, v);
      } else {  // channels_last: the 16 columns are C apart
        _mm512_store_ps(lanes, v);
        if (t.accumulate) {
          for (int64_t i = 0; i < cols; ++i) dst[i * t.out_stride_w] += lanes[i];
        } else {
          for (int64_t i = 0; i < cols; ++i) dst[i * t.out_stride_w] = lanes[i];
        }
      }
    }
  }
}

template <class V, int R, int CO>
inline void zero_tile(typename V::T (&acc)[R][CO]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int co = 0; co < CO; ++co) acc[r][co] = V::zero();
}

// R output rows x CO output channels, any kernel size and dilation; all columns, 16 (or a
// last 8) at a time.
template <int R, int CO, int S>
void conv_tile(const Tile& t) {
  const int64_t taps = t.kernel_h * t.kernel_w;
  for_column_blocks(t.out_width, [&t, taps](auto lanes, int64_t ox0) {
    using V = decltype(lanes);
    typename V::T acc[R][CO];
    zero_tile<V>(acc);
    for (int64_t ci = 0; ci < t.in_channels; ++ci) {
      const float* channel = t.input + ci * S * t.plane;
      const float* w_ci = t.weight + ci * taps;
      for (int64_t kx = 0; kx < t.kernel_w; ++kx) {
        const int64_t column = kx * t.dilation + t.offset_x;  // buffer column of output column 0
        const float* base = channel + (column % S) * t.plane + ox0 + column / S;
        for (int64_t ky = 0; ky < t.kernel_h; ++ky) {
          const float* row = base + (t.in_y + ky * t.dilation + t.offset_y) * t.width;
          const float* w_tap = w_ci + ky * t.kernel_w + kx;
          typename V::T w[CO];
#pragma GCC unroll 16
          for (int co = 0; co < CO; ++co) w[co] = V::set1(w_tap[co * t.weight_stride]);
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const typename V::T x = V::load(row + r * S * t.width);
#pragma GCC unroll 16
            for (int co = 0; co < CO; ++co) acc[r][co] = V::fmadd(x, w[co], acc[r][co]);
          }
        }
      }
    }
    store_tile<V>(t, acc, ox0);
  });
}

// The frame of the tiles with a compile-time kernel size KH x KW (dilation 1): for each block
// of columns (for_column_blocks), zeroed accumulators; for every input channel of the group
// and kernel column kx, `column(lanes, acc, rows, w_ci, kx)` with `rows` the buffer address of
// the first input row the tile reads at that kx and `w_ci` the channel's KH x KW weights (of
// the tile's first output channel); then the tile is stored.
template <int R, int CO, int S, int KH, int KW, typename Column>
inline void tile_frame_k(const Tile& t, Column column) {
  for_column_blocks(t.out_width, [&t, &column](auto lanes, int64_t ox0) {
    using V = decltype(lanes);
    typename V::T acc[R][CO];
    zero_tile<V>(acc);
    for (int64_t ci = 0; ci < t.in_channels; ++ci) {
      const float* channel = t.input + ci * S * t.plane;
      const float* w_ci = t.weight + ci * KH * KW;
      for (int kx = 0; kx < KW; ++kx) {
        const int64_t col = kx + t.offset_x;
        column(lanes, acc,
               channel + (col % S) * t.plane + ox0 + col / S + (t.in_y + t.offset_y) * t.width,
               w_ci, kx);
      }
    }
    store_tile<V>(t, acc, ox0);
  });
}

// conv_tile for a compile-time kernel size KH x KW (dilation 1): the taps unrolled.
template <int R, int CO, int S, int KH, int KW>
void conv_tile_k(const Tile& t) {
  tile_frame_k<R, CO, S, KH, KW>(
      t, [&t](auto lanes, auto& acc, const float* rows, const float* w_ci, int kx) {
        using V = decltype(lanes);
#pragma GCC unroll 9
        for (int ky = 0; ky < KH; ++ky) {
          typename V::T w[CO];
#pragma GCC unroll 16
          for (int co = 0; co < CO; ++co)
            w[co] = V::set1(w_ci[co * t.weight_stride + ky * KW + kx]);
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const typename V::T x = V::load(rows + (ky + r * S) * t.width);
#pragma GCC unroll 16
            for (int co = 0; co < CO; ++co) acc[r][co] = V::fmadd(x, w[co], acc[r][co]);
          }
        }
      });
}

// Kernel rows [KY0, KY0 + KC) (clipped to KH) of one kernel column kx, then the next KC: each
// input row is loaded once for every output row of the tile that reads it (R + KC - 1 loads
// for R x KC taps at stride 1), with the KC x CO weights in registers.
template <class V, int R, int CO, int S, int KY0, int KC, int KH, int KW>
inline void reuse_rows(const Tile& t, typename V::T (&acc)[R][CO], const float* rows,
                       const float* w_ci, int kx) {
  constexpr int kCount = KH - KY0 < KC ? KH - KY0 : KC;
  constexpr int kRows = (R - 1) * S + kCount;  // input rows these kernel rows read
  typename V::T w[kCount][CO];
#pragma GCC unroll 16
  for (int ky = 0; ky < kCount; ++ky)
#pragma GCC unroll 16
    for (int co = 0; co < CO; ++co)
      w[ky][co] = V::set1(w_ci[co * t.weight_stride + (KY0 + ky) * KW + kx]);
#pragma GCC unroll 32
  for (int row = 0; row < kRows; ++row) {
    const typename V::T x = V::load(rows + (KY0 + row) * t.width);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const int ky = row - r * S;
      if (ky >= 0 && ky < kCount) {
#pragma GCC unroll 16
        for (int co = 0; co < CO; ++co) acc[r][co] = V::fmadd(x, w[ky][co], acc[r][co]);
      }
    }
  }
  if constexpr (KY0 + KC < KH)
    reuse_rows<V, R, CO, S, KY0 + KC, KC, KH, KW>(t, acc, rows, w_ci, kx);
}

// conv_tile_k loading each input row once for all the kernel rows it holds weights for
// (`reuse_rows`): all KH of them for 1 or 2 output channels, 3 at a time for 4 (16
// accumulators and 12 weights in registers).
template <int R, int CO, int S, int KH, int KW>
void conv_tile_reuse(const Tile& t) {
  tile_frame_k<R, CO, S, KH, KW>(
      t, [&t](auto lanes, auto& acc, const float* rows, const float* w_ci, int kx) {
        constexpr int kChunk = CO == 4 ? 3 : KH;
        reuse_rows<decltype(lanes), R, CO, S, 0, kChunk, KH, KW>(t, acc, rows, w_ci, kx);
      });
}

// Kernel rows that one pass of the weight gradient takes at once (see weight_grad_task): 3
// or 2 where their accumulators, the output gradients and an input row fit the 32 registers
// (3 for one output channel, up to 9x9: 27 + 3 + 1 registers; with 3 for its 9x9/G16
// level, stage 1's stride-1 grouped weight gradients x1.04).
template <int CO, int K>
constexpr int weight_grad_rows() {
  return 3 * CO * (K + 1) + 1 <= 31 ? 3 : (2 * CO * (K + 1) + 1 <= 30 ? 2 : 1);
}

// Zero rows above and below the output-gradient planes of the weight gradient: a pass of M
// kernel rows reads M - 1 rows past each end (see weight_grad_pass).
constexpr int64_t kWeightGradPadRows = 2;

// One pass of the weight gradient over output rows [y0, y1) and the column blocks of V's
// width from x_begin to x_end: kernel rows ky0 + m * S for m < M at once, all K kernel
// columns. Row m reads output-gradient row y - m against the input row S * y + ky0 (the same
// for every m), so each input load feeds M * CO FMAs. The accumulators of kernel row ky wait
// in partial[ky] between passes (zeros when `first`; 8-wide ones in the first 8 floats).
template <class V, int CO, int K, int S, int M>
inline void weight_grad_pass(const float* grad, int64_t grad_plane, int64_t grad_width,
                             const float* x_rows, int64_t in_width, const int64_t (&tap)[K],
                             int64_t y0, int64_t y1, int64_t x_begin, int64_t x_end, int ky0,
                             bool first, float (&partial)[K][CO][K][16]) {
  constexpr int64_t kLanes = sizeof(typename V::T) / sizeof(float);
  typename V::T acc[M][CO][K];
#pragma GCC unroll 4
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
    for (int co = 0; co < CO; ++co)
#pragma GCC unroll 16
      for (int kx = 0; kx < K; ++kx)
        acc[m][co][kx] = first ? V::zero() : V::load_aligned(partial[ky0 + m * S][co][kx]);
  for (int64_t y = y0; y < y1; ++y) {
    const float* g_row = grad + y * grad_width;
    const float* x_row = x_rows + S * y * in_width;
    for (int64_t x0 = x_begin; x0 < x_end; x0 += kLanes) {
      typename V::T g[M][CO];
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
        for (int co = 0; co < CO; ++co)
          g[m][co] = V::load_aligned(g_row + co * grad_plane - m * grad_width + x0);
#pragma GCC unroll 16
      for (int kx = 0; kx < K; ++kx) {
        typename V::T v = V::load(x_row + x0 + tap[kx]);
        asm("" : "+v"(v));  // loaded once for its M * CO FMAs, not folded into each of them
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
          for (int co = 0; co < CO; ++co)
            acc[m][co][kx] = V::fmadd(g[m][co], v, acc[m][co][kx]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
    for (int co = 0; co < CO; ++co)
#pragma GCC unroll 16
      for (int kx = 0; kx < K; ++kx) V::store_aligned(partial[ky0 + m * S][co][kx], acc[m][co][kx]);
}

// Output rows of a block of the weight gradient's passes: each pass over a block loads and
// stores its accumulators once, so longer blocks cost less (stage 1's stride-1 levels,
// 56 x 56: blocks of 8 rows 10% slower than one of all 56, 16 rows 4%); the block's gradient
// rows (CO planes) and input rows (S of them per output row, each in S phase planes) stay
// within 256 KiB, in L2 for all of its passes; at least 8 rows.
template <int CO, int S>
int64_t weight_grad_row_block(int64_t grad_width, int64_t in_width) {
  constexpr int64_t kBlockFloats = (256 << 10) / sizeof(float);
  return std::max<int64_t>(8, kBlockFloats / (CO * grad_width + S * S * in_width));
}

// Weight gradient of one image for (output channels [oc0, oc0 + CO), input channel ci), added
// to `dw`: dW[oc][ci][ky][kx] += sum over output pixels of grad[oc][y][x] * x_pad[S*y + ky*d]
// [S*x + kx*d], vectorised over 16 output columns (the last block, where it holds at most 8 of
// the `out_width` columns, over 8). `grad` planes are (Ho, Wg) with zeros past Wo and
// kWeightGradPadRows zero rows above and below (a plane `grad_plane` floats apart); `input` is zero
// padded and its columns split into S phase planes of `in_plane` floats (rows of `in_width`),
// as the forward's band buffers. Output rows go in blocks (weight_grad_row_block) whose
// gradient and input rows stay in L2 for all the passes over the kernel rows.
template <int CO, int K, int S>
void weight_grad_task(const float* __restrict grad, int64_t grad_plane, int64_t grad_width,
                      int64_t out_width, const float* __restrict input, int64_t in_width,
                      int64_t in_plane, int64_t out_height, int64_t dilation, int64_t offset,
                      float* __restrict dw, int64_t dw_stride) {
  int64_t tap[K];  // where column tap kx of output column 0 sits in the row's phase planes
  for (int kx = 0; kx < K; ++kx) {
    const int64_t column = kx * dilation + offset;
    tap[kx] = (column % S) * in_plane + column / S;
  }
  // columns [0, wide_end) in 16-wide blocks, then, where columns are left, one 8-wide block
  const int64_t wide_end = wide_columns_end(out_width);
  const bool narrow_tail = wide_end < out_width;
  // kernel rows ky, ky + S, ky + 2S read the same input row at output rows y, y - 1, y - 2
  // (dilation 1): a group of m kernel rows runs m - 1 more output rows, the zero rows Ho, ...,
  // to give its last row its rows up to Ho - 1
  constexpr int M = weight_grad_rows<CO, K>();
  const int most = dilation == 1 ? M : 1;
  const int64_t rows_end = out_height + most - 1;
  const int64_t row_block = weight_grad_row_block<CO, S>(grad_width, in_width);
  alignas(64) float partial[K][CO][K][16];
  alignas(64) float tail[K][CO][K][16];
  auto pass = [&](auto group, int64_t y0, int64_t y1, int ky) {
    constexpr int rows = decltype(group)::value;
    const float* x_rows = input + (ky * dilation + offset) * in_width;
    const int64_t end = std::min(y1, out_height + rows - 1);  // its input rows end there
    if (wide_end > 0)
      weight_grad_pass<Lanes16, CO, K, S, rows>(grad, grad_plane, grad_width, x_rows, in_width,
                                                tap, y0, end, 0, wide_end, ky, y0 == 0, partial);
    if (narrow_tail)
      weight_grad_pass<Lanes8, CO, K, S, rows>(grad, grad_plane, grad_width, x_rows, in_width,
                                               tap, y0, end, wide_end, wide_end + 8, ky, y0 == 0,
                                               tail);
  };
  for (int64_t y0 = 0; y0 < rows_end; y0 += row_block) {
    const int64_t y1 = std::min(y0 + row_block, rows_end);
    bool done[K] = {};
    for (int ky = 0; ky < K; ++ky) {
      if (done[ky]) continue;
      int rows = 1;  // ky, ky + S, ...: as many as fit the kernel, at most `most`
      while (rows < most && ky + rows * S < K) done[ky + rows++ * S] = true;
      if constexpr (M >= 3)
        if (rows == 3) {
          pass(std::integral_constant<int, 3>{}, y0, y1, ky);
          continue;
        }
      if constexpr (M >= 2)
        if (rows == 2) {
          pass(std::integral_constant<int, 2>{}, y0, y1, ky);
          continue;
        }
      pass(std::integral_constant<int, 1>{}, y0, y1, ky);
    }
  }
  for (int ky = 0; ky < K; ++ky)
    for (int co = 0; co < CO; ++co)
      for (int kx = 0; kx < K; ++kx) {
        float sum = wide_end > 0 ? Lanes16::sum(Lanes16::load_aligned(partial[ky][co][kx])) : 0.f;
        if (narrow_tail) sum += Lanes8::sum(Lanes8::load_aligned(tail[ky][co][kx]));
        dw[co * dw_stride + ky * K + kx] += sum;
      }
}

// 16 x 16 transpose in registers: row i of the result holds element i of every input row.
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + j], 128-bit lane k: element 4k + j of rows 4g .. 4g + 3
  __m512 u[16];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 even_ab = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 even_cd = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 odd_ab = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 odd_cd = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    r[j] = _mm512_shuffle_f32x4(even_ab, even_cd, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(even_ab, even_cd, 0xDD);
    r[4 + j] = _mm512_shuffle_f32x4(odd_ab, odd_cd, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(odd_ab, odd_cd, 0xDD);
  }
}

// 16 pixels of a channels_last image row from pixel x0 (zeros from `valid` on) x 16 channels
// from c0, transposed: v[c] holds channel c0 + c of the 16 pixels. With kActivation, each
// value v of channel c is taken as affine_relu(v, scale[c], shift[c]) (an eval-mode batch
// norm and a ReLU before the convolution).
template <bool kActivation>
inline void load_pixels_transposed(const float* in_row, int64_t pixel_stride, int64_t x0,
                                   int valid, int64_t c0, const float* scale,
                                   const float* shift, __m512 (&v)[16]) {
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j)
    v[j] = j < valid ? _mm512_loadu_ps(in_row + (x0 + j) * pixel_stride + c0) : _mm512_setzero_ps();
  if (kActivation) {  // channels are the lanes here, before the transpose
    const __m512 a = _mm512_loadu_ps(scale + c0), b = _mm512_loadu_ps(shift + c0);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) v[j] = affine_relu(v[j], a, b);
  }
  transpose16(v);
}

// One image row of a channels_last input (channels adjacent, pixels `pixel_stride` apart,
// C a multiple of 16) into the planar band buffer, by 16 x 16 transposes (load_pixels_
// transposed, activated with kActivation). Column xi goes to buffer column xi + pad, split
// into S phase planes of `plane` floats. At S = 2, 32 pixels at a time: the even and the odd
// ones of each channel are whole 16-float stores to the two phases, and the next 32 pixels
// are prefetched (the rows of a strided level's input are twice as long as its output's; the
// copy of stage 1's 112x112 input took 2.4 cycles per float without, 1.6 with, in one thread).
template <int S, bool kActivation>
void copy_row_channels_last(const float* in_row, int64_t pixel_stride, int64_t C, int64_t W,
                            int64_t pad, float* out_row, int64_t plane, const float* scale,
                            const float* shift) {
  if (S == 1) {
    for (int64_t x0 = 0; x0 < W; x0 += 16) {
      const int valid = static_cast<int>(std::min<int64_t>(16, W - x0));
      const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        __m512 v[16];
        load_pixels_transposed<kActivation>(in_row, pixel_stride, x0, valid, c0, scale, shift,
                                            v);
        for (int c = 0; c < 16; ++c)
          _mm512_mask_storeu_ps(out_row + (c0 + c) * plane + x0 + pad, mask, v[c]);
      }
    }
    return;
  }
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds =
      _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t x0 = 0; x0 < W; x0 += 32) {
    const int valid = static_cast<int>(std::min<int64_t>(32, W - x0));
    const int64_t column = x0 + pad;  // pixel x0 + 2i goes to phase column & 1 at (column >> 1)
    const int64_t phase = column & 1;  // + i, pixel x0 + 2i + 1 to the other at ((column + 1) >> 1) + i
    const __mmask16 evens_kept = static_cast<__mmask16>((1u << ((valid + 1) / 2)) - 1u);
    const __mmask16 odds_kept = static_cast<__mmask16>((1u << (valid / 2)) - 1u);
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
#pragma GCC unroll 32
      for (int j = 0; j < 32; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(in_row + (x0 + 32 + j) * pixel_stride + c0),
                     _MM_HINT_T0);
      __m512 a[16], b[16];
      load_pixels_transposed<kActivation>(in_row, pixel_stride, x0, std::min(valid, 16), c0,
                                          scale, shift, a);
      load_pixels_transposed<kActivation>(in_row, pixel_stride, x0 + 16, std::max(valid - 16, 0),
                                          c0, scale, shift, b);
      for (int c = 0; c < 16; ++c) {
        float* channel = out_row + (c0 + c) * 2 * plane;
        float* to_even = channel + phase * plane + (column >> 1);
        float* to_odd = channel + (1 - phase) * plane + ((column + 1) >> 1);
        const __m512 even = _mm512_permutex2var_ps(a[c], evens, b[c]);
        const __m512 odd = _mm512_permutex2var_ps(a[c], odds, b[c]);
        if (valid == 32) {
          _mm512_storeu_ps(to_even, even);
          _mm512_storeu_ps(to_odd, odd);
        } else {
          _mm512_mask_storeu_ps(to_even, evens_kept, even);
          _mm512_mask_storeu_ps(to_odd, odds_kept, odd);
        }
      }
    }
  }
}

// Band of planar outputs (C channels of `rows` x `width` floats, C a multiple of 16) stored
// to (or with `accumulate` added into) a channels_last output: pixel x's channels at
// out + x * pixel_stride, rows `row_stride` apart.
// With `scale` (null: none), values are stored as max(v * scale[c] + shift[c], 0). With
// `stream`, pixels' whole 16-channel lines at 64-byte aligned addresses are stored
// non-temporally (not where accumulating).
void store_band_channels_last(const float* band, int64_t C, int64_t rows, int64_t width,
                              int64_t W, float* out, int64_t row_stride, int64_t pixel_stride,
                              bool accumulate, const float* scale, const float* shift,
                              bool stream) {
  const int64_t channel_floats = kBandRows * width;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t x0 = 0; x0 < W; x0 += 16) {
      const int valid = static_cast<int>(std::min<int64_t>(16, W - x0));
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        __m512 v[16];
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c)
          v[c] = _mm512_loadu_ps(band + (c0 + c) * channel_floats + r * width + x0);
        transpose16(v);
        float* dst = out + r * row_stride + x0 * pixel_stride + c0;
        if (scale != nullptr) {  // channels are the lanes now
          const __m512 a = _mm512_loadu_ps(scale + c0), b = _mm512_loadu_ps(shift + c0);
          for (int j = 0; j < valid; ++j)
            v[j] = affine_relu(v[j], a, b);
        }
        for (int j = 0; j < valid; ++j) {
          float* pixel = dst + j * pixel_stride;
          if (accumulate)
            _mm512_storeu_ps(pixel, _mm512_add_ps(v[j], _mm512_loadu_ps(pixel)));
          else
            pyconv_mm::store_line(pixel, v[j], stream);
        }
      }
    }
  }
}

#pragma GCC pop_options

// Output channels a tile (or weight-gradient task) takes at once: 4, 2 or 1, dividing the
// channels of a group, and at most `most`.
int channels_per_tile(int64_t out_per_group, int most) {
  for (int channels = most; channels > 1; channels /= 2)
    if (out_per_group % channels == 0) return channels;
  return 1;
}

using WeightGradFn = decltype(&weight_grad_task<1, 3, 1>);

template <int S>
WeightGradFn pick_weight_grad(int64_t kernel, int channels) {
#define PYCONV_WGRAD(K)                                                                  \
  if (kernel == K)                                                                     \
    return channels == 4 ? &weight_grad_task<4, K, S>                                  \
                         : (channels == 2 ? &weight_grad_task<2, K, S> : &weight_grad_task<1, K, S>);
  PYCONV_WGRAD(3) PYCONV_WGRAD(5) PYCONV_WGRAD(7) PYCONV_WGRAD(9)
#undef PYCONV_WGRAD
  return nullptr;
}

using TileFn = void (*)(const Tile&);

// The 4 x 4 row-reuse tile for a kernel of KH x kw taps, kw in 1..5, or null.
template <int S, int KH>
TileFn rect_tile(int64_t kw) {
  switch (kw) {
    case 1: return &conv_tile_reuse<4, 4, S, KH, 1>;
    case 2: return &conv_tile_reuse<4, 4, S, KH, 2>;
    case 3: return &conv_tile_reuse<4, 4, S, KH, 3>;
    case 4: return &conv_tile_reuse<4, 4, S, KH, 4>;
    case 5: return &conv_tile_reuse<4, 4, S, KH, 5>;
    default: return nullptr;
  }
}

// The tile function of a level: where K is a PyConv kernel size (dilation 1), the row-reuse
// tile, except for 4 output channels per tile at stride 2 from K = 5 on, where the taps
// unrolled without reuse ran faster (4 x 4 tiles at stride 2 reuse few rows: 9 loads for 12
// kernel rows; stage 2's strided 7x7/G8 level 4.56 ms unrolled against 4.71 with reuse); for 4
// channels and a rectangle of up to 5 x 5 taps at stride 1 (the phases of a strided level's
// input gradient), the row-reuse tile too; else the general one. Sets the tile's rows and
// channels.
template <int S>
TileFn pick_tile(int64_t kh, int64_t kw, int64_t dilation, int64_t out_per_group, int* rows,
                 int* channels) {
  *channels = channels_per_tile(out_per_group, 4);
  *rows = *channels == 1 ? 8 : 4;
  if (dilation == 1 && kh == kw && (*channels <= 2 || kh == 3 || S == 1)) {
#define PYCONV_REUSE(K)                                                  \
  if (kh == K)                                                           \
    return *channels == 1 ? &conv_tile_reuse<8, 1, S, K, K>              \
                          : (*channels == 2 ? &conv_tile_reuse<4, 2, S, K, K> \
                                            : &conv_tile_reuse<4, 4, S, K, K>);
    PYCONV_REUSE(3) PYCONV_REUSE(5) PYCONV_REUSE(7) PYCONV_REUSE(9)
#undef PYCONV_REUSE
  }
  if (dilation == 1 && kh == kw && *channels == 4) {
#define PYCONV_UNROLLED(K) \
  if (kh == K) return &conv_tile_k<4, 4, S, K, K>;
    PYCONV_UNROLLED(5) PYCONV_UNROLLED(7) PYCONV_UNROLLED(9)
#undef PYCONV_UNROLLED
  }
  if (S == 1 && dilation == 1 && *channels == 4) {
    TileFn rect = nullptr;
    switch (kh) {
      case 1: rect = rect_tile<S, 1>(kw); break;
      case 2: rect = rect_tile<S, 2>(kw); break;
      case 3: rect = rect_tile<S, 3>(kw); break;
      case 4: rect = rect_tile<S, 4>(kw); break;
      case 5: rect = rect_tile<S, 5>(kw); break;
    }
    if (rect != nullptr) return rect;
  }
  return *channels == 4 ? &conv_tile<4, 4, S>
                        : (*channels == 2 ? &conv_tile<4, 2, S> : &conv_tile<8, 1, S>);
}

// A grouped level of the PyConv: its weight, bias and where its channels go in the output.
struct Level {
  const float* weight;
  const float* bias;
  int64_t out_channels, in_per_group, out_per_group, kernel_h, kernel_w, dilation, c_offset;
  int64_t pad_top, pad_left;  // zeros above and left of the input (below and right: the rest)
  int64_t in_offset, groups;  // its input channels: groups x in_per_group from in_offset
  int64_t out_index;          // the output it writes
  bool adds;                  // an earlier level wrote the same output channels: add to them
  TileFn tile;
  int tile_rows, tile_channels;
};

// Zeros in one row of a planar phase plane (`width` floats; image column x at padded column
// x + pad, in phase (x + pad) % S at (x + pad) / S) wherever no image element goes: all of
// it outside the image's rows, else the columns of this phase left and right of the image's W.
void zero_outside_image_row(float* line, int64_t width, bool image_row, int64_t phase,
                            int64_t S, int64_t pad, int64_t W) {
  if (!image_row) {
    std::fill_n(line, width, 0.f);
    return;
  }
  // the first and one past the last column of this phase that holds image columns
  const int64_t first = (pad - phase + S - 1) / S, last = (pad + W - phase + S - 1) / S;
  std::fill_n(line, first, 0.f);
  std::fill_n(line + last, width - last, 0.f);
}

// zero_outside_image_row for every row of planar band buffers (C channels x S phase planes of
// `height` x `width` floats, as the kernel's input buffers), rows [top, top + rows) the
// image's.
void zero_outside_image(float* buffer, int64_t C, int64_t S, int64_t height, int64_t width,
                        int64_t top, int64_t rows, int64_t pad, int64_t W) {
  for (int64_t p = 0; p < C * S; ++p)
    for (int64_t r = 0; r < height; ++r)
      zero_outside_image_row(buffer + (p * height + r) * width, width,
                             r >= top && r < top + rows, p % S, S, pad, W);
}

// The (scale, shift) of an activation, contiguous, after checking that each has one float32
// value per channel; undefined tensors when none is given (empty tensors).
std::pair<torch::Tensor, torch::Tensor> checked_affine(const torch::Tensor& scale,
                                                       const torch::Tensor& shift,
                                                       int64_t channels, const char* side) {
  if (scale.numel() == 0) return {};
  TORCH_CHECK(scale.numel() == channels && shift.numel() == channels &&
                  scale.scalar_type() == torch::kFloat && shift.scalar_type() == torch::kFloat,
              "pyconv direct kernel: the ", side, "'s scale and shift need one float32 value per ",
              side, " channel (", channels, "), got ", scale.numel(), " and ", shift.numel());
  return {scale.contiguous(), shift.contiguous()};
}

}  // namespace

bool supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("fma");
}

// Writes (or with `accumulate` adds) conv2d(x_i, weights[i], biases[i], stride, padding =
// (K - 1) / 2 * dilations[i], dilations[i], groups = C_i / weights[i].size(1)) into channels
// [c_offsets[i], + C_out) of `outs[out_indices[i]]` (of `outs[0]` where `out_indices` is
// empty), for every level i, where x_i is channels [in_offsets[i], + C_i = in_counts[i]) of
// x. The outputs share their sizes and strides (e.g. the four phases of a strided level's
// input gradient, which read the same input bands: one copy of them for all four). Levels
// writing the same channels (identical ranges) of one output are summed. `biases[i]` may be
// empty (no bias). A level with `paddings[i]` = {top, left} has any KH x KW kernel instead
// (stride 1, dilation 1): top rows and left columns of zeros, and as many below and right as
// keep the output the input's size. With `input_scale`/`input_shift` (one value per channel
// of x; empty: none) the levels convolve max(x * scale + shift, 0) instead of x, formed as
// bands are copied; with `output_scale`/`output_shift` (one per channel of the one output)
// the channels the levels write hold max(y * scale + shift, 0) instead of y: an eval-mode
// batch norm and a ReLU before and after the levels.
void conv_levels(const torch::Tensor& x, const std::vector<torch::Tensor>& weights,
                 const std::vector<torch::Tensor>& biases, const std::vector<int64_t>& dilations,
                 const std::vector<int64_t>& c_offsets, const std::vector<int64_t>& in_offsets,
                 const std::vector<int64_t>& in_counts,
                 const std::vector<std::vector<int64_t>>& paddings, int64_t stride,
                 const std::vector<torch::Tensor>& outs, const std::vector<int64_t>& out_indices,
                 bool accumulate, const torch::Tensor& input_scale,
                 const torch::Tensor& input_shift, const torch::Tensor& output_scale,
                 const torch::Tensor& output_shift) {
  TORCH_CHECK(supported(), "pyconv direct kernel: this CPU has no AVX-512");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "pyconv direct kernel: expected a 4D float32 CPU input, got ", x.sizes(), " ",
              x.scalar_type());
  TORCH_CHECK(stride == 1 || stride == 2, "pyconv direct kernel: stride must be 1 or 2, got ",
              stride);
  TORCH_CHECK(!outs.empty(), "pyconv direct kernel: no output");
  const torch::Tensor& out = outs[0];
  TORCH_CHECK(out.dim() == 4 && out.scalar_type() == torch::kFloat && out.device().is_cpu(),
              "pyconv direct kernel: expected a 4D float32 CPU output");
  for (const auto& other : outs)
    TORCH_CHECK(other.scalar_type() == torch::kFloat && other.device().is_cpu() &&
                    other.sizes() == out.sizes() && other.strides() == out.strides(),
                "pyconv direct kernel: the outputs need one size and layout, got ",
                other.sizes(), " and ", out.sizes());
  TORCH_CHECK(out_indices.empty() || out_indices.size() == weights.size(),
              "pyconv direct kernel: give one output index per level or none");
  TORCH_CHECK(weights.size() == biases.size() && weights.size() == dilations.size() &&
                  weights.size() == c_offsets.size() && weights.size() == in_offsets.size() &&
                  weights.size() == in_counts.size() && weights.size() == paddings.size(),
              "pyconv direct kernel: one weight, bias, dilation, offsets and padding per level");
  TORCH_CHECK(!weights.empty(), "pyconv direct kernel: no levels");
  // the input channels the levels read, [in_first, in_first + C), are copied to the bands
  int64_t in_first = x.size(1), in_end = 0;
  for (size_t i = 0; i < in_offsets.size(); ++i) {
    TORCH_CHECK(in_offsets[i] >= 0 && in_counts[i] > 0 && in_offsets[i] + in_counts[i] <= x.size(1),
                "pyconv direct kernel: level ", i, ": input channels [", in_offsets[i], ", ",
                in_offsets[i] + in_counts[i], ") out of the input's ", x.size(1));
    in_first = std::min(in_first, in_offsets[i]);
    in_end = std::max(in_end, in_offsets[i] + in_counts[i]);
  }
  const int64_t N = x.size(0), C = in_end - in_first, H = x.size(2), W = x.size(3);
  // the activations: max(v * scale + shift, 0) per channel, of the input as bands are copied
  // and of the output as it is stored
  torch::Tensor scale, shift, out_scale, out_shift;
  std::tie(scale, shift) = checked_affine(input_scale, input_shift, x.size(1), "input");
  std::tie(out_scale, out_shift) =
      checked_affine(output_scale, output_shift, out.size(1), "output");
  const bool activation = scale.defined(), out_activation = out_scale.defined();
  TORCH_CHECK(!(accumulate && out_activation),
              "pyconv direct kernel: an output activation needs accumulate off");
  TORCH_CHECK(!out_activation || outs.size() == 1,
              "pyconv direct kernel: an output activation needs one output, got ", outs.size());
  const float* scale_c = activation ? scale.data_ptr<float>() + in_first : nullptr;
  const float* shift_c = activation ? shift.data_ptr<float>() + in_first : nullptr;
  const int64_t Ho = out.size(2), Wo = out.size(3);
  std::vector<torch::Tensor> keep;  // contiguous copies live until the end
  std::vector<Level> levels;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto w = weights[i].contiguous();
    const bool explicit_padding = !paddings[i].empty();
    TORCH_CHECK(w.dim() == 4 && w.scalar_type() == torch::kFloat &&
                    (explicit_padding || (w.size(2) == w.size(3) && w.size(2) % 2 == 1)),
                "pyconv direct kernel: level ", i, ": expected an odd square float32 kernel, got ",
                w.sizes());
    Level lvl;
    lvl.out_channels = w.size(0);
    lvl.in_per_group = w.size(1);
    lvl.kernel_h = w.size(2);
    lvl.kernel_w = w.size(3);
    TORCH_CHECK(in_counts[i] % lvl.in_per_group == 0 &&
                    lvl.out_channels % (in_counts[i] / lvl.in_per_group) == 0,
                "pyconv direct kernel: level ", i, ": weight ", w.sizes(), " does not fit ",
                in_counts[i], " input channels");
    lvl.in_offset = in_offsets[i] - in_first;
    lvl.groups = in_counts[i] / lvl.in_per_group;
    lvl.out_per_group = lvl.out_channels / lvl.groups;
    lvl.dilation = dilations[i];
    if (explicit_padding) {
      TORCH_CHECK(paddings[i].size() == 2, "pyconv direct kernel: level ", i,
                  ": give a padding as (top, left), got ", paddings[i].size(), " numbers");
      TORCH_CHECK(stride == 1 && lvl.dilation == 1 && paddings[i][0] >= 0 &&
                      paddings[i][0] < lvl.kernel_h && paddings[i][1] >= 0 &&
                      paddings[i][1] < lvl.kernel_w && Ho == H && Wo == W,
                  "pyconv direct kernel: level ", i, ": padding (top, left) = (", paddings[i][0],
                  ", ", paddings[i][1], ") needs stride 1, dilation 1, a padding inside the "
                  "kernel ", w.sizes(), " and an output ", out.sizes(), " of the input's size ",
                  x.sizes());
      lvl.pad_top = paddings[i][0];
      lvl.pad_left = paddings[i][1];
    } else {
      const int64_t padding = (lvl.kernel_h - 1) / 2 * lvl.dilation;
      const int64_t span = (lvl.kernel_h - 1) * lvl.dilation + 1;
      TORCH_CHECK(lvl.dilation >= 1 && (H + 2 * padding - span) / stride + 1 == Ho &&
                      (W + 2 * padding - span) / stride + 1 == Wo,
                  "pyconv direct kernel: level ", i, ": output ", out.sizes(),
                  " does not match the input ", x.sizes());
      lvl.pad_top = lvl.pad_left = padding;
    }
    lvl.c_offset = c_offsets[i];
    TORCH_CHECK(lvl.c_offset >= 0 && lvl.c_offset + lvl.out_channels <= out.size(1),
                "pyconv direct kernel: level ", i, ": channels out of the output's range");
    lvl.out_index = out_indices.empty() ? 0 : out_indices[i];
    TORCH_CHECK(lvl.out_index >= 0 && lvl.out_index < static_cast<int64_t>(outs.size()),
                "pyconv direct kernel: level ", i, ": output index ", lvl.out_index,
                " not in [0, ", outs.size(), ")");
    lvl.adds = false;
    for (const Level& earlier : levels) {
      if (earlier.out_index != lvl.out_index) continue;
      const bool same = earlier.c_offset == lvl.c_offset && earlier.out_channels == lvl.out_channels;
      TORCH_CHECK(same || earlier.c_offset + earlier.out_channels <= lvl.c_offset ||
                      lvl.c_offset + lvl.out_channels <= earlier.c_offset,
                  "pyconv direct kernel: level ", i, ": output channels overlap an earlier "
                  "level's without being the same");
      lvl.adds = lvl.adds || same;
    }
    TORCH_CHECK(!(lvl.adds && out_activation), "pyconv direct kernel: level ", i,
                ": levels summed into the same channels take no output activation");
    lvl.tile = stride == 1 ? pick_tile<1>(lvl.kernel_h, lvl.kernel_w, lvl.dilation,
                                          lvl.out_per_group, &lvl.tile_rows, &lvl.tile_channels)
                           : pick_tile<2>(lvl.kernel_h, lvl.kernel_w, lvl.dilation,
                                          lvl.out_per_group, &lvl.tile_rows, &lvl.tile_channels);
    lvl.weight = w.data_ptr<float>();
    keep.push_back(w);
    lvl.bias = nullptr;
    if (biases[i].defined() && biases[i].numel() > 0) {
      const auto b = biases[i].contiguous();
      TORCH_CHECK(b.numel() == lvl.out_channels && b.scalar_type() == torch::kFloat,
                  "pyconv direct kernel: level ", i, ": bad bias");
      lvl.bias = b.data_ptr<float>();
      keep.push_back(b);
    }
    levels.push_back(lvl);
  }
  // A task is a band of output rows of one image, for all levels: it copies the band's input
  // rows (all channels, padded for the widest level) into a buffer of its thread (C, S, rows,
  // width), then runs every level's tiles from it. A thread runs consecutive bands
  // (at::parallel_for gives it one range of tasks): where its previous task was the band
  // above, the rows the two bands share (a 9x9 level's halo: 8 of 16 rows at stride 1, 7 of
  // 23 at stride 2) move up within the buffer, and only the rows below them are copied from
  // the image. The buffer stays one band high, in L2 (a buffer holding whole images, stage 1's
  // strided PyConv's 4.4 MB, was written back to L3 as it filled: its forward 7.6% slower).
  // the band buffer's zero rows and columns on each side: the most any level needs
  int64_t pad = 0;
  for (const Level& lvl : levels)
    pad = std::max({pad, lvl.pad_top, lvl.pad_left,
                    (lvl.kernel_h - 1) * lvl.dilation - lvl.pad_top,
                    (lvl.kernel_w - 1) * lvl.dilation - lvl.pad_left});
  const int64_t span = 2 * pad + 1;  // covers the taps and offsets of every level
  const int64_t rows = (kBandRows - 1) * stride + span;  // the input rows a band reads
  const int64_t width =
      std::max((W + 2 * pad + stride - 1) / stride, (Wo + 15) / 16 * 16 + (span - 1) / stride + 1);
  const int64_t bands = (Ho + kBandRows - 1) / kBandRows;
  const int64_t step = kBandRows * stride;  // input rows from one band's first row to the next's
  const int64_t plane = rows * width;
  const float* src = x.data_ptr<float>() + in_first * x.stride(1);
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const int64_t phase_shift = stride == 2 ? 1 : 0;
  // channels_last input with whole 16-channel blocks: copied by 16 x 16 transposes
  const bool transpose_in = sc == 1 && C % 16 == 0;
  // channels_last outputs whose kernel channels form one block of whole 16-channel blocks
  // each: an output's band is written planar to a second buffer of the thread, then
  // transposed out before the next output's levels run
  const int64_t n_outs = static_cast<int64_t>(outs.size());
  std::vector<int64_t> c_first(n_outs, out.size(1)), c_end(n_outs, 0), covered(n_outs, 0);
  for (const Level& lvl : levels) {
    const int64_t o = lvl.out_index;
    c_first[o] = std::min(c_first[o], lvl.c_offset);
    c_end[o] = std::max(c_end[o], lvl.c_offset + lvl.out_channels);
    if (!lvl.adds) covered[o] += lvl.out_channels;
  }
  for (int64_t o = 0; o < n_outs; ++o)
    TORCH_CHECK(c_end[o] > 0, "pyconv direct kernel: no level writes output ", o);
  const int64_t band_width = (Wo + 15) / 16 * 16;
  bool transpose_out = out.stride(1) == 1;
  for (int64_t o = 0; o < n_outs; ++o)
    transpose_out = transpose_out && covered[o] == c_end[o] - c_first[o] && covered[o] % 16 == 0;
  const int64_t band_floats =
      *std::max_element(covered.begin(), covered.end()) * kBandRows * band_width;
  // a large output (its elements' span: a strided input gradient's phase spans the whole
  // gradient) is streamed past the caches (streaming.h)
  int64_t out_span = 1;
  for (int64_t d = 0; d < out.dim(); ++d) out_span += (out.size(d) - 1) * out.stride(d);
  const bool stream = transpose_out && !accumulate && out_span >= pyconv_mm::kStreamedConvFloats;
  // what the zeros of a thread's input buffer depend on: columns outside the image are never
  // written; a buffer of the same layout keeps them
  const std::vector<int64_t> layout = {C, stride, plane, width, pad, W};
  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer, band_out;
    thread_local std::vector<int64_t> buffer_layout;
    if (buffer_layout != layout) {  // zeros where no image element is ever copied
      buffer.resize(C * stride * plane);
      zero_outside_image(buffer.data(), C, stride, rows, width, 0, rows, pad, W);
      buffer_layout = layout;
    }
    if (transpose_out) band_out.resize(band_floats);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t band = task % bands, n = task / bands;
      const int64_t oy0 = band * kBandRows;
      const int64_t first = oy0 * stride;  // padded image row of the band's first input row
      // padded image row r (image row r - pad) is at buffer row r - first
      int64_t copy_from = first;
      if (task > begin && band > 0 && rows > step) {  // the band above ran last: its halo
        for (int64_t plane_index = 0; plane_index < C * stride; ++plane_index) {
          float* rows_of_plane = buffer.data() + plane_index * plane;
          std::memmove(rows_of_plane, rows_of_plane + step * width,
                       (rows - step) * width * sizeof(float));
        }
        copy_from = first + rows - step;
      }
      for (int64_t r = copy_from; r < first + rows; ++r) {
        float* out_row = buffer.data() + (r - first) * width;
        if (r < pad || r >= pad + H) {  // zeros
          for (int64_t plane_index = 0; plane_index < C * stride; ++plane_index)
            std::fill_n(out_row + plane_index * plane, width, 0.f);
          continue;
        }
        const float* in_row = src + n * sn + (r - pad) * sh;
        if (transpose_in) {
          const auto copy = stride == 1
                                ? (activation ? &copy_row_channels_last<1, true>
                                              : &copy_row_channels_last<1, false>)
                                : (activation ? &copy_row_channels_last<2, true>
                                              : &copy_row_channels_last<2, false>);
          copy(in_row, sw, C, W, pad, out_row, plane, scale_c, shift_c);
          continue;
        }
        for (int64_t c = 0; c < C; ++c)
          for (int64_t xi = 0; xi < W; ++xi) {
            const int64_t column = xi + pad;
            float value = in_row[c * sc + xi * sw];
            if (activation) {
              value = std::fma(value, scale_c[c], shift_c[c]);
              value = value < 0.f ? 0.f : value;  // a NaN stays NaN
            }
            out_row[(c * stride + (column & phase_shift)) * plane + (column >> phase_shift)] =
                value;
          }
      }
      const int64_t band_rows = std::min<int64_t>(kBandRows, Ho - oy0);
      Tile t;
      t.plane = plane;
      t.width = width;
      t.out_width = Wo;
      if (transpose_out) {  // planar (channel, row, column) band, stored after the levels
        t.out_stride_c = kBandRows * band_width;
        t.out_stride_h = band_width;
        t.out_stride_w = 1;
      } else {
        t.out_stride_c = out.stride(1);
        t.out_stride_h = out.stride(2);
        t.out_stride_w = out.stride(3);
      }
      for (int64_t o = 0; o < n_outs; ++o) {  // one output's levels, then its band stored
        for (const Level& lvl : levels) {
          if (lvl.out_index != o) continue;
          t.in_channels = lvl.in_per_group;
          t.weight_stride = lvl.in_per_group * lvl.kernel_h * lvl.kernel_w;
          t.kernel_h = lvl.kernel_h;
          t.kernel_w = lvl.kernel_w;
          t.dilation = lvl.dilation;
          t.offset_y = pad - lvl.pad_top;
          t.offset_x = pad - lvl.pad_left;
          t.accumulate = lvl.adds || (accumulate && !transpose_out);
          for (int64_t group = 0; group < lvl.groups; ++group) {
            t.input = buffer.data() + (lvl.in_offset + group * lvl.in_per_group) * stride * plane;
            for (int64_t oc = 0; oc < lvl.out_per_group; oc += lvl.tile_channels) {
              const int64_t channel = group * lvl.out_per_group + oc;  // within the level
              t.weight = lvl.weight + channel * t.weight_stride;
              t.bias = lvl.bias == nullptr ? nullptr : lvl.bias + channel;
              if (out_activation && !transpose_out) {  // else applied as the band is stored
                t.scale = out_scale.data_ptr<float>() + lvl.c_offset + channel;
                t.shift = out_shift.data_ptr<float>() + lvl.c_offset + channel;
              } else {
                t.scale = t.shift = nullptr;
              }
              for (int64_t j = 0; j < band_rows; j += lvl.tile_rows) {
                t.in_y = j * stride;
                t.rows = static_cast<int>(std::min<int64_t>(lvl.tile_rows, band_rows - j));
                t.out = transpose_out
                            ? band_out.data() + (lvl.c_offset - c_first[o] + channel) *
                                  t.out_stride_c + j * t.out_stride_h
                            : outs[o].data_ptr<float>() + n * out.stride(0) +
                                  (lvl.c_offset + channel) * out.stride(1) +
                                  (oy0 + j) * out.stride(2);
                lvl.tile(t);
              }
            }
          }
        }
        if (transpose_out)
          store_band_channels_last(
              band_out.data(), covered[o], band_rows, band_width, Wo,
              outs[o].data_ptr<float>() + n * out.stride(0) + oy0 * out.stride(2) + c_first[o],
              out.stride(2), out.stride(3), accumulate,
              out_activation ? out_scale.data_ptr<float>() + c_first[o] : nullptr,
              out_activation ? out_shift.data_ptr<float>() + c_first[o] : nullptr, stream);
      }
    }
    if (stream) _mm_sfence();  // the streamed stores are visible before the call returns
  });
}

// Planar copy of channels [c0, c0 + C) of a 4D tensor into `out` (N, C * S, rows, width),
// rows >= H + 2 * pad_rows: zero padded by `pad_rows` rows above and `pad` columns left and
// right (and zero rows below), columns split into S phase planes as in the forward's band
// buffers: padded column p of channel c at plane c * S + p % S, column p / S; width * S >= W +
// 2 * pad. With `zeros_kept`, `out` holds an earlier copy of the same shapes: the zeros are
// there already, only the image's elements are written. With `scale` (channels_last only;
// null: none), the image's elements are copied as max(v * scale[c] + shift[c], 0).
void planar(const torch::Tensor& t, int64_t c0, int64_t C, int64_t pad_rows, int64_t pad,
            int64_t S, torch::Tensor& out, bool zeros_kept, const float* scale = nullptr,
            const float* shift = nullptr) {
  const int64_t N = t.size(0), H = t.size(2), W = t.size(3);
  const int64_t rows = out.size(2), width = out.size(3), plane = rows * width;
  if (t.stride(1) == 1 && C % 16 == 0) {  // channels_last: rows by 16 x 16 transposes
    const float* src = t.data_ptr<float>() + c0;
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, N * rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / rows, r = task % rows, y = r - pad_rows;
        float* row = dst + n * C * S * plane + r * width;
        const bool inside = y >= 0 && y < H;
        if (!zeros_kept)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t phase = 0; phase < S; ++phase)
              zero_outside_image_row(row + (c * S + phase) * plane, width, inside, phase, S,
                                     pad, W);
        if (!inside) continue;
        const float* in_row = src + n * t.stride(0) + y * t.stride(2);
        const int64_t pixel_stride = t.stride(3);
        if (scale != nullptr) {
          if (S == 1)
            copy_row_channels_last<1, true>(in_row, pixel_stride, C, W, pad, row, plane, scale,
                                            shift);
          else
            copy_row_channels_last<2, true>(in_row, pixel_stride, C, W, pad, row, plane, scale,
                                            shift);
        } else if (S == 1) {
          copy_row_channels_last<1, false>(in_row, pixel_stride, C, W, pad, row, plane, nullptr,
                                           nullptr);
        } else {
          copy_row_channels_last<2, false>(in_row, pixel_stride, C, W, pad, row, plane, nullptr,
                                           nullptr);
        }
      }
    });
    return;
  }
  TORCH_CHECK(scale == nullptr, "pyconv planar copy: an activation needs a channels_last input "
              "of whole 16-channel blocks");
  if (!zeros_kept) out.zero_();
  const auto phases = out.view({N, C, S, rows, width});
  for (int64_t phase = 0; phase < S; ++phase) {
    const int64_t first = ((phase - pad) % S + S) % S;  // first image column of this phase
    if (first >= W) continue;
    const int64_t count = (W - first + S - 1) / S;
    phases.select(2, phase).narrow(2, pad_rows, H).narrow(3, (first + pad) / S, count)
        .copy_(t.narrow(1, c0, C).slice(3, first, W, S));
  }
}

bool weight_grad_supported(int64_t kernel) { return pick_weight_grad<1>(kernel, 1) != nullptr; }

// Weight gradients of grouped levels of stride S (1 or 2): for level i (kernel K_i in 3, 5,
// 7, 9, weight shape `shapes[i]` = (C_out, C_in / G, K, K), dilation d_i, padding (K_i - 1) /
// 2 * d_i), the gradient of its weight from `grad` channels [c_offsets[i], + C_out) and input
// `x`. With `scale` and `shift` (empty: none), the input is relu(x * scale + shift) per
// channel (an eval-form batch norm and a ReLU), applied as `x` is copied: x channels_last, C
// a multiple of 16.
std::vector<torch::Tensor> weight_grads(const torch::Tensor& x, const torch::Tensor& grad,
                                        const std::vector<std::vector<int64_t>>& shapes,
                                        const std::vector<int64_t>& dilations,
                                        const std::vector<int64_t>& c_offsets, int64_t stride,
                                        const torch::Tensor& scale, const torch::Tensor& shift) {
  TORCH_CHECK(supported(), "pyconv direct kernel: this CPU has no AVX-512");
  TORCH_CHECK(stride == 1 || stride == 2, "pyconv weight gradient: stride must be 1 or 2, got ",
              stride);
  TORCH_CHECK(x.dim() == 4 && grad.dim() == 4, "pyconv weight gradient: expected 4D tensors");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
  TORCH_CHECK(x.scalar_type() == torch::kFloat && grad.scalar_type() == torch::kFloat &&
                  x.device().is_cpu() && grad.device().is_cpu() && grad.size(0) == N &&
                  grad.size(2) == Ho && grad.size(3) == Wo,
              "pyconv weight gradient: expected a float32 CPU input and a gradient of its "
              "batch and size / stride, got ", x.sizes(), " and ", grad.sizes());
  const bool activation = scale.numel() > 0;
  TORCH_CHECK(!activation || (x.is_contiguous(at::MemoryFormat::ChannelsLast) && C % 16 == 0 &&
                              scale.numel() == C && shift.numel() == C &&
                              scale.scalar_type() == torch::kFloat &&
                              shift.scalar_type() == torch::kFloat && scale.is_contiguous() &&
                              shift.is_contiguous()),
              "pyconv weight gradient: an activation needs a channels_last input of whole "
              "16-channel blocks and one contiguous float32 scale and shift per channel (", C,
              "), got ", x.sizes(), " with strides ", x.strides(), " and ", scale.sizes(), ", ",
              shift.sizes());
  TORCH_CHECK(dilations.size() == shapes.size() && c_offsets.size() == shapes.size(),
              "pyconv weight gradient: ", shapes.size(), " weight shapes, ", dilations.size(),
              " dilations and ", c_offsets.size(), " channel offsets");
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& shape = shapes[i];
    TORCH_CHECK(shape.size() == 4 && shape[0] > 0 && shape[1] > 0 && C % shape[1] == 0 &&
                    shape[0] % (C / shape[1]) == 0 && shape[2] == shape[3],
                "pyconv weight gradient: level ", i, "'s weight shape ", c10::IntArrayRef(shape),
                " is not (C_out, C_in / groups, K, K) with groups dividing C_out and C_in = ",
                C);
    TORCH_CHECK(dilations[i] >= 1 && c_offsets[i] >= 0 &&
                    c_offsets[i] + shape[0] <= grad.size(1),
                "pyconv weight gradient: level ", i, " (dilation ", dilations[i],
                ") reads gradient channels [", c_offsets[i], ", ", c_offsets[i] + shape[0],
                ") of ", grad.size(1), "; dilation must be >= 1");
  }
  int64_t pad = 0;
  for (size_t i = 0; i < shapes.size(); ++i)
    pad = std::max(pad, (shapes[i][2] - 1) / 2 * dilations[i]);
  const int64_t grad_width = (Wo + 15) / 16 * 16;
  // input columns read past the image by the last 16-wide block: up to grad_width - Wo more
  const int64_t in_width = stride == 1 ? grad_width + 2 * pad : grad_width + pad + 1;
  const int64_t in_plane = (H + 2 * pad) * in_width;
  // one image at a time: its planar copies are reused (a fresh batch-sized buffer per call
  // costs page faults: about 5 ms for stage 1's strided input, batch 8)
  auto xp = torch::empty({1, C * stride, H + 2 * pad, in_width}, x.options());
  std::vector<torch::Tensor> grads, result;
  struct Job {
    WeightGradFn fn;
    size_t level;
    int64_t grad_offset, input_offset;
    float* dw;
    int64_t dw_stride, dilation, offset;
  };
  const int64_t grad_rows = Ho + 2 * kWeightGradPadRows;  // zero rows above and below
  std::vector<std::vector<Job>> level_jobs(shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    const int64_t out_channels = shapes[i][0], in_per_group = shapes[i][1], K = shapes[i][2];
    const int64_t out_per_group = out_channels / (C / in_per_group);
    // K x channels accumulators: 4 channels fit the registers up to K = 5
    const int channels = channels_per_tile(out_per_group, K <= 5 ? 4 : 2);
    const WeightGradFn fn = stride == 1 ? pick_weight_grad<1>(K, channels)
                                        : pick_weight_grad<2>(K, channels);
    TORCH_CHECK(fn != nullptr, "pyconv weight gradient: kernel size ", K,
                " not supported (3, 5, 7 or 9)");
    grads.push_back(torch::empty({1, out_channels, grad_rows, grad_width}, x.options()));
    result.push_back(torch::zeros({out_channels, in_per_group, K, K}, x.options()));
    const int64_t offset = pad - (K - 1) / 2 * dilations[i];
    for (int64_t oc = 0; oc < out_channels; oc += channels)
      for (int64_t ci = 0; ci < in_per_group; ++ci) {
        const int64_t group = oc / out_per_group;
        level_jobs[i].push_back({fn, i, (oc * grad_rows + kWeightGradPadRows) * grad_width,
                                 (group * in_per_group + ci) * stride * in_plane,
                                 result.back().data_ptr<float>() + (oc * in_per_group + ci) * K * K,
                                 in_per_group * K * K, dilations[i], offset});
      }
  }
  // the levels' jobs interleaved: the threads' equal shares of the list then cost about the
  // same (a K = 9 job costs about three K = 5 ones)
  size_t most = 0, total = 0;
  for (const auto& level : level_jobs) {
    most = std::max(most, level.size());
    total += level.size();
  }
  std::vector<Job> jobs;
  jobs.reserve(total);
  for (size_t k = 0; k < most; ++k)
    for (const auto& level : level_jobs)
      if (k < level.size()) jobs.push_back(level[k]);
  for (int64_t n = 0; n < N; ++n) {
    const auto image = x.narrow(0, n, 1);
    planar(image, 0, C, pad, pad, stride, xp, n > 0,  // the zeros of image 0 stay
           activation ? scale.data_ptr<float>() : nullptr,
           activation ? shift.data_ptr<float>() : nullptr);
    for (size_t i = 0; i < shapes.size(); ++i)
      planar(grad.narrow(0, n, 1), c_offsets[i], shapes[i][0], kWeightGradPadRows, 0, 1,
             grads[i], n > 0);
    at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const Job& job = jobs[j];
        job.fn(grads[job.level].data_ptr<float>() + job.grad_offset, grad_rows * grad_width,
               grad_width, Wo, xp.data_ptr<float>() + job.input_offset, in_width, in_plane, Ho,
               job.dilation, job.offset, job.dw, job.dw_stride);
      }
    });
  }
  return result;
}

// max_pool.cpp
std::vector<torch::Tensor> max_pool2d_with_positions(const torch::Tensor& x,
                                                     const std::vector<int64_t>& kernel,
                                                     const std::vector<int64_t>& stride,
                                                     const std::vector<int64_t>& padding);
torch::Tensor max_pool2d(const torch::Tensor& x, const std::vector<int64_t>& kernel,
                         const std::vector<int64_t>& stride, const std::vector<int64_t>& padding);
torch::Tensor max_pool2d_grad(const torch::Tensor& positions, const torch::Tensor& grad,
                              int64_t H, int64_t W, const std::vector<int64_t>& kernel,
                              const std::vector<int64_t>& stride,
                              const std::vector<int64_t>& padding);

// channels_last_weight_grad.cpp
std::vector<torch::Tensor> channels_last_weight_grads(
    const torch::Tensor& x, const torch::Tensor& grad, const std::vector<int64_t>& c_offsets,
    const std::vector<int64_t>& out_channels, const std::vector<int64_t>& groups,
    const std::vector<int64_t>& kernels, int64_t stride, const torch::Tensor& scale,
    const torch::Tensor& shift);

// pointwise_weight_grad.cpp
torch::Tensor pointwise_weight_grad(const torch::Tensor& x, const torch::Tensor& grad);

// fingerprint.cpp
int64_t fingerprint(const std::vector<c10::optional<torch::Tensor>>& tensors);

// batch_norm.cpp
bool batch_norm_act_supported();
std::vector<torch::Tensor> batch_norm_stats(const torch::Tensor& y,
                                            const c10::optional<torch::Tensor>& running_mean,
                                            const c10::optional<torch::Tensor>& running_var,
                                            double factor, double eps);
std::vector<torch::Tensor> batch_norm_act_forward(
    const torch::Tensor& y, const torch::Tensor& weight, const torch::Tensor& bias,
    const c10::optional<torch::Tensor>& running_mean,
    const c10::optional<torch::Tensor>& running_var, double factor, double eps,
    const c10::optional<torch::Tensor>& residual, bool relu);
torch::Tensor batch_norm_act_apply(const torch::Tensor& y, const torch::Tensor& weight,
                                   const torch::Tensor& bias, const torch::Tensor& mean,
                                   const torch::Tensor& invstd, bool relu);
std::vector<torch::Tensor> batch_norm_act_backward(
    const torch::Tensor& grad, const torch::Tensor& y, const c10::optional<torch::Tensor>& out,
    const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
    const torch::Tensor& invstd, bool relu, bool residual_grad);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Direct AVX-512 CPU kernel for grouped PyConv levels, with their gradients; a compact max pool";
  m.def("supported", &supported, "whether this CPU can run the kernel");
  m.def("conv_levels", &conv_levels,
        "grouped levels of a PyConv written into their channel ranges of one output");
  m.def("weight_grads", &weight_grads, "weight gradients of levels of stride 1 or 2");
  m.def("channels_last_weight_grads", &channels_last_weight_grads,
        "weight gradients of levels sharing their input and stride, each with whole 16-channel "
        "blocks of input per group or groups of 2, 4 or 8 channels, from a channels_last input, "
        "vectorised over its channels, in one pass over the input");
  m.def("pointwise_weight_grad", &pointwise_weight_grad,
        "weight gradient of a 1x1 convolution (stride 1, no groups) from a channels-last "
        "input and output gradient");
  m.def("max_pool2d_with_positions", &max_pool2d_with_positions,
        "channels_last max pool and the position of each maximum in its window (uint8)");
  m.def("max_pool2d", &max_pool2d, "channels_last max pool (no positions: inference)");
  m.def("max_pool2d_grad", &max_pool2d_grad,
        "input gradient of a channels_last max pool from its maxima's positions");
  m.def("weight_grad_supported", &weight_grad_supported,
        "whether weight_grads takes this kernel size");
  m.def("fingerprint", &fingerprint,
        "64-bit hash of tensors' dtypes, sizes, strides and bytes (None entries allowed)");
  m.def("batch_norm_act_supported", &batch_norm_act_supported,
        "whether this CPU can run the training batch norm kernels");
  m.def("batch_norm_stats", &batch_norm_stats,
        "training batch norm statistics {mean, invstd}, updating the running ones");
  m.def("batch_norm_act_forward", &batch_norm_act_forward,
        "training batch norm [+ residual] [+ ReLU] {out, mean, invstd}");
  m.def("batch_norm_act_apply", &batch_norm_act_apply,
        "relu(y * scale + shift) for given batch statistics (the forward's output bit for bit)");
  m.def("batch_norm_act_backward", &batch_norm_act_backward,
        "training batch norm [+ residual] [+ ReLU] gradients {y, weight, bias, residual}");
}
