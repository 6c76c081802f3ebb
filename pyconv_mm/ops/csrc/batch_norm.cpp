// Batch norm in training, with the ReLU and residual add that follow it in a residual block,
// in fewer passes over memory than ATen's ops one after another (CPU, float32, 4D, NCHW or
// channels_last). pyconv_mm/ops/batch_norm_act.py wraps these in an autograd function.
//
// Forward, out = relu(y * scale + shift [+ residual]) with scale = weight * invstd and
// shift = bias - mean * scale: one pass for the batch statistics (sums of y and y^2 in double)
// and one that writes ``out``. ATen's ops read y twice for the statistics, once for the
// normalisation, and then the add and the ReLU read and write the output again.
//
// Backward, from the output's gradient G: g = G where the ReLU passed (recomputed from y
// without a residual, read from ``out`` with one), the sums of g and g * (y - mean) per
// channel (double) in one pass, then grad_y = (g - sum_g / M - (y - mean) * invstd^2 *
// sum_gy / M) * weight * invstd (and g itself, the residual's gradient) in a second pass:
// the ReLU's backward is not a pass of its own.
//
// The work is cut in fixed pieces (rows of channels_last, planes of NCHW) whose partial sums
// are added in order, so the results do not depend on the number of threads.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "streaming.h"

namespace {

constexpr int64_t kRowsPerPiece = 64;  // channels_last: rows (pixels) summed per piece

// A 4D float32 tensor viewed as channels_last rows (``rows`` x ``C``, C a multiple of 16) or
// NCHW planes (``N * C`` planes of ``plane`` elements).
struct Layout {
  bool channels_last;
  int64_t N, C, plane, rows;
};

Layout layout_of(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.dim() == 4,
              "batch_norm_act: ", what, " must be a 4D float32 CPU tensor, got ", t.sizes(), " ",
              t.scalar_type(), " on ", t.device());
  const bool channels_last =
      !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(channels_last || t.is_contiguous(), "batch_norm_act: ", what,
              " must be contiguous or channels_last, got strides ", t.strides());
  const int64_t N = t.size(0), C = t.size(1), plane = t.size(2) * t.size(3);
  TORCH_CHECK(!channels_last || C % 16 == 0, "batch_norm_act: channels_last ", what,
              " needs a multiple of 16 channels, got ", C);
  return {channels_last, N, C, plane, N * plane};
}

void check_same(const torch::Tensor& t, const torch::Tensor& like, const Layout& layout,
                const char* what) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == torch::kFloat32 &&
                  (layout.channels_last ? t.is_contiguous(at::MemoryFormat::ChannelsLast)
                                        : t.is_contiguous()),
              "batch_norm_act: ", what, " must match the input's shape and memory format");
}

torch::Tensor empty_like_layout(const torch::Tensor& t, const Layout& layout) {
  return torch::empty(t.sizes(), t.options().memory_format(
                                     layout.channels_last ? at::MemoryFormat::ChannelsLast
                                                          : at::MemoryFormat::Contiguous));
}

const float* per_channel(const torch::Tensor& t, int64_t C, const char* what) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.numel() == C && t.is_contiguous(),
              "batch_norm_act: ", what, " must be ", C, " contiguous float32 values, got ",
              t.sizes(), " ", t.scalar_type());
  return t.data_ptr<float>();
}

// scale = weight * invstd, shift = bias - mean * scale: one function (not inlined) for the
// forward and the backward, so that both compute the same ReLU mask bit for bit.
__attribute__((noinline)) void affine(const float* weight, const float* bias, const float* mean,
                                      const float* invstd, int64_t C, float* scale,
                                      float* shift) {
  for (int64_t c = 0; c < C; ++c) {
    const float s = weight[c] * invstd[c];
    scale[c] = s;
    shift[c] = std::fma(-mean[c], s, bias[c]);
  }
}

// The per-channel values of a pass (null where a pass needs none): channels_last rows read
// them 16 channels at a time from the arrays, NCHW planes broadcast their channel's.
struct Params {
  const float *mean, *scale, *shift, *proj, *g_mean, *k;
  bool stream = false;  // the pass's outputs bypass the caches (see `store`)
};

