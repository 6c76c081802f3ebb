// Weight gradient of a convolution level from a channels_last input (fp32, AVX-512),
// vectorised over input channels: dense levels, grouped ones with whole 16-channel blocks of
// input per group, and groups of 2, 4 or 8 input channels, several to a block (lane groups,
// see lanes_grad_band).
//
// The direct kernel (direct_conv.cpp) vectorises over output columns, which suits groups of
// few channels; with 16 or more input channels per group, a channels_last input holds 16 of
// them in one 64-byte line. Here a tile keeps, for one kernel row ky, COT output channels x K
// kernel columns x 16 input channels in registers: each output pixel loads its K input
// pixels' 16 channels once and broadcasts COT output-gradient values, COT * K FMAs for K + COT
// loads, and the input is read in place (no planar copy). Against the stock backward (oneDNN)
// and the direct kernel, batch 8, 2 cores: stage 1's strided dense 64 -> 16 3x3 at 112x112
// 6.2 -> 3.1 ms, stage 2's 128 -> 32 at 56x56 5.4 -> 2.8; grouped, the 5x5/G4 levels
// x1.3-1.75 and stage 2's 7x7/G8 x1.3-1.5.
//
// Work is split in tasks of (image, band of output rows); each thread adds into its own
// accumulators (K x K x C_out x C_in / G floats), summed at the end. With an activation
// (scale, shift per input channel), the input is max(x * scale + shift, 0) as it is loaded:
// an eval-form batch norm and a ReLU that the weight gradient never needs written out.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <type_traits>
#include <vector>

bool supported();  // direct_conv.cpp: this CPU has AVX-512 (F, VL) and FMA

