// W4A16 GEMM for Hopper (sm_90a): warpgroup MMA (wgmma) with the dequantized weights as the A operand
// in registers and the activations as the B operand in shared memory ("swap AB": D = W x^T, so the
// 64-row wgmma M dimension is filled by weight rows and the token count M only sets the wgmma N).
//
// CTA: 2 warpgroups (256 threads), kRows = 128 * kRT weight rows (kRT wgmma row tiles of 64 per
// warpgroup) x kBN tokens, K in 64-wide tiles through a kStages-deep ring of shared-memory stages
// filled by cp.async from every thread:
//  * x tile [kBN][64] in T: 128 bytes per token row in the 128-byte swizzle that TMA would write (chunk c
//    of row r at chunk c ^ (r % 8), tile 1024-byte aligned), read by wgmma through
//    sm90::smem_desc_128b_swizzle.
//    Tokens past M and k past K are zero-filled (cp.async source size 0).
//  * weight tile: the raw packed bytes of kRows rows x 64 codes (4 KiB per 128 rows) in the layout's own
//    order, as the mma GEMM (MmaWeight<L> in mma_gemm.cuh); rows past N are zero-filled.
// A warp's register A fragment of m64nNk16 (its 16 of the 64 rows) has the mma.m16n8k16 A layout:
// lane (g, t) holds rows g and g + 8 at k = 2t, 2t+1, 2t+8, 2t+9, which is MmaWeight<L>::fragment of
// those two rows, dequantized as in mma_gemm.cuh ((q + magic - sub) * s + add in T, one rounding).
//
// Pipeline of k tile i (all branches uniform across the CTA): issue the 4 * kRT wgmma of tile i, then
// (while they run) wait for tile i + 1's stage, refill the stage of tile i - 1 (finished: every thread
// waited for its wgmma before the barrier) with tile i + kStages - 1, and dequantize tile i + 1:
//  * kRT = 1 (small M, short tiles): into a second fragment buffer before waiting for tile i's wgmma;
//    the constants are loaded two tiles ahead.
//  * kRT = 2 (large M; the registers hold 2 x 64 accumulators per token column): into the same buffer
//    after the wait; the other warpgroup's queued wgmma keep the tensor cores busy meanwhile. The
//    constants are loaded one tile ahead.
// Split K (blockIdx.y) writes fp32 partials that reduce_splits_kernel sums in order.
// Include only in AWQ_KERNELS_SM90A builds (sm90.cuh needs CUDA >= 12.0).
#pragma once

#include <type_traits>

#include "common/sm90.cuh"
#include "w4a16/mma_gemm.cuh"
#include "w4a16/stream_k.cuh"

