// W4A16 GEMM on tensor cores (sm_80+): mma.sync.m16n8k16 with fp16/bf16 inputs and fp32 accumulators.
//
// CTA tile kBM x 128 (n) x 64 (k), kWarpsM x kWarpsN warps, a kStages-deep cp.async pipeline into
// shared memory for both operands:
//  * A (activations) [kBM][64] in T, 128 bytes per row, its eight 16-byte chunks XOR-swizzled by
//    (row & 7) so that ldmatrix.x4 (eight rows at one chunk column) hits eight different bank groups.
//    Rows past M and k past K are zero-filled by cp.async (source size 0).
//  * B (weights) as the raw packed bytes of the tile: 128 rows x 64 codes = 4 KiB, copied chunk by
//    chunk in the layout's own order (v2: 32 packed rows x 128 bytes; v1: 128 rows x 32 bytes).
// B fragments are decoded in registers with the magic-number trick: a code q OR-ed into the mantissa
// of the T constant 1024 (fp16) or 128 (bf16) is the exact value 1024 + q (128 + q); then
// w = (that - sub) * s + add with one rounding in T: v2 sub = magic, add = scaled zero (the original's
// fma(q, s, sz)); v1 sub = magic + z, add = 0 (s * (q - z)). v2 gives a thread's fragment for two k16
// steps from one 32-bit word (layouts.cuh); v1 gives a k pair from one byte (in fp16 with the pair's
// second code left in place under the magic 64: MmaWeight<Layout::kV1>).
// Split K (blockIdx.y) writes fp32 partials that reduce_splits_kernel sums in order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_utils.cuh"
#include "common/mma.cuh"
#include "w4a16/layouts.cuh"

namespace awq {
namespace w4a16 {

constexpr int kMmaBN = 128;
constexpr int kMmaBK = 64;
constexpr int kMmaStages = 4;
constexpr int kMmaGroupM = 8;  // CTA raster: kGroupM m-tiles sweep all n-tiles, so A stays in L2

template <int kBM>
constexpr int mma_stage_bytes() {
  return kBM * kMmaBK * 2 + kMmaBN * kMmaBK / 2;
}

template <typename T>
struct MmaTypes;
template <>
struct MmaTypes<half> {
  using T2 = half2;
  static constexpr uint32_t kMagic = 0x64006400u;  // fp16 1024 in both halves
  static constexpr float kMagicValue = 1024.f;
  static constexpr uint32_t kOnes = 0x3C003C00u;  // fp16 1.0 in both halves
  // A code in bits 4..7 of a half ORed into fp16 64 (0x5400, ulp 1/16) reads as 64 + q: the odd
  // nibble pairs of a word (mma_gemv.cuh) and a Format B byte's second code (MmaWeight<Layout::kV1>)
  // need no shift. bf16 has no such exponent (its 7-bit mantissa ends at bit 6), so there every
  // pair is shifted down to bits 0..3.
  static constexpr bool kInPlaceHighNibble = true;
  static constexpr uint32_t kMagicHigh = 0x54005400u;
  static constexpr float kMagicHighValue = 64.f;
  // A Format B pair (MmaWeight<Layout::kV1>): its first code under 1024, its second in place under 64.
  static constexpr uint32_t kMagicPair = 0x54006400u;
};
template <>
struct MmaTypes<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static constexpr uint32_t kMagic = 0x43004300u;  // bf16 128 in both halves
  static constexpr float kMagicValue = 128.f;
  static constexpr uint32_t kOnes = 0x3F803F80u;  // bf16 1.0 in both halves
  static constexpr bool kInPlaceHighNibble = false;
  static constexpr uint32_t kMagicHigh = kMagic;
  static constexpr float kMagicHighValue = kMagicValue;
  static constexpr uint32_t kMagicPair = kMagic;
};

// (bits & mask) | magic in one LOP3 (the constants in registers: LOP3 takes one immediate); any arch
// (the weight decoders below use it).
__device__ __forceinline__ uint32_t mask_or(uint32_t bits, uint32_t mask, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(bits), "r"(mask), "r"(magic));
  return r;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

// 16 bytes global -> shared, zero-filled when !valid; through L2 only (.cg), or kCacheL1 (.ca) for
// small data that other warps of the SM read too.
template <bool kCacheL1 = false>
__device__ __forceinline__ void cp_async16(void* smem, const void* global, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  if constexpr (kCacheL1) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0));
  } else {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0));
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Two biased codes (low half = first k) -> two weights in T, packed for the B fragment.
template <typename T>
__device__ __forceinline__ uint32_t dequant_pair(uint32_t biased, typename MmaTypes<T>::T2 sub,
                                                 typename MmaTypes<T>::T2 scale, typename MmaTypes<T>::T2 add) {
  using T2 = typename MmaTypes<T>::T2;
  const T2 q = *reinterpret_cast<const T2*>(&biased);
  const T2 w = __hfma2(__hsub2(q, sub), scale, add);
  return *reinterpret_cast<const uint32_t*>(&w);
}