// Whether a pass writing outputs the size of `L` streams them (streaming.h).
bool streamed(const Layout& L) { return L.rows * L.C >= pyconv_mm::kStreamedPassFloats; }

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

using V = __m512;

struct RowParams {  // channels_last: per-lane channels
  const Params& p;
  bool stream() const { return p.stream; }
  V mean(int64_t c) const { return _mm512_loadu_ps(p.mean + c); }
  V scale(int64_t c) const { return _mm512_loadu_ps(p.scale + c); }
  V shift(int64_t c) const { return _mm512_loadu_ps(p.shift + c); }
  V proj(int64_t c) const { return _mm512_loadu_ps(p.proj + c); }
  V g_mean(int64_t c) const { return _mm512_loadu_ps(p.g_mean + c); }
  V k(int64_t c) const { return _mm512_loadu_ps(p.k + c); }
};

struct PlaneParams {  // NCHW: one channel per plane
  V mean_, scale_, shift_, proj_, g_mean_, k_;
  bool stream_;
  PlaneParams(const Params& p, int64_t c)
      : mean_(_mm512_set1_ps(p.mean ? p.mean[c] : 0.f)),
        scale_(_mm512_set1_ps(p.scale ? p.scale[c] : 0.f)),
        shift_(_mm512_set1_ps(p.shift ? p.shift[c] : 0.f)),
        proj_(_mm512_set1_ps(p.proj ? p.proj[c] : 0.f)),
        g_mean_(_mm512_set1_ps(p.g_mean ? p.g_mean[c] : 0.f)),
        k_(_mm512_set1_ps(p.k ? p.k[c] : 0.f)),
        stream_(p.stream) {}
  V mean(int64_t) const { return mean_; }
  V scale(int64_t) const { return scale_; }
  V shift(int64_t) const { return shift_; }
  V proj(int64_t) const { return proj_; }
  V g_mean(int64_t) const { return g_mean_; }
  V k(int64_t) const { return k_; }
  bool stream() const { return stream_; }
};

inline V load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
// Stores the lanes of m. With `stream`, whole vectors at 64-byte aligned addresses are stored
// non-temporally (streaming.h).
inline void store(float* p, V v, __mmask16 m, bool stream) {
  if (m == static_cast<__mmask16>(0xFFFF))
    pyconv_mm::store_line(p, v, stream);
  else
    _mm512_mask_storeu_ps(p, m, v);
}
inline __mmask16 lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF)
                    : static_cast<__mmask16>((1u << left) - 1u);
}

// out = relu(y * scale + shift [+ residual]); ReLU as max(0, v), which keeps a NaN as torch's
template <bool kRelu, bool kResidual, class P>
inline V activated(V y, const float* residual, int64_t i, int64_t c, __mmask16 m, const P& p) {
  V v = _mm512_fmadd_ps(y, p.scale(c), p.shift(c));
  if (kResidual) v = _mm512_add_ps(v, load(residual + i, m));
  return kRelu ? _mm512_max_ps(_mm512_setzero_ps(), v) : v;
}

// G where the ReLU passed: mask 0: everywhere (no ReLU), 1: recomputed from y, 2: out > 0.
template <int kMask, class P>
inline V passed(V g, V y, const float* out, int64_t i, int64_t c, __mmask16 m, const P& p) {
  if (kMask == 0) return g;
  const V v = kMask == 1 ? _mm512_fmadd_ps(y, p.scale(c), p.shift(c)) : load(out + i, m);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), g);
}

// rows_sums for C = 16 * K channels, the 2 * K accumulators in registers (the same sums in
// the same order, so the same bits). At 64 and 128 channels (stages 1 and 2), batch 8, Zen 5,
// paired: a norm's backward x1.06-1.17, its statistics alone x0.97-1.09. Wider rows keep
// theirs in memory: sweeps of 64 channels at a time in registers were slower there
// (x0.8-0.9), 64-byte aligned arrays no faster.
template <int K, class Each>
inline void rows_sums_in_registers(int64_t first_row, int64_t rows, float* a, float* b,
                                   Each each) {
  V sa[K], sb[K];
  for (int j = 0; j < K; ++j) sa[j] = sb[j] = _mm512_setzero_ps();
  for (int64_t r = first_row; r < first_row + rows; ++r)
    for (int j = 0; j < K; ++j) {
      V x, y;
      each(r * 16 * K + 16 * j, 16 * j, static_cast<__mmask16>(0xFFFF), x, y);
      sa[j] = _mm512_add_ps(sa[j], x);
      sb[j] = _mm512_add_ps(sb[j], y);
    }
  for (int j = 0; j < K; ++j) {
    _mm512_storeu_ps(a + 16 * j, sa[j]);
    _mm512_storeu_ps(b + 16 * j, sb[j]);
  }
}