namespace awq {
namespace w4a16 {

constexpr int kWgmmaBK = 64;  // one 128-byte swizzle row of T per token
constexpr int kWgmmaThreads = 256;

// Weight rows per CTA: 2 warpgroups x kRT row tiles of the wgmma's M = 64.
template <int kRT>
constexpr int wgmma_rows() {
  return 128 * kRT;
}
// Deep rings for small token tiles (weight streaming: >= 5 tiles = 20 KiB of weights in flight per
// CTA), fewer stages where the activation tile is large (<= 181 KiB of shared memory per CTA).
template <int kRT, int kBN>
constexpr int wgmma_stages() {
  return kBN <= 16 ? 8 : (kBN <= 64 ? 6 : (kRT == 2 ? 7 : 5));
}
template <int kRT, int kBN>
constexpr int wgmma_stage_bytes() {
  return kBN * kWgmmaBK * 2 + wgmma_rows<kRT>() * kWgmmaBK / 2;
}
// Dynamic shared memory: the stages plus slack to align the ring to 1024 bytes.
template <int kRT, int kBN>
constexpr int wgmma_smem_bytes() {
  return wgmma_stages<kRT, kBN>() * wgmma_stage_bytes<kRT, kBN>() + 1024;
}

// wgmma.mma_async m64n{N}k16, f32 accumulators, A (4 registers per thread) from registers, B from a
// K-major shared-memory descriptor; D += A B (scale-d = 1, no negation, no transpose).
template <typename T, int N>
struct WgmmaRs;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One set of specializations per element type; the PTX differs only in the type name.
#define AWQ_WGMMA_RS_SPECIALIZATIONS(T, PTX_TYPE)                                                                         \
template <>                                                                                                               \
struct WgmmaRs<T, 16> {                                                                                                   \
  __device__ static void mma(float (&d)[8], const uint32_t (&a)[4], uint64_t desc_b) {                                    \
    asm volatile(                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"                                                                      \
        "wgmma.mma_async.sync.aligned.m64n16k16.f32." PTX_TYPE "." PTX_TYPE " "                                           \
        "{%0, %1, %2, %3, %4, %5, %6, %7}, "                                                                              \
        "{%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"                                                                       \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])                  \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                                               \
  }                                                                                                                       \
};                                                                                                                        \
template <>                                                                                                               \
struct WgmmaRs<T, 64> {                                                                                                   \
  __device__ static void mma(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {                                   \
    asm volatile(                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                      \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX_TYPE "." PTX_TYPE " "                                           \
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                         \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "                               \
        "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"                                                                     \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                 \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),           \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),         \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])          \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                                               \
  }                                                                                                                       \
};                                                                                                                        \
template <>                                                                                                               \
struct WgmmaRs<T, 128> {                                                                                                  \
  __device__ static void mma(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {                                   \
    asm volatile(                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                                      \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE " "                                          \
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                         \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                                \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                                \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "                               \
        "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"                                                                     \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                 \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),           \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),         \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),         \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),         \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),         \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),         \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])          \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                                               \
  }                                                                                                                       \
};                                                                                                                        \
template <>                                                                                                               \
struct WgmmaRs<T, 256> {                                                                                                  \
  __device__ static void mma(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {                                  \
    asm volatile(                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                                                     \
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." PTX_TYPE "." PTX_TYPE " "                                          \
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                         \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                                \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                                \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "                                \
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                                \
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "                                \
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "                    \
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "               \
        "{%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"                                                                \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                 \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),           \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),         \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),         \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),         \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),         \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),         \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),         \
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),         \
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),         \
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),         \
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),         \
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),     \
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])  \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                                               \
  }                                                                                                                       \
};
AWQ_WGMMA_RS_SPECIALIZATIONS(half, "f16")
AWQ_WGMMA_RS_SPECIALIZATIONS(__nv_bfloat16, "bf16")
#undef AWQ_WGMMA_RS_SPECIALIZATIONS
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// dequant_pair constants of a thread's two rows (h: row g or g + 8) for the two 32-wide halves of
// a k tile (gi): G = 32 has a group per half, larger G the same group twice.
template <typename T>
struct TileConstants {
  using T2 = typename MmaTypes<T>::T2;
  T2 sub[2][2], scale[2][2], add[2][2];
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The constants of k tile kt for the rows n (h = 0) and n + 8 (h = 1), clamped into the weight (rows
// past N and groups past K belong to masked outputs or zero-filled activations). Only G = 32 has a
// second group in the tile: larger groups copy the first half's constants instead of loading them.
template <typename T, Layout L>
__device__ __forceinline__ void load_tile_constants(const WeightArgs<T>& w, int n, int kt, TileConstants<T>& c) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = min(n + 8 * h, w.n - 1);
    const int group = min((kt * kWgmmaBK) >> w.group_shift, w.groups - 1);
    dequant_constants<T, L>(w, row, group, c.sub[h][0], c.scale[h][0], c.add[h][0]);
    if (w.group_shift < 6) {
      const int second = min((kt * kWgmmaBK + 32) >> w.group_shift, w.groups - 1);
      dequant_constants<T, L>(w, row, second, c.sub[h][1], c.scale[h][1], c.add[h][1]);
    } else {
      c.sub[h][1] = c.sub[h][0];
      c.scale[h][1] = c.scale[h][0];
      c.add[h][1] = c.add[h][0];
    }
  }
}