// The constants of dequant_pair for column n and group g: v2 sub = magic, add = scaled zero; v1
// sub = the pair's magic + z per half, add = 0. magic + z is exact and is built as bits, without
// conversions: z in the mantissa bits of the code it offsets (fp16 1024 + z = 0x6400 | z and
// 64 + z = 0x5400 | z << 4; bf16 128 + z = 0x4300 | z).
template <typename T, Layout L>
__device__ __forceinline__ void dequant_constants(const WeightArgs<T>& w, int n, int g, typename MmaTypes<T>::T2& sub,
                                                  typename MmaTypes<T>::T2& scale, typename MmaTypes<T>::T2& add) {
  using T2 = typename MmaTypes<T>::T2;
  T s, a;
  if constexpr (L == Layout::kV2) {
    s = w.scales[g * w.scale_stride + n];
    a = static_cast<const T*>(w.zeros)[g * w.zero_stride + n];
    const T magic = from_float<T>(MmaTypes<T>::kMagicValue);
    sub = {magic, magic};
  } else {
    s = w.scales[n * w.scale_stride + g];
    a = from_float<T>(0.f);
    const uint32_t z = static_cast<uint32_t>(
        LayoutTraits<Layout::kV1>::zero_point(static_cast<const int32_t*>(w.zeros), w.zero_stride, n, g));
    const uint32_t bits = MmaTypes<T>::kMagicPair | z | z << (MmaTypes<T>::kInPlaceHighNibble ? 20 : 16);
    sub = *reinterpret_cast<const T2*>(&bits);
  }
  scale = {s, s};
  add = {a, a};
}

#endif  // __CUDA_ARCH__ >= 800

// Per layout: where the B tile's 16-byte chunk c comes from, and a thread's B fragments.
template <Layout L>
struct MmaWeight;

template <>
struct MmaWeight<Layout::kV2> {
  // Chunk c of the tile (n0, kt): packed row n0/4 + c/8, bytes [kt*128 + (c%8)*16, +16).
  __device__ static const uint8_t* chunk_src(const uint8_t* qweight, int n, int k, int n0, int kt, int c,
                                             bool& valid) {
    const int nb = n0 / 4 + c / 8;
    valid = nb < n / 4;
    return qweight + static_cast<int64_t>(valid ? nb : 0) * (2 * static_cast<int64_t>(k)) + kt * 128 + (c % 8) * 16;
  }
  // Biased code pairs of column nl (tile-local) for the four k16 steps: pairs[step][0] holds k = 2t,
  // 2t+1 and pairs[step][1] k = 2t+8, 2t+9 (t = lane % 4), each code under the magic of T.
  template <typename T>
  __device__ static void fragment(const uint8_t* tile, int nl, int t, uint32_t (&pairs)[4][2]) {
    constexpr uint32_t kMagic = MmaTypes<T>::kMagic;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = *reinterpret_cast<const uint32_t*>(tile + (nl >> 2) * 128 + (nl & 3) * 32 + h * 16 + t * 4);
      pairs[2 * h][0] = mask_or(word, 0x000F000Fu, kMagic);
      pairs[2 * h][1] = mask_or(word >> 4, 0x000F000Fu, kMagic);
      pairs[2 * h + 1][0] = mask_or(word >> 8, 0x000F000Fu, kMagic);
      pairs[2 * h + 1][1] = mask_or(word >> 12, 0x000F000Fu, kMagic);
    }
  }
};

