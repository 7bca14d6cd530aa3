// W4A16 for few activation rows (M <= 16 per CTA) on Hopper (sm_90a builds, compute capability 9.0):
// the tensor-core GEMV's math (mma_gemv.cuh: weights as the mma's A operand, `mma_gemv_step`, the
// same rounding and the same results bit for bit), with the weight bytes and the activations brought
// into a shared-memory ring by the bulk copy engine instead of register loads.
//
// Why (NOTES.md, session 3 lab): loads alone on mma_gemv's grid and addresses stream at 2.75 TB/s,
// but mma_gemv itself reaches 1.96 TB/s: its batches of register loads (112 registers -> 16 warps
// per SM) leave each warp with no request in flight while it decodes and multiplies a batch, and its
// per-step activation loads add an L2 round trip per step. Here one producer thread keeps kStages
// stages of requests in flight per CTA at all times, whatever the math is doing, and the math warps
// need few registers (3 CTAs per SM for M <= 8).
//
// Work split: a CTA owns 16 weight rows (blockIdx.x), 8 * kMTiles activation rows (blockIdx.z) and
// a range of 128-wide K steps (blockIdx.y, the K split), walked in stages of kGemvSm90Warps steps:
// compute warp w takes step w of every stage, so a stage is one contiguous K range of kStageK.
// Stage buffer (bytes; every run one bulk copy, 16-byte aligned):
//   weights, v2: the row tile's 4 packed rows (of [N/4, 2K] bytes), 2 * kStageK bytes each, in the
//     layout's own order (layouts.cuh), so a lane's 16-byte chunk sits where it sits in global memory.
//     (A quarter warp's 8 chunk reads fall in 4 bank groups: 2-way conflicts, accepted.)
//   weights, v1: the 16 rows (of [N, K/2] bytes), kStageK / 2 bytes each, kV1RowStride apart (64
//     bytes of padding put a quarter warp's 8 chunks in 8 distinct bank groups).
//   activations: the CTA's rows m of x [M, K], 2 * kStageK bytes each, kXRowStride apart.
// Rows past N read the last valid row of the tile (their outputs are not stored), activation rows
// past M and lanes past K use zeros; a stage's copies cover only valid rows and K.
// Barriers: full[s] (the producer's expect_tx + the copy engine's bytes), empty[s] (one arrival per
// compute thread, made as soon as it has read its chunks and activations into registers).
// Scale / zero loads (global, tiny) are issued two stages ahead into registers.
#pragma once

#include "common/sm90.cuh"
#include "w4a16/mma_gemv.cuh"

namespace awq {
namespace w4a16 {

constexpr int kGemvSm90Warps = 8;                              // compute warps; + 1 producer warp
constexpr int kGemvSm90Threads = (kGemvSm90Warps + 1) * 32;
constexpr int kGemvSm90StageK = kGemvSm90Warps * kMmaGemvStepK;  // K per stage
constexpr int kGemvSm90MaxStages = 8;
constexpr int kGemvSm90V1RowStride = kGemvSm90StageK / 2 + 64;
constexpr int kGemvSm90XRowStride = 2 * kGemvSm90StageK + 16;

template <Layout L>
constexpr int gemv_sm90_weight_bytes() {
  return L == Layout::kV2 ? 4 * 2 * kGemvSm90StageK : 16 * kGemvSm90V1RowStride;
}

// Bytes of one stage for up to `m_rows` activation rows per CTA (a multiple of 128).
template <Layout L>
constexpr int gemv_sm90_stage_bytes(int m_rows) {
  return (gemv_sm90_weight_bytes<L>() + m_rows * kGemvSm90XRowStride + 127) / 128 * 128;
}

template <typename T, Layout L, int kMTiles, bool kScaleInA>
__global__ void __launch_bounds__(kGemvSm90Threads, kMTiles == 1 ? 3 : 2)
    w4a16_gemv_sm90_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                           float* __restrict__ partial, int m_total, int k_splits, int stages, int stage_bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the host selects this kernel only on sm_90a builds on CC 9.0
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ uint64_t full[kGemvSm90MaxStages], empty[kGemvSm90MaxStages];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n0 = blockIdx.x * kMmaGemvRows;
  const int m0 = blockIdx.z * (8 * kMTiles);
  const int m_rows = min(8 * kMTiles, m_total - m0);
  const int split = blockIdx.y;
  const int steps = (w.k + kMmaGemvStepK - 1) / kMmaGemvStepK;
  const int cta_begin = static_cast<int>(static_cast<int64_t>(split) * steps / k_splits);
  const int cta_end = static_cast<int>(static_cast<int64_t>(split + 1) * steps / k_splits);
  const int num_stages = (cta_end - cta_begin + kGemvSm90Warps - 1) / kGemvSm90Warps;
  const int k_end = min(cta_end * kMmaGemvStepK, w.k);  // the CTA's K range ends here
  // Valid weight rows of the tile: v2 counts packed rows (N % 4 == 0, so rows past N are whole ones).
  const int tile_rows = min(kMmaGemvRows, w.n - n0);

  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      sm90::mbarrier_init(&full[s], 1);
      sm90::mbarrier_init(&empty[s], kGemvSm90Warps * 32);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  if (warp == kGemvSm90Warps) {  // producer
    if (lane != 0) return;
    for (int i = 0, slot = 0; i < num_stages; ++i, slot = slot + 1 == stages ? 0 : slot + 1) {
      if (i >= stages) sm90::mbarrier_wait(&empty[slot], (i / stages - 1) & 1);
      const int k0 = (cta_begin + i * kGemvSm90Warps) * kMmaGemvStepK;
      const int kc = min(kGemvSm90StageK, k_end - k0);  // a multiple of 64
      unsigned char* stage = ring + slot * stage_bytes;
      const uint32_t weight_run = L == Layout::kV2 ? 2 * kc : kc / 2;
      const int weight_runs = L == Layout::kV2 ? tile_rows / 4 : tile_rows;
      sm90::mbarrier_arrive_expect_tx(&full[slot], weight_runs * weight_run + m_rows * 2 * kc);
      for (int r = 0; r < weight_runs; ++r) {
        const uint8_t* src = L == Layout::kV2
                                 ? w.qweight + (static_cast<int64_t>(n0 / 4 + r) * w.k + k0) * 2
                                 : w.qweight + static_cast<int64_t>(n0 + r) * (w.k / 2) + k0 / 2;
        const int dst = L == Layout::kV2 ? r * 2 * kGemvSm90StageK : r * kGemvSm90V1RowStride;
        sm90::bulk_copy_g2s(stage + dst, src, weight_run, &full[slot]);
      }
      unsigned char* x_stage = stage + gemv_sm90_weight_bytes<L>();
      for (int m = 0; m < m_rows; ++m)
        sm90::bulk_copy_g2s(x_stage + m * kGemvSm90XRowStride, x + static_cast<int64_t>(m0 + m) * w.k + k0, 2 * kc,
                            &full[slot]);
    }
    return;
  }