// Sums of the two values ``each(index, channel, lanes, x, y)`` gives for 16 elements at a
// time: over channels_last rows into the per-channel arrays ``a``, ``b``; over a plane into
// one sum each.
template <class Each>
inline void rows_sums(int64_t first_row, int64_t rows, int64_t C, float* a, float* b,
                      Each each) {
  switch (C / 16) {
    case 1: return rows_sums_in_registers<1>(first_row, rows, a, b, each);
    case 2: return rows_sums_in_registers<2>(first_row, rows, a, b, each);
    case 3: return rows_sums_in_registers<3>(first_row, rows, a, b, each);
    case 4: return rows_sums_in_registers<4>(first_row, rows, a, b, each);
    case 5: return rows_sums_in_registers<5>(first_row, rows, a, b, each);
    case 6: return rows_sums_in_registers<6>(first_row, rows, a, b, each);
    case 7: return rows_sums_in_registers<7>(first_row, rows, a, b, each);
    case 8: return rows_sums_in_registers<8>(first_row, rows, a, b, each);
    default: break;
  }
  for (int64_t c = 0; c < C; c += 16) {
    _mm512_storeu_ps(a + c, _mm512_setzero_ps());
    _mm512_storeu_ps(b + c, _mm512_setzero_ps());
  }
  for (int64_t r = first_row; r < first_row + rows; ++r)
    for (int64_t c = 0; c < C; c += 16) {
      V x, y;
      each(r * C + c, c, static_cast<__mmask16>(0xFFFF), x, y);
      _mm512_storeu_ps(a + c, _mm512_add_ps(_mm512_loadu_ps(a + c), x));
      _mm512_storeu_ps(b + c, _mm512_add_ps(_mm512_loadu_ps(b + c), y));
    }
}

template <class Each>
inline void plane_sums(int64_t at, int64_t n, double* a, double* b, Each each) {
  V sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    V x, y;
    each(at + i, 0, lanes(n - i), x, y);
    sa = _mm512_add_ps(sa, x);
    sb = _mm512_add_ps(sb, y);
  }
  *a = _mm512_reduce_add_ps(sa);
  *b = _mm512_reduce_add_ps(sb);
}

// Runs ``pass(index, channel, lanes, params)`` over every element, 16 at a time, split among
// threads.
template <class Pass>
void for_all(const Layout& L, const Params& params, Pass pass) {
  const int64_t C = L.C;
  if (L.channels_last) {
    const RowParams rp{params};
    at::parallel_for(0, L.rows, kRowsPerPiece, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t c = 0; c < C; c += 16) pass(r * C + c, c, static_cast<__mmask16>(0xFFFF), rp);
      _mm_sfence();  // streamed stores are visible before the pass returns
    });
  } else {
    at::parallel_for(0, L.N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const PlaneParams pp(params, p % C);
        for (int64_t i = 0; i < L.plane; i += 16)
          pass(p * L.plane + i, 0, lanes(L.plane - i), pp);
      }
      _mm_sfence();
    });
  }
}

