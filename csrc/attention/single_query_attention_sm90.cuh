// Hopper kernel of single_query_attention for fp16/bf16 caches: the same work split, steps and
// results as single_query_attention_split_kernel (single_query_attention.cuh, which documents the cache
// layouts and the algorithm), with the K and V bytes brought into a shared-memory ring by the bulk
// copy engine instead of register loads, and the scores computed on tensor cores.
//
// Roles: warps 0..7 (kThreads threads) compute; warp 8 (one thread of it) is the producer. The
// producer streams each chunk's cached positions in tiles of kTile positions, first every K tile,
// then every V tile, chunk after chunk, through kStages ring buffers, each guarded by a "full"
// mbarrier (the copy engine's bytes) and an "empty" mbarrier (one arrival per compute thread once it
// is done with the buffer). It starts at the CTA's entry and runs ahead of the math by up to kStages
// tiles, so a CTA has up to kStages x 16 KB of requests in flight at every phase: during its setup,
// its K -> V changes and its softmaxes (whose V tiles are already arriving), and across its chunks.
//
// Ring buffer layouts (16-byte units):
//   K tile: slab run s (the tile's positions of 16-byte slab s, dims 8s..8s+7, copied from the
//     contiguous run [b, hk, s, slot.., :] of the K cache) at s * kTile. An ldmatrix 8 x 8 matrix
//     (8 consecutive positions of one slab) is 128 contiguous bytes: no bank conflict.
//   V tile: the tile's V rows, Dh elements each, back to back (one contiguous run of the V cache).
// A tile whose slots wrap around the circular cache is copied as two runs per slab (K) or two row
// ranges (V). A tile shorter than kTile (the chunk's last) is copied and read only up to its length.
//
// Scores on tensor cores (mma.sync.m16n8k16, fp32 accumulators; common/mma.cuh): S[pos][h] =
// K[pos][:] . q[h][:] with A = 16 positions x 16 dims of the K tile (ldmatrix), B = q (16 dims x 8
// columns: the CTA's G_MAX query heads, then zeros); warp w takes positions [16w, 16w + 16) of each
// tile (warps past kTile / 16 only wait for the tile and release it). Positions past a short tile's
// end are read as its last position (clamped addresses) and not stored. This replaced a CUDA-core
// score phase (q in registers, a butterfly reduce-scatter over the lanes sharing a position) whose
// instruction count held the kernel below SDPA's speed (csrc/attention/NOTES.md, session 4).
// P.V stays on CUDA cores with the register kernel's row layout (RowLayout): on tensor cores it needs
// V^T fragments (ldmatrix.trans), which conflict 8 ways on V rows stored back to back; a padded row
// stride through per-row bulk copies measured 1.6x slower (NOTES.md).
#pragma once

#include "attention/single_query_attention.cuh"
#include "common/mma.cuh"
#include "common/sm90.cuh"

