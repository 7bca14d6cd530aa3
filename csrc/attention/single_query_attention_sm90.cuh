// Hopper chunk kernel of single_query_attention: the same work split, steps and results as
// single_query_attention_split_kernel (single_query_attention.cuh, which documents the cache layouts
// and the algorithm), with the K and V bytes brought into a shared-memory ring by the bulk copy
// engine instead of register loads.
//
// Roles: warps 0..7 (kThreads threads) compute; warp 8 (one thread of it) is the producer. The
// producer streams each chunk's cached positions in tiles of kTile positions, first every K tile,
// then every V tile, chunk after chunk, through kStages ring buffers, each guarded by a "full"
// mbarrier (the copy engine's bytes) and an "empty" mbarrier (one arrival per compute thread once it
// has read the buffer). It starts at the CTA's entry and runs ahead of the math by up to kStages
// tiles, so a CTA has up to kStages x 16 KB of requests in flight at every phase: during its setup,
// its K -> V changes and its softmaxes (whose V tiles are already arriving), and across its chunks.
//
// Ring buffer layouts (16-byte units):
//   K tile: slab run s (the tile's positions of 16-byte slab s, copied from the contiguous run
//     [b, hk, s, slot.., :] of the K cache) at s * kRunStride; kRunStride = kTile + padding, so the
//     slab pieces the lanes of a quarter warp read fall in distinct bank groups.
//   V tile: the tile's V rows, Dh elements each, back to back (one contiguous run of the V cache).
// A tile whose slots wrap around the circular cache is copied as two runs per slab (K) or two
// row ranges (V). A tile shorter than kTile (the chunk's last) is copied and read only up to its
// length.
//
// Scores: the Dh of a position is split over kTpp consecutive lanes (one or two slabs each, with
// their q values in registers for the whole chunk), each lane takes kPpt positions of the tile; the
// partial dot products (kPpt x G_MAX per lane) are summed over the kTpp lanes by a butterfly that
// halves the values at each step (reduce-scatter: kPpt * G_MAX - 1 shuffles for up to 16 values),
// leaving each total in one lane, which stores it. P·V reads V from the ring with the register
// kernel's row layout (RowLayout).
#pragma once

#include "attention/single_query_attention.cuh"
#include "common/sm90.cuh"