// frag[step]: the wgmma A registers of the warp's 16 rows (tile-local rows nl, nl + 8) for k16 step
// `step` of the weight tile at w_tile (the mma.m16n8k16 A layout: k 2t.., 2t+8..).
template <typename T, Layout L>
__device__ __forceinline__ void dequantize_fragments(const uint8_t* w_tile, int nl, int t, const TileConstants<T>& k,
                                                     uint32_t (&frag)[4][4]) {
  uint32_t lo[4][2], hi[4][2];
  MmaWeight<L>::template fragment<T>(w_tile, nl, t, lo);
  MmaWeight<L>::template fragment<T>(w_tile, nl + 8, t, hi);
#pragma unroll
  for (int step = 0; step < 4; ++step) {
    const int gi = step / 2;
    frag[step][0] = dequant_pair<T>(lo[step][0], k.sub[0][gi], k.scale[0][gi], k.add[0][gi]);
    frag[step][1] = dequant_pair<T>(hi[step][0], k.sub[1][gi], k.scale[1][gi], k.add[1][gi]);
    frag[step][2] = dequant_pair<T>(lo[step][1], k.sub[0][gi], k.scale[0][gi], k.add[0][gi]);
    frag[step][3] = dequant_pair<T>(hi[step][1], k.sub[1][gi], k.scale[1][gi], k.add[1][gi]);
  }
}

// Stores the accumulators of one 64-row wgmma tile: acc[4j + e] is weight row n (+ 8 for e >= 2) x
// token m + 8j + 2t + (e & 1) (n = the thread's row g, m = the tile's first token). Rows >= N and
// tokens >= M are masked; split K writes the fp32 partial of slice `split`.
template <typename T, int kBN>
__device__ __forceinline__ void store_accumulators(const float (&acc)[kBN / 2], int n, int m, int t, int n_total,
                                                   int m_total, T* out, float* partial, int split, int k_splits) {
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      store_result(out, partial, split, k_splits, m + 8 * j + 2 * t + (e & 1), m_total, n + (e >= 2 ? 8 : 0), n_total,
                   acc[4 * j + e]);
    }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Token tiles up to 64 (weight streaming) keep 2 CTAs per SM: <= 128 registers per thread.