namespace awq {
namespace attention {

constexpr int kRingThreads = kThreads + 32;  // the compute warps and the producer warp
constexpr int kStages = 4;
constexpr int kTileBytes = 16384;            // K or V bytes of one tile at the template's largest Dh

template <typename T, int DH_MAX>
struct RingLayout {
  static_assert(sizeof(T) == 2, "the ring kernel's scores are fp16/bf16 mma");
  static constexpr int X = 8;                                // elements per 16-byte slab
  static constexpr int kTile = kTileBytes / (DH_MAX * 2);  // positions per tile: 128, 64, 32
  static constexpr int kPositionBlocks = kTile / 16;       // score mma row blocks per tile (one per warp)
  static constexpr int kStageBytes = kTileBytes;           // K runs or V rows at the largest Dh
  static constexpr int kRingBytes = kStages * kStageBytes;
  static_assert(kPositionBlocks <= kWarps && kTile % 16 == 0, "one 16-position block per warp");
  static_assert(kTile % RowLayout<T, DH_MAX>::kRowsPerPass == 0, "V tile must split evenly over the row groups");
};

// Named barrier 1 over the compute warps only (the producer warp never joins a barrier).
struct ComputeSync {
  __device__ void operator()() const { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }
};

// Asks L2 for every 128-byte line of [base, base + bytes) (bytes > 0), spread over the compute threads;
// only addresses inside the range are touched.
__device__ __forceinline__ void prefetch_lines_l2(const void* base, int bytes) {
  const char* bytes_base = static_cast<const char*>(base);
  for (int offset = threadIdx.x * 128; offset < bytes + 127; offset += kThreads * 128) {
    const size_t address = __cvta_generic_to_global(bytes_base + min(offset, bytes - 1));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
  }
}

template <typename T, int DH_MAX, int G_MAX>
__global__ void __launch_bounds__(kRingThreads, 2) single_query_attention_ring_kernel(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the host selects this kernel only on sm_90a builds on CC 9.0
  asm volatile("griddepcontrol.launch_dependents;");  // see single_query_attention_split_kernel
  using RG = RingLayout<T, DH_MAX>;
  using RL = RowLayout<T, DH_MAX>;
  constexpr int X = RG::X;
  constexpr int kTile = RG::kTile;
  constexpr int kMaxKSteps = DH_MAX / 16;  // score mma steps over the head dims
  using Slab = Vec<T, X>;

  __shared__ ChunkShared<DH_MAX, G_MAX> sh;
  __shared__ uint64_t full[kStages], empty[kStages];
  extern __shared__ __align__(128) unsigned char ring[];

  SplitInfo<T> split;
  if (!split_info<T, G_MAX>(p, split)) return;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int Dh = p.head_dim;
  const int L = p.cache_len;
  const int num_slabs = Dh / X;
  constexpr int kChunkCapacity = kScoreCapacity / G_MAX;
  const int num_chunks = split.num_chunks(kChunkCapacity);
  auto tiles_of = [](const Chunk& c) { return (c.num_cached + kTile - 1) / kTile; };

  if (warp < kWarps) {
    // The setup's inputs (step 1) are requested before the producer's first bulk copies (after the
    // barrier below): issued behind them, they would queue behind the whole grid's ring requests (~17
    // MB on 132 SMs, ~5.6 us at copy bandwidth) and hold the math back that long in the first wave.
    prefetch_lines_l2(static_cast<const T*>(p.q) + split.b * p.q_batch_stride + static_cast<int64_t>(split.first_head) * Dh,
                      split.heads_here * Dh * static_cast<int>(sizeof(T)));
    if (split.has_new) {
      const int64_t kv = static_cast<int64_t>(split.kv_head) * Dh;
      prefetch_lines_l2(static_cast<const T*>(p.k) + split.b * p.k_batch_stride + kv, Dh * static_cast<int>(sizeof(T)));
      prefetch_lines_l2(static_cast<const T*>(p.v) + split.b * p.v_batch_stride + kv, Dh * static_cast<int>(sizeof(T)));
    }
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbarrier_init(&full[s], 1);
      // Every compute thread arrives after its own reads of the buffer: an arrive releases only the
      // arriving thread's accesses, so one arrival per warp would leave the other lanes' reads
      // unordered before the producer's next bulk copy into the buffer.
      sm90::mbarrier_init(&empty[s], kThreads);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();  // the only barrier of all kRingThreads threads

  // Ring tile i (counted over the whole split) sits in stage i % kStages, its fill number i / kStages.
  if (warp == kWarps) {  // producer: per chunk, K tile j for j < num_tiles, then V tile j - num_tiles
    if (lane != 0) return;
    int i = 0;
    for (int chunk_index = 0; chunk_index < num_chunks; ++chunk_index) {
      const Chunk c = split.chunk(chunk_index, kChunkCapacity, L);
      const int num_tiles = tiles_of(c);
      for (int j = 0; j < 2 * num_tiles; ++j, ++i) {
        const int stage = i % kStages;
        if (i >= kStages) sm90::mbarrier_wait(&empty[stage], (i / kStages - 1) & 1);
        const bool is_v = j >= num_tiles;
        const int first = (is_v ? j - num_tiles : j) * kTile;  // first local position of the tile
        const int n = min(kTile, c.num_cached - first);
        const int slot = c.slot_of(first, L);
        const int n1 = min(n, L - slot);  // positions before the cache's end; the rest from slot 0
        unsigned char* dst = ring + stage * RG::kStageBytes;
        if (is_v) {
          const uint32_t row_bytes = Dh * sizeof(T);
          sm90::mbarrier_arrive_expect_tx(&full[stage], n * row_bytes);
          sm90::bulk_copy_g2s(dst, split.v_cache + static_cast<int64_t>(slot) * Dh, n1 * row_bytes, &full[stage]);
          if (n1 < n) sm90::bulk_copy_g2s(dst + n1 * row_bytes, split.v_cache, (n - n1) * row_bytes, &full[stage]);
        } else {
          sm90::mbarrier_arrive_expect_tx(&full[stage], num_slabs * n * 16);
          for (int s = 0; s < num_slabs; ++s) {
            const T* run = split.k_cache + static_cast<int64_t>(s) * L * X;
            unsigned char* run_dst = dst + s * kTile * 16;
            sm90::bulk_copy_g2s(run_dst, run + static_cast<int64_t>(slot) * X, n1 * 16, &full[stage]);
            if (n1 < n) sm90::bulk_copy_g2s(run_dst + n1 * 16, run, (n - n1) * 16, &full[stage]);
          }
        }
      }
    }
    return;
  }

  // 1. q, the new key and value, rotated; the new K/V stored (while the first tiles arrive).
  load_query_and_new_token<T>(p, split, sh, ComputeSync{});

  // Fragment coordinates (common/mma.cuh): g = lane / 4, quad = lane % 4.
  const int g = lane / 4, quad = lane % 4;
  const int num_k_steps = Dh / 16;
  // P·V: kRowThreads lanes per V row (RowLayout).
  const int row_lane = tid % RL::kRowThreads;
  const int row_group = tid / RL::kRowThreads;

  // P.V accumulators for the whole split, rescaled at each chunk to its running maximum (the score
  // phase's few registers leave room for them).
  float acc[G_MAX][RL::kSlabsPerThread][X];
#pragma unroll
  for (int h = 0; h < G_MAX; ++h)
#pragma unroll
    for (int s = 0; s < RL::kSlabsPerThread; ++s)
#pragma unroll
      for (int e = 0; e < X; ++e) acc[h][s][e] = 0.f;

  int ring_first = 0;  // ring index of the chunk's first K tile
  for (int chunk_index = 0; chunk_index < num_chunks; ++chunk_index) {
    const Chunk c = split.chunk(chunk_index, kChunkCapacity, L);
    const int num_cached = c.num_cached;
    const int num_tiles = tiles_of(c);
    if (chunk_index > 0) ComputeSync{}();  // the previous chunk's probabilities have been read

    // 2. Scores. q as B fragments (B[dim][head] = q[head][dim], heads >= G_MAX zero), loaded per
    // chunk so that they are not live during P.V.
    uint32_t q_frag[kMaxKSteps][2];
#pragma unroll
    for (int ks = 0; ks < kMaxKSteps; ++ks) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int d = ks * 16 + half * 8 + 2 * quad;
        const bool used = g < G_MAX && ks < num_k_steps;
        q_frag[ks][half] = used ? pack2<T>(sh.q[d * G_MAX + g], sh.q[(d + 1) * G_MAX + g]) : 0u;
      }
    }
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int i = ring_first + tile;
      const int stage = i % kStages;
      const int first = tile * kTile;
      const int n = min(kTile, num_cached - first);
      sm90::mbarrier_wait(&full[stage], (i / kStages) & 1);
      if (warp < RG::kPositionBlocks && warp * 16 < n) {
        const unsigned char* k_tile = ring + stage * RG::kStageBytes;
        // Lane l addresses row l % 8 of matrix l / 8: positions +8 for matrices 1 and 3, the next
        // slab for matrices 2 and 3.
        const int row = min(warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, n - 1);
        const unsigned char* lane_row = k_tile + ((lane >> 4) * kTile + row) * 16;
        float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int ks = 0; ks < kMaxKSteps; ++ks) {
          if (ks < num_k_steps) {
            uint32_t a[4];
            ldmatrix_x4(a, lane_row + ks * 2 * kTile * 16);
            mma_16816<T>(s, a, q_frag[ks]);
          }
        }
        // s[0..1]: position 16w + g, heads 2 quad, 2 quad + 1; s[2..3]: position + 8.
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = 2 * quad + (e & 1);
          const int pos = warp * 16 + g + (e >> 1) * 8;
          if (h < G_MAX && pos < n) {
            const int local = first + pos;
            sh.scores[local * G_MAX + h] =
                s[e] * p.inv_sqrt_dh + sh.head_slope[h] * static_cast<float>(c.begin + local - split.t);
          }
        }
      }
      sm90::mbarrier_arrive(&empty[stage]);  // this thread is done with the buffer (see the init)
    }
    if (c.has_new && warp < G_MAX) score_new_token(p, num_cached, sh);
    ComputeSync{}();  // every score is stored

    // 3. Softmax: per-thread maxima of the stored scores (head tid % G_MAX), then as the other kernel.
    const int num_scores = (c.end - c.begin) * G_MAX;
    float m = -INFINITY;
    for (int s = tid; s < num_scores; s += kThreads) m = fmaxf(m, sh.scores[s]);
    float thread_max[G_MAX];
