// W8A8 GEMM on Hopper (sm_90a): the same product and epilogue as w8a8_gemm.cuh (same layouts: A
// int8 [M, K], W int8 [N, K], both K-contiguous; out fp16 [M, N]), with `wgmma` (IGMMA in SASS) fed
// by TMA instead of mma.sync fed by cp.async + ldmatrix.
//
// CTA tile 128 x 256 (M x N), K in 128-byte slices; 3 warpgroups (warp specialisation):
//   * warpgroup 0, one thread: the producer. For each K slice it waits until the slice's ring slot
//     is free (`empty` mbarrier), announces the slot's bytes on its `full` mbarrier and issues two TMA
//     copies: the A box (128 rows x 128 bytes) and the W box (256 rows x 128 bytes). TMA zero-fills
//     rows >= M / >= N and bytes >= K, so tails need no masking in the mainloop and the transaction
//     count is always the full box.
//   * warpgroups 1 and 2: consumers, rows 0-63 and 64-127 of the tile. Per slice: wait `full`, four
//     `wgmma.m64n256k32.s32.s8.s8` (A and W from shared memory, both K-major), commit; then wait
//     until the previous slice's wgmmas are done and release that slot (`empty`, all 256 consumer
//     threads arrive), so one slice of wgmmas is always queued behind the running one.
//   setmaxnreg moves registers from the producer (40) to the consumers (232: 128 int32 accumulators
//   each plus the epilogue).
// Ring slot s: A at s * kStageBytes (16 KiB), W right after (32 KiB); every tile 1024-byte aligned,
// as the 128-byte swizzle atom (8 rows x 128 bytes) requires. The TMA 128-byte swizzle stores
// 16-byte chunk c of row r at chunk c ^ (r % 8), which is the layout the wgmma descriptor's
// "128B swizzle" mode reads (smem_desc_128b_swizzle): a k32 step is +32 bytes of start address.
//
// Accumulators of consumer warpgroup g, thread t (warp w = t / 32 within the group, lane l):
// d[4j + {0,1}] at (row 64g + 16w + l/4, cols 8j + 2(l%4) + {0,1}); d[4j + {2,3}] at row + 8
// (the mma.m16n8 C layout, repeated over the 32 n8 blocks). The epilogue (or the split-K partial
// sums) is OutputRow's, as in the mma.sync kernel, so both kernels round identically.
//
// Split-K and the tile order (kGroupM) are those of the mma.sync kernel (blockIdx.y = K split).
#pragma once

#include "common/sm90.cuh"
#include "w8a8/w8a8_gemm.cuh"

