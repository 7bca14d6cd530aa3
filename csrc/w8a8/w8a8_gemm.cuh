// W8A8 GEMM kernel: out[m,n] = epilogue( sum_k A[m,k] * W[n,k] ), int8 x int8 -> exact int32.
//
// Layouts (all row-major, dense):
//   A   int8 [M, K]  activations, one token per row;
//   W   int8 [N, K]  weights in nn.Linear layout (row n = output channel n);
//   out fp16 [M, N].
// Both operands are K-contiguous, which is exactly what `mma.m16n8k32.row.col` wants (A row-major,
// B column-major), so both go through the same copy and the same `ldmatrix` (no transposes).
//
// Pipeline: each CTA computes one BLOCK_M x BLOCK_N output tile, walking K in 64-byte slices.
// `cp.async` (16-byte copies, zero-filled outside the matrix) keeps STAGES-1 slices in flight in
// shared memory while the tensor cores work on the oldest one. Out-of-range rows (M, N tails) and
// columns (K tail) are loaded as zeros, so they add nothing to the sums; the epilogue masks stores.
//
// Split-K (few output tiles, long K: decode shapes): blockIdx.y picks a contiguous range of K
// slices, the CTA stores its raw int32 sums into partials[split][M][N], and a second kernel adds
// the splits (exactly, in int32) and applies the epilogue. Without split-K the epilogue is fused.
//
// Shared-memory tile: ROWS rows of 64 bytes (four 16-byte chunks). An `ldmatrix` phase reads the
// same chunk of 8 consecutive rows; with plain 64-byte rows, rows r and r+2 fall into the same 4
// banks (4-way conflict). Chunk c of row r is therefore stored at chunk c ^ ((r >> 1) & 3): within
// each 128-byte line (two rows) the 8 rows of a phase then hit 8 distinct 16-byte bank groups, for
// reads and for the cp.async writes alike.
//
// Epilogue (spec §3.9, §3.10), each product rounded to nearest in fp32, in this order:
//   plain: fp16_rn( fp32(acc) * (fp32(ws[n]) * fp32(as[m])) )
//   bias : fp16_rn( (fp32(acc) * fp32(ws[n])) * fp32(as[m]) + fp32(bias[n]) )
// The explicit __fmul_rn/__fadd_rn keep nvcc from contracting into an FMA, so the result is the
// fp32 spec evaluation rounded once to fp16.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awq {
namespace w8a8 {

constexpr int kBlockK = 64;        // bytes (= int8 elements) of K per pipeline stage and tile row
constexpr int kChunksPerRow = 4;   // 16-byte chunks per tile row
constexpr int kGroupM = 8;         // M tiles visited together by consecutive CTAs (L2 reuse of W)

// What the GEMM kernel does with its sums.
enum class Epilogue { kScale, kScaleBias, kPartials };

template <int BLOCK_M, int BLOCK_N, int WARPS_M, int WARPS_N, int STAGES, int CTAS_PER_SM>
struct GemmConfig {
  static constexpr int kCtasPerSm = CTAS_PER_SM;  // resident CTAs per SM (for the split-K heuristic)
  static constexpr int kBlockM = BLOCK_M;
  static constexpr int kBlockN = BLOCK_N;
  static constexpr int kWarpsM = WARPS_M;
  static constexpr int kWarpsN = WARPS_N;
  static constexpr int kStages = STAGES;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int kWarpTileM = BLOCK_M / WARPS_M;
  static constexpr int kWarpTileN = BLOCK_N / WARPS_N;
  static constexpr int kFragsM = kWarpTileM / 16;  // m16 fragments per warp
  static constexpr int kFragsN = kWarpTileN / 8;   // n8 fragments per warp
  static constexpr int kStageBytes = (BLOCK_M + BLOCK_N) * kBlockK;
  static constexpr int kSmemBytes = STAGES * kStageBytes;
  static_assert(kWarpTileM % 16 == 0, "warp tile M must be a multiple of the m16 fragment");
  static_assert(kWarpTileN % 16 == 0, "B fragments are loaded in pairs of n8 tiles");
  static_assert(STAGES >= 2, "the pipeline needs at least two stages");
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of 16-byte chunk `chunk` of tile row `row` (the swizzle described above).
__device__ __forceinline__ uint32_t swizzled_offset(int row, int chunk) {
  return static_cast<uint32_t>(row * kBlockK + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// 16-byte global->shared copy; with `valid` false nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void cp_async_16_or_zero(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a (16x32, row) * b (32x8, col), exact int32.
__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Copies rows [row0, row0+ROWS) x bytes [k0, k0+64) of a [rows, K] int8 matrix into one swizzled
// tile; rows >= `rows` and columns >= K become zeros. K % 16 == 0 (checked on the host) makes
// every 16-byte chunk either fully inside or fully outside the matrix, and 16-byte aligned.
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(uint32_t dst, const int8_t* __restrict__ src, int rows, int K, int row0,
                                          int k0, int tid) {
  constexpr int kChunks = ROWS * kChunksPerRow;
  constexpr int kIters = (kChunks + THREADS - 1) / THREADS;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int i = tid + it * THREADS;
    if (kChunks % THREADS == 0 || i < kChunks) {
      const int row = i / kChunksPerRow;
      const int chunk = i % kChunksPerRow;
      const int k = k0 + chunk * 16;
      const bool valid = row0 + row < rows && k < K;
      // An invalid chunk reads nothing, but the address must still be a valid one.
      const int8_t* p = valid ? src + static_cast<int64_t>(row0 + row) * K + k : src;
      cp_async_16_or_zero(dst + swizzled_offset(row, chunk), p, valid);
    }
  }
}

// The spec's epilogue for one output (see the top of this file).
template <bool HAS_BIAS>
__device__ __forceinline__ half scale_output(int acc, const half* __restrict__ wscales, const half* __restrict__ bias,
                                             float a_scale, int n) {
  const float acc_f = __int2float_rn(acc);
  const float w_scale = __half2float(wscales[n]);
  if constexpr (HAS_BIAS) {
    return __float2half_rn(__fadd_rn(__fmul_rn(__fmul_rn(acc_f, w_scale), a_scale), __half2float(bias[n])));
  } else {
    return __float2half_rn(__fmul_rn(acc_f, __fmul_rn(w_scale, a_scale)));
  }
}

// One CTA per output tile (and K range); tiles are numbered so that kGroupM consecutive M tiles share each N
// tile while they are resident together (W, the big operand, is then read from DRAM about
// ceil(tiles_m / kGroupM) times instead of tiles_m times).
template <class Cfg, Epilogue EPILOGUE>
__global__ void __launch_bounds__(Cfg::kThreads)
    w8a8_gemm_kernel(const int8_t* __restrict__ a, const int8_t* __restrict__ w, const half* __restrict__ wscales,
                     const half* __restrict__ ascales, const half* __restrict__ bias, half* __restrict__ out,
                     int* __restrict__ partials, int M, int N, int K, int tiles_m, int tiles_n,
                     int k_tiles_per_split, bool paired_stores) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // cp.async, ldmatrix and the int8 mma need sm_80; the host refuses older GPUs before launching.
  __trap();
#else
  extern __shared__ __align__(128) uint8_t smem[];

  const int tile_id = static_cast<int>(blockIdx.x);
  const int tiles_per_group = kGroupM * tiles_n;
  const int first_tile_m = (tile_id / tiles_per_group) * kGroupM;
  const int group_tiles_m = min(tiles_m - first_tile_m, kGroupM);
  const int tile_m = first_tile_m + (tile_id % tiles_per_group) % group_tiles_m;
  const int tile_n = (tile_id % tiles_per_group) / group_tiles_m;
  const int m0 = tile_m * Cfg::kBlockM;
  const int n0 = tile_n * Cfg::kBlockN;

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m0 = (warp / Cfg::kWarpsN) * Cfg::kWarpTileM;  // warp's first row within the tile
  const int warp_n0 = (warp % Cfg::kWarpsN) * Cfg::kWarpTileN;  // warp's first column within the tile

  // Stage s holds the A tile at s*kStageBytes and the W tile right after it.
  const uint32_t smem_base = smem_u32(smem);
  constexpr uint32_t kBOffset = Cfg::kBlockM * kBlockK;
  // This CTA's K slices: [k_tile_begin, k_tile_begin + k_tiles).
  const int k_tile_begin = static_cast<int>(blockIdx.y) * k_tiles_per_split;
  const int k_tiles = min((K + kBlockK - 1) / kBlockK - k_tile_begin, k_tiles_per_split);

  auto load_stage = [&](int stage, int k_tile) {
    const uint32_t a_dst = smem_base + stage * Cfg::kStageBytes;
    const int k0 = (k_tile_begin + k_tile) * kBlockK;
    load_tile<Cfg::kBlockM, Cfg::kThreads>(a_dst, a, M, K, m0, k0, tid);
    load_tile<Cfg::kBlockN, Cfg::kThreads>(a_dst + kBOffset, w, N, K, n0, k0, tid);
  };

  int acc[Cfg::kFragsM][Cfg::kFragsN][4];
#pragma unroll
  for (int i = 0; i < Cfg::kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

  // Prologue: STAGES-1 slices in flight. Every iteration commits exactly one group (possibly
  // empty), so "group g is complete" always means "slice g has landed".
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }

  // ldmatrix addressing (fragment layouts of mma.m16n8k32 .s8, see the PTX ISA):
  //   A x4: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
  //         = a0..a3; lane l addresses row l % 16, chunk l / 16 of the k32 step.
  //   W x4: matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
  //         = b0, b1 of n8 tile j and b0, b1 of tile j+1; lane l addresses n (l % 8) + 8 (l / 16),
  //         chunk (l / 8) % 2 of the k32 step.
  const int a_lane_row = lane % 16;
  const int a_lane_chunk = lane / 16;
  const int b_lane_row = lane % 8 + 8 * (lane / 16);
  const int b_lane_chunk = (lane / 8) % 2;

  for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
    cp_async_wait<Cfg::kStages - 2>();
    // Slice k_tile is visible to all threads, and every warp is done with the slot that the load
    // below overwrites (it was read in the previous iteration).
    __syncthreads();
    const int next = k_tile + Cfg::kStages - 1;
    if (next < k_tiles) load_stage(next % Cfg::kStages, next);
    cp_async_commit();

    const uint32_t a_stage = smem_base + (k_tile % Cfg::kStages) * Cfg::kStageBytes;
    const uint32_t b_stage = a_stage + kBOffset;
#pragma unroll
    for (int k_step = 0; k_step < kBlockK / 32; ++k_step) {
      uint32_t a_frag[Cfg::kFragsM][4];
      uint32_t b_frag[Cfg::kFragsN][2];
#pragma unroll
      for (int i = 0; i < Cfg::kFragsM; ++i) {
        ldmatrix_x4(a_frag[i],
                    a_stage + swizzled_offset(warp_m0 + i * 16 + a_lane_row, k_step * 2 + a_lane_chunk));
      }
#pragma unroll
      for (int j = 0; j < Cfg::kFragsN; j += 2) {
        uint32_t r[4];
        ldmatrix_x4(r, b_stage + swizzled_offset(warp_n0 + j * 8 + b_lane_row, k_step * 2 + b_lane_chunk));
        b_frag[j][0] = r[0];
        b_frag[j][1] = r[1];
        b_frag[j + 1][0] = r[2];
        b_frag[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < Cfg::kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::kFragsN; ++j) mma_s8(acc[i][j], a_frag[i], b_frag[j][0], b_frag[j][1]);
    }
  }
  cp_async_wait<0>();  // only empty groups remain; leave nothing in flight at exit

  // Epilogue. Accumulator fragment: c0, c1 at (row lane/4, cols 2*(lane%4) + {0,1}); c2, c3 at row + 8.
#pragma unroll
  for (int i = 0; i < Cfg::kFragsM; ++i) {
#pragma unroll
    for (int half_row = 0; half_row < 2; ++half_row) {
      const int m = m0 + warp_m0 + i * 16 + lane / 4 + half_row * 8;
      if (m >= M) continue;
      const int64_t row_offset = static_cast<int64_t>(m) * N;
      if constexpr (EPILOGUE == Epilogue::kPartials) {
        int* partial_row = partials + static_cast<int64_t>(blockIdx.y) * M * N + row_offset;
#pragma unroll
        for (int j = 0; j < Cfg::kFragsN; ++j) {
          const int n = n0 + warp_n0 + j * 8 + (lane % 4) * 2;
          if (n < N) partial_row[n] = acc[i][j][half_row * 2];
          if (n + 1 < N) partial_row[n + 1] = acc[i][j][half_row * 2 + 1];
        }
      } else {
        const float a_scale = __half2float(ascales[m]);
        half* out_row = out + row_offset;
#pragma unroll
        for (int j = 0; j < Cfg::kFragsN; ++j) {
          const int n = n0 + warp_n0 + j * 8 + (lane % 4) * 2;
          if (n >= N) continue;
          constexpr bool kBias = EPILOGUE == Epilogue::kScaleBias;
          const half first = scale_output<kBias>(acc[i][j][half_row * 2], wscales, bias, a_scale, n);
          if (paired_stores) {  // N even and `out` 4-byte aligned, so n + 1 < N and the pair is aligned
            const half second = scale_output<kBias>(acc[i][j][half_row * 2 + 1], wscales, bias, a_scale, n + 1);
            *reinterpret_cast<__half2*>(out_row + n) = __halves2half2(first, second);
          } else {
            out_row[n] = first;
            if (n + 1 < N) {
              out_row[n + 1] = scale_output<kBias>(acc[i][j][half_row * 2 + 1], wscales, bias, a_scale, n + 1);
            }
          }
        }
      }
    }
  }
#endif
}

// Split-K second pass: out[m, n] = epilogue(sum over splits of partials[split][m][n]). One thread
// per output; the int32 sum is exact (each partial and the total are bounded like the full sum).
template <bool HAS_BIAS>
__global__ void w8a8_split_k_reduce_kernel(const int* __restrict__ partials, int splits,
                                           const half* __restrict__ wscales, const half* __restrict__ ascales,
                                           const half* __restrict__ bias, half* __restrict__ out, int M, int N) {
  const int64_t mn = static_cast<int64_t>(M) * N;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= mn) return;
  const int m = static_cast<int>(idx / N);
  const int n = static_cast<int>(idx % N);
  int acc = 0;
  for (int split = 0; split < splits; ++split) acc += partials[split * mn + idx];
  out[idx] = scale_output<HAS_BIAS>(acc, wscales, bias, __half2float(ascales[m]), n);
}

}  // namespace w8a8
}  // namespace awq