namespace awq {
namespace attention {

constexpr int kRingThreads = kThreads + 32;  // the compute warps and the producer warp
constexpr int kStages = 4;
constexpr int kTileBytes = 16384;            // K or V bytes of one tile at the template's largest Dh

template <typename T, int DH_MAX>
struct RingLayout {
  static constexpr int X = 16 / sizeof(T);
  static constexpr int kMaxSlabs = DH_MAX / X;
  static constexpr int kTile = kTileBytes / (DH_MAX * static_cast<int>(sizeof(T)));  // positions per tile
  static constexpr int kSlabsPerLane = kMaxSlabs > 32 ? kMaxSlabs / 32 : 1;             // K slabs per lane
  static constexpr int kTpp = kMaxSlabs / kSlabsPerLane;  // lanes per position (<= 32, a power of two)
  static constexpr int kPositionGroups = kThreads / kTpp;
  static constexpr int kPpt = kTile / kPositionGroups;     // positions per lane per tile
  // A quarter warp (8 lanes) reads 8 / kTpp positions of kTpp consecutive runs (or 8 runs of one
  // position): the run stride must spread them over the 8 16-byte bank groups.
  static constexpr int kRunStride = kTile + (kTpp >= 8 ? 1 : 8 / kTpp);
  static constexpr int kStageBytes = kMaxSlabs * kRunStride * 16;  // >= kTileBytes (V tile)
  static constexpr int kRingBytes = kStages * kStageBytes;
  static_assert(kTpp <= 32 && kPositionGroups * kPpt == kTile, "tile must split evenly over the lanes");
  static_assert(kTile % RowLayout<T, DH_MAX>::kRowsPerPass == 0, "V tile must split evenly over the row groups");
};

// Named barrier 1 over the compute warps only (the producer warp never joins a barrier).
struct ComputeSync {
  __device__ void operator()() const { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }
};

// Sums v over the groups of W consecutive lanes; on return lane l of a group holds, in
// v[0..max(1, N/W)), the totals of the values [b * F, (b + 1) * F), F = max(1, N / W),
// b = (l % W) / (W * F / N) (every lane of the warp must call it).
template <int N, int W>
__device__ __forceinline__ void reduce_scatter(float (&v)[N], int lane) {
#pragma unroll
  for (int offset = W / 2, n = N; offset >= 1; offset >>= 1, n = n > 1 ? n / 2 : 1) {
    if (n > 1) {  // halve: the upper lane keeps the upper half, the lower lane the lower half
      const bool upper = (lane & offset) != 0;
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        if (i < n / 2) {
          const float send = upper ? v[i] : v[i + n / 2];
          const float keep = upper ? v[i + n / 2] : v[i];
          v[i] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
        }
      }
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], offset);
    }
  }
}

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
  using Slab = Vec<T, X>;

  __shared__ ChunkShared<DH_MAX, G_MAX> sh;
  __shared__ float split_total[G_MAX][DH_MAX];  // unnormalised P·V over the split's chunks so far
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
            unsigned char* run_dst = dst + s * RG::kRunStride * 16;
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

  // Lane `part` of each kTpp-lane group owns slabs part * kSlabsPerLane + j of the scores (their q
  // values in registers during a chunk's score phase); the group takes positions
  // group + k * kPositionGroups of each tile.
  const int part = tid % RG::kTpp;
  const int group = tid / RG::kTpp;
  // After the reduce-scatter, the lane holds kOut totals: values [block * kOut, +kOut) of
  // dot[k * G_MAX + h]; the lanes with (part % kRepeat) == 0 store them.
  constexpr int kValues = RG::kPpt * G_MAX;
  constexpr int kOut = kValues > RG::kTpp ? kValues / RG::kTpp : 1;
  constexpr int kRepeat = RG::kTpp * kOut / kValues;  // lanes holding the same totals
  const int block = part / kRepeat;
  // P·V: kRowThreads lanes per V row (RowLayout).
  const int row_lane = tid % RL::kRowThreads;
  const int row_group = tid / RL::kRowThreads;

  int ring_first = 0;  // ring index of the chunk's first K tile
  for (int chunk_index = 0; chunk_index < num_chunks; ++chunk_index) {
    const Chunk c = split.chunk(chunk_index, kChunkCapacity, L);
    const int num_cached = c.num_cached;
    const int num_tiles = tiles_of(c);
    if (chunk_index > 0) ComputeSync{}();  // the previous chunk's probabilities have been read

    // 2. Scores.
    float qr[RG::kSlabsPerLane][X][G_MAX];
#pragma unroll
    for (int j = 0; j < RG::kSlabsPerLane; ++j) {
      const int slab = part * RG::kSlabsPerLane + j;
#pragma unroll
      for (int e = 0; e < X; ++e)
#pragma unroll
        for (int h = 0; h < G_MAX; ++h) qr[j][e][h] = slab < num_slabs ? sh.q[(slab * X + e) * G_MAX + h] : 0.f;
    }
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int i = ring_first + tile;
      const int stage = i % kStages;
      const int first = tile * kTile;
      const int n = min(kTile, num_cached - first);
      const Slab* runs = reinterpret_cast<const Slab*>(ring + stage * RG::kStageBytes);
      sm90::mbarrier_wait(&full[stage], (i / kStages) & 1);
      float dot[kValues];
#pragma unroll
      for (int v = 0; v < kValues; ++v) dot[v] = 0.f;
      // Positions past the tile's end read the last one instead (no branch around the loads, so they
      // are all in flight at once); their totals are not stored.
#pragma unroll
      for (int j = 0; j < RG::kSlabsPerLane; ++j) {
        const int slab = part * RG::kSlabsPerLane + j;
        if (slab < num_slabs) {
          Slab keys[RG::kPpt];
#pragma unroll
          for (int k = 0; k < RG::kPpt; ++k) {
            keys[k] = runs[slab * RG::kRunStride + min(group + k * RG::kPositionGroups, n - 1)];
          }
#pragma unroll
          for (int k = 0; k < RG::kPpt; ++k) {
#pragma unroll
            for (int e = 0; e < X; ++e) {
              const float kf = to_float(keys[k].v[e]);
#pragma unroll
              for (int h = 0; h < G_MAX; ++h) dot[k * G_MAX + h] += qr[j][e][h] * kf;
            }
          }
        }
      }
      sm90::mbarrier_arrive(&empty[stage]);  // this thread is done with the buffer (see the init)
      reduce_scatter<kValues, RG::kTpp>(dot, lane);
      if (part % kRepeat == 0) {
#pragma unroll
        for (int o = 0; o < kOut; ++o) {
          const int value = block * kOut + o;
          const int h = value % G_MAX;
          const int pos = group + (value / G_MAX) * RG::kPositionGroups;
          if (pos < n) {
            const int local = first + pos;
            sh.scores[local * G_MAX + h] =
                dot[o] * p.inv_sqrt_dh + sh.head_slope[h] * static_cast<float>(c.begin + local - split.t);
          }
        }
      }
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

    // 4. P·V from the V tiles, in registers only for this chunk (they would not fit beside the score
    // phase's), then summed into split_total, whose earlier chunks are rescaled by head_scale.
    float acc[G_MAX][RL::kSlabsPerThread][X];
#pragma unroll
    for (int h = 0; h < G_MAX; ++h)
#pragma unroll
      for (int s = 0; s < RL::kSlabsPerThread; ++s)
#pragma unroll
        for (int e = 0; e < X; ++e) acc[h][s][e] = 0.f;
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
    const bool first_chunk = chunk_index == 0;  // (split_total is not initialised)
    reduce_accumulators<T>(Dh, split.heads_here, sh, acc, ComputeSync{}, [&](int h, int d, float total) {
      split_total[h][d] = first_chunk ? total : split_total[h][d] * sh.head_scale[h] + total;
    });
    ring_first += 2 * num_tiles;
  }

  // 5. Output or partial (each thread stores the split_total elements it summed).
  for (int h = 0; h < split.heads_here; ++h) {
    for (int d = tid; d < Dh; d += kThreads) store_split_result(p, split, sh, h, d, split_total[h][d]);
  }
  store_split_stats(p, split, sh);
#endif
}

}  // namespace attention
}  // namespace awq
