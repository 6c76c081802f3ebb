// Direct CPU kernel for the grouped levels of a PyConv (inference, fp32, AVX-512).
//
// The stock CPU kernels run grouped convolutions whose groups have few channels (PyConv's
// 5x5/G4, 7x7/G8 and 9x9/G16 levels) at a fraction of the rate of a dense convolution. This
// kernel vectorises over 16 output columns instead of over channels, so the size of a group
// does not matter: for each output channel, input channel of its group and kernel tap, one
// 16-wide load of an input row is multiplied by one broadcast weight. A tile keeps R output
// rows x CO output channels (of one group) x 16 columns in registers.
//
// Data layout:
//   packed input  (N, C_in, S, Hp, Wph): zero-padded planar copy of the input, its columns split
//                 in S stride phases (phase p holds padded columns p, p + S, p + 2S, ...), so
//                 that a strided convolution reads contiguous columns too (pack_input);
//   weight        (C_out, C_in / G, K, K), the level's grouped weight;
//   output        any 4D strided tensor (NCHW or channels_last); the level writes its
//                 channels [c_offset, c_offset + C_out), so all levels of a PyConv fill one
//                 output without a concatenation.
//
// Only the kernel functions are compiled for AVX-512 (pragma region below); `supported()` tells
// Python whether this CPU can run them, so the module imports on any x86-64 CPU.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>

namespace {

struct Geometry {
  int64_t batch, in_channels, padded_height, phase_width;  // packed input
  int64_t out_channels, in_per_group, out_per_group, kernel, dilation, offset;
  int64_t out_height, out_width;
  int64_t out_stride_n, out_stride_c, out_stride_h, out_stride_w, c_offset;  // output tensor
};

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

// One tile: output rows [oy0, oy0 + R) x channels [oc0, oc0 + CO) x all columns of the image,
// 16 at a time. Rows past the image are computed on zero padding and not stored.
template <int R, int CO, int S>
void conv_tile(const float* __restrict input, const float* __restrict weight,
               const float* __restrict bias, float* __restrict out, const Geometry& g,
               int64_t n, int64_t oc0, int64_t oy0) {
  const int64_t group = oc0 / g.out_per_group;
  const int64_t taps = g.kernel * g.kernel;
  const int64_t plane = g.padded_height * g.phase_width;
  const int64_t weight_stride = g.in_per_group * taps;  // between output channels
  const int rows = static_cast<int>(std::min<int64_t>(R, g.out_height - oy0));
  alignas(64) float lanes[16];
  for (int64_t ox0 = 0; ox0 < g.out_width; ox0 += 16) {
    __m512 acc[R][CO];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int co = 0; co < CO; ++co) acc[r][co] = _mm512_setzero_ps();
    for (int64_t ci = 0; ci < g.in_per_group; ++ci) {
      const float* channel =
          input + ((n * g.in_channels + group * g.in_per_group + ci) * S) * plane;
      const float* w_ci = weight + (oc0 * g.in_per_group + ci) * taps;
      for (int64_t kx = 0; kx < g.kernel; ++kx) {
        const int64_t column = kx * g.dilation + g.offset;  // padded column of output column 0
        const float* base = channel + (column % S) * plane + ox0 + column / S;
        for (int64_t ky = 0; ky < g.kernel; ++ky) {
          const float* row = base + (oy0 * S + ky * g.dilation + g.offset) * g.phase_width;
          const float* w_tap = w_ci + ky * g.kernel + kx;
          __m512 w[CO];
#pragma GCC unroll 16
          for (int co = 0; co < CO; ++co) w[co] = _mm512_set1_ps(w_tap[co * weight_stride]);
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const __m512 x = _mm512_loadu_ps(row + r * S * g.phase_width);
#pragma GCC unroll 16
            for (int co = 0; co < CO; ++co) acc[r][co] = _mm512_fmadd_ps(x, w[co], acc[r][co]);
          }
        }
      }
    }
    const int64_t cols = std::min<int64_t>(16, g.out_width - ox0);
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1u);
    for (int r = 0; r < rows; ++r) {
      for (int co = 0; co < CO; ++co) {
        __m512 v = acc[r][co];
        if (bias != nullptr) v = _mm512_add_ps(v, _mm512_set1_ps(bias[oc0 + co]));
        float* dst = out + n * g.out_stride_n + (g.c_offset + oc0 + co) * g.out_stride_c +
                     (oy0 + r) * g.out_stride_h + ox0 * g.out_stride_w;
        if (g.out_stride_w == 1) {
          _mm512_mask_storeu_ps(dst, mask, v);
        } else {  // channels_last: the 16 columns are C apart
          _mm512_store_ps(lanes, v);
          for (int64_t i = 0; i < cols; ++i) dst[i * g.out_stride_w] = lanes[i];
        }
      }
    }
  }
}