namespace {

constexpr const char* kWhat = "pyconv channels_last weight gradient: ";

// Output rows of a task: its input rows stay in L2 while the tiles of every kernel row, input
// channel block and output channel block read them (stage 1's strided dense level, batch 8:
// bands of 4 rows 10% slower than 8; 16 like 8).
constexpr int64_t kWeightGradBandRows = 8;

// Bytes of new input rows a band may bring in (stride x band rows x a row's bytes): bands are
// halved until they fit, so that with several levels in one pass the band's input stays in L2
// from one level to the next. PyConvHGResNet's strided stage-2 PyConv (256 channels at 56x56,
// three lane-group levels) has bands of 2 rows: its weight gradients 3.9 -> 3.1 ms against
// bands of 8; PyConvResNet's strided stage-1 one (64 channels at 112x112) 4 rows. The band
// depends on the input alone (not on the levels), so a level's sums are the same bits in a
// call of its own and in one with other levels.
constexpr int64_t kBandInputBytes = 256 << 10;

int64_t band_rows(const torch::Tensor& x, int64_t stride) {
  const int64_t row_bytes = x.size(1) * x.size(3) * static_cast<int64_t>(sizeof(float));
  int64_t rows = kWeightGradBandRows;
  while (rows > 1 && rows * stride * row_bytes > kBandInputBytes) rows /= 2;
  return rows;
}

// Where a task reads and what it adds to.
struct ChannelsTask {
  const float* x;  // image n, input channel 0
  int64_t x_row, x_pixel;
  const float* grad;  // image n, gradient channel c_offset
  int64_t grad_channel, grad_row, grad_pixel;
  const float* scale;  // per input channel, or null: no activation
  const float* shift;
  int64_t C, CO, H, W, Wo, S, P;
  int64_t in_per_group, out_per_group;
  float* acc;  // the thread's accumulators [ky][kx][co][ci within its group]
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")

// Input pixel `col` of row `x_row` (16 channels), activated where kActivation; zeros outside
// the image's W columns where kSafe.
template <bool kActivation, bool kSafe>
inline __m512 input_pixel(const float* x_row, int64_t x_pixel, int64_t col, int64_t W, __m512 a,
                          __m512 b) {
  if (kSafe && (col < 0 || col >= W)) return _mm512_setzero_ps();
  const __m512 v = _mm512_loadu_ps(x_row + col * x_pixel);
  return kActivation ? _mm512_max_ps(_mm512_setzero_ps(), _mm512_fmadd_ps(v, a, b)) : v;
}

// One output pixel: its K input pixels (input row `x_row`, columns col0 .. col0 + K - 1, 16
// channels) times COT output-gradient values. kSafe: columns outside the image are zeros.
template <int K, int COT, bool kActivation, bool kSafe>
inline void channels_grad_pixel(const float* x_row, int64_t x_pixel, const float* g,
                                int64_t grad_channel, int64_t col0, int64_t W, __m512 a,
                                __m512 b, __m512 (&acc)[COT][K]) {
  // more than 24 accumulators (K = 7, 4 channels): one input pixel in a register at a time,
  // the gradient broadcast from memory in each FMA (stage 2's 7x7/G8 level, 2 channels a
  // tile with all K pixels in registers before: 4.3-4.4 -> 3.0-3.5 ms, batch 8)
  if constexpr (COT * K > 24) {
#pragma GCC unroll 9
    for (int kx = 0; kx < K; ++kx) {
      const __m512 v = input_pixel<kActivation, kSafe>(x_row, x_pixel, col0 + kx, W, a, b);
#pragma GCC unroll 8
      for (int co = 0; co < COT; ++co)
        acc[co][kx] = _mm512_fmadd_ps(_mm512_set1_ps(g[co * grad_channel]), v, acc[co][kx]);
    }
  } else {
    __m512 v[K];
#pragma GCC unroll 9
    for (int kx = 0; kx < K; ++kx)
      v[kx] = input_pixel<kActivation, kSafe>(x_row, x_pixel, col0 + kx, W, a, b);
#pragma GCC unroll 8
    for (int co = 0; co < COT; ++co) {
      const __m512 gb = _mm512_set1_ps(g[co * grad_channel]);
#pragma GCC unroll 9
      for (int kx = 0; kx < K; ++kx) acc[co][kx] = _mm512_fmadd_ps(gb, v[kx], acc[co][kx]);
    }
  }
}

// Output rows [y0, y1) of one image for every kernel row, 16 input channels and COT output
// channels of their group at a time, added to the thread's accumulators.
template <int K, int COT, bool kActivation>
void channels_grad_band(const ChannelsTask& t, int64_t y0, int64_t y1) {
  // output columns whose K input columns all lie inside the image
  const int64_t safe_begin = std::min(t.Wo, (t.P + t.S - 1) / t.S);
  const int64_t safe_end =
      std::max(safe_begin, std::min(t.Wo, (t.W - 1 - (K - 1) + t.P) / t.S + 1));
  for (int ky = 0; ky < K; ++ky)
    for (int64_t ci0 = 0; ci0 < t.C; ci0 += 16) {
      const __m512 a = kActivation ? _mm512_loadu_ps(t.scale + ci0) : _mm512_setzero_ps();
      const __m512 b = kActivation ? _mm512_loadu_ps(t.shift + ci0) : _mm512_setzero_ps();
      const int64_t group = ci0 / t.in_per_group, co_end = (group + 1) * t.out_per_group;
      for (int64_t co0 = group * t.out_per_group; co0 < co_end; co0 += COT) {
        __m512 acc[COT][K];
        float* const acc_at = t.acc + (ky * K * t.CO + co0) * t.in_per_group + ci0 -
                              group * t.in_per_group;  // [kx][co] apart
#pragma GCC unroll 8
        for (int co = 0; co < COT; ++co)
#pragma GCC unroll 9
          for (int kx = 0; kx < K; ++kx)
            acc[co][kx] = _mm512_loadu_ps(acc_at + (kx * t.CO + co) * t.in_per_group);
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t row = t.S * y + ky - t.P;
          if (row < 0 || row >= t.H) continue;
          const float* x_row = t.x + row * t.x_row + ci0;
          const float* g_row = t.grad + y * t.grad_row + co0 * t.grad_channel;
          auto pixel = [&](auto safe, int64_t ox) {
            channels_grad_pixel<K, COT, kActivation, decltype(safe)::value>(
                x_row, t.x_pixel, g_row + ox * t.grad_pixel, t.grad_channel, t.S * ox - t.P, t.W,
                a, b, acc);
          };
          for (int64_t ox = 0; ox < safe_begin; ++ox) pixel(std::true_type{}, ox);
          for (int64_t ox = safe_begin; ox < safe_end; ++ox) pixel(std::false_type{}, ox);
          for (int64_t ox = safe_end; ox < t.Wo; ++ox) pixel(std::true_type{}, ox);
        }
#pragma GCC unroll 8
        for (int co = 0; co < COT; ++co)
#pragma GCC unroll 9
          for (int kx = 0; kx < K; ++kx)
            _mm512_storeu_ps(acc_at + (kx * t.CO + co) * t.in_per_group, acc[co][kx]);
      }
    }
}

// Groups of fewer than 16 input channels (ipg = 2, 4 or 8; stage 1's 7x7/G8 and 9x9/G16
// levels): a 16-channel block holds 16 / ipg groups, and lane l of an accumulator sums output
// channel j of group l / ipg against that group's input channel l % ipg. The gradient vector
// of j repeats each group's value over its ipg lanes (one masked load of the block's groups'
// output channels and a permute). Each output pixel then needs only J FMAs per input pixel,
// so T output pixels of a row share a sliding window of input pixels: S * (T - 1) + K loads
// for T * J * K FMAs. The accumulators are kept as [ky][kx][ci block][j][16 lanes].
template <int K, int S, int J, int T, bool kActivation>
void lanes_grad_band(const ChannelsTask& t, int64_t y0, int64_t y1) {
  constexpr int kWindow = S * (T - 1) + K;  // input pixels that T output pixels read
  const int64_t ipg = t.in_per_group, opg = t.out_per_group, blocks = t.C / 16;
  const __mmask16 grad_lanes = static_cast<__mmask16>((1u << (16 / ipg * opg)) - 1u);
  for (int ky = 0; ky < K; ++ky)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t ci0 = block * 16;
      const __m512 a = kActivation ? _mm512_loadu_ps(t.scale + ci0) : _mm512_setzero_ps();
      const __m512 b = kActivation ? _mm512_loadu_ps(t.shift + ci0) : _mm512_setzero_ps();
      const int64_t co_first = ci0 / ipg * opg;  // the block's first group's output channel 0
      for (int64_t j0 = 0; j0 < opg; j0 += J) {
        __m512i spread[J];  // lane l -> the gradient of output j0 + jj of its group
        alignas(64) int32_t index[16];
#pragma GCC unroll 2
        for (int jj = 0; jj < J; ++jj) {
          for (int l = 0; l < 16; ++l) index[l] = static_cast<int32_t>(l / ipg * opg + j0 + jj);
          spread[jj] = _mm512_load_si512(index);
        }
        __m512 acc[J][K];
        float* const acc_at = t.acc + ((ky * K * blocks + block) * opg + j0) * 16;
#pragma GCC unroll 2
        for (int jj = 0; jj < J; ++jj)
#pragma GCC unroll 9
          for (int kx = 0; kx < K; ++kx)
            acc[jj][kx] = _mm512_loadu_ps(acc_at + (kx * blocks * opg + jj) * 16);
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t row = S * y + ky - t.P;
          if (row < 0 || row >= t.H) continue;
          const float* x_row = t.x + row * t.x_row + ci0;
          const float* g_row = t.grad + y * t.grad_row + co_first * t.grad_channel;
          for (int64_t ox0 = 0; ox0 < t.Wo; ox0 += T) {
            __m512 g[T][J];
#pragma GCC unroll 16
            for (int i = 0; i < T; ++i) {
              __m512 values = _mm512_setzero_ps();
              if (ox0 + i < t.Wo) {
                const float* at = g_row + (ox0 + i) * t.grad_pixel;
                if (t.grad_channel == 1) {
                  values = _mm512_maskz_loadu_ps(grad_lanes, at);
                } else {
                  alignas(64) float gathered[16] = {};
                  for (int64_t c = 0; c < 16 / ipg * opg; ++c) gathered[c] = at[c * t.grad_channel];
                  values = _mm512_load_ps(gathered);
                }
              }
#pragma GCC unroll 2
              for (int jj = 0; jj < J; ++jj) g[i][jj] = _mm512_permutexvar_ps(spread[jj], values);
            }
            const int64_t col0 = S * ox0 - t.P;
            auto window = [&](auto safe) {
#pragma GCC unroll 64
              for (int w = 0; w < kWindow; ++w) {
                const __m512 v = input_pixel<kActivation, decltype(safe)::value>(
                    x_row, t.x_pixel, col0 + w, t.W, a, b);
#pragma GCC unroll 16
                for (int i = 0; i < T; ++i) {
                  const int kx = w - S * i;
                  if (kx >= 0 && kx < K) {
#pragma GCC unroll 2
                    for (int jj = 0; jj < J; ++jj)
                      acc[jj][kx] = _mm512_fmadd_ps(g[i][jj], v, acc[jj][kx]);
                  }
                }
              }
            };
            if (col0 >= 0 && col0 + kWindow <= t.W)
              window(std::false_type{});
            else
              window(std::true_type{});
          }
        }
#pragma GCC unroll 2
        for (int jj = 0; jj < J; ++jj)
#pragma GCC unroll 9
          for (int kx = 0; kx < K; ++kx)
            _mm512_storeu_ps(acc_at + (kx * blocks * opg + jj) * 16, acc[jj][kx]);
      }
    }
}