#pragma unroll
    for (int h = 0; h < G_MAX; ++h) thread_max[h] = h == tid % G_MAX ? m : -INFINITY;
    chunk_softmax(num_scores, thread_max, sh, ComputeSync{});
    rescale_accumulators(sh, acc);

    // 4. P·V from the V tiles.
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int i = ring_first + num_tiles + tile;
      const int stage = i % kStages;
      const int first = tile * kTile;
      const int n = min(kTile, num_cached - first);
      const T* rows = reinterpret_cast<const T*>(ring + stage * RG::kStageBytes);
      sm90::mbarrier_wait(&full[stage], (i / kStages) & 1);
      // Rows past the tile's end read its last row with probability 0 (no branch around the loads).
      constexpr int kRowsPerThread = kTile / RL::kRowsPerPass;
#pragma unroll
      for (int s = 0; s < RL::kSlabsPerThread; ++s) {
        const int slab = row_lane + s * RL::kRowThreads;
        if (slab < num_slabs) {
          Slab values[kRowsPerThread];
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) {
            const int row = min(row_group + r * RL::kRowsPerPass, n - 1);
            values[r] = *reinterpret_cast<const Slab*>(rows + row * Dh + slab * X);
          }
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) {
            const int row = row_group + r * RL::kRowsPerPass;
            float prob[G_MAX];
#pragma unroll
            for (int h = 0; h < G_MAX; ++h) prob[h] = row < n ? sh.scores[(first + row) * G_MAX + h] : 0.f;
#pragma unroll
            for (int e = 0; e < X; ++e) {
              const float vf = to_float(values[r].v[e]);
#pragma unroll
              for (int h = 0; h < G_MAX; ++h) acc[h][s][e] += prob[h] * vf;
            }
          }
        }
      }
      sm90::mbarrier_arrive(&empty[stage]);
    }
    add_new_value<T>(p, c, sh, acc);
    ring_first += 2 * num_tiles;
  }

  // 5. Output or partial.
  reduce_accumulators<T>(Dh, split.heads_here, sh, acc, ComputeSync{},
                         [&](int h, int d, float total) { store_split_result(p, split, sh, h, d, total); });
  store_split_stats(p, split, sh);
#endif
}

}  // namespace attention
}  // namespace awq