// The same tile for a compile-time kernel size K (dilation 1) and few output channels: each
// input row is loaded once and used for every output row of the tile that reads it (R + K - 1
// loads for R x K taps), with the K x CO weights of a column kept in registers.
template <int R, int CO, int S, int K>
void conv_tile_reuse(const float* __restrict input, const float* __restrict weight,
                     const float* __restrict bias, float* __restrict out, const Geometry& g,
                     int64_t n, int64_t oc0, int64_t oy0) {
  constexpr int kRows = (R - 1) * S + K;  // input rows a tile reads
  const int64_t group = oc0 / g.out_per_group;
  const int64_t plane = g.padded_height * g.phase_width;
  const int64_t weight_stride = g.in_per_group * K * K;
  const int rows = static_cast<int>(std::min<int64_t>(R, g.out_height - oy0));
  alignas(64) float lanes[16];
  for (int64_t ox0 = 0; ox0 < g.out_width; ox0 += 16) {
    __m512 acc[R][CO];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int co = 0; co < CO; ++co) acc[r][co] = _mm512_setzero_ps();
    for (int64_t ci = 0; ci < g.in_per_group; ++ci) {
      const float* channel =
          input + ((n * g.in_channels + group * g.in_per_group + ci) * S) * plane;
      const float* w_ci = weight + (oc0 * g.in_per_group + ci) * K * K;
      for (int64_t kx = 0; kx < K; ++kx) {
        const int64_t column = kx + g.offset;
        const float* base = channel + (column % S) * plane + ox0 + column / S +
                            (oy0 * S + g.offset) * g.phase_width;
        __m512 w[K][CO];
#pragma GCC unroll 16
        for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 16
          for (int co = 0; co < CO; ++co)
            w[ky][co] = _mm512_set1_ps(w_ci[co * weight_stride + ky * K + kx]);
#pragma GCC unroll 32
        for (int t = 0; t < kRows; ++t) {
          const __m512 x = _mm512_loadu_ps(base + t * g.phase_width);
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const int ky = t - r * S;
            if (ky >= 0 && ky < K) {
#pragma GCC unroll 16
              for (int co = 0; co < CO; ++co)
                acc[r][co] = _mm512_fmadd_ps(x, w[ky][co], acc[r][co]);
            }
          }
        }
      }
    }
    const int64_t cols = std::min<int64_t>(16, g.out_width - ox0);
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1u);
    for (int r = 0; r < rows; ++r) {
      for (int co = 0; co < CO; ++co) {
        __m512 v = acc[r][co];
        if (bias != nullptr) v = _mm512_add_ps(v, _mm512_set1_ps(bias[oc0 + co]));
        float* dst = out + n * g.out_stride_n + (g.c_offset + oc0 + co) * g.out_stride_c +
                     (oy0 + r) * g.out_stride_h + ox0 * g.out_stride_w;
        if (g.out_stride_w == 1) {
          _mm512_mask_storeu_ps(dst, mask, v);
        } else {
          _mm512_store_ps(lanes, v);
          for (int64_t i = 0; i < cols; ++i) dst[i * g.out_stride_w] = lanes[i];
        }
      }
    }
  }
}

#pragma GCC pop_options

using TileFn = void (*)(const float*, const float*, const float*, float*, const Geometry&,
                        int64_t, int64_t, int64_t);

void conv_all(TileFn tile, int rows_per_tile, int channels_per_tile, const float* input,
              const float* weight, const float* bias, float* out, const Geometry& g) {
  const int64_t row_tiles = (g.out_height + rows_per_tile - 1) / rows_per_tile;
  const int64_t channel_tiles = g.out_channels / channels_per_tile;
  at::parallel_for(0, g.batch * channel_tiles * row_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t row_tile = t % row_tiles;
      const int64_t channel_tile = (t / row_tiles) % channel_tiles;
      const int64_t n = t / (row_tiles * channel_tiles);
      tile(input, weight, bias, out, g, n, channel_tile * channels_per_tile,
           row_tile * rows_per_tile);
    }
  });
}

