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
// compute warp w takes step w of every stage, so a stage is one contiguous K range of kStageK, and
// holds whole groups (G <= 128 divides kStageK).
// Stage buffer (bytes):
//   weights, v2: the row tile's 4 packed rows (of [N/4, 2K] bytes), 2 * kStageK bytes each, in the
//     layout's own order (layouts.cuh), so a lane's 16-byte chunk sits where it sits in global memory.
//     (A quarter warp's 8 chunk reads fall in 4 bank groups: 2-way conflicts, accepted.)
//   weights, v1: the 16 rows (of [N, K/2] bytes), kStageK / 2 bytes each, kV1RowStride apart (64
//     bytes of padding put a quarter warp's 8 chunks in 8 distinct bank groups).
//   scales and zeros of the stage's groups (kAffineBytes): v2 scales [group][16 rows] then scaled
//     zeros [group][16 rows] (T); v1 scales [16 rows][32 groups] (T) then qzeros [16 rows][4 words].
//   activations: the CTA's rows m of x [M, K], 2 * kStageK bytes each, kXRowStride apart.
// Weights and activations come as bulk copies (16-byte runs) from one producer thread, the scales
// and zeros as 4-byte cp.async from the producer warp's 32 lanes (their rows are only 4-byte
// aligned); so the math warps never wait on global memory. A stage's copies cover only valid rows,
// groups and K. Rows past N read whatever the stage holds there (their outputs are not stored);
// activation rows past M and lanes past K read a block of zeros instead of the stage, so stale
// codes and scales there multiply zeros (the scale areas are zeroed once at the start and decoded
// codes are always finite, so nothing stale is NaN).
// Barriers: full[s] (the producer's expect_tx arrival + the copy engine's bytes + one cp.async
// arrival per producer lane), empty[s] (one arrival per compute thread, made as soon as it has
// read the stage into registers).
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
constexpr int kGemvSm90AffineBytes = 2048;  // G = 32: 32 groups x 16 rows x 2 (scale, zero) x 2 bytes

template <Layout L>
__host__ __device__ constexpr int gemv_sm90_weight_bytes() {
  return L == Layout::kV2 ? 4 * 2 * kGemvSm90StageK : 16 * kGemvSm90V1RowStride;
}

// Bytes of one stage for up to `m_rows` activation rows per CTA (a multiple of 128).
template <Layout L>
__host__ __device__ constexpr int gemv_sm90_stage_bytes(int m_rows) {
  return (gemv_sm90_weight_bytes<L>() + kGemvSm90AffineBytes + m_rows * kGemvSm90XRowStride + 127) / 128 * 128;
}