  // Compute warp `warp`, lane (g, t): the stage offsets of its chunks of rows g and g + 8.
  const int g = lane >> 2;
  const int t = lane & 3;
  int chunk_offset[2];
  int rows[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int local = min(g + 8 * h, tile_rows - 1);
    rows[h] = n0 + local;
    const int k32 = warp * kMmaGemvStepK + 32 * t;  // within the stage
    chunk_offset[h] = L == Layout::kV2
                          ? static_cast<int>(LayoutTraits<L>::chunk_offset(local, k32, kGemvSm90StageK))
                          : local * kGemvSm90V1RowStride + k32 / 2;
  }
  const int x_offset = g * kGemvSm90XRowStride + (warp * kMmaGemvStepK + 32 * t) * 2;
  const int groups_per_step = kMmaGemvStepK >> w.group_shift;
  const int lane_group = (32 * t) >> w.group_shift;

  float acc[kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.f;

  // The lane's step of stage i is cta_begin + i * kGemvSm90Warps + warp; `lane_end` bounds its k32
  // (the CTA's range, and K for the lanes of a last half step).
  const int step0 = cta_begin + warp;
  const int lane_steps = cta_end - step0;
  const int lane_k_steps = (w.k - 32 * t + kMmaGemvStepK - 1) / kMmaGemvStepK - step0;
  auto lane_valid = [&](int i) { return i * kGemvSm90Warps < min(lane_steps, lane_k_steps); };
  // Scale / zero rows of stage i's step, issued two stages before use (affine[i % 2]).
  RawAffine affine[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      affine[j][h] = load_affine<T, L>(w, rows[h], (step0 + j * kGemvSm90Warps) * groups_per_step + lane_group,
                                       lane_valid(j));

  for (int i0 = 0, slot = 0, phase = 0; i0 < num_stages; i0 += 2) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int i = i0 + j;
      if (i >= num_stages) break;
      const bool valid = lane_valid(i);
      const unsigned char* stage = ring + slot * stage_bytes;
      sm90::mbarrier_wait(&full[slot], phase);
      uint4 codes[2];
      uint32_t xh[kMTiles][16];
#pragma unroll
      for (int h = 0; h < 2; ++h)
        codes[h] = valid ? *reinterpret_cast<const uint4*>(stage + chunk_offset[h]) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const bool x_valid = valid && 8 * mt + g < m_rows;
        const unsigned char* x_lane =
            stage + gemv_sm90_weight_bytes<L>() + 8 * mt * kGemvSm90XRowStride + x_offset;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const uint4 xv = x_valid ? *reinterpret_cast<const uint4*>(x_lane + 16 * v) : make_uint4(0, 0, 0, 0);
          xh[mt][4 * v + 0] = xv.x;
          xh[mt][4 * v + 1] = xv.y;
          xh[mt][4 * v + 2] = xv.z;
          xh[mt][4 * v + 3] = xv.w;
        }
      }
      sm90::mbarrier_arrive(&empty[slot]);  // this thread's reads of the stage are done
      if (++slot == stages) slot = 0, phase ^= 1;
      const int step = step0 + i * kGemvSm90Warps;
      if (step < cta_end) {  // warp-uniform
        mma_gemv_step<T, L, kMTiles, kScaleInA>(codes, xh, affine[j], step * groups_per_step + lane_group, acc);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
        affine[j][h] = load_affine<T, L>(w, rows[h], (step + 2 * kGemvSm90Warps) * groups_per_step + lane_group,
                                         lane_valid(i + 2));
    }
  }

  mma_gemv_store<T, kGemvSm90Warps, kMTiles>(acc, n0, w.n, m0, m_total, split, k_splits, out, partial);
#endif
}

}  // namespace w4a16
}  // namespace awq