// The tile function for a level: the row-reuse kernel where K is one of the PyConv kernel
// sizes and a tile has 1 or 2 output channels, else the general one.
template <int S>
TileFn pick_tile(int64_t kernel, int64_t dilation, int64_t channels, int* rows) {
  if (dilation == 1 && channels <= 2) {
    *rows = channels == 1 ? 8 : 6;
#define PYCONV_REUSE(K)                                                         \
  if (kernel == K)                                                            \
    return channels == 1 ? &conv_tile_reuse<8, 1, S, K> : &conv_tile_reuse<6, 2, S, K>;
    PYCONV_REUSE(3) PYCONV_REUSE(5) PYCONV_REUSE(7) PYCONV_REUSE(9)
#undef PYCONV_REUSE
  }
  *rows = channels == 1 ? 8 : 4;
  return channels == 4 ? &conv_tile<4, 4, S> : channels == 2 ? &conv_tile<4, 2, S>
                                                               : &conv_tile<8, 1, S>;
}

// Rows a tile may compute past the image (they read the bottom padding).
constexpr int64_t kMaxTileRows = 8;

}  // namespace

// Rows and (per phase) columns of a packed plane.
void packed_plane(int64_t H, int64_t W, int64_t pad, int64_t stride, int64_t max_span,
                  int64_t out_height, int64_t out_width, int64_t* padded_height,
                  int64_t* phase_width) {
  const int64_t tile_rows = out_height + kMaxTileRows - 1;  // the last tile may run past
  *padded_height = std::max(H + 2 * pad, (tile_rows - 1) * stride + max_span);
  const int64_t tile_cols = (out_width + 15) / 16 * 16;
  *phase_width =
      std::max((W + 2 * pad + stride - 1) / stride, tile_cols + (max_span - 1) / stride + 1);
}

int64_t packed_numel(int64_t N, int64_t C, int64_t H, int64_t W, int64_t pad, int64_t stride,
                     int64_t max_span, int64_t out_height, int64_t out_width) {
  int64_t padded_height, phase_width;
  packed_plane(H, W, pad, stride, max_span, out_height, out_width, &padded_height, &phase_width);
  return N * C * stride * padded_height * phase_width;
}

bool supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}

// (N, C, H, W) float input in any memory format -> (N, C, S, Hp, Wph) zero-padded planes.
// `pad` columns/rows of zeros go before the image; enough after it for every tile of a level
// with kernels up to `max_span` = (K - 1) * dilation + 1 and `out_height` x `out_width` outputs.
// `buffer` (1D float) holds the result when it is large enough: a reused buffer spares the
// page faults of fresh memory on every call (tens of MB at the first stage of PyConvResNet).
torch::Tensor pack_input(const torch::Tensor& x, int64_t pad, int64_t stride, int64_t max_span,
                         int64_t out_height, int64_t out_width,
                         const c10::optional<torch::Tensor>& buffer) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "pack_input: expected a 4D float32 CPU tensor, got ", x.sizes(), " ",
              x.scalar_type());
  TORCH_CHECK(stride == 1 || stride == 2, "pack_input: stride must be 1 or 2, got ", stride);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t padded_height, phase_width;
  packed_plane(H, W, pad, stride, max_span, out_height, out_width, &padded_height, &phase_width);
  const std::vector<int64_t> shape = {N, C, stride, padded_height, phase_width};
  const int64_t numel = N * C * stride * padded_height * phase_width;
  torch::Tensor packed;
  if (buffer.has_value() && buffer->defined() && buffer->dim() == 1 &&
      buffer->scalar_type() == torch::kFloat && buffer->is_contiguous() &&
      buffer->numel() >= numel) {
    packed = buffer->narrow(0, 0, numel).view(shape);
  } else {
    packed = torch::empty(shape, x.options());
  }
  const float* src = x.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const int64_t plane = padded_height * phase_width;
  const int64_t phases = N * C * stride;
  // zero padding rows above and below the image, in every plane
  at::parallel_for(0, phases, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      std::fill_n(dst + p * plane, pad * phase_width, 0.f);
      std::fill_n(dst + p * plane + (pad + H) * phase_width,
                  (padded_height - pad - H) * phase_width, 0.f);
    }
  });
  // image rows: zeroed, then filled in blocks of 16 columns x all channels, which keeps both
  // the reads (channels_last: a pixel's channels are adjacent) and the writes (a channel's
  // columns are adjacent) in cache
  constexpr int64_t kBlock = 16;
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / H, y = t % H;
      const float* in_row = src + n * sn + y * sh;
      float* out_row = dst + (n * C * stride) * plane + (y + pad) * phase_width;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ph = 0; ph < stride; ++ph)
          std::fill_n(out_row + (c * stride + ph) * plane, phase_width, 0.f);
      for (int64_t x0 = 0; x0 < W; x0 += kBlock) {
        const int64_t x1 = std::min(W, x0 + kBlock);
        for (int64_t c = 0; c < C; ++c) {
          const float* in = in_row + c * sc;
          float* out = out_row + c * stride * plane;
          if (stride == 1) {
            for (int64_t xi = x0; xi < x1; ++xi) out[xi + pad] = in[xi * sw];
          } else {
            for (int64_t xi = x0; xi < x1; ++xi) {
              const int64_t column = xi + pad;
              out[(column & 1) * plane + (column >> 1)] = in[xi * sw];
            }
          }
        }
      }
    }
  });
  return packed;
}

