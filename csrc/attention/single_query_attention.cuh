// Decode attention of one new token per sequence over a FasterTransformer KV cache
// (llm-awq / FasterTransformer `single_query_attention`, shared/spec/awq-interface.md §3.7),
// split over the cache ("flash-decoding").
//
// Cache layouts (x = 16 bytes / sizeof(T): 4 for fp32, 8 for fp16 and bf16):
//   K cache [B, Hkv, Dh/x, L, x]: the key of position slot `p`, elements d..d+x-1 (d a multiple of
//     x), is one 16-byte "slab" at [b, hk, d/x, p, :]. Consecutive slots of one slab are
//     contiguous, so the kernel gives consecutive positions to consecutive lanes: each warp-wide
//     16-byte load reads 512 contiguous bytes.
//   V cache [B, Hkv, L, Dh]: one row of Dh elements per slot; a row is read by Dh/x lanes, 16 bytes
//     each.
// Position j (0-based, absolute) lives in slot j % L (a circular buffer once the sequence is longer
// than L). The new token's position is t (= the number of tokens before it); it attends to the
// window [max(0, t+1-L), t], where position t is the new token itself, taken from `k`/`v`.
//
// Work split: one CTA per (split of the window, group of up to G_MAX query heads, KV head, batch).
// The query heads that share a KV head (GQA/MQA) are processed by the same CTA, so each KV byte is
// read from DRAM once when H/Hkv <= G_MAX (more query heads per KV head use several head groups, whose
// CTAs are launched side by side so the repeated reads mostly hit L2). The host sizes the splits so
// that the grid fills the GPU in as few waves as it can (one, wherever B x Hkv allows it), however
// long the window: a split is processed in chunks of up to kScoreCapacity / G_MAX positions (the
// scores that fit in shared memory), with an online softmax across its chunks. Each CTA:
//   1. rotates q (and, in the split that holds position t, the new key) in fp32 with accurate
//      sin/cos, rounds them to T like the cache stores them; that CTA of head group 0 writes the
//      new K and V into slot t % L (one writer per KV head; no CTA reads that slot, since the
//      window's other positions occupy the other L-1 slots);
//   then for each chunk of its split:
//   2. scores the chunk's positions for all its heads into shared memory,
//   3. takes the running maximum m over the split so far, rescales the running sum and the
//      accumulators by e^(m_old - m), turns the scores into exp(s - m) and adds their sum,
//   4. accumulates P·V in fp32;
//   5. writes (max, sum, unnormalised output) per head for the combine kernel, or, when the whole
//      window is one split, the final output directly.
// The combine kernel merges splits exactly as one softmax over the window:
//   out = Σ_c e^(m_c - m) acc_c / (Σ_c e^(m_c - m) l_c + 1e-6),  m = max_c m_c
// which is the spec's p = exp(s - max) / (Σ exp(s - max) + 1e-6) applied to V.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/cuda_utils.cuh"