template <typename T, Layout L, int kRT, int kBN>
__global__ void __launch_bounds__(kWgmmaThreads, kBN <= 64 ? 2 : 1)
    w4a16_wgmma_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out, float* __restrict__ partial,
                       int m_total, int k_splits) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kRows = wgmma_rows<kRT>();
  constexpr int kStages = wgmma_stages<kRT, kBN>();
  constexpr int kStageBytes = wgmma_stage_bytes<kRT, kBN>();
  constexpr int kXBytes = kBN * kWgmmaBK * 2;
  constexpr int kAcc = kBN / 2;  // m64n{kBN} f32 accumulators per thread and row tile
  constexpr int kBuffers = kRT == 1 ? 2 : 1;  // A fragment buffers
  static_assert(kStages >= 3, "the refill of tile i - 1's stage needs a third stage");
  static_assert(kBN % 16 == 0 && kBN <= 256, "token tile: wgmma N in 16..256, whole 8-row swizzle atoms");
  static_assert(kRT * kAcc <= 128, "accumulators: at most 128 registers per thread");
  static_assert(kStageBytes % 1024 == 0, "stages must keep the 1024-byte alignment of the swizzle atoms");

  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024u - (sm90::smem_addr(smem_raw) & 1023u)) & 1023u);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  // Tile-local weight row of the thread's A registers 0 and 2 in row tile rt (registers 1 and 3: + 8).
  auto row_of = [&](int rt) { return 64 * kRT * (warp / 4) + 64 * rt + 16 * (warp % 4) + g; };

  // Raster: kMmaGroupM consecutive token tiles sweep the weight-row tiles together (x stays in L2).
  const TileCoord tile = grouped_tile(blockIdx.x, (m_total + kBN - 1) / kBN, (w.n + kRows - 1) / kRows, kMmaGroupM);
  const int m0 = tile.m * kBN;
  const int n0 = tile.n * kRows;

  const int k_tiles = (w.k + kWgmmaBK - 1) / kWgmmaBK;
  const int split = blockIdx.y;
  const int kt_begin = split_begin(k_tiles, split, k_splits);
  const int kt_count = split_begin(k_tiles, split + 1, k_splits) - kt_begin;

  // A stage: kBN * 8 activation chunks (16 bytes) and 256 * kRT weight chunks, one per thread per round.
  auto load_stage = [&](int stage, int kt) {
    uint8_t* x_tile = smem + stage * kStageBytes;
    uint8_t* w_tile = x_tile + kXBytes;
    constexpr int kRounds = (kBN * 8 + kWgmmaThreads - 1) / kWgmmaThreads;
    // Unrolled only for small tiles: 8 rounds of precomputed addresses would spill at kBN = 256.
#pragma unroll(kRounds <= 2 ? kRounds : 1)
    for (int round = 0; round < kRounds; ++round) {
      const int c = tid + round * kWgmmaThreads;
      if (kBN * 8 % kWgmmaThreads == 0 || c < kBN * 8) {
        const int r = c / 8;
        const int chunk = c % 8;
        const int k = kt * kWgmmaBK + chunk * 8;
        const bool valid = m0 + r < m_total && k < w.k;
        const T* src = x + (valid ? static_cast<int64_t>(m0 + r) * w.k + k : 0);
        cp_async16(x_tile + r * 128 + ((chunk ^ (r & 7)) * 16), src, valid);
      }
    }
#pragma unroll
    for (int round = 0; round < kRT; ++round) {
      const int c = tid + round * kWgmmaThreads;
      bool valid;
      const uint8_t* src = MmaWeight<L>::chunk_src(w.qweight, w.n, w.k, n0, kt, c, valid);
      cp_async16(w_tile + c * 16, src, valid);
    }
  };

  using Constants = TileConstants<T>[kRT];
  auto load_constants = [&](int kt, Constants& c) {
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) load_tile_constants<T, L>(w, n0 + row_of(rt), kt, c[rt]);
  };

  // frag[rt][step]: the A registers of row tile rt, k16 step `step` (rows g, g + 8 x k 2t.., 2t+8..).
  auto dequantize = [&](int stage, const Constants& c, uint32_t (&frag)[kRT][4][4]) {
    const uint8_t* w_tile = smem + stage * kStageBytes + kXBytes;
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) dequantize_fragments<T, L>(w_tile, row_of(rt), t, c[rt], frag[rt]);
  };

  float acc[kRT][kAcc];
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[rt][i] = 0.f;

  // Prologue: tiles 0 .. kStages - 2 in flight (one commit group each, empty past the split's end).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt_count) load_stage(s, kt_begin + s);
    cp_async_commit();
  }
  // kRT = 1: `current` feeds the next dequantization, `next` is in flight one tile further.
  Constants current, next;
  load_constants(kt_begin, current);
  if constexpr (kBuffers == 2) load_constants(kt_begin + min(1, kt_count - 1), next);
  uint32_t frag[kBuffers][kRT][4][4];
  cp_async_wait<kStages - 2>();
  sm90::fence_proxy_async();
  __syncthreads();
  dequantize(0, current, frag[0]);

  auto iteration = [&](auto buffer_tag, int i) {
    constexpr int kBuf = decltype(buffer_tag)::value;
    const uint8_t* x_tile = smem + (i % kStages) * kStageBytes;
    sm90::wgmma_fence();
#pragma unroll
    for (int step = 0; step < 4; ++step)
#pragma unroll
      for (int rt = 0; rt < kRT; ++rt)
        WgmmaRs<T, kBN>::mma(acc[rt], frag[kBuf][rt][step], sm90::smem_desc_128b_swizzle(x_tile + 32 * step));
    sm90::wgmma_commit_group();
    const bool more = i + 1 < kt_count;
    if (more) {
      if constexpr (kBuffers == 2) {
        for (int rt = 0; rt < kRT; ++rt) current[rt] = next[rt];
        if (i + 2 < kt_count) load_constants(kt_begin + i + 2, next);
      } else {
        load_constants(kt_begin + i + 1, current);  // tile i's fragments are already built
      }
      // Commit groups so far: kStages - 1 + i (tiles 0 .. kStages - 2 + i); tile i + 1 must be complete.
      cp_async_wait<kStages - 3>();
      sm90::fence_proxy_async();
      __syncthreads();
      const int refill = i + kStages - 1;  // into the stage of tile i - 1 (or the unused last one at i = 0)
      if (refill < kt_count) load_stage(refill % kStages, kt_begin + refill);
      cp_async_commit();
      if constexpr (kBuffers == 2) dequantize((i + 1) % kStages, current, frag[kBuf ^ 1]);
    }
    sm90::wgmma_wait<0>();
    // Tile i's A registers stay allocated until its wgmma completed.
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int step = 0; step < 4; ++step)
#pragma unroll
        for (int r = 0; r < 4; ++r) sm90::fence_register(frag[kBuf][rt][step][r]);
    if constexpr (kBuffers == 1) {
      if (more) dequantize((i + 1) % kStages, current, frag[0]);
    }
  };
  for (int i = 0; i < kt_count; i += kBuffers) {
    iteration(std::integral_constant<int, 0>{}, i);
    if constexpr (kBuffers == 2) {
      if (i + 1 < kt_count) iteration(std::integral_constant<int, 1>{}, i + 1);
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int i = 0; i < kAcc; ++i) sm90::fence_register(acc[rt][i]);

#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
    store_accumulators<T, kBN>(acc[rt], n0 + row_of(rt), m0, t, w.n, m_total, out, partial, split, k_splits);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL (the host launches this kernel only on such devices)
}