namespace awq {
namespace w8a8 {

struct WgmmaConfig {
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 256;
  static constexpr int kBlockK = 128;  // bytes: one 128-byte swizzle row
  static constexpr int kStages = 4;
  static constexpr int kConsumers = 2;  // warpgroups, 64 rows each
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kABytes = kBlockM * kBlockK;
  static constexpr int kBBytes = kBlockN * kBlockK;
  static constexpr int kStageBytes = kABytes + kBBytes;
  // + 1024: the dynamic shared memory is aligned up to the swizzle atom inside the kernel.
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static_assert(kBlockM == 64 * kConsumers, "each consumer warpgroup owns 64 rows (the wgmma M)");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "tiles must stay 1024-byte aligned");
  static_assert(128 * (kProducerRegs + kConsumers * kConsumerRegs) <= 65536, "register file");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (64 x 256, int32) += A (64 x 32, K-major, shared) * W (256 x 32, K-major, shared)^T, exact.
__device__ __forceinline__ void wgmma_s8_m64n256k32(int (&d)[128], uint64_t a_desc, uint64_t b_desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, p;\n}\n"
      :
        "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
        "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
        "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
        "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]),
        "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]),
        "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]),
        "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(a_desc), "l"(b_desc), "r"(1));
}
#endif

template <Epilogue EPILOGUE>
__global__ void __launch_bounds__(WgmmaConfig::kThreads, 1)
    w8a8_wgmma_kernel(const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap w_map,
                      const half* __restrict__ wscales, const half* __restrict__ ascales,
                      const half* __restrict__ bias, half* __restrict__ out, int* __restrict__ partials, int M,
                      int N, int K, int tiles_m, int tiles_n, int k_tiles_per_split, bool paired_stores) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = WgmmaConfig;
  using namespace sm90;
  extern __shared__ uint8_t smem_raw[];
  __shared__ uint64_t full_bar[Cfg::kStages];   // slot holds a landed slice (1 arrival + TMA bytes)
  __shared__ uint64_t empty_bar[Cfg::kStages];  // slot was read by all consumer threads
  uint8_t* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);

  const TileCoord tile = grouped_tile(static_cast<int>(blockIdx.x), tiles_m, tiles_n, kGroupM);
  const int m0 = tile.m * Cfg::kBlockM;
  const int n0 = tile.n * Cfg::kBlockN;
  // This CTA's K slices: [k_tile_begin, k_tile_begin + k_tiles), at least one (the host launches no
  // empty split and no K = 0 problem).
  const int k_tile_begin = static_cast<int>(blockIdx.y) * k_tiles_per_split;
  const int k_tiles = min((K + Cfg::kBlockK - 1) / Cfg::kBlockK - k_tile_begin, k_tiles_per_split);

  if (threadIdx.x == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbarrier_init(&full_bar[s], 1);
      mbarrier_init(&empty_bar[s], 128 * Cfg::kConsumers);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int warpgroup = static_cast<int>(threadIdx.x) / 128;
  if (warpgroup == 0) {
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (threadIdx.x == 0) {
      int stage = 0;
      uint32_t phase = 0;  // parity of the slot's current round
      for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
        // Round r >= 1 of a slot reuses it once the consumers released round r - 1.
        if (k_tile >= Cfg::kStages) mbarrier_wait(&empty_bar[stage], phase ^ 1);
        uint8_t* slot = smem + stage * Cfg::kStageBytes;
        const int k0 = (k_tile_begin + k_tile) * Cfg::kBlockK;
        mbarrier_arrive_expect_tx(&full_bar[stage], Cfg::kStageBytes);
        tma_load_2d(slot, &a_map, &full_bar[stage], k0, m0);
        tma_load_2d(slot + Cfg::kABytes, &w_map, &full_bar[stage], k0, n0);
        if (++stage == Cfg::kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
  } else {
    setmaxnreg_inc<Cfg::kConsumerRegs>();
    const int consumer = warpgroup - 1;
    int acc[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) acc[i] = 0;
    // Descriptors of slot 0 (this warpgroup's 64 A rows, all 256 W rows); slot s and k32 step ks add
    // (s * kStageBytes + 32 * ks) >> 4 to the start address field.
    const uint64_t a_desc = smem_desc_128b_swizzle(smem + consumer * 64 * Cfg::kBlockK);
    const uint64_t b_desc = smem_desc_128b_swizzle(smem + Cfg::kABytes);
    int stage = 0;
    int prev_stage = 0;
    uint32_t phase = 0;
    for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
      mbarrier_wait(&full_bar[stage], phase);
      wgmma_fence();
      const uint64_t slot = static_cast<uint64_t>(stage * Cfg::kStageBytes) >> 4;
#pragma unroll
      for (int ks = 0; ks < Cfg::kBlockK / 32; ++ks) {
        wgmma_s8_m64n256k32(acc, a_desc + slot + 2 * ks, b_desc + slot + 2 * ks);
      }
      wgmma_commit_group();
      // The previous slice's wgmmas have finished reading their slot: hand it back to the producer.
      wgmma_wait<1>();
      if (k_tile > 0) mbarrier_arrive(&empty_bar[prev_stage]);
      prev_stage = stage;
      if (++stage == Cfg::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 128; ++i) fence_register(acc[i]);

    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int warp = (static_cast<int>(threadIdx.x) / 32) % 4;
#pragma unroll
    for (int half_row = 0; half_row < 2; ++half_row) {
      const int m = m0 + consumer * 64 + warp * 16 + lane / 4 + half_row * 8;
      if (m >= M) continue;
      const OutputRow<EPILOGUE> row(m, M, N, out, partials, ascales);
#pragma unroll
      for (int j = 0; j < Cfg::kBlockN / 8; ++j) {
        const int n = n0 + j * 8 + (lane % 4) * 2;
        row.store_pair(acc[4 * j + 2 * half_row], acc[4 * j + 2 * half_row + 1], n, N, wscales, bias,
                       paired_stores);
      }
    }
  }
#else
  // Hopper-only (wgmma, TMA, setmaxnreg); the host launches it only on sm_90a builds on CC 9.0 GPUs.
  __trap();
#endif
}

}  // namespace w8a8
}  // namespace awq
