// When our kernels store their outputs non-temporally (batch_norm.cpp, direct_conv.cpp,
// max_pool.cpp).
//
// A normal store first reads each cache line in; a non-temporal (streaming) store sends whole
// 64-byte lines to memory without that read, and without keeping them in the caches for the
// next op. Which wins depends on the size of the output and on how fast it is written, so each
// kernel has its own threshold, measured on the Zen 4 (2 cores, 1 MB L2 each, 32 MB L3) with
// the next op's read of the output included. A kernel that streams ends each thread's share
// with a store fence (_mm_sfence): its outputs are visible when it returns.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pyconv_mm {

// Memory-bound passes, the batch norms and the max pool's input gradient (the next op would
// read a small output back from the L3), stream outputs of at least 8 MiB. With a read of
// their outputs, at batch 8: stage 1's 25.7 MB norms forward and backward 8% to 10% faster,
// stage 2's 12.8 MB ones 2% to 8% (medians of paired runs), the pool gradients of 25.7 and
// 12.8 MB 6% and 1% to 6%; 3.2 and 6.4 MB outputs streamed were 4% to 25% slower.
constexpr int64_t kStreamedPassFloats = int64_t{2} << 20;

// The convolution kernel (compute-bound: its output trickles out over the whole call) streams
// outputs of at least 2 MiB: with the norm that reads them, a strided input gradient of 25.7
// MB 13%, 12.8 MB 7%, a 6.4 MB forward or input gradient 2% to 6%, 3.2 MB ones 2% faster;
// 1.6 MB: no difference.
constexpr int64_t kStreamedConvFloats = int64_t{1} << 19;

// Stores 16 floats at p: non-temporally where `stream` and p starts a 64-byte line (a whole
// line), else as usual. Compiled for AVX-512F, it inlines into the kernels' AVX-512 code.
__attribute__((target("avx512f"))) inline void store_line(float* p, __m512 v, bool stream) {
  if (stream && (reinterpret_cast<uintptr_t>(p) & 63) == 0)
    _mm512_stream_ps(p, v);
  else
    _mm512_storeu_ps(p, v);
}

}  // namespace pyconv_mm