// Writes conv2d(x, weight, bias, stride, padding, dilation, groups) into channels
// [c_offset, c_offset + C_out) of `out`, from `packed` = pack_input(x, pad >= padding, ...);
// `offset` = pad - padding.
void conv_into(const torch::Tensor& packed, const torch::Tensor& weight,
               const c10::optional<torch::Tensor>& bias, int64_t stride, int64_t dilation,
               int64_t offset, torch::Tensor& out, int64_t c_offset) {
  TORCH_CHECK(supported(), "pyconv direct kernel: this CPU has no AVX-512");
  TORCH_CHECK(packed.dim() == 5 && packed.is_contiguous() && packed.size(2) == stride,
              "conv_into: packed input must come from pack_input with the same stride");
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kFloat &&
                  weight.size(2) == weight.size(3),
              "conv_into: expected a square 4D float32 weight, got ", weight.sizes());
  TORCH_CHECK(out.dim() == 4 && out.scalar_type() == torch::kFloat, "conv_into: bad output");
  const auto w = weight.contiguous();
  Geometry g;
  g.batch = packed.size(0);
  g.in_channels = packed.size(1);
  g.padded_height = packed.size(3);
  g.phase_width = packed.size(4);
  g.out_channels = w.size(0);
  g.in_per_group = w.size(1);
  g.kernel = w.size(2);
  TORCH_CHECK(g.in_channels % g.in_per_group == 0, "conv_into: weight does not fit the input");
  const int64_t groups = g.in_channels / g.in_per_group;
  TORCH_CHECK(g.out_channels % groups == 0, "conv_into: C_out not divisible by groups");
  g.out_per_group = g.out_channels / groups;
  g.dilation = dilation;
  g.offset = offset;
  g.out_height = out.size(2);
  g.out_width = out.size(3);
  g.out_stride_n = out.stride(0);
  g.out_stride_c = out.stride(1);
  g.out_stride_h = out.stride(2);
  g.out_stride_w = out.stride(3);
  g.c_offset = c_offset;
  TORCH_CHECK(c_offset + g.out_channels <= out.size(1), "conv_into: channels out of range");
  const int64_t span = (g.kernel - 1) * dilation + 1;
  TORCH_CHECK((g.out_height + kMaxTileRows - 2) * stride + span + offset <= g.padded_height &&
                  (g.out_width + 15) / 16 * 16 + (span - 1 + offset) / stride <= g.phase_width,
              "conv_into: packed input too small for this level");
  torch::Tensor b;
  const float* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    b = bias->contiguous();
    bias_ptr = b.data_ptr<float>();
  }
  const float* x = packed.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int channels = g.out_per_group % 4 == 0 ? 4 : (g.out_per_group % 2 == 0 ? 2 : 1);
  int rows = 0;
  const TileFn tile = stride == 1 ? pick_tile<1>(g.kernel, dilation, channels, &rows)
                                  : pick_tile<2>(g.kernel, dilation, channels, &rows);
  conv_all(tile, rows, channels, x, wp, bias_ptr, o, g);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Direct AVX-512 CPU kernel for grouped PyConv levels (inference)";
  m.def("supported", &supported, "whether this CPU can run the kernel");
  m.def("pack_input", &pack_input, "zero-padded planar input split in stride phases",
        py::arg("x"), py::arg("pad"), py::arg("stride"), py::arg("max_span"),
        py::arg("out_height"), py::arg("out_width"), py::arg("buffer") = py::none());
  m.def("packed_numel", &packed_numel, "floats pack_input needs");
  m.def("conv_into", &conv_into, "a grouped level written into a channel range of an output");
}