// Per-channel sums (``a``, ``b``: C doubles) of the two values ``pair(index, channel, lanes,
// params, x, y)`` gives for 16 elements at a time: in float within pieces of fixed size
// (64 channels_last rows, one NCHW plane), the pieces added in order in double.
template <class SumPair>
void sum_pairs(const Layout& L, const Params& params, double* a, double* b, SumPair pair) {
  const int64_t C = L.C;
  for (int64_t c = 0; c < C; ++c) a[c] = b[c] = 0.0;
  if (L.channels_last) {
    const RowParams rp{params};
    const int64_t pieces = (L.rows + kRowsPerPiece - 1) / kRowsPerPiece;
    std::vector<float> part(static_cast<size_t>(pieces * 2 * C));
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        rows_sums(p * kRowsPerPiece, std::min(kRowsPerPiece, L.rows - p * kRowsPerPiece), C,
                  part.data() + p * 2 * C, part.data() + p * 2 * C + C,
                  [&](int64_t i, int64_t c, __mmask16 m, V& x, V& y) { pair(i, c, m, rp, x, y); });
      _mm_sfence();  // a pass may store as it sums (the backward's residual gradient)
    });
    for (int64_t p = 0; p < pieces; ++p)
      for (int64_t c = 0; c < C; ++c) {
        a[c] += part[p * 2 * C + c];
        b[c] += part[p * 2 * C + C + c];
      }
  } else {
    const int64_t planes = L.N * C;
    std::vector<double> part(static_cast<size_t>(planes * 2));
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const PlaneParams pp(params, p % C);
        plane_sums(p * L.plane, L.plane, &part[2 * p], &part[2 * p + 1],
                   [&](int64_t i, int64_t c, __mmask16 m, V& x, V& y) { pair(i, c, m, pp, x, y); });
      }
      _mm_sfence();
    });
    for (int64_t p = 0; p < planes; ++p) {
      a[p % C] += part[2 * p];
      b[p % C] += part[2 * p + 1];
    }
  }
}

// Per-channel sums of y and y^2 about ``centre`` (the first image's first pixel of each
// channel), so that the variance loses nothing to a mean far from zero.
void channel_sums(const float* y, const Layout& L, const float* centre, double* sum,
                  double* sq) {
  const Params params{centre, nullptr, nullptr, nullptr, nullptr, nullptr};
  sum_pairs(L, params, sum, sq, [&](int64_t i, int64_t c, __mmask16 m, const auto& p, V& a,
                                    V& b) {
    const V d = _mm512_maskz_sub_ps(m, load(y + i, m), p.mean(c));
    a = d;
    b = _mm512_mul_ps(d, d);
  });
}

template <bool kRelu, bool kResidual>
void apply_all(const float* y, const float* residual, float* out, const Layout& L,
               const Params& params) {
  for_all(L, params, [&](int64_t i, int64_t c, __mmask16 m, const auto& p) {
    store(out + i, activated<kRelu, kResidual>(load(y + i, m), residual, i, c, m, p), m,
          p.stream());
  });
}

void apply(const float* y, const float* residual, float* out, const Layout& L,
           const Params& params, bool relu) {
  if (relu)
    residual ? apply_all<true, true>(y, residual, out, L, params)
             : apply_all<true, false>(y, residual, out, L, params);
  else
    residual ? apply_all<false, true>(y, residual, out, L, params)
             : apply_all<false, false>(y, residual, out, L, params);
}

// The sums of g and g * (y - mean) per channel, then grad_y = (g - (y - mean) * proj -
// g_mean) * k. With a residual, the first pass also stores g (the residual's gradient) and the
// second reads it back instead of G and the output.
template <int kMask, bool kResidual>
void backward_all(const float* G, const float* y, const float* out, float* grad_y,
                  float* grad_res, const Layout& L, Params& params, const float* weight,
                  const float* invstd, float* grad_weight, float* grad_bias) {
  const int64_t C = L.C;
  std::vector<double> sum_g(C), sum_gy(C);
  sum_pairs(L, params, sum_g.data(), sum_gy.data(),
            [&](int64_t i, int64_t c, __mmask16 m, const auto& p, V& a, V& b) {
              const V yv = load(y + i, m);
              const V g = passed<kMask>(load(G + i, m), yv, out, i, c, m, p);
              if (kResidual) store(grad_res + i, g, m, p.stream());
              a = g;
              b = _mm512_mul_ps(g, _mm512_sub_ps(yv, p.mean(c)));
            });
  const double count = static_cast<double>(L.rows);
  std::vector<float> proj(C), g_mean(C), k(C);
  for (int64_t c = 0; c < C; ++c) {
    const double is = invstd[c];
    proj[c] = static_cast<float>(sum_gy[c] / count * is * is);
    g_mean[c] = static_cast<float>(sum_g[c] / count);
    k[c] = weight[c] * invstd[c];
    grad_weight[c] = static_cast<float>(sum_gy[c] * is);
    grad_bias[c] = static_cast<float>(sum_g[c]);
  }
  params.proj = proj.data();
  params.g_mean = g_mean.data();
  params.k = k.data();
  for_all(L, params, [&](int64_t i, int64_t c, __mmask16 m, const auto& p) {
    const V yv = load(y + i, m);
    const V g = kResidual ? load(grad_res + i, m)
                          : passed<kMask>(load(G + i, m), yv, out, i, c, m, p);
    const V centred = _mm512_sub_ps(yv, p.mean(c));
    const V d = _mm512_sub_ps(_mm512_fnmadd_ps(centred, p.proj(c), g), p.g_mean(c));
    store(grad_y + i, _mm512_mul_ps(d, p.k(c)), m, p.stream());
  });
}

