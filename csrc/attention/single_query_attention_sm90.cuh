// Hopper kernel of single_query_attention for fp16/bf16 caches: the same work split, steps and
// results as single_query_attention_split_kernel (single_query_attention.cuh, which documents the cache
// layouts and the algorithm), with the K and V bytes brought into a shared-memory ring by the copy
// engine and both products on tensor cores (mma.sync.m16n8k16, fp32 accumulators): a few
// instructions per 16-byte piece instead of ~20 (on CUDA cores the kernel was close to issue bound:
// csrc/attention/NOTES.md, session 4).
//
// Roles: warps 0..7 (kThreads threads) compute; warp 8 (one thread of it) is the producer. The
// producer streams each chunk's cached positions in tiles of up to kTile positions, first every K
// tile, then every V tile, chunk after chunk, through kStages ring buffers, each guarded by a "full"
// mbarrier (the copy engine's bytes) and an "empty" mbarrier (one arrival per compute thread once it
// is done with the buffer). It starts at the CTA's entry and runs ahead of the math by up to kStages
// tiles, so a CTA has up to kStages x 16 KB of requests in flight at every phase: during its setup,
// its K -> V changes and its softmaxes (whose V tiles are already arriving), and across its chunks.
//
// Ring buffer layouts (the ring 1024-byte aligned):
//   K tile: slab run s (the tile's positions of 16-byte slab s, dims 8s..8s+7, bulk-copied from the
//     contiguous run [b, hk, s, slot.., :] of the K cache) at s * kTile * 16 bytes. An ldmatrix
//     8 x 8 matrix (8 consecutive positions of one slab) is 128 contiguous bytes: no bank conflict.
//     A tile whose slots wrap around the circular cache is copied as two runs per slab.
//   V tile: ceil(Dh / 64) boxes of kTile rows x 64 elements (128 bytes; elements past Dh read as
//     zeros), box b at b * kTile * 128 bytes, each one tensor copy (TMA) from the V cache seen as
//     B * Hkv * L rows of Dh elements, with the 128-byte swizzle: the 16-byte chunk c of row r is
//     stored at chunk c ^ (r % 8), so the 8 rows of a transposed ldmatrix matrix (8 positions, same
//     dims) fall in 8 different bank groups. A tensor copy reads consecutive rows, so the V tile
//     that holds the cache's wrap (slot L - 1 -> 0) is cut there into two tiles.
// Positions past a tile's end are read as its last position (clamped addresses; rows past the
// window may be unwritten cache memory): their scores are not stored and their probabilities are 0.
//
// Products, the mma's N = 8 columns being the CTA's query heads (columns >= G_MAX are zero):
//   scores S[pos][h] = K[pos][:] . q[h][:]: A = 16 positions x 16 dims of the K tile (ldmatrix),
//     B = q (16 dims x 8 heads, fragments in registers for the whole split); warp w takes positions
//     [16w, 16w + 16) of each tile (warps past kTile / 16 only wait for the tile and release it).
//   P.V as O^T[d][h] = sum_pos V[pos][d] P[pos][h]: A = V^T (16 dims x 16 positions, ldmatrix.trans),
//     B = the probabilities rounded to T (as flash attention does); warp w owns dims [16w, 16w + 16)
//     (and [16(w + 8), ...) for Dh > 128) of every head for the whole split, in registers: no
//     cross-warp reduction, and the online softmax rescales them in place at each chunk.
#pragma once

#include "attention/single_query_attention.cuh"
#include "common/mma.cuh"
#include "common/sm90.cuh"

