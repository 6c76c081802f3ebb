// A 64-bit fingerprint of tensors' contents, for caches that must notice any change of the
// tensors they were computed from (pyconv_mm/ops/packed_weights.py).
//
// Every call reads every byte: there is no metadata to trust, since writes through
// ``tensor.data`` or numpy leave autograd's version counter alone. The bytes are hashed in
// chunks of 64 KiB, independently (two threads share the chunks) and the chunk hashes are
// combined in order, so the result does not depend on the number of threads.
//
// Within a chunk, each 64-bit word is XORed with a key that depends on its position, then
// its two 32-bit halves are multiplied together and added, with the word's halves swapped
// (which keeps the bits a zero half would cancel), into one of eight accumulators: the
// multiply makes a word's contribution depend non-linearly on both its value and its
// position, so swapped, negated or shifted words change the sum. Accumulators and chunk
// hashes go through a 64-bit finaliser (splitmix64's) before they are combined. The loop has
// no dependence across the eight lanes and compiles to vector code.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kChunkBytes = 64 * 1024;
constexpr int kLanes = 8;
constexpr uint64_t kKeyStep = 0x9E3779B97F4A7C15ull;  // odd: keys of one lane never repeat

inline uint64_t finalise(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t combine(uint64_t hash, uint64_t value) {
  return finalise(hash ^ (value + kKeyStep + (hash << 6) + (hash >> 2)));
}

// The hash of one chunk of ``bytes`` bytes (the last chunk may be short), seeded by its index.
__attribute__((target_clones("avx512f", "avx2", "default")))
uint64_t chunk_hash(const uint8_t* data, int64_t bytes, uint64_t index) {
  uint64_t acc[kLanes];
  uint64_t key[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    acc[j] = 0;
    key[j] = finalise(index * kLanes + j + 1);
  }
  const int64_t stripes = bytes / (kLanes * 8);
  for (int64_t s = 0; s < stripes; ++s) {
    uint64_t words[kLanes];
    std::memcpy(words, data + s * kLanes * 8, sizeof(words));
    for (int j = 0; j < kLanes; ++j) {
      const uint64_t d = words[j] ^ key[j];
      acc[j] += (d & 0xFFFFFFFFull) * (d >> 32) + ((d << 32) | (d >> 32));
      key[j] += kKeyStep;
    }
  }
  uint64_t hash = finalise(static_cast<uint64_t>(bytes) ^ (index << 20));
  for (int j = 0; j < kLanes; ++j) hash = combine(hash, finalise(acc[j]));
  for (int64_t i = stripes * kLanes * 8; i < bytes; ++i) hash = combine(hash, data[i]);
  return hash;
}

uint64_t bytes_hash(const uint8_t* data, int64_t bytes) {
  const int64_t chunks = (bytes + kChunkBytes - 1) / kChunkBytes;
  std::vector<uint64_t> hashes(static_cast<size_t>(chunks));
  // small tensors (a norm's statistics) in the calling thread
  const int64_t grain = bytes < 4 * kChunkBytes ? chunks + 1 : 1;
  at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t start = c * kChunkBytes;
      hashes[c] = chunk_hash(data + start, std::min(kChunkBytes, bytes - start),
                             static_cast<uint64_t>(c));
    }
  });
  uint64_t hash = finalise(static_cast<uint64_t>(bytes));
  for (uint64_t h : hashes) hash = combine(hash, h);
  return hash;
}

}  // namespace

// The fingerprint of ``tensors`` (None entries allowed): each one's dtype, sizes, strides and
// bytes, in order. Tensors that are not dense in memory are hashed as a contiguous copy.
int64_t fingerprint(const std::vector<c10::optional<torch::Tensor>>& tensors) {
  uint64_t hash = finalise(tensors.size());
  for (const auto& maybe : tensors) {
    if (!maybe.has_value() || !maybe->defined()) {
      hash = combine(hash, 0x6E6F6E65ull);  // "none"
      continue;
    }
    const torch::Tensor& given = *maybe;
    TORCH_CHECK(given.device().is_cpu(), "fingerprint: tensors must be on the CPU, got ",
                given.device());
    hash = combine(hash, static_cast<uint64_t>(given.scalar_type()) + 1);
    for (int64_t d = 0; d < given.dim(); ++d) {
      hash = combine(hash, static_cast<uint64_t>(given.size(d)));
      hash = combine(hash, static_cast<uint64_t>(given.stride(d)));
    }
    const torch::Tensor dense =
        given.is_non_overlapping_and_dense() ? given : given.contiguous();
    // a dense tensor's elements fill [data_ptr, data_ptr + numel * itemsize) in some order
    hash = combine(hash, bytes_hash(static_cast<const uint8_t*>(dense.data_ptr()),
                                    dense.numel() * dense.element_size()));
  }
  return static_cast<int64_t>(hash);
}