// ---- Warp-specialized variant ("wgmma_ws"): TMA producer, mbarrier ring, persistent CTAs.
//
// CTA: wgmma_ws_warpgroups<kBN>() consumer warpgroups of 64 weight rows each (kRows) x kBN tokens,
// then a producer warpgroup; K in 64-wide tiles through a kStages-deep ring of shared-memory slots:
//  * the producer warpgroup's first thread. Per k tile it waits until the tile's slot is free (`empty`,
//    released by all consumer threads), announces the slot's bytes on `full` and issues two TMA
//    copies: the x box (kBN tokens x 64 k, the 128-byte swizzle of the descriptor, as the cp.async
//    variant writes it) and the weight box, the raw packed bytes in the layout's own order (v2: kRows / 4
//    packed rows x 128 bytes; v1: kRows rows x 32 bytes: the order MmaWeight<L>::fragment reads). TMA
//    zero-fills tokens >= M, k >= K and rows >= N; the transaction count is always the full boxes.
//  * consumer warpgroup j owns rows 64 j .. 64 j + 63. Tile i: issue its four m64n{kBN}k16 wgmma
//    (A = fragments dequantized during tile i - 1), commit, wait until tile i - 1's wgmma are done
//    (`wait_group 1`: tile i's stay queued, so the tensor cores never wait for this warpgroup's
//    dequantization), release tile i - 1's slot, then wait for tile i + 1's slot and dequantize it into
//    the other fragment buffer. Constants (scales / zeros): loaded and switched only for tiles that
//    start a group (every other tile at G = 128), a tile ahead of their use.
// The grid is persistent (stream_k.cuh): each CTA walks its pieces (whole output tiles, then a K range of
// the last tiles) with the ring running on from piece to piece; at the end of a piece the consumers
// drain their wgmma, store (the output, or the piece's fp32 partial slot) and restart at zero.
// Three consumer warpgroups (192 rows) at kBN = 64: there the consumers' issue (~120 instructions per
// warp and k tile, most of it the dequantization) and its latencies, not the tensor cores (128 clocks
// per 64 rows), bound a tile; two warps per scheduler left it at ~0.4 issue per clock (Nsight, S8-1).
// (Four would leave the consumers 104 registers: they spill.) setmaxnreg moves registers from the
// producer warpgroup (one thread issues, the others exit) to the consumers: 168 at entry -> 56 / 224
// with 2 consumer warpgroups (up to 128 accumulators, 2 x 16 fragment registers, two tiles of
// constants), 128 -> 56 / 152 with 3. ptxas: no spills in any instance.
template <int kBN>
constexpr int wgmma_ws_warpgroups() {
  return kBN <= 64 ? 3 : 2;
}
template <int kBN>
constexpr int wgmma_ws_rows() {
  return 64 * wgmma_ws_warpgroups<kBN>();
}
template <int kBN>
constexpr int wgmma_ws_threads() {
  return 128 * (wgmma_ws_warpgroups<kBN>() + 1);
}
// Registers at entry (the launch bound's share, a multiple of 8) and of a consumer.
template <int kBN>
constexpr int wgmma_ws_entry_regs() {
  return 65536 / wgmma_ws_threads<kBN>() / 8 * 8;
}
constexpr int kWgmmaWsProducerRegs = 56;
template <int kBN>
constexpr int wgmma_ws_consumer_regs() {
  return (wgmma_ws_entry_regs<kBN>() * wgmma_ws_threads<kBN>() - 128 * kWgmmaWsProducerRegs) /
         (128 * wgmma_ws_warpgroups<kBN>()) / 8 * 8;
}
template <int kBN>
constexpr int wgmma_ws_stage_bytes() {
  return kBN * kWgmmaBK * 2 + wgmma_ws_rows<kBN>() * kWgmmaBK / 2;
}
// Ring depth: as many stages as fit in 216 KiB (x tile kBN x 128 bytes + the weight tile each): 15, 10, 6.
template <int kBN>
constexpr int wgmma_ws_stages() {
  return 216 * 1024 / wgmma_ws_stage_bytes<kBN>();
}
template <int kBN>
constexpr int wgmma_ws_smem_bytes() {
  return wgmma_ws_stages<kBN>() * wgmma_ws_stage_bytes<kBN>() + 1024;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Stores the accumulators of one 64-row wgmma tile as a piece of a cut tile: element (token m, row n)
// of the kRows x kBN tile at tile[m * kRows + n] (stream_k_fixup_kernel's order), unmasked.
template <int kBN, int kRows>
__device__ __forceinline__ void store_piece(const float (&acc)[kBN / 2], int row, int t, float* __restrict__ tile) {
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) tile[(8 * j + 2 * t + (e & 1)) * kRows + row + (e >= 2 ? 8 : 0)] = acc[4 * j + e];
}
#endif