#pragma GCC pop_options

using ChannelsTileFn = void (*)(const ChannelsTask&, int64_t, int64_t);

// Output channels per tile: the most of 8, 4, 2, 1 that divides C_out / G, at most 8 for K =
// 3, 4 for K = 5 and 7, 2 for K = 9: the COT x K accumulators and what a pixel needs within
// the 32 registers (for K = 7, 28 accumulators with one input pixel at a time).
template <int K, bool kActivation>
ChannelsTileFn pick_channels_tile(int64_t out_channels) {
  constexpr int kMost = K == 3 ? 8 : (K == 9 ? 2 : 4);
  if constexpr (kMost >= 8)
    if (out_channels % 8 == 0) return &channels_grad_band<K, 8, kActivation>;
  if constexpr (kMost >= 4)
    if (out_channels % 4 == 0) return &channels_grad_band<K, 4, kActivation>;
  if (out_channels % 2 == 0) return &channels_grad_band<K, 2, kActivation>;
  return &channels_grad_band<K, 1, kActivation>;
}

// Output pixels of a lane-group window: the most of 16, 8, 6, 4, 2 for which the J x K
// accumulators, T x J gradient vectors, an input pixel, the activation and the permute
// indices fit 31 registers (9x9, one output a group: 16; 7x7 with two: 6).
constexpr int lanes_window(int K, int J) {
  for (int T : {16, 8, 6, 4, 2})
    if (J * K + T * J + 5 <= 31) return T;
  return 1;
}

