// W8A8 GEMM kernel: out[m,n] = epilogue( sum_k A[m,k] * W[n,k] ), int8 x int8 -> exact int32.
//
// Layouts (all row-major, dense):
//   A   int8 [M, K]  activations, one token per row;
//   W   int8 [N, K]  weights in nn.Linear layout (row n = output channel n);
//   out fp16 [M, N].
// Both operands are K-contiguous, which is exactly what `mma.m16n8k32.row.col` wants (A row-major,
// B column-major), so both go through the same copy and the same `ldmatrix` (no transposes).
//
// Pipeline: each CTA computes one BLOCK_M x BLOCK_N output tile, walking K in BLOCK_K-byte slices
// (64 or 128). `cp.async` (16-byte copies, zero-filled outside the matrix, with a 256-byte L2
// prefetch hint so DRAM sees whole lines even when a slice covers half of one) keeps STAGES-1
// slices in flight in shared memory while the tensor cores work on the oldest one. Out-of-range
// rows (M, N tails) and columns (K tail) are loaded as zeros, so they add nothing to the sums; the
// epilogue masks stores. Within a slice the warps walk k32 steps with double-buffered register
// fragments (ldmatrix of step s+1 is issued before the mma of step s), and the one barrier per
// slice sits before the last step's mma, so the tensor cores stay busy across it (the scheme of
// CUTLASS's multistage mainloop).
//
// Split-K (few output tiles, long K: decode shapes): blockIdx.y picks a contiguous range of K
// slices, the CTA stores its raw int32 sums into partials[split][M][N], and a second kernel adds
// the splits (exactly, in int32) and applies the epilogue. Without split-K the epilogue is fused.
//
// Shared-memory tile: ROWS rows of BLOCK_K bytes (16-byte chunks). An `ldmatrix` phase reads the
// same chunk of 8 consecutive rows, which in plain layout would share banks. So chunk c of row r is
// stored at chunk c ^ ((r >> 1) & 3) for 64-byte rows (the 8 rows of a phase then hit 8 distinct
// 16-byte bank groups within the 4 128-byte lines they span), and at chunk c ^ (r & 7) for 128-byte
// rows (8 rows, 8 distinct chunks). Consecutive chunks of one row stay in distinct bank groups, so
// the cp.async writes are conflict-free too.
//
// Epilogue (spec §3.9, §3.10), each product rounded to nearest in fp32, in this order:
//   plain: fp16_rn( fp32(acc) * (fp32(ws[n]) * fp32(as[m])) )
//   bias : fp16_rn( (fp32(acc) * fp32(ws[n])) * fp32(as[m]) + fp32(bias[n]) )
// The explicit __fmul_rn/__fadd_rn keep nvcc from contracting into an FMA, so the result is the
// fp32 spec evaluation rounded once to fp16.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_utils.cuh"