namespace awq {
namespace attention {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kScoreCapacity = 8192;  // floats of shared memory for one chunk's scores: positions x G_MAX
constexpr int kMaxRotaryPairs = 128;  // rotary_embedding_dim / 2 <= Dh / 2 <= 128
struct Params {
  const void* q;  // [B, H, Dh], batch stride q_batch_stride, head stride Dh
  const void* k;  // [B, Hkv, Dh], new key (before rotary)
  const void* v;  // [B, Hkv, Dh], new value
  void* k_cache;  // [B, Hkv, Dh/x, L, x]
  void* v_cache;  // [B, Hkv, L, Dh]
  void* out;      // [B, H, Dh] contiguous
  float* partial_out;     // [B, H, splits, Dh]: unnormalised P·V per split (split mode only)
  float2* partial_stats;  // [B, H, splits]: (max score, Σ exp(score - max)) per split
  const int* length_per_sample;  // [B] or null
  const float* alibi_slopes;     // [H] or null
  int64_t q_batch_stride, k_batch_stride, v_batch_stride;
  int timestep;
  int num_heads, num_kv_heads, head_dim, cache_len;
  int head_groups;  // ceil((H / Hkv) / G_MAX)
  int split_size;   // positions per CTA
  int num_splits;   // CTAs per (head group, KV head, batch) along the window
  int rotary_dim;
  double rotary_base, rotary_scale;  // the angle is computed in double (accurate at long contexts)
  bool neox_rotary;
  float inv_sqrt_dh;
};

// Position of the new token for batch entry b; negative values (only possible through
// length_per_sample) produce NaN outputs and leave the caches untouched.
__device__ __forceinline__ int new_token_position(const Params& p, int b) {
  return p.length_per_sample != nullptr ? p.length_per_sample[b] : p.timestep;
}

// First position of the window, max(0, t + 1 - L), computed without overflow.
__device__ __forceinline__ int window_start(int t, int cache_len) {
  const int64_t first = static_cast<int64_t>(t) + 1 - cache_len;
  return first > 0 ? static_cast<int>(first) : 0;
}

template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

// Rotates `count` vectors of pairs in place (fp32 math, results rounded to T). Element d of
// vector n is at vec[d * stride + n]. NeoX pairs (i, i + rot/2); GPT-J pairs (2i, 2i + 1).
template <typename T>
__device__ void rotate_in_place(float* vec, int stride, int count, const Params& p, const float* cos_table,
                                const float* sin_table) {
  const int half_rot = p.rotary_dim / 2;
  for (int idx = threadIdx.x; idx < count * half_rot; idx += kThreads) {
    const int n = idx / half_rot;
    const int i = idx % half_rot;
    const int d0 = p.neox_rotary ? i : 2 * i;
    const int d1 = p.neox_rotary ? i + half_rot : 2 * i + 1;
    const float a = vec[d0 * stride + n];
    const float b = vec[d1 * stride + n];
    vec[d0 * stride + n] = round_to<T>(a * cos_table[i] - b * sin_table[i]);
    vec[d1 * stride + n] = round_to<T>(b * cos_table[i] + a * sin_table[i]);
  }
}

// Shared memory of a CTA (both kernels), one struct so the steps below can be shared.
template <int DH_MAX, int G_MAX>
struct ChunkShared {
  __align__(16) float q[DH_MAX * G_MAX];     // [d][head], rotated
  __align__(16) float scores[kScoreCapacity];  // [position][head]; later the reduction buffer
  __align__(16) float new_k[DH_MAX];
  __align__(16) float new_v[DH_MAX];
  float cos_table[kMaxRotaryPairs], sin_table[kMaxRotaryPairs];
  float warp_stats[kWarps][G_MAX];
  float head_max[G_MAX], head_sum[G_MAX];  // running over the split's chunks so far
  float head_scale[G_MAX];                 // e^(previous max - head_max): the accumulators' rescale
  float head_slope[G_MAX];
  static_assert(kWarps * DH_MAX <= kScoreCapacity, "reduction buffer must fit in the score buffer");
  static_assert(G_MAX <= kWarps, "one warp scores the new token per head");
};

// The positions of one chunk of a split: [begin, end), of which the first num_cached come from the
// cache; the chunk that ends at t + 1 (the split's last) also holds the new token.
struct Chunk {
  int begin, end;   // absolute positions
  int num_cached;   // positions read from the cache: [begin, begin + num_cached)
  bool has_new;     // the chunk holds position t (at local index num_cached)
  int first_slot;   // slot of `begin`

  __device__ int slot_of(int local, int cache_len) const {  // slot of position begin + local (local < L)
    const int s = first_slot + local;
    return s >= cache_len ? s - cache_len : s;
  }
};

// Where a CTA works: its heads, its split of the window and its KV head's caches.
template <typename T>
struct SplitInfo {
  int split, head_group, kv_head, b;
  int first_head;  // absolute index of local head 0
  int heads_here;  // query heads of this CTA (<= G_MAX)
  int t;           // position of the new token
  int begin, end;  // absolute positions [begin, end)
  bool has_new;    // the split holds position t (in its last chunk)
  T* k_cache;      // this (b, KV head)'s [Dh/x, L, x]
  T* v_cache;      // this (b, KV head)'s [L, Dh]