template <int K, int S, bool kActivation>
ChannelsTileFn pick_lanes_tile(int64_t out_per_group) {
  if (out_per_group % 2 == 0) return &lanes_grad_band<K, S, 2, lanes_window(K, 2), kActivation>;
  return &lanes_grad_band<K, S, 1, lanes_window(K, 1), kActivation>;
}

template <int K, bool kActivation>
ChannelsTileFn pick_kernel_tile(int64_t in_per_group, int64_t out_per_group, int64_t stride) {
  if (in_per_group % 16 == 0) return pick_channels_tile<K, kActivation>(out_per_group);
  return stride == 1 ? pick_lanes_tile<K, 1, kActivation>(out_per_group)
                     : pick_lanes_tile<K, 2, kActivation>(out_per_group);
}

template <bool kActivation>
ChannelsTileFn pick_channels_grad(int64_t kernel, int64_t in_per_group, int64_t out_per_group,
                                  int64_t stride) {
  switch (kernel) {
    case 3: return pick_kernel_tile<3, kActivation>(in_per_group, out_per_group, stride);
    case 5: return pick_kernel_tile<5, kActivation>(in_per_group, out_per_group, stride);
    case 7: return pick_kernel_tile<7, kActivation>(in_per_group, out_per_group, stride);
    case 9: return pick_kernel_tile<9, kActivation>(in_per_group, out_per_group, stride);
    default: return nullptr;
  }
}

// Whether the kernel takes groups of `in_per_group` input and `out_per_group` output
// channels: whole 16-channel blocks of input, or 2, 4 or 8 input channels (lane groups) and
// at most as many output channels (a block's groups' outputs in one gradient vector).
bool takes_groups(int64_t in_per_group, int64_t out_per_group) {
  if (in_per_group % 16 == 0) return true;
  return (in_per_group == 2 || in_per_group == 4 || in_per_group == 8) &&
         out_per_group <= in_per_group;
}

}  // namespace