template <>
struct MmaWeight<Layout::kV1> {
  // Chunk c of the tile (n0, kt): row n0 + c/2, bytes [kt*32 + (c%2)*16, +16) = k in [kt*64 + (c%2)*32, +32).
  __device__ static const uint8_t* chunk_src(const uint8_t* qweight, int n, int k, int n0, int kt, int c,
                                             bool& valid) {
    const int row = n0 + c / 2;
    const int k32 = kt * 64 + (c % 2) * 32;
    valid = row < n && k32 < k;
    return qweight + (valid ? static_cast<int64_t>(row) * (k / 2) + k32 / 2 : 0);
  }
  // As MmaWeight<Layout::kV2>::fragment, except that in fp16 a pair's second code (high half) sits in
  // bits 4-7 of its half under the magic 64 (ulp 1/16: 0x5400 | q << 4 reads as 64 + q; kMagicPair),
  // which saves the shifts that would move it down; dequant_constants subtracts 64 + z there. bf16
  // has no such exponent (its mantissa ends at bit 6): both codes under 128, the high one shifted down.
  template <typename T>
  __device__ static void fragment(const uint8_t* tile, int nl, int t, uint32_t (&pairs)[4][2]) {
    const uint4 row0 = *reinterpret_cast<const uint4*>(tile + nl * 32);
    const uint4 row1 = *reinterpret_cast<const uint4*>(tile + nl * 32 + 16);
    const uint32_t words[8] = {row0.x, row0.y, row0.z, row0.w, row1.x, row1.y, row1.z, row1.w};
    // Byte t of words 2 * step (a: codes k, k + 1 of pair 0) and 2 * step + 1 (b: pair 1) in one PRMT:
    // y = a | b << 8 | a << 16 | b << 24, so pair 0's codes are bits 0-3 and 20-23 of y, pair 1's
    // bits 8-11 and 28-31.
    const uint32_t selector = t | (t + 4) << 4 | t << 8 | (t + 4) << 12;
#pragma unroll
    for (int step = 0; step < 4; ++step) {
      const uint32_t y = __byte_perm(words[2 * step], words[2 * step + 1], selector);
      if constexpr (MmaTypes<T>::kInPlaceHighNibble) {
        pairs[step][0] = mask_or(y, 0x00F0000Fu, MmaTypes<T>::kMagicPair);
        pairs[step][1] = mask_or(y >> 8, 0x00F0000Fu, MmaTypes<T>::kMagicPair);
      } else {
        constexpr uint32_t kMagic = MmaTypes<T>::kMagic;
        pairs[step][0] = mask_or(y, 0x0000000Fu, kMagic) | ((y >> 4) & 0x000F0000u);
        pairs[step][1] = mask_or(y >> 8, 0x0000000Fu, kMagic) | ((y >> 12) & 0x000F0000u);
      }
    }
  }
};

template <typename T, Layout L, int kBM, int kWarpsM, int kWarpsN>
__global__ void __launch_bounds__(kWarpsM * kWarpsN * 32)
    w4a16_mma_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out, float* __restrict__ partial,
                     int m_total, int k_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using T2 = typename MmaTypes<T>::T2;
  constexpr int kThreads = kWarpsM * kWarpsN * 32;
  constexpr int kWarpM = kBM / kWarpsM;      // rows of a warp tile
  constexpr int kWarpN = kMmaBN / kWarpsN;   // columns of a warp tile
  constexpr int kMTiles = kWarpM / 16;
  constexpr int kNTiles = kWarpN / 8;
  constexpr int kABytes = kBM * kMmaBK * 2;
  constexpr int kStageBytes = mma_stage_bytes<kBM>();
  static_assert(kWarpM % 16 == 0 && kWarpN % 8 == 0, "warp tile must be a multiple of the mma shape");

  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m0 = (warp / kWarpsN) * kWarpM;
  const int warp_n0 = (warp % kWarpsN) * kWarpN;
  const int group_id = lane >> 2;
  const int t = lane & 3;

  // Raster: kMmaGroupM consecutive m-tiles sweep the n-tiles together.
  const TileCoord tile = grouped_tile(blockIdx.x, (m_total + kBM - 1) / kBM, (w.n + kMmaBN - 1) / kMmaBN, kMmaGroupM);
  const int m0 = tile.m * kBM;
  const int n0 = tile.n * kMmaBN;

  const int k_tiles = (w.k + kMmaBK - 1) / kMmaBK;
  const int split = blockIdx.y;
  const int kt_begin = split_begin(k_tiles, split, k_splits);
  const int kt_count = split_begin(k_tiles, split + 1, k_splits) - kt_begin;

  auto load_stage = [&](int stage, int kt) {
    uint8_t* a_tile = smem + stage * kStageBytes;
    uint8_t* b_tile = a_tile + kABytes;
    for (int c = tid; c < kBM * 8; c += kThreads) {
      const int row = c / 8;
      const int chunk = c % 8;
      const int k = kt * kMmaBK + chunk * 8;
      const bool valid = m0 + row < m_total && k < w.k;
      const T* src = x + (valid ? static_cast<int64_t>(m0 + row) * w.k + k : 0);
      cp_async16(a_tile + row * 128 + ((chunk ^ (row & 7)) * 16), src, valid);
    }
    for (int c = tid; c < kMmaBN * 2; c += kThreads) {
      bool valid;
      const uint8_t* src = MmaWeight<L>::chunk_src(w.qweight, w.n, w.k, n0, kt, c, valid);
      cp_async16(b_tile + c * 16, src, valid);
    }
  };

  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int i = 0; i < kMTiles; ++i)