  // Chunks of up to `capacity` positions, in order.
  __device__ int num_chunks(int capacity) const { return (end - begin + capacity - 1) / capacity; }
  __device__ Chunk chunk(int index, int capacity, int cache_len) const {
    Chunk c;
    c.begin = begin + index * capacity;
    c.end = min(end, c.begin + capacity);
    c.has_new = has_new && c.end == end;
    c.num_cached = c.end - c.begin - (c.has_new ? 1 : 0);
    c.first_slot = c.begin % cache_len;
    return c;
  }
};

// Fills `s` for this CTA. Returns false when the CTA has nothing to do (the whole CTA returns): a
// sequence with a negative position (NaN output, written here in direct mode and by the combine
// kernel in split mode) or a split past its sequence's window.
template <typename T, int G_MAX>
__device__ bool split_info(const Params& p, SplitInfo<T>& s) {
  s.split = blockIdx.x / p.head_groups;
  s.head_group = blockIdx.x % p.head_groups;
  s.kv_head = blockIdx.y;
  s.b = blockIdx.z;
  const int group_size = p.num_heads / p.num_kv_heads;
  s.first_head = s.kv_head * group_size + s.head_group * G_MAX;
  s.heads_here = min(G_MAX, group_size - s.head_group * G_MAX);
  const int Dh = p.head_dim;
  s.t = new_token_position(p, s.b);
  if (s.t < 0) {
    if (p.num_splits == 1 && threadIdx.x < kThreads) {
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(s.b) * p.num_heads + s.first_head) * Dh;
      for (int i = threadIdx.x; i < s.heads_here * Dh; i += kThreads) out[i] = from_float<T>(NAN);
    }
    return false;
  }
  const int64_t begin64 = window_start(s.t, p.cache_len) + static_cast<int64_t>(s.split) * p.split_size;
  if (begin64 > s.t) return false;  // past this sequence's window (length_per_sample below the maximum)
  s.begin = static_cast<int>(begin64);
  s.end = static_cast<int>(min(static_cast<int64_t>(s.t) + 1, begin64 + p.split_size));
  s.has_new = s.end == s.t + 1;
  const int64_t kv_offset = (static_cast<int64_t>(s.b) * p.num_kv_heads + s.kv_head) * p.cache_len * Dh;
  s.k_cache = static_cast<T*>(p.k_cache) + kv_offset;
  s.v_cache = static_cast<T*>(p.v_cache) + kv_offset;
  return true;
}

// Step 1 (threads 0..kThreads-1; `sync` is a barrier over exactly them): q, the new key and value,
// rotated, into shared memory; ALiBi slopes; the running softmax statistics reset; the split holding
// t of head group 0 writes the new K and V into slot t % L. Ends with a barrier: everything written
// here is visible.
template <typename T, int DH_MAX, int G_MAX, typename Sync>
__device__ void load_query_and_new_token(const Params& p, const SplitInfo<T>& c, ChunkShared<DH_MAX, G_MAX>& sh,
                                         Sync sync) {
  constexpr int X = 16 / sizeof(T);
  const int tid = threadIdx.x;
  const int Dh = p.head_dim;
  const T* q = static_cast<const T*>(p.q) + c.b * p.q_batch_stride + static_cast<int64_t>(c.first_head) * Dh;
  for (int i = tid; i < G_MAX * Dh; i += kThreads) {
    const int h = i / Dh, d = i % Dh;
    sh.q[d * G_MAX + h] = h < c.heads_here ? to_float(q[i]) : 0.f;
  }
  if (tid < G_MAX) {
    sh.head_slope[tid] = p.alibi_slopes != nullptr && tid < c.heads_here ? p.alibi_slopes[c.first_head + tid] : 0.f;
    sh.head_max[tid] = -INFINITY;
    sh.head_sum[tid] = 0.f;
  }
  if (c.has_new) {
    const T* k = static_cast<const T*>(p.k) + c.b * p.k_batch_stride + static_cast<int64_t>(c.kv_head) * Dh;
    const T* v = static_cast<const T*>(p.v) + c.b * p.v_batch_stride + static_cast<int64_t>(c.kv_head) * Dh;
    for (int d = tid; d < Dh; d += kThreads) {
      sh.new_k[d] = to_float(k[d]);
      sh.new_v[d] = to_float(v[d]);
    }
  }
  if (p.rotary_dim > 0) {
    for (int i = tid; i < p.rotary_dim / 2; i += kThreads) {
      // Accurate angle: the position times base^(-2i/rot), in double, then reduced by sincos.
      const double inv_freq = pow(p.rotary_base, -2.0 * i / p.rotary_dim);
      double s, co;
      sincos(static_cast<double>(c.t) * p.rotary_scale * inv_freq, &s, &co);
      sh.cos_table[i] = static_cast<float>(co);
      sh.sin_table[i] = static_cast<float>(s);
    }
    sync();
    rotate_in_place<T>(sh.q, G_MAX, G_MAX, p, sh.cos_table, sh.sin_table);
    if (c.has_new) rotate_in_place<T>(sh.new_k, 1, 1, p, sh.cos_table, sh.sin_table);
  }
  sync();
  if (c.has_new && c.head_group == 0) {
    const int slot = c.t % p.cache_len;
    const int64_t slab_stride = static_cast<int64_t>(p.cache_len) * X;
    for (int d = tid; d < Dh; d += kThreads) {
      c.k_cache[(d / X) * slab_stride + static_cast<int64_t>(slot) * X + d % X] = from_float<T>(sh.new_k[d]);
      c.v_cache[static_cast<int64_t>(slot) * Dh + d] = from_float<T>(sh.new_v[d]);
    }
  }
}

// The new token's score per head (warps 0..G_MAX-1, one head each, from shared memory), stored after
// the cached positions' scores; returns it (meaningful in lane 0.. of warp h < G_MAX).
template <int DH_MAX, int G_MAX>
__device__ float score_new_token(const Params& p, int num_cached, ChunkShared<DH_MAX, G_MAX>& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float dot = 0.f;
  for (int d = lane; d < p.head_dim; d += 32) dot += sh.q[d * G_MAX + warp] * sh.new_k[d];
  dot = warp_sum(dot) * p.inv_sqrt_dh;  // ALiBi adds slope * (t - t) = 0
  if (lane == 0) sh.scores[num_cached * G_MAX + warp] = dot;
  return dot;
}

// Step 3: the chunk's maximum per head (from each thread's per-head maxima) folded into the running
// maximum head_max, head_scale = e^(previous maximum - head_max) (0 for a split's first chunk), then
// exp(s - head_max) in place; the running head_sum (rescaled, plus this chunk's sum) is visible
// after the next `sync`, the probabilities and head_scale on return.
template <int DH_MAX, int G_MAX, typename Sync>
__device__ void chunk_softmax(int num_scores, const float (&thread_max)[G_MAX], ChunkShared<DH_MAX, G_MAX>& sh,
                              Sync sync) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
#pragma unroll
  for (int h = 0; h < G_MAX; ++h) {
    const float m = warp_max(thread_max[h]);
    if (lane == 0) sh.warp_stats[warp][h] = m;
  }
  sync();
  if (tid < G_MAX) {
    float m = sh.head_max[tid];
    const float previous = m;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, sh.warp_stats[w][tid]);
    sh.head_max[tid] = m;
    sh.head_scale[tid] = expf(previous - m);
  }
  sync();
  float thread_sum = 0.f;  // for head tid % G_MAX (kThreads is a multiple of G_MAX)
  for (int i = tid; i < num_scores; i += kThreads) {
    const float e = expf(sh.scores[i] - sh.head_max[i % G_MAX]);
    sh.scores[i] = e;
    thread_sum += e;
  }