namespace awq {
namespace w8a8 {

constexpr int kGroupM = 8;         // M tiles visited together by consecutive CTAs (L2 reuse of W)

// What the GEMM kernel does with its sums.
enum class Epilogue { kScale, kScaleBias, kPartials };

template <int BLOCK_M, int BLOCK_N, int BLOCK_K, int WARPS_M, int WARPS_N, int STAGES, int CTAS_PER_SM>
struct GemmConfig {
  static constexpr int kCtasPerSm = CTAS_PER_SM;  // resident CTAs per SM (for the split-K heuristic)
  static constexpr int kBlockM = BLOCK_M;
  static constexpr int kBlockN = BLOCK_N;
  static constexpr int kBlockK = BLOCK_K;             // bytes (= int8 elements) of K per stage and tile row
  static constexpr int kChunksPerRow = BLOCK_K / 16;  // 16-byte chunks per tile row
  static constexpr int kKSteps = BLOCK_K / 32;        // mma k32 steps per stage
  static constexpr int kWarpsM = WARPS_M;
  static constexpr int kWarpsN = WARPS_N;
  static constexpr int kStages = STAGES;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int kWarpTileM = BLOCK_M / WARPS_M;
  static constexpr int kWarpTileN = BLOCK_N / WARPS_N;
  static constexpr int kFragsM = kWarpTileM / 16;  // m16 fragments per warp
  static constexpr int kFragsN = kWarpTileN / 8;   // n8 fragments per warp
  static constexpr int kStageBytes = (BLOCK_M + BLOCK_N) * BLOCK_K;
  static constexpr int kSmemBytes = STAGES * kStageBytes;
  static_assert(kWarpTileM % 16 == 0, "warp tile M must be a multiple of the m16 fragment");
  static_assert(kWarpTileN % 16 == 0, "B fragments are loaded in pairs of n8 tiles");
  static_assert(STAGES >= 2, "the pipeline needs at least two stages");
  static_assert(BLOCK_K == 64 || BLOCK_K == 128, "the swizzle covers 64- and 128-byte rows");
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of 16-byte chunk `chunk` of tile row `row`, rows of BLOCK_K bytes (the swizzle
// described above).
// The XOR term depends on row % 8 only, so it is the same for rows that differ by a multiple of 16
// (which the fragment loads below rely on).
template <int BLOCK_K>
__device__ __forceinline__ int row_swizzle(int row) {
  return BLOCK_K == 64 ? (row >> 1) & 3 : row & 7;
}

template <int BLOCK_K>
__device__ __forceinline__ uint32_t swizzled_offset(int row, int chunk) {
  return static_cast<uint32_t>(row * BLOCK_K + ((chunk ^ row_swizzle<BLOCK_K>(row)) << 4));
}

// 16-byte global->shared copy; with `valid` false nothing is read and the 16 bytes are zeroed.
// The L2::256B hint makes L2 fetch the aligned 256 bytes around `src` from DRAM, which the next
// slices of the same row will read (the hint never faults).
__device__ __forceinline__ void cp_async_16_or_zero(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
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

// Copies rows [row0, row0+ROWS) x bytes [k0, k0+BLOCK_K) of a [rows, K] int8 matrix into one
// swizzled tile; rows >= `rows` and columns >= K become zeros. K % 16 == 0 (checked on the host)
// makes every 16-byte chunk either fully inside or fully outside the matrix, and 16-byte aligned.
template <int ROWS, int BLOCK_K, int THREADS>
__device__ __forceinline__ void load_tile(uint32_t dst, const int8_t* __restrict__ src, int rows, int K, int row0,
                                          int k0, int tid) {
  constexpr int kChunksPerRow = BLOCK_K / 16;
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
      cp_async_16_or_zero(dst + swizzled_offset<BLOCK_K>(row, chunk), p, valid);
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

// One output row m (< M) of a CTA's tile in the epilogue: stores pairs of sums at columns (n, n+1)
// (n even relative to the tile, n + 1 may be >= N), as raw int32 partial sums of this CTA's K split
// (partials[blockIdx.y][m][n]) or through the spec's epilogue into out[m][n] (paired fp16 stores
// when `paired_stores`: N even and out 4-byte aligned, so the pair is in range and aligned).
template <Epilogue EPILOGUE>
struct OutputRow {
  half* out_row = nullptr;
  int* partial_row = nullptr;
  float a_scale = 0.0f;

  __device__ __forceinline__ OutputRow(int m, int M, int N, half* out, int* partials, const half* ascales) {
    const int64_t row_offset = static_cast<int64_t>(m) * N;
    if constexpr (EPILOGUE == Epilogue::kPartials) {
      partial_row = partials + static_cast<int64_t>(blockIdx.y) * M * N + row_offset;
    } else {
      out_row = out + row_offset;
      a_scale = __half2float(ascales[m]);
    }
  }

  __device__ __forceinline__ void store_pair(int v0, int v1, int n, int N, const half* __restrict__ wscales,
                                             const half* __restrict__ bias, bool paired_stores) const {
    if (n >= N) return;
    if constexpr (EPILOGUE == Epilogue::kPartials) {
      partial_row[n] = v0;
      if (n + 1 < N) partial_row[n + 1] = v1;
    } else {
      constexpr bool kBias = EPILOGUE == Epilogue::kScaleBias;
      const half first = scale_output<kBias>(v0, wscales, bias, a_scale, n);
      if (paired_stores) {
        const half second = scale_output<kBias>(v1, wscales, bias, a_scale, n + 1);
        *reinterpret_cast<__half2*>(out_row + n) = __halves2half2(first, second);
      } else {
        out_row[n] = first;
        if (n + 1 < N) out_row[n + 1] = scale_output<kBias>(v1, wscales, bias, a_scale, n + 1);
      }
    }
  }
};

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

  const TileCoord tile = grouped_tile(static_cast<int>(blockIdx.x), tiles_m, tiles_n, kGroupM);
  const int m0 = tile.m * Cfg::kBlockM;
  const int n0 = tile.n * Cfg::kBlockN;

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m0 = (warp / Cfg::kWarpsN) * Cfg::kWarpTileM;  // warp's first row within the tile
  const int warp_n0 = (warp % Cfg::kWarpsN) * Cfg::kWarpTileN;  // warp's first column within the tile

  // Stage s holds the A tile at s*kStageBytes and the W tile right after it.
  const uint32_t smem_base = smem_u32(smem);
  constexpr int kBlockK = Cfg::kBlockK;
  constexpr uint32_t kBOffset = Cfg::kBlockM * kBlockK;
  // This CTA's K slices: [k_tile_begin, k_tile_begin + k_tiles).
  const int k_tile_begin = static_cast<int>(blockIdx.y) * k_tiles_per_split;
  const int k_tiles = min((K + kBlockK - 1) / kBlockK - k_tile_begin, k_tiles_per_split);

  auto load_stage = [&](int stage, int k_tile) {
    const uint32_t a_dst = smem_base + stage * Cfg::kStageBytes;
    const int k0 = (k_tile_begin + k_tile) * kBlockK;
    load_tile<Cfg::kBlockM, kBlockK, Cfg::kThreads>(a_dst, a, M, K, m0, k0, tid);
    load_tile<Cfg::kBlockN, kBlockK, Cfg::kThreads>(a_dst + kBOffset, w, N, K, n0, k0, tid);
  };

  int acc[Cfg::kFragsM][Cfg::kFragsN][4];
#pragma unroll
  for (int i = 0; i < Cfg::kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

  // ldmatrix addressing (fragment layouts of mma.m16n8k32 .s8, see the PTX ISA):
  //   A x4: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
  //         = a0..a3; lane l addresses row l % 16, chunk l / 16 of the k32 step.
  //   W x4: matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
  //         = b0, b1 of n8 tile j and b0, b1 of tile j+1; lane l addresses n (l % 8) + 8 (l / 16),
  //         chunk (l / 8) % 2 of the k32 step.
  // Fragment i (A) or pair j (W) of a warp starts 16 rows after the previous one, so the swizzle
  // term is the same for all of them: address = lane's row offset + a compile-time row offset +
  // (chunk ^ swizzle) * 16 with chunk = 2 * k_step + lane chunk, and since the lane chunk is 0 or 1,
  // (2 * k_step + lane chunk) ^ swizzle = (2 * k_step) ^ (lane chunk ^ swizzle). This keeps the
  // addressing to a few registers instead of one per fragment and step.
  const int a_lane_row = warp_m0 + lane % 16;
  const int b_lane_row = warp_n0 + lane % 8 + 8 * (lane / 16);
  const uint32_t a_lane_offset = a_lane_row * kBlockK;
  const uint32_t b_lane_offset = kBOffset + b_lane_row * kBlockK;
  const int a_lane_xor = (lane / 16) ^ row_swizzle<kBlockK>(a_lane_row);
  const int b_lane_xor = ((lane / 8) % 2) ^ row_swizzle<kBlockK>(b_lane_row);

  // Register fragments, double-buffered: step s computes from buffer s % 2 while buffer (s+1) % 2
  // is being loaded (kKSteps is even, so step 0 of every slice uses buffer 0).
  static_assert(Cfg::kKSteps % 2 == 0, "the fragment double buffer alternates within a slice");
  uint32_t a_frag[2][Cfg::kFragsM][4];
  uint32_t b_frag[2][Cfg::kFragsN][2];
  auto load_fragments = [&](int buffer, uint32_t stage, int k_step) {
    const uint32_t a_base = stage + a_lane_offset + (((2 * k_step) ^ a_lane_xor) << 4);
    const uint32_t b_base = stage + b_lane_offset + (((2 * k_step) ^ b_lane_xor) << 4);
#pragma unroll
    for (int i = 0; i < Cfg::kFragsM; ++i) ldmatrix_x4(a_frag[buffer][i], a_base + i * 16 * kBlockK);
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; j += 2) {
      uint32_t r[4];
      ldmatrix_x4(r, b_base + j * 8 * kBlockK);
      b_frag[buffer][j][0] = r[0];
      b_frag[buffer][j][1] = r[1];
      b_frag[buffer][j + 1][0] = r[2];
      b_frag[buffer][j + 1][1] = r[3];
    }
  };

  // Prologue: STAGES-1 slices in flight. Every slice commits exactly one group (possibly empty), so
  // "group g is complete" always means "slice g has landed".
#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  cp_async_wait<Cfg::kStages - 2>();
  __syncthreads();  // slice 0 is visible to all threads
  int read_stage = 0;                    // slot of the slice being computed
  int write_stage = Cfg::kStages - 1;    // slot the next copy fills
  if (k_tiles > 0) load_fragments(0, smem_base, 0);

  for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
#pragma unroll
    for (int k_step = 0; k_step < Cfg::kKSteps; ++k_step) {
      if (k_step == Cfg::kKSteps - 1) {
        // Slice k_tile + 1 has landed and is visible to all threads; and every warp has loaded its
        // last fragments of slice k_tile (at step kKSteps - 2, above), whose slot the copy at
        // step 0 of slice k_tile + 1 overwrites.
        cp_async_wait<Cfg::kStages - 2>();
        __syncthreads();
        read_stage = read_stage + 1 == Cfg::kStages ? 0 : read_stage + 1;
      }
      // Fragments of the next step: this slice's, or step 0 of the next slice if there is one.
      if (k_step + 1 < Cfg::kKSteps || k_tile + 1 < k_tiles) {
        load_fragments((k_step + 1) % 2, smem_base + read_stage * Cfg::kStageBytes, (k_step + 1) % Cfg::kKSteps);
      }
      if (k_step == 0) {
        // Into the slot of slice k_tile - 1, whose fragments were all loaded before the previous
        // slice's barrier.
        const int next = k_tile + Cfg::kStages - 1;
        if (next < k_tiles) load_stage(write_stage, next);
        cp_async_commit();
        write_stage = write_stage + 1 == Cfg::kStages ? 0 : write_stage + 1;
      }
#pragma unroll
      for (int i = 0; i < Cfg::kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::kFragsN; ++j) {
          mma_s8(acc[i][j], a_frag[k_step % 2][i], b_frag[k_step % 2][j][0], b_frag[k_step % 2][j][1]);
        }
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
      const OutputRow<EPILOGUE> row(m, M, N, out, partials, ascales);
#pragma unroll
      for (int j = 0; j < Cfg::kFragsN; ++j) {
        const int n = n0 + warp_n0 + j * 8 + (lane % 4) * 2;
        row.store_pair(acc[i][j][half_row * 2], acc[i][j][half_row * 2 + 1], n, N, wscales, bias, paired_stores);
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