template <typename T, Layout L, int kBN>
__global__ void __launch_bounds__(wgmma_ws_threads<kBN>(), 1)
    w4a16_wgmma_ws_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                          WeightArgs<T> w, T* __restrict__ out, float* __restrict__ partial, int m_total,
                          StreamKSchedule schedule) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int kRows = wgmma_ws_rows<kBN>();
  constexpr int kConsumers = 128 * wgmma_ws_warpgroups<kBN>();
  constexpr int kStages = wgmma_ws_stages<kBN>();
  constexpr int kStageBytes = wgmma_ws_stage_bytes<kBN>();
  constexpr int kXBytes = kBN * kWgmmaBK * 2;
  static_assert(kStageBytes % 1024 == 0, "stages must keep the 1024-byte alignment of the swizzle atoms");
  static_assert(kBN % 64 == 0 && kBN <= 256 && kRows <= 256, "TMA boxes of <= 256 rows, whole swizzle atoms");
  static_assert(kStages >= 2, "tile i + 1 is dequantized while tile i's wgmma run");

  extern __shared__ uint8_t smem_raw[];
  __shared__ uint64_t full_bar[kStages];   // the slot holds tile i (1 arrival + the TMA bytes)
  __shared__ uint64_t empty_bar[kStages];  // the slot's tile was read by all consumer threads
  uint8_t* smem = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);

  // Raster as the cp.async variant: kMmaGroupM consecutive token tiles sweep the weight-row tiles.
  const int tiles_m = (m_total + kBN - 1) / kBN;
  const int tiles_n = (w.n + kRows - 1) / kRows;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full_bar[s], 1);
      mbarrier_init(&empty_bar[s], kConsumers);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x >= kConsumers) {
    setmaxnreg_dec<kWgmmaWsProducerRegs>();
    if (threadIdx.x != kConsumers) return;
    constexpr int kWBoxBytes = L == Layout::kV2 ? 128 : 32;  // packed-row bytes per k tile
    int stage = 0;
    uint32_t phase = 0;  // parity of the slot's current round
    int issued = 0;
    for_each_piece(schedule, static_cast<int>(blockIdx.x), [&](int tile_index, int kt_begin, int kt_end, int) {
      const TileCoord tile = grouped_tile(tile_index, tiles_m, tiles_n, kMmaGroupM);
      const int m0 = tile.m * kBN;
      const int n0 = tile.n * kRows;
      // Weight box coordinates: (byte in the packed row, packed row) of the tile's first chunk.
      const int w_row = L == Layout::kV2 ? n0 / 4 : n0;
      // The CTA's columns of the [Gp, N] scale / zero rows (v2), up to its last weight row.
      const T* scales = w.scales + n0;
      const T* zeros = static_cast<const T*>(w.zeros) + n0;
      const int last_row = min(kRows, w.n - n0) - 1;
      for (int kt = kt_begin; kt < kt_end; ++kt, ++issued) {
        // Round r >= 1 of a slot reuses it once the consumers released round r - 1.
        if (issued >= kStages) mbarrier_wait(&empty_bar[stage], phase ^ 1);
        uint8_t* slot = smem + stage * kStageBytes;
        mbarrier_arrive_expect_tx(&full_bar[stage], kStageBytes);
        tma_load_2d(slot, &x_map, &full_bar[stage], kt * kWgmmaBK, m0);
        tma_load_2d(slot + kXBytes, &w_map, &full_bar[stage], kt * kWBoxBytes, w_row);
        if constexpr (L == Layout::kV2) {
          // The consumers load a group's scales / zeros one tile before its first use; a v2 group is a
          // new row of [Gp, N], first touched by this CTA, i.e. a DRAM round trip they would wait for.
          // Prefetched into L2 here, kStages tiles ahead: every 128 bytes of the CTA's columns.
          const int first = (kt * kWgmmaBK) >> w.group_shift;
          const int last = min((kt * kWgmmaBK + kWgmmaBK - 1) >> w.group_shift, w.groups - 1);
          if (kt == kt_begin || first != ((kt - 1) * kWgmmaBK) >> w.group_shift) {
            for (int g = min(first, w.groups - 1); g <= last; ++g) {
              for (int offset = 0; offset < kRows + 63; offset += 64) {
                prefetch_l2(scales + g * w.scale_stride + min(offset, last_row));
                prefetch_l2(zeros + g * w.zero_stride + min(offset, last_row));
              }
            }
          }
        }
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    });
    return;
  }

  setmaxnreg_inc<wgmma_ws_consumer_regs<kBN>()>();
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int t = lane & 3;
  // Tile-local weight row of the thread's A registers 0 and 2 (registers 1 and 3: + 8): warp v of the
  // consumers owns rows 16 v .. 16 v + 15 (warpgroup j: 64 j .. 64 j + 63).
  const int row = 16 * (tid >> 5) + (lane >> 2);
  auto starts_group = [&](int kt) {
    return (kt * kWgmmaBK) >> w.group_shift != ((kt - 1) * kWgmmaBK) >> w.group_shift;
  };
  // The x tile's descriptor in slot 0; slot s and k16 step j add (s * kStageBytes + 32 j) >> 4 to its
  // start address field (shared addresses < 256 KiB: no carry out of the 14-bit field).
  const uint64_t desc = smem_desc_128b_swizzle(smem);
  // Slot and parity of the next tile to dequantize; they run on across pieces as the producer's.
  int next_stage = 0;
  uint32_t next_phase = 0;
  auto advance = [&]() {
    if (++next_stage == kStages) {
      next_stage = 0;
      next_phase ^= 1;
    }
  };
  for_each_piece(schedule, static_cast<int>(blockIdx.x), [&](int tile_index, int kt_begin, int kt_end, int slot) {
    const TileCoord tile = grouped_tile(tile_index, tiles_m, tiles_n, kMmaGroupM);
    const int m0 = tile.m * kBN;
    const int n0 = tile.n * kRows;
    const int kt_count = kt_end - kt_begin;

    float acc[kBN / 2];
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.f;
    // `current` feeds the next dequantization, `next` holds the next group's constants.
    TileConstants<T> current, next;
    load_tile_constants<T, L>(w, n0 + row, kt_begin, current);
    load_tile_constants<T, L>(w, n0 + row, kt_begin + min(1, kt_count - 1), next);
    uint32_t frag[2][4][4];
    mbarrier_wait(&full_bar[next_stage], next_phase);
    dequantize_fragments<T, L>(smem + next_stage * kStageBytes + kXBytes, row, t, current, frag[0]);
    int stage = next_stage;  // slot of tile i
    advance();
    auto iteration = [&](auto buffer_tag, int i) {
      constexpr int kBuf = decltype(buffer_tag)::value;
      const uint64_t slot_desc = desc + static_cast<uint32_t>(stage * (kStageBytes >> 4));
      wgmma_fence();
#pragma unroll
      for (int step = 0; step < 4; ++step) WgmmaRs<T, kBN>::mma(acc, frag[kBuf][step], slot_desc + 2 * step);
      wgmma_commit_group();
      // Tile i - 1's wgmma are done: its fragments (the other buffer) and its slot are free.
      wgmma_wait<1>();
#pragma unroll
      for (int step = 0; step < 4; ++step)
#pragma unroll
        for (int r = 0; r < 4; ++r) fence_register(frag[kBuf ^ 1][step][r]);
      if (i > 0) mbarrier_arrive(&empty_bar[stage == 0 ? kStages - 1 : stage - 1]);
      stage = next_stage;
      if (i + 1 < kt_count) {
        // A tile that starts a group (every tile for G <= 64, every other one for G = 128) takes the
        // constants loaded a tile earlier into `next`; the others keep their predecessor's.
        const int kt = kt_begin + i + 1;
        if (starts_group(kt)) current = next;
        if (i + 2 < kt_count && starts_group(kt + 1)) load_tile_constants<T, L>(w, n0 + row, kt + 1, next);
        mbarrier_wait(&full_bar[next_stage], next_phase);
        dequantize_fragments<T, L>(smem + next_stage * kStageBytes + kXBytes, row, t, current, frag[kBuf ^ 1]);
        advance();
      }
    };
    for (int i = 0; i < kt_count; i += 2) {
      iteration(std::integral_constant<int, 0>{}, i);
      if (i + 1 < kt_count) iteration(std::integral_constant<int, 1>{}, i + 1);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < 2; ++b)
#pragma unroll
      for (int step = 0; step < 4; ++step)
#pragma unroll
        for (int r = 0; r < 4; ++r) fence_register(frag[b][step][r]);
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) fence_register(acc[i]);
    // The piece's last tile is done with its slot.
    mbarrier_arrive(&empty_bar[stage == 0 ? kStages - 1 : stage - 1]);
    if (slot < 0) {
      store_accumulators<T, kBN>(acc, n0 + row, m0, t, w.n, m_total, out, nullptr, 0, 1);
    } else {
      store_piece<kBN, kRows>(acc, row, t, partial + (2 * static_cast<int64_t>(blockIdx.x) + slot) * (kRows * kBN));
    }
  });
#endif  // __CUDA_ARCH_FEAT_SM90_ALL (the host launches this kernel only on such devices)
}

}  // namespace w4a16
}  // namespace awq