#pragma unroll
  for (int offset = 16; offset >= G_MAX; offset >>= 1) thread_sum += __shfl_xor_sync(0xffffffffu, thread_sum, offset);
  if (lane < G_MAX) sh.warp_stats[warp][lane] = thread_sum;
  sync();
  if (tid < G_MAX) {
    float l = 0.f;
    for (int w = 0; w < kWarps; ++w) l += sh.warp_stats[w][tid];
    sh.head_sum[tid] = sh.head_sum[tid] * sh.head_scale[tid] + l;
  }
}

// The P·V thread layout (both kernels): kRowThreads threads per V row, each owning kSlabsPerThread
// 16-byte pieces of it (piece row_lane + c * kRowThreads), fp32 accumulators acc[head][c][element].
template <typename T, int DH_MAX>
struct RowLayout {
  static constexpr int X = 16 / sizeof(T);
  static constexpr int kMaxSlabs = DH_MAX / X;
  static constexpr int kRowThreads = kMaxSlabs < 32 ? kMaxSlabs : 32;
  static constexpr int kSlabsPerThread = kMaxSlabs / kRowThreads;
  static constexpr int kRowsPerPass = kThreads / kRowThreads;
};

// The new token's value row, weighted by its probabilities, into the accumulators of row group 0
// (in the chunk that holds it).
template <typename T, int DH_MAX, int G_MAX>
__device__ void add_new_value(const Params& p, const Chunk& c, const ChunkShared<DH_MAX, G_MAX>& sh,
                              float (&acc)[G_MAX][RowLayout<T, DH_MAX>::kSlabsPerThread][16 / sizeof(T)]) {
  using RL = RowLayout<T, DH_MAX>;
  if (!c.has_new || threadIdx.x / RL::kRowThreads != 0) return;
  const int row_lane = threadIdx.x % RL::kRowThreads;
#pragma unroll
  for (int s = 0; s < RL::kSlabsPerThread; ++s) {
    const int slab = row_lane + s * RL::kRowThreads;
    if (slab < p.head_dim / RL::X) {
#pragma unroll
      for (int e = 0; e < RL::X; ++e) {
#pragma unroll
        for (int h = 0; h < G_MAX; ++h) acc[h][s][e] += sh.scores[c.num_cached * G_MAX + h] * sh.new_v[slab * RL::X + e];
      }
    }
  }
}