#pragma GCC pop_options

}  // namespace

bool batch_norm_act_supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}

// Training statistics {mean, invstd} of y per channel. Updates running_mean / running_var
// (when given) with ``factor`` (the momentum, or 1 / batches for a cumulative average) and the
// unbiased variance, as ATen's batch norm does.
std::vector<torch::Tensor> batch_norm_stats(const torch::Tensor& y,
                                            const c10::optional<torch::Tensor>& running_mean,
                                            const c10::optional<torch::Tensor>& running_var,
                                            double factor, double eps) {
  TORCH_CHECK(batch_norm_act_supported(), "batch_norm_act: this CPU has no AVX-512");
  const Layout L = layout_of(y, "input");
  TORCH_CHECK(L.rows > 1, "batch_norm_act: expected more than 1 value per channel, got ",
              y.sizes());
  const int64_t C = L.C;
  const float* yp = y.data_ptr<float>();
  std::vector<float> centre(C);
  for (int64_t c = 0; c < C; ++c) centre[c] = L.channels_last ? yp[c] : yp[c * L.plane];
  std::vector<double> sum(C), sq(C);
  channel_sums(yp, L, centre.data(), sum.data(), sq.data());
  auto mean = torch::empty({C}, y.options()), invstd = torch::empty({C}, y.options());
  float* m = mean.data_ptr<float>();
  float* is = invstd.data_ptr<float>();
  const double count = static_cast<double>(L.rows);
  std::vector<double> var(C);
  for (int64_t c = 0; c < C; ++c) {
    const double shift = sum[c] / count;  // the mean's distance from the centre
    var[c] = std::max(sq[c] / count - shift * shift, 0.0);
    m[c] = static_cast<float>(centre[c] + shift);
    is[c] = static_cast<float>(1.0 / std::sqrt(var[c] + eps));
  }
  if (running_mean.has_value() && running_mean->defined()) {
    float* rm = const_cast<float*>(per_channel(*running_mean, C, "running_mean"));
    for (int64_t c = 0; c < C; ++c)
      rm[c] = static_cast<float>((1.0 - factor) * rm[c] + factor * (centre[c] + sum[c] / count));
  }
  if (running_var.has_value() && running_var->defined()) {
    float* rv = const_cast<float*>(per_channel(*running_var, C, "running_var"));
    for (int64_t c = 0; c < C; ++c)
      rv[c] = static_cast<float>((1.0 - factor) * rv[c] +
                                 factor * var[c] * count / (count - 1.0));
  }
  return {mean, invstd};
}

// Training forward: {out, mean, invstd}, out = relu(batch_norm(y) [+ residual]) (without the
// ReLU unless ``relu``); running statistics as batch_norm_stats.
std::vector<torch::Tensor> batch_norm_act_forward(
    const torch::Tensor& y, const torch::Tensor& weight, const torch::Tensor& bias,
    const c10::optional<torch::Tensor>& running_mean,
    const c10::optional<torch::Tensor>& running_var, double factor, double eps,
    const c10::optional<torch::Tensor>& residual, bool relu) {
  const auto stats = batch_norm_stats(y, running_mean, running_var, factor, eps);
  const Layout L = layout_of(y, "input");
  const int64_t C = L.C;
  const float* w = per_channel(weight, C, "weight");
  const float* b = per_channel(bias, C, "bias");
  const float* res = nullptr;
  if (residual.has_value() && residual->defined()) {
    check_same(*residual, y, L, "residual");
    res = residual->data_ptr<float>();
  }
  const float* m = stats[0].data_ptr<float>();
  std::vector<float> scale(C), shift(C);
  affine(w, b, m, stats[1].data_ptr<float>(), C, scale.data(), shift.data());
  auto out = empty_like_layout(y, L);
  const Params params{m, scale.data(), shift.data(), nullptr, nullptr, nullptr, streamed(L)};
  apply(y.data_ptr<float>(), res, out.data_ptr<float>(), L, params, relu);
  return {out, stats[0], stats[1]};
}