namespace awq {
namespace attention {

constexpr int kRingThreads = kThreads + 32;  // the compute warps and the producer warp
// Three 16 KB stages per CTA (2 per SM): enough to keep the copy engine busy through the math's phase
// changes; a fourth queued ~16 MB of requests over the grid and the DRAM streamed 0.5-1% slower at
// long contexts, two starve it (csrc/attention/NOTES.md, session 5).
constexpr int kStages = 3;
constexpr int kTileBytes = 16384;            // K bytes of one tile at the template's largest Dh

template <typename T, int DH_MAX>
struct RingLayout {
  static_assert(sizeof(T) == 2, "the ring kernel's products are fp16/bf16 mma");
  static constexpr int kTile = kTileBytes / (DH_MAX * 2);  // positions per tile: 128, 64, 32
  static constexpr int kPositionBlocks = kTile / 16;       // score mma row blocks per tile (one per warp)
  static constexpr int kMaxDimBlocks = DH_MAX / 16;        // P.V mma row blocks (16 dims each)
  static constexpr int kDimBlocksPerWarp = (kMaxDimBlocks + kWarps - 1) / kWarps;
  static constexpr int kVBoxCols = 64;                      // V tensor-copy box: kTile rows x 128 bytes
  static constexpr int kVBoxes = (DH_MAX + kVBoxCols - 1) / kVBoxCols;
  static constexpr int kStageBytes = kTileBytes;
  static constexpr int kRingBytes = kStages * kStageBytes + 1024;  // + slack to align the ring to 1024 B
  static_assert(kPositionBlocks <= kWarps && kTile % 16 == 0, "one 16-position block per warp");
  static_assert(kVBoxes * kTile * 128 == kTileBytes, "a V tile's boxes fill one stage");
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
__global__ void __launch_bounds__(kRingThreads, 2) single_query_attention_ring_kernel(const Params p,
                                                                                  const __grid_constant__ CUtensorMap v_map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the host selects this kernel only on sm_90a builds on CC 9.0
  asm volatile("griddepcontrol.launch_dependents;");  // see single_query_attention_split_kernel
  using RG = RingLayout<T, DH_MAX>;
  constexpr int X = 8;  // elements per 16-byte slab
  constexpr int kTile = RG::kTile;
  constexpr int kMaxKSteps = DH_MAX / 16;  // score mma steps over the head dims

  __shared__ ChunkShared<DH_MAX, G_MAX> sh;
  __shared__ uint64_t full[kStages], empty[kStages];
  extern __shared__ __align__(128) unsigned char ring_raw[];
  // The 128-byte swizzle of the V boxes repeats every 1024 bytes from a 1024-byte aligned base.
  unsigned char* ring = ring_raw + ((1024u - (sm90::smem_addr(ring_raw) & 1023u)) & 1023u);

  SplitInfo<T> split;
  if (!split_info<T, G_MAX>(p, split)) return;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int Dh = p.head_dim;
  const int L = p.cache_len;
  const int num_slabs = Dh / X;
  const int v_boxes = (Dh + RG::kVBoxCols - 1) / RG::kVBoxCols;
  const int v_row0 = (split.b * p.num_kv_heads + split.kv_head) * L;  // this head's first row of the V map
  constexpr int kChunkCapacity = kScoreCapacity / G_MAX;
  const int num_chunks = split.num_chunks(kChunkCapacity);
  auto tiles_of = [](const Chunk& c) { return (c.num_cached + kTile - 1) / kTile; };
  // V tiles: as the K tiles, except that the one holding the cache's wrap (slot L - 1 -> 0) is cut
  // there, since a tensor copy reads consecutive slots.
  auto v_cut_of = [&](const Chunk& c) {  // local index of the cut, or -1
    const int wrap = L - c.first_slot;
    return wrap < c.num_cached && wrap % kTile != 0 ? wrap : -1;
  };
  auto v_tiles_of = [&](const Chunk& c) { return tiles_of(c) + (v_cut_of(c) >= 0 ? 1 : 0); };
  auto v_tile_first = [&](const Chunk& c, int j) {  // first local position of V tile j
    const int cut = v_cut_of(c);
    if (cut < 0 || j <= cut / kTile) return j * kTile;
    return j == cut / kTile + 1 ? cut : (j - 1) * kTile;
  };
  auto v_tile_end = [&](const Chunk& c, int j) {
    return j + 1 < v_tiles_of(c) ? v_tile_first(c, j + 1) : c.num_cached;
  };

  if (warp < kWarps) {
    // The setup's inputs (step 1) are requested before the producer's first bulk copies (after the
    // barrier below): issued behind them, they would queue behind the whole grid's ring requests (~17
    // MB on 132 SMs, ~5.6 us at copy bandwidth) and hold the math back that long.
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
  if (warp == kWarps) {  // producer: per chunk, its K tiles, then its V tiles
    if (lane != 0) return;
    int i = 0;
    for (int chunk_index = 0; chunk_index < num_chunks; ++chunk_index) {
      const Chunk c = split.chunk(chunk_index, kChunkCapacity, L);
      const int num_k = tiles_of(c), num_v = v_tiles_of(c);
      for (int j = 0; j < num_k + num_v; ++j, ++i) {
        const int stage = i % kStages;
        if (i >= kStages) sm90::mbarrier_wait(&empty[stage], (i / kStages - 1) & 1);
        unsigned char* dst = ring + stage * RG::kStageBytes;
        if (j >= num_k) {
          const int first = v_tile_first(c, j - num_k);
          sm90::mbarrier_arrive_expect_tx(&full[stage], v_boxes * kTile * 128);
          for (int box = 0; box < v_boxes; ++box) {
            sm90::tma_load_2d(dst + box * kTile * 128, &v_map, &full[stage], box * RG::kVBoxCols,
                              v_row0 + c.slot_of(first, L));
          }
        } else {
          const int first = j * kTile;
          const int n = min(kTile, c.num_cached - first);
          const int slot = c.slot_of(first, L);
          const int n1 = min(n, L - slot);  // positions before the cache's end; the rest from slot 0
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
  // q as the score product's B fragments: B[dim][head] = q[head][dim]; heads >= G_MAX are zero.
  const int num_k_steps = Dh / 16;
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
  // Accumulators O^T[dim][head] of dim block warp + kWarps * b: o[b][0..1] = dim 16 * block + g,
  // heads 2 quad, 2 quad + 1; o[b][2..3] = dim + 8, same heads.
  float o[RG::kDimBlocksPerWarp][4];
  // Calls visit(accumulator, head, dim) for each of this thread's accumulators.
  auto for_each_accumulator = [&](auto&& visit) {
#pragma unroll
    for (int b = 0; b < RG::kDimBlocksPerWarp; ++b)
#pragma unroll
      for (int e = 0; e < 4; ++e) visit(o[b][e], 2 * quad + (e & 1), (warp + b * kWarps) * 16 + g + (e >> 1) * 8);
  };
  for_each_accumulator([](float& acc, int, int) { acc = 0.f; });

  int ring_first = 0;  // ring index of the chunk's first K tile
  for (int chunk_index = 0; chunk_index < num_chunks; ++chunk_index) {
    const Chunk c = split.chunk(chunk_index, kChunkCapacity, L);
    const int num_cached = c.num_cached;
    const int num_tiles = tiles_of(c);
    const int num_v_tiles = v_tiles_of(c);
    if (chunk_index > 0) ComputeSync{}();  // the previous chunk's probabilities have been read

    // 2. Scores: warp w, positions [16w, 16w + 16) of each tile.
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

    // 3. Softmax: per-thread maxima of the stored scores (head tid % G_MAX), then as the other kernel;
    // the accumulators of the earlier chunks are rescaled to the new running maximum.
    const int num_scores = (c.end - c.begin) * G_MAX;
    float m = -INFINITY;
    for (int idx = tid; idx < num_scores; idx += kThreads) m = fmaxf(m, sh.scores[idx]);
    float thread_max[G_MAX];
#pragma unroll
    for (int h = 0; h < G_MAX; ++h) thread_max[h] = h == tid % G_MAX ? m : -INFINITY;
    chunk_softmax(num_scores, thread_max, sh, ComputeSync{});
    for_each_accumulator([&](float& acc, int h, int) { acc *= h < G_MAX ? sh.head_scale[h] : 0.f; });

    // 4. P.V: per 16 positions, the probabilities as B fragments (P[pos][head], zero past the tile's
    // end), V^T of each of the warp's dim blocks as A.
    for (int tile = 0; tile < num_v_tiles; ++tile) {
      const int i = ring_first + num_tiles + tile;
      const int stage = i % kStages;
      const int first = v_tile_first(c, tile);
      const int n = v_tile_end(c, tile) - first;
      sm90::mbarrier_wait(&full[stage], (i / kStages) & 1);
      const unsigned char* v_tile = ring + stage * RG::kStageBytes;
#pragma unroll
      for (int p0 = 0; p0 < kTile; p0 += 16) {
        if (p0 < n) {
          uint32_t prob[2];
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int pos = p0 + half * 8 + 2 * quad;
            const float lo = g < G_MAX && pos < n ? sh.scores[(first + pos) * G_MAX + g] : 0.f;
            const float hi = g < G_MAX && pos + 1 < n ? sh.scores[(first + pos + 1) * G_MAX + g] : 0.f;
            prob[half] = pack2<T>(lo, hi);
          }
          // Lane l addresses row l % 8 (a position) of matrix l / 8: dims +8 for matrices 1 and 3,
          // positions +8 for matrices 2 and 3.
          const int row = min(p0 + (lane & 7) + (lane >> 4) * 8, n - 1);
#pragma unroll
          for (int b = 0; b < RG::kDimBlocksPerWarp; ++b) {
            const int dim0 = (warp + b * kWarps) * 16;
            if (dim0 < Dh) {
              uint32_t a[4];
              // Box dim0 / 64, row `row` (128 bytes), 16-byte chunk c stored at c ^ (row % 8).
              const int chunk = (dim0 % RG::kVBoxCols) / 8 + ((lane >> 3) & 1);
              ldmatrix_x4_trans(a, v_tile + (dim0 / RG::kVBoxCols) * kTile * 128 + row * 128 + ((chunk ^ (row & 7)) * 16));
              mma_16816<T>(o[b], a, prob);
            }
          }
        }
      }
      sm90::mbarrier_arrive(&empty[stage]);
    }
    if (c.has_new) {  // the new token's value, weighted by its probabilities
      for_each_accumulator([&](float& acc, int h, int dim) {
        if (h < G_MAX && dim < Dh) acc += sh.scores[num_cached * G_MAX + h] * sh.new_v[dim];
      });
    }
    ring_first += num_tiles + num_v_tiles;
  }

  // 5. Output or partial: each thread stores the elements it accumulated.
  ComputeSync{}();  // head_sum of the last chunk is visible
  for_each_accumulator([&](float& acc, int h, int dim) {
    if (h < split.heads_here && dim < Dh) store_split_result(p, split, sh, h, dim, acc);
  });
  store_split_stats(p, split, sh);
#endif
}

}  // namespace attention
}  // namespace awq