// Step 5, first half: sums the row groups' accumulators (within a warp by shuffles, across warps
// through shared memory, reusing the score buffer, one head at a time) and hands each total to
// consume(h, d, total) for heads h < heads_here, elements d < head_dim; thread tid gets the elements
// d = tid + k * kThreads of every head. Starts with a barrier (the probabilities have been read);
// the score buffer may be written again after the next barrier.
template <typename T, int DH_MAX, int G_MAX, typename Sync, typename Consume>
__device__ void reduce_accumulators(int head_dim, int heads_here, ChunkShared<DH_MAX, G_MAX>& sh,
                                    float (&acc)[G_MAX][RowLayout<T, DH_MAX>::kSlabsPerThread][16 / sizeof(T)],
                                    Sync sync, Consume consume) {
  using RL = RowLayout<T, DH_MAX>;
  constexpr int X = RL::X;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int num_slabs = head_dim / X;
#pragma unroll
  for (int offset = RL::kRowThreads; offset < 32; offset <<= 1)
#pragma unroll
    for (int h = 0; h < G_MAX; ++h)
#pragma unroll
      for (int s = 0; s < RL::kSlabsPerThread; ++s)
#pragma unroll
        for (int e = 0; e < X; ++e) acc[h][s][e] += __shfl_xor_sync(0xffffffffu, acc[h][s][e], offset);
  float* reduce = sh.scores;  // [warp][DH_MAX]
#pragma unroll
  for (int h = 0; h < G_MAX; ++h) {
    sync();  // the probabilities (h == 0) or the previous head's sums have been read
    if (lane < RL::kRowThreads) {
#pragma unroll
      for (int s = 0; s < RL::kSlabsPerThread; ++s) {
        const int slab = lane + s * RL::kRowThreads;
        if (slab < num_slabs) {
#pragma unroll
          for (int e = 0; e < X; ++e) reduce[warp * DH_MAX + slab * X + e] = acc[h][s][e];
        }
      }
    }
    sync();
    if (h < heads_here) {
      for (int d = tid; d < head_dim; d += kThreads) {
        float total = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) total += reduce[w * DH_MAX + d];
        consume(h, d, total);
      }
    }
  }
}