namespace {

// One level of a call: where its gradient channels start, its shape and tile function, and
// where its accumulators lie in each thread's block of them.
struct LevelPlan {
  ChannelsTileFn fn;
  int64_t c_offset, out_channels, in_per_group, out_per_group, kernel, acc_at, acc_floats;
};

void check_inputs(const torch::Tensor& x, const torch::Tensor& grad, int64_t stride) {
  TORCH_CHECK(supported(), kWhat, "this CPU has no AVX-512");
  TORCH_CHECK(x.dim() == 4 && grad.dim() == 4 && x.scalar_type() == torch::kFloat &&
                  grad.scalar_type() == torch::kFloat && x.device().is_cpu() &&
                  grad.device().is_cpu(),
              kWhat, "expected 4D float32 CPU tensors, got ", x.sizes(), " ", x.scalar_type(),
              " and ", grad.sizes(), " ", grad.scalar_type());
  const int64_t C = x.size(1);
  TORCH_CHECK(x.stride(1) == 1 && x.stride(3) >= C && C % 16 == 0, kWhat,
              "the input must be channels_last with whole 16-channel blocks, got ", x.sizes(),
              " with strides ", x.strides());
  TORCH_CHECK(stride == 1 || stride == 2, kWhat, "stride must be 1 or 2, got ", stride);
}

LevelPlan plan_level(const torch::Tensor& x, const torch::Tensor& grad, int64_t c_offset,
                     int64_t out_channels, int64_t groups, int64_t kernel, int64_t stride,
                     bool activation, int64_t acc_at) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(groups >= 1 && C % groups == 0 && out_channels % groups == 0 &&
                  takes_groups(C / groups, out_channels / groups),
              kWhat, groups, " groups need to divide the input's ", C, " and the output's ",
              out_channels, " channels, with whole 16-channel blocks of input per group, or "
              "2, 4 or 8 input channels and at most as many output channels per group");
  const int64_t in_per_group = C / groups, out_per_group = out_channels / groups;
  const ChannelsTileFn fn =
      activation ? pick_channels_grad<true>(kernel, in_per_group, out_per_group, stride)
                 : pick_channels_grad<false>(kernel, in_per_group, out_per_group, stride);
  TORCH_CHECK(fn != nullptr, kWhat, "kernel size ", kernel, " not supported (3, 5, 7 or 9)");
  const int64_t Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
  TORCH_CHECK(grad.size(0) == N && grad.size(2) == Ho && grad.size(3) == Wo && c_offset >= 0 &&
                  out_channels > 0 && c_offset + out_channels <= grad.size(1),
              kWhat, "gradient channels [", c_offset, ", ", c_offset + out_channels, ") of ",
              grad.sizes(), " for an input ", x.sizes(), " at stride ", stride, " (expected (",
              N, ", >= ", c_offset + out_channels, ", ", Ho, ", ", Wo, "))");
  return {fn,           c_offset, out_channels, in_per_group, out_per_group,
          kernel,       acc_at,   kernel * kernel * out_channels * in_per_group};
}

// The level's weight gradient (C_out, C_in / G, K, K): its accumulators summed over threads.
torch::Tensor gather_level(const LevelPlan& L, const std::vector<float>& acc, int64_t threads,
                           int64_t thread_floats, int64_t C, const torch::TensorOptions& options) {
  const int64_t kernel = L.kernel, in_per_group = L.in_per_group, out_per_group = L.out_per_group;
  auto result = torch::empty({L.out_channels, in_per_group, kernel, kernel}, options);
  float* r = result.data_ptr<float>();
  const float* a = acc.data() + L.acc_at;
  const bool lane_groups = in_per_group % 16 != 0;  // accumulators [ky][kx][block][j][lane]
  for (int64_t co = 0; co < L.out_channels; ++co)
    for (int64_t ci = 0; ci < in_per_group; ++ci)
      for (int64_t ky = 0; ky < kernel; ++ky)
        for (int64_t kx = 0; kx < kernel; ++kx) {
          float sum = 0.f;
          const int64_t channel = co / out_per_group * in_per_group + ci;  // input channel
          const int64_t at =
              lane_groups ? (((ky * kernel + kx) * (C / 16) + channel / 16) * out_per_group +
                             co % out_per_group) * 16 + channel % 16
                          : ((ky * kernel + kx) * L.out_channels + co) * in_per_group + ci;
          for (int64_t thread = 0; thread < threads; ++thread) sum += a[thread * thread_floats + at];
          r[((co * in_per_group + ci) * kernel + ky) * kernel + kx] = sum;
        }
  return result;
}

}  // namespace