#pragma unroll
    for (int j = 0; j < kNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < kMmaStages - 1; ++s) {
    if (s < kt_count) load_stage(s, kt_begin + s);
    cp_async_commit();
  }

  // G = 32 gives two groups per 64-wide k tile (steps 0-1 and 2-3); larger G one.
  const int groups_per_tile = w.group_shift == 5 ? 2 : 1;
  for (int i = 0; i < kt_count; ++i) {
    const int kt = kt_begin + i;
    // This tile's per-column dequantization constants (global loads, overlapping the wait).
    T2 sub[kNTiles][2], scale[kNTiles][2], add[kNTiles][2];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const int n = min(n0 + warp_n0 + nt * 8 + group_id, w.n - 1);
#pragma unroll
      for (int gi = 0; gi < 2; ++gi) {
        if (gi >= groups_per_tile) break;
        const int g = min((kt * kMmaBK + gi * 32) >> w.group_shift, w.groups - 1);
        dequant_constants<T, L>(w, n, g, sub[nt][gi], scale[nt][gi], add[nt][gi]);
      }
    }

    cp_async_wait<kMmaStages - 2>();
    __syncthreads();
    {
      const int next = i + kMmaStages - 1;
      if (next < kt_count) load_stage(next % kMmaStages, kt_begin + next);
      cp_async_commit();
    }

    const uint8_t* a_tile = smem + (i % kMmaStages) * kStageBytes;
    const uint8_t* b_tile = a_tile + kABytes;
    uint32_t b_frag[kNTiles][4][2];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      uint32_t pairs[4][2];
      MmaWeight<L>::template fragment<T>(b_tile, warp_n0 + nt * 8 + group_id, t, pairs);
#pragma unroll
      for (int step = 0; step < 4; ++step) {
        const int gi = groups_per_tile == 2 ? step / 2 : 0;
#pragma unroll
        for (int e = 0; e < 2; ++e)
          b_frag[nt][step][e] = dequant_pair<T>(pairs[step][e], sub[nt][gi], scale[nt][gi], add[nt][gi]);
      }
    }
#pragma unroll
    for (int step = 0; step < 4; ++step) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const int row = warp_m0 + mt * 16 + (lane & 15);
        const int chunk = step * 2 + (lane >> 4);
        uint32_t a_frag[4];
        ldmatrix_x4(a_frag, a_tile + row * 128 + ((chunk ^ (row & 7)) * 16));
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) mma_16816<T>(acc[mt][nt], a_frag, b_frag[nt][step]);
      }
    }
  }
  cp_async_wait<0>();

  // Accumulator (mt, nt): c0, c1 at row group_id, columns 2t, 2t+1; c2, c3 at row group_id + 8.
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + warp_m0 + mt * 16 + group_id + (e >= 2 ? 8 : 0);
        const int col = n0 + warp_n0 + nt * 8 + 2 * t + (e & 1);
        store_result(out, partial, split, k_splits, row, m_total, col, w.n, acc[mt][nt][e]);
      }
#endif  // __CUDA_ARCH__ >= 800 (the host launches this kernel only on such devices)
}

}  // namespace w4a16
}  // namespace awq