// Step 5, second half: element d of head h's unnormalised P·V over the split, `total`, becomes the
// output (one split) or the split's partial for the combine kernel.
template <typename T, int DH_MAX, int G_MAX>
__device__ void store_split_result(const Params& p, const SplitInfo<T>& s, const ChunkShared<DH_MAX, G_MAX>& sh,
                                   int h, int d, float total) {
  const int64_t row = static_cast<int64_t>(s.b) * p.num_heads + s.first_head + h;  // row of [B*H]
  if (p.num_splits == 1) {
    static_cast<T*>(p.out)[row * p.head_dim + d] = from_float<T>(total / (sh.head_sum[h] + 1e-6f));
  } else {
    p.partial_out[(row * p.num_splits + s.split) * p.head_dim + d] = total;
  }
}

// ... and the split's (max, sum) per head for the combine kernel (split mode; visible head_sum).
template <typename T, int DH_MAX, int G_MAX>
__device__ void store_split_stats(const Params& p, const SplitInfo<T>& s, const ChunkShared<DH_MAX, G_MAX>& sh) {
  if (p.num_splits == 1 || threadIdx.x != 0) return;
  for (int h = 0; h < s.heads_here; ++h) {
    const int64_t row = static_cast<int64_t>(s.b) * p.num_heads + s.first_head + h;
    p.partial_stats[row * p.num_splits + s.split] = make_float2(sh.head_max[h], sh.head_sum[h]);
  }
}

struct BlockSync {
  __device__ void operator()() const { __syncthreads(); }
};

// The kernel for every architecture: loads from global memory into registers, in batches.
template <typename T, int DH_MAX, int G_MAX>
__global__ void __launch_bounds__(kThreads, 2) single_query_attention_split_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The combine kernel may be scheduled once every CTA of this grid has started; it waits for this
  // grid to finish before reading anything (griddepcontrol.wait), so it only skips the launch gap.
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  using RL = RowLayout<T, DH_MAX>;
  constexpr int X = RL::X;                    // elements per 16-byte slab
  constexpr int kMaxSlabs = RL::kMaxSlabs;    // 16-byte pieces of a head
  constexpr int kSlabBatch = 8;               // K loads in flight per thread before use
  constexpr int kRowThreads = RL::kRowThreads;
  constexpr int kSlabsPerThread = RL::kSlabsPerThread;
  constexpr int kRowsPerPass = RL::kRowsPerPass;
  // V rows in flight per thread (fewer with 8 heads, whose 64 accumulators would otherwise spill).
  constexpr int kRowBatch = (G_MAX >= 8 ? 4 : 8) / kSlabsPerThread;
  using Slab = Vec<T, X>;

  __shared__ ChunkShared<DH_MAX, G_MAX> sh;
  SplitInfo<T> split;
  if (!split_info<T, G_MAX>(p, split)) return;
  const int tid = threadIdx.x, warp = tid / 32;
  const int Dh = p.head_dim;
  const int L = p.cache_len;
  // One chunk: the host keeps this kernel's splits within the score buffer.
  const Chunk c = split.chunk(0, kScoreCapacity / G_MAX, L);
  const int num_cached = c.num_cached;
  const int64_t slab_stride = static_cast<int64_t>(L) * X;
  const int num_slabs = Dh / X;

  // 1. q, the new key and value, rotated; the new K/V stored.
  load_query_and_new_token<T>(p, split, sh, BlockSync{});

  // 2. Scores of the cached positions: one position per thread, its slabs loaded in batches.
  float thread_max[G_MAX], slope[G_MAX];