// Gradients (C_out, C_in / G, K, K) of the weights of convolution levels sharing their input
// and stride (level i: G = groups[i], kernel K = kernels[i] in 3, 5, 7, 9, padding (K - 1) /
// 2, dilation 1), with input `x` (N, C_in, H, W), channels_last with whole 16-channel blocks
// of input per group or lane groups (see takes_groups), from `grad` channels [c_offsets[i],
// c_offsets[i] + out_channels[i]) (any strides). With `scale` and `shift` (C_in values each;
// empty: none) the input is max(x * scale + shift, 0).
//
// Each task (an image's band of output rows) runs every level in turn, so that the band's
// input rows, read from memory for the first level, are in L2 for the others (stage 1's
// stride-1 PyConv of PyConvHGResNet reads its 12.8 MB input once instead of four times). The
// tasks, their split among threads and each level's sums are those of a call per level: the
// same bits.
std::vector<torch::Tensor> channels_last_weight_grads(
    const torch::Tensor& x, const torch::Tensor& grad, const std::vector<int64_t>& c_offsets,
    const std::vector<int64_t>& out_channels, const std::vector<int64_t>& groups,
    const std::vector<int64_t>& kernels, int64_t stride, const torch::Tensor& scale,
    const torch::Tensor& shift) {
  check_inputs(x, grad, stride);
  const size_t levels = c_offsets.size();
  TORCH_CHECK(out_channels.size() == levels && groups.size() == levels &&
                  kernels.size() == levels,
              kWhat, "one output channel count, group count and kernel size per offset");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool activation = scale.numel() > 0;
  std::vector<LevelPlan> plans;
  int64_t thread_floats = 0;
  for (size_t i = 0; i < levels; ++i) {
    plans.push_back(plan_level(x, grad, c_offsets[i], out_channels[i], groups[i], kernels[i],
                               stride, activation, thread_floats));
    thread_floats += plans.back().acc_floats;
  }
  torch::Tensor scale_c, shift_c;
  if (activation) {
    TORCH_CHECK(scale.numel() == C && shift.numel() == C && scale.scalar_type() == torch::kFloat &&
                    shift.scalar_type() == torch::kFloat,
                kWhat, "the activation needs one float32 scale and shift per input channel (", C,
                "), got ", scale.numel(), " and ", shift.numel());
    scale_c = scale.contiguous();
    shift_c = shift.contiguous();
  }
  const int64_t Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
  const int64_t rows = band_rows(x, stride);
  const int64_t bands = (Ho + rows - 1) / rows;
  const int64_t threads = at::get_num_threads();
  std::vector<float> acc(threads * thread_floats, 0.f);
  const float* xd = x.data_ptr<float>();
  const float* gd = grad.data_ptr<float>();
  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    ChannelsTask t;
    t.x_row = x.stride(2);
    t.x_pixel = x.stride(3);
    t.grad_channel = grad.stride(1);
    t.grad_row = grad.stride(2);
    t.grad_pixel = grad.stride(3);
    t.scale = activation ? scale_c.data_ptr<float>() : nullptr;
    t.shift = activation ? shift_c.data_ptr<float>() : nullptr;
    t.C = C;
    t.H = H;
    t.W = W;
    t.Wo = Wo;
    t.S = stride;
    float* const thread_acc = acc.data() + at::get_thread_num() * thread_floats;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / bands, y0 = task % bands * rows;
      t.x = xd + n * x.stride(0);
      for (const LevelPlan& L : plans) {
        t.grad = gd + n * grad.stride(0) + L.c_offset * grad.stride(1);
        t.CO = L.out_channels;
        t.in_per_group = L.in_per_group;
        t.out_per_group = L.out_per_group;
        t.P = (L.kernel - 1) / 2;
        t.acc = thread_acc + L.acc_at;
        L.fn(t, y0, std::min(Ho, y0 + rows));
      }
    }
  });
  std::vector<torch::Tensor> results;
  for (const LevelPlan& L : plans)
    results.push_back(gather_level(L, acc, threads, thread_floats, C, x.options()));
  return results;
}