template <typename T, Layout L, int kMTiles, bool kScaleInA>
__global__ void __launch_bounds__(kGemvSm90Threads, kMTiles == 1 ? 3 : 2)
    w4a16_gemv_sm90_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                           float* __restrict__ partial, int m_total, int k_splits, int stages, int stage_bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the host selects this kernel only on sm_90a builds on CC 9.0
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ uint64_t full[kGemvSm90MaxStages], empty[kGemvSm90MaxStages];
  __shared__ __align__(16) uint4 zero_x[4];  // what lanes without activations read
  constexpr int kW = gemv_sm90_weight_bytes<L>();
  constexpr int kX = kW + kGemvSm90AffineBytes;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n0 = blockIdx.x * kMmaGemvRows;
  const int m0 = blockIdx.z * (8 * kMTiles);
  const int m_rows = min(8 * kMTiles, m_total - m0);
  const int split = blockIdx.y;
  // The split's stages (whole stages: every stage then starts on a multiple of 8 groups, which the
  // v1 scale and qzeros copies need).
  const int all_stages = (w.k + kGemvSm90StageK - 1) / kGemvSm90StageK;
  const int stage_begin = static_cast<int>(static_cast<int64_t>(split) * all_stages / k_splits);
  const int num_stages = static_cast<int>(static_cast<int64_t>(split + 1) * all_stages / k_splits) - stage_begin;
  const int k_begin = stage_begin * kGemvSm90StageK;
  const int k_end = min(k_begin + num_stages * kGemvSm90StageK, w.k);  // the CTA's K range ends here
  // Valid weight rows of the tile: v2 counts packed rows (N % 4 == 0, so rows past N are whole ones).
  const int tile_rows = min(kMmaGemvRows, w.n - n0);

  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      sm90::mbarrier_init(&full[s], 1 + 32);
      sm90::mbarrier_init(&empty[s], kGemvSm90Warps * 32);
    }
    sm90::fence_barrier_init();
  }
  if (threadIdx.x < 4) zero_x[threadIdx.x] = make_uint4(0, 0, 0, 0);
  for (int i = threadIdx.x; i < stages * kGemvSm90AffineBytes / 16; i += blockDim.x) {
    const int s = i / (kGemvSm90AffineBytes / 16), v = i % (kGemvSm90AffineBytes / 16);
    reinterpret_cast<uint4*>(ring + s * stage_bytes + kW)[v] = make_uint4(0, 0, 0, 0);
  }
  __syncthreads();

  if (warp == kGemvSm90Warps) {  // producer warp
    for (int i = 0, slot = 0, phase = 0; i < num_stages; ++i) {
      if (i >= stages) sm90::mbarrier_wait(&empty[slot], phase ^ 1);
      const int k0 = k_begin + i * kGemvSm90StageK;
      const int kc = min(kGemvSm90StageK, k_end - k0);  // a multiple of 64
      unsigned char* stage = ring + slot * stage_bytes;
      if (lane == 0) {
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
        for (int m = 0; m < m_rows; ++m)
          sm90::bulk_copy_g2s(stage + kX + m * kGemvSm90XRowStride, x + static_cast<int64_t>(m0 + m) * w.k + k0,
                              2 * kc, &full[slot]);
      }
      // The stage's groups [g0, g0 + gn), as 4-byte words.
      const int g0 = k0 >> w.group_shift;
      const int gn = (kc + (1 << w.group_shift) - 1) >> w.group_shift;
      unsigned char* affine = stage + kW;
      if constexpr (L == Layout::kV2) {  // [Gp, N] rows: tile_rows / 2 words of each group row
        const int words = gn * (tile_rows / 2);
        const T* zeros = static_cast<const T*>(w.zeros);
        for (int j = lane; j < 2 * words; j += 32) {
          const int which = j / words, jj = j % words, gl = jj / (tile_rows / 2), word = jj % (tile_rows / 2);
          const int64_t src = static_cast<int64_t>(g0 + gl) * w.scale_stride + n0 + 2 * word;
          sm90::cp_async_4(affine + which * 1024 + (gl * 16 + 2 * word) * 2, which == 0 ? w.scales + src : zeros + src);
        }
      } else {  // [N, Gp] scales: (gn + 1) / 2 words per row; [N, Zw] qzeros: (gn + 7) / 8 words per row
        const int scale_words = (gn + 1) / 2, zero_words = (gn + 7) / 8;
        const int32_t* qzeros = static_cast<const int32_t*>(w.zeros);
        for (int j = lane; j < tile_rows * (scale_words + zero_words); j += 32) {
          const int r = j / (scale_words + zero_words), word = j % (scale_words + zero_words);
          if (word < scale_words) {
            sm90::cp_async_4(affine + (r * 32 + 2 * word) * 2,
                             w.scales + static_cast<int64_t>(n0 + r) * w.scale_stride + g0 + 2 * word);
          } else {
            const int zw = word - scale_words;
            sm90::cp_async_4(affine + 1024 + (r * 4 + zw) * 4,
                             qzeros + static_cast<int64_t>(n0 + r) * w.zero_stride + g0 / 8 + zw);
          }
        }
      }
      sm90::cp_async_arrive_noinc(&full[slot]);
      if (++slot == stages) slot = 0, phase ^= 1;
    }
    return;
  }

  // Compute warp `warp`, lane (g, t): its k32 within a stage and, relative to a stage, the offsets
  // of its chunk of row g, of that row's scale and zero, and of its activations. Row g + 8 is a
  // fixed distance further (kRowDelta...): rows past the tile read what the stage holds there
  // (stale, but finite once decoded) and only give outputs that are not stored.
  const int g = lane >> 2;
  const int t = lane & 3;
  const int lane_k = warp * kMmaGemvStepK + 32 * t;
  const int group_in_stage = lane_k >> w.group_shift;
  constexpr int kChunkDelta = L == Layout::kV2 ? 2 * (2 * kGemvSm90StageK) : 8 * kGemvSm90V1RowStride;
  constexpr int kScaleDelta = L == Layout::kV2 ? 8 * 2 : 8 * 32 * 2;
  constexpr int kZeroDelta = L == Layout::kV2 ? 8 * 2 : 8 * 4 * 4;
  int chunk_offset, scale_offset, zero_offset;
  if constexpr (L == Layout::kV2) {
    chunk_offset = static_cast<int>(LayoutTraits<L>::chunk_offset(g, lane_k, kGemvSm90StageK));
    scale_offset = kW + (group_in_stage * 16 + g) * 2;
    zero_offset = scale_offset + 1024;
  } else {
    chunk_offset = g * kGemvSm90V1RowStride + lane_k / 2;
    scale_offset = kW + (g * 32 + group_in_stage) * 2;
    zero_offset = kW + 1024 + (g * 4 + group_in_stage / 8) * 4;
  }
  int x_offset = kX + g * kGemvSm90XRowStride + lane_k * 2;
  bool m_valid[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) m_valid[mt] = 8 * mt + g < m_rows;
  // Opaque from here on: the compiler would otherwise recompute these offsets in every stage.
  sm90::fence_register(chunk_offset);
  sm90::fence_register(scale_offset);
  sm90::fence_register(zero_offset);
  sm90::fence_register(x_offset);

  float acc[kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.f;

  for (int i = 0, slot = 0, phase = 0; i < num_stages; ++i) {
    const int k0 = k_begin + i * kGemvSm90StageK;
    const bool lane_in_k = k0 + lane_k < k_end;
    const unsigned char* stage = ring + slot * stage_bytes;
    const unsigned char* chunk = stage + chunk_offset;
    const unsigned char* scale = stage + scale_offset;
    const unsigned char* zero = stage + zero_offset;
    sm90::mbarrier_wait(&full[slot], phase);
    uint4 codes[2];
    RawAffine affine[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      codes[h] = *reinterpret_cast<const uint4*>(chunk + h * kChunkDelta);
      affine[h].scale = *reinterpret_cast<const uint16_t*>(scale + h * kScaleDelta);
      if constexpr (L == Layout::kV2) {
        affine[h].zero = *reinterpret_cast<const uint16_t*>(zero + h * kZeroDelta);
      } else {
        affine[h].zero = *reinterpret_cast<const uint32_t*>(zero + h * kZeroDelta);
      }
    }
    uint32_t xh[kMTiles][16];
    const unsigned char* x_stage = stage + x_offset;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const uint4* x_lane = lane_in_k && m_valid[mt]
                                ? reinterpret_cast<const uint4*>(x_stage + 8 * mt * kGemvSm90XRowStride)
                                : zero_x;
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 xv = x_lane[v];
        xh[mt][4 * v + 0] = xv.x;
        xh[mt][4 * v + 1] = xv.y;
        xh[mt][4 * v + 2] = xv.z;
        xh[mt][4 * v + 3] = xv.w;
      }
    }
    sm90::mbarrier_arrive(&empty[slot]);  // this thread's reads of the stage are done
    if (++slot == stages) slot = 0, phase ^= 1;
    if (k0 + warp * kMmaGemvStepK < k_end) {  // warp-uniform: the warp has a step in this stage
      mma_gemv_step<T, L, kMTiles, kScaleInA>(codes, xh, affine, (k0 + lane_k) >> w.group_shift, acc);
    }
  }

  mma_gemv_store<T, kGemvSm90Warps, kMTiles>(acc, n0, w.n, m0, m_total, split, k_splits, out, partial);
#endif
}

}  // namespace w4a16
}  // namespace awq