#pragma unroll
  for (int h = 0; h < G_MAX; ++h) {
    thread_max[h] = -INFINITY;
    slope[h] = sh.head_slope[h];
  }
  for (int base = 0; base < num_cached; base += kThreads) {
    const int local = base + tid;
    if (local >= num_cached) break;
    const T* key = split.k_cache + static_cast<int64_t>(c.slot_of(local, L)) * X;
    float dot[G_MAX];
#pragma unroll
    for (int h = 0; h < G_MAX; ++h) dot[h] = 0.f;
#pragma unroll
    for (int s0 = 0; s0 < kMaxSlabs; s0 += kSlabBatch) {
      if (s0 < num_slabs) {
        Slab slabs[kSlabBatch];
#pragma unroll
        for (int i = 0; i < kSlabBatch; ++i) {
          if (s0 + i < num_slabs) slabs[i] = *reinterpret_cast<const Slab*>(key + (s0 + i) * slab_stride);
        }
#pragma unroll
        for (int i = 0; i < kSlabBatch; ++i) {
          if (s0 + i < num_slabs) {
#pragma unroll
            for (int e = 0; e < X; ++e) {
              const float kf = to_float(slabs[i].v[e]);
#pragma unroll
              for (int h = 0; h < G_MAX; ++h) dot[h] += sh.q[((s0 + i) * X + e) * G_MAX + h] * kf;
            }
          }
        }
      }
    }
    const int position = c.begin + local;
#pragma unroll
    for (int h = 0; h < G_MAX; ++h) {
      const float s = dot[h] * p.inv_sqrt_dh + slope[h] * static_cast<float>(position - split.t);
      sh.scores[local * G_MAX + h] = s;
      thread_max[h] = fmaxf(thread_max[h], s);
    }
  }
  if (c.has_new && warp < G_MAX) {
    const float dot = score_new_token(p, num_cached, sh);
#pragma unroll
    for (int h = 0; h < G_MAX; ++h) {  // compile-time indices keep thread_max in registers
      if (h == warp) thread_max[h] = fmaxf(thread_max[h], dot);
    }
  }

  // The first V rows are requested before the softmax step: they need no probabilities, so they
  // are in flight during it instead of after it.
  const int row_lane = tid % kRowThreads;
  const int row_group = tid / kRowThreads;
  Slab rows[kRowBatch][kSlabsPerThread];
  auto load_rows = [&](int base) {
#pragma unroll
    for (int r = 0; r < kRowBatch; ++r) {
      const int local = base + row_group + r * kRowsPerPass;
      if (local < num_cached) {
        const T* row = split.v_cache + static_cast<int64_t>(c.slot_of(local, L)) * Dh;
#pragma unroll
        for (int s = 0; s < kSlabsPerThread; ++s) {
          const int slab = row_lane + s * kRowThreads;
          if (slab < num_slabs) rows[r][s] = *reinterpret_cast<const Slab*>(row + slab * X);
        }
      }
    }
  };
  load_rows(0);

  // 3. Softmax over the chunk.
  chunk_softmax((c.end - c.begin) * G_MAX, thread_max, sh, BlockSync{});

  // 4. P·V.
  float acc[G_MAX][kSlabsPerThread][X];
#pragma unroll
  for (int h = 0; h < G_MAX; ++h)
#pragma unroll
    for (int s = 0; s < kSlabsPerThread; ++s)