// relu(y * scale + shift) (or without the ReLU) for given statistics: the forward's output
// bit for bit, for a backward that recomputes it.
torch::Tensor batch_norm_act_apply(const torch::Tensor& y, const torch::Tensor& weight,
                                   const torch::Tensor& bias, const torch::Tensor& mean,
                                   const torch::Tensor& invstd, bool relu) {
  TORCH_CHECK(batch_norm_act_supported(), "batch_norm_act: this CPU has no AVX-512");
  const Layout L = layout_of(y, "input");
  const int64_t C = L.C;
  std::vector<float> scale(C), shift(C);
  const float* m = per_channel(mean, C, "mean");
  affine(per_channel(weight, C, "weight"), per_channel(bias, C, "bias"), m,
         per_channel(invstd, C, "invstd"), C, scale.data(), shift.data());
  auto out = empty_like_layout(y, L);
  const Params params{m, scale.data(), shift.data(), nullptr, nullptr, nullptr, streamed(L)};
  apply(y.data_ptr<float>(), nullptr, out.data_ptr<float>(), L, params, relu);
  return out;
}

// Training backward: {grad_y, grad_weight, grad_bias, grad_residual}. The ReLU's mask comes
// from ``out`` when given (the forward had a residual), else from y (``relu``); without a
// ReLU every element passes. grad_residual is undefined unless ``residual_grad``.
std::vector<torch::Tensor> batch_norm_act_backward(
    const torch::Tensor& grad, const torch::Tensor& y, const c10::optional<torch::Tensor>& out,
    const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
    const torch::Tensor& invstd, bool relu, bool residual_grad) {
  TORCH_CHECK(batch_norm_act_supported(), "batch_norm_act: this CPU has no AVX-512");
  const Layout L = layout_of(y, "input");
  const int64_t C = L.C;
  const torch::Tensor G = grad.contiguous(L.channels_last ? at::MemoryFormat::ChannelsLast
                                                          : at::MemoryFormat::Contiguous);
  check_same(G, y, L, "grad");
  const float* o = nullptr;
  if (out.has_value() && out->defined()) {
    check_same(*out, y, L, "out");
    o = out->data_ptr<float>();
  }
  const float* w = per_channel(weight, C, "weight");
  const float* m = per_channel(mean, C, "mean");
  const float* is = per_channel(invstd, C, "invstd");
  std::vector<float> scale(C), shift(C);
  affine(w, per_channel(bias, C, "bias"), m, is, C, scale.data(), shift.data());
  auto grad_y = empty_like_layout(y, L);
  auto grad_weight = torch::empty({C}, y.options()), grad_bias = torch::empty({C}, y.options());
  torch::Tensor grad_res;
  if (residual_grad) grad_res = empty_like_layout(y, L);
  float* gr = residual_grad ? grad_res.data_ptr<float>() : nullptr;
  const float *Gp = G.data_ptr<float>(), *yp = y.data_ptr<float>();
  float *gy = grad_y.data_ptr<float>(), *gw = grad_weight.data_ptr<float>(),
        *gb = grad_bias.data_ptr<float>();
  Params params{m, scale.data(), shift.data(), nullptr, nullptr, nullptr, streamed(L)};
#define BN_BACKWARD(MASK, RES) backward_all<MASK, RES>(Gp, yp, o, gy, gr, L, params, w, is, gw, gb)
  const int mask = !relu ? 0 : (o ? 2 : 1);
  if (mask == 0) residual_grad ? BN_BACKWARD(0, true) : BN_BACKWARD(0, false);
  else if (mask == 1) residual_grad ? BN_BACKWARD(1, true) : BN_BACKWARD(1, false);
  else residual_grad ? BN_BACKWARD(2, true) : BN_BACKWARD(2, false);
#undef BN_BACKWARD
  return {grad_y, grad_weight, grad_bias, grad_res};
}