#pragma unroll
      for (int e = 0; e < X; ++e) acc[h][s][e] = 0.f;
  constexpr int kRowsPerIteration = kRowsPerPass * kRowBatch;
  for (int base = 0; base < num_cached; base += kRowsPerIteration) {
    if (base > 0) load_rows(base);
    const int row0 = base + row_group;
#pragma unroll
    for (int r = 0; r < kRowBatch; ++r) {
      const int local = row0 + r * kRowsPerPass;
      if (local < num_cached) {
        float prob[G_MAX];
#pragma unroll
        for (int h = 0; h < G_MAX; ++h) prob[h] = sh.scores[local * G_MAX + h];
#pragma unroll
        for (int s = 0; s < kSlabsPerThread; ++s) {
          if (row_lane + s * kRowThreads < num_slabs) {
#pragma unroll
            for (int e = 0; e < X; ++e) {
              const float vf = to_float(rows[r][s].v[e]);
#pragma unroll
              for (int h = 0; h < G_MAX; ++h) acc[h][s][e] += prob[h] * vf;
            }
          }
        }
      }
    }
  }
  add_new_value<T>(p, c, sh, acc);

  // 5. Output or partial.
  reduce_accumulators<T>(p.head_dim, split.heads_here, sh, acc, BlockSync{},
                         [&](int h, int d, float total) { store_split_result(p, split, sh, h, d, total); });
  store_split_stats(p, split, sh);
}

// Merges the splits of one (head, batch) entry: grid (H, B). Warps take splits, lanes take four
// consecutive output elements (up to two groups of four per lane for Dh <= 256).
template <typename T>
__global__ void __launch_bounds__(kThreads) single_query_attention_combine_kernel(const Params p) {
  constexpr int kQuadsPerLane = 2;
  __shared__ __align__(16) float4 reduce[kWarps][32 * kQuadsPerLane];
  __shared__ float warp_values[kWarps];
  const int h = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched with programmatic stream serialisation: wait until the chunk kernel has finished and
  // its partials are visible (a no-op when launched the ordinary way).
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int Dh = p.head_dim;
  const int64_t row = static_cast<int64_t>(b) * p.num_heads + h;
  T* out = static_cast<T*>(p.out) + row * Dh;

  const int t = new_token_position(p, b);
  if (t < 0) {
    for (int d = tid; d < Dh; d += kThreads) out[d] = from_float<T>(NAN);
    return;
  }
  const int window = t + 1 - window_start(t, p.cache_len);
  const int splits = (window + p.split_size - 1) / p.split_size;  // the non-empty ones
  const float2* stats = p.partial_stats + row * p.num_splits;
  const float* partial = p.partial_out + row * p.num_splits * Dh;

  float m = -INFINITY;
  for (int c = tid; c < splits; c += kThreads) m = fmaxf(m, stats[c].x);
  m = warp_max(m);
  if (lane == 0) warp_values[warp] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_values[w]);
  __syncthreads();  // warp_values is reused for the denominators

  const int quads = Dh / 4;
  float4 num[kQuadsPerLane];
#pragma unroll
  for (int i = 0; i < kQuadsPerLane; ++i) num[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  float den = 0.f;
#pragma unroll 4  // independent loads of four splits in flight per warp
  for (int c = warp; c < splits; c += kWarps) {
    const float2 st = stats[c];
    const float w = expf(st.x - m);
    den += w * st.y;
    const float4* src = reinterpret_cast<const float4*>(partial + static_cast<int64_t>(c) * Dh);
#pragma unroll
    for (int i = 0; i < kQuadsPerLane; ++i) {
      const int q = lane + 32 * i;
      if (q < quads) {
        const float4 a = src[q];
        num[i].x += w * a.x;
        num[i].y += w * a.y;
        num[i].z += w * a.z;
        num[i].w += w * a.w;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kQuadsPerLane; ++i) reduce[warp][lane + 32 * i] = num[i];
  if (lane == 0) warp_values[warp] = den;
  __syncthreads();
  den = 0.f;
  for (int w = 0; w < kWarps; ++w) den += warp_values[w];
  const float scale = 1.f / (den + 1e-6f);
  for (int q = tid; q < quads; q += kThreads) {
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int w = 0; w < kWarps; ++w) {
      const float4 a = reduce[w][q];
      s.x += a.x;
      s.y += a.y;
      s.z += a.z;
      s.w += a.w;
    }
    out[4 * q + 0] = from_float<T>(s.x * scale);
    out[4 * q + 1] = from_float<T>(s.y * scale);
    out[4 * q + 2] = from_float<T>(s.z * scale);
    out[4 * q + 3] = from_float<T>(s.w * scale);
  }
}

}  // namespace attention
}  // namespace awq
