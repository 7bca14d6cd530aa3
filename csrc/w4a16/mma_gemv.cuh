// W4A16 for few activation rows (M <= 16 per CTA) on tensor cores, sm_80+: the weights are the
// mma's A operand ("swap AB"), so one m16n8k16 multiplies 16 weight rows by up to 8 activation rows
// and the cost per weight does not grow with M up to 8 (16 with a second n8 tile).
//
// Work split: a CTA owns 16 weight rows n (blockIdx.x), kXRows activation rows m (blockIdx.z; 1, 8
// or 16) and a range of K (blockIdx.y, the K split); its kMmaGemvWarps warps cut that range into
// contiguous pieces. K is walked in 128-wide steps. In a step, lane (g = lane / 4, t = lane % 4)
// needs the 16-byte chunks (layouts.cuh) of rows g and g + 8 for k in [k32, k32 + 32),
// k32 = 128 * step + 32 t, the scales and zeros of those rows at k32's group, and the 32 activations
// of rows m = g (+ 8) at the same k32. The mma reduces over k in any order, as long as A and B agree:
// lane t's k slots (2t, 2t+1, 2t+8, 2t+9) of one mma are filled with two code pairs of one chunk
// word and the matching activation pairs, so a chunk feeds 8 mma steps (4 words x 2) without any
// data exchange between lanes. A pair is the nibbles (p, p + 4) of a word, whose k are
// LayoutTraits::k_offset(word, p) and k_offset(word, p + 4): consecutive in v2 (the activation pair
// is then one register), 4 apart in v1 (one PRMT builds it).
//
// Loads: each warp runs its own kStages-deep ring of steps in shared memory, filled by cp.async:
// every lane copies exactly the bytes it will read itself (its chunks, its activations, its scale and
// zero words), so a lane only waits for its own copies (cp.async.wait_group) and the warps never
// synchronize in the main loop. While a step is decoded, the copies of the next kStages - 1 steps are
// in flight (the register-only kernel had one batch in flight and then waited, with a dependent
// activation load per step on top). Ring slots are [item][lane] 16-byte vectors, so a warp's copies
// and reads of one item are 512 contiguous bytes (no bank conflicts).
// Codes are dequantized as in mma_gemm.cuh (magic-number OR, then (q - sub) * s + add in T2, one
// rounding in T as the original); all sums are fp32 in the mma accumulators. Lanes past K copy
// nothing (zero-filled slots); rows past N read row N - 1 and rows past M are zero-filled (their
// outputs are not stored).
// Reduction: the accumulator tiles of a CTA's warps through shared memory in warp order, then to
// `out`, or with a K split to the fp32 partials [split, M, N] that reduce_splits_kernel sums in
// order (deterministic; no atomics, no semaphores).
#pragma once

#include "w4a16/mma_gemm.cuh"

namespace awq {
namespace w4a16 {

constexpr int kMmaGemvWarps = 4;
constexpr int kMmaGemvRows = 16;    // weight rows per CTA (the mma's M)
constexpr int kMmaGemvStepK = 128;  // K per step: 4 lanes x 32 codes

// One warp's ring for kXRows activation rows per CTA (1: M = 1; 8: M <= 8; 16: M <= 16). Items of a
// stage, each 16 bytes per lane: 0, 1 the weight chunks of rows g and g + 8; 2 the scale and zero
// words (kAffineItem); then the activations: 4 vectors per 8-row tile, and only lanes g < kXRows
// have a slot ([tile][vector][lane]).
template <int kXRows>
struct GemvRing {
  static constexpr int kMTiles = (kXRows + 7) / 8;
  static constexpr int kXLanes = 4 * (kXRows < 8 ? kXRows : 8);
  static constexpr int kAffineItem = 2;
  static constexpr int kStageVectors = 3 * 32 + kMTiles * 4 * kXLanes;  // 16-byte vectors per stage
  // >= 3 KB of weights in flight per warp; 43 KB per CTA at M = 1 (4-5 CTAs per SM), 56 KB at M <= 8 (4).
  static constexpr int kStages = kXRows == 1 ? 6 : 4;
  static constexpr int kWarpBytes = kStages * kStageVectors * 16;
  static constexpr int kSmemBytes = kMmaGemvWarps * kWarpBytes;
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// A 4-byte cp.async of `bytes` (0, 2 or 4) source bytes, the rest of the 4 zero-filled; both
// addresses 4-byte aligned. (16-byte copies: cp_async16 of mma_gemm.cuh.)
__device__ __forceinline__ void cp_async4(void* smem, const void* global, int bytes) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global), "r"(bytes));
}
// A 16-byte cp.async through L1 (.ca; cp_async16 bypasses it), 0 source bytes if !valid: for the
// activations, which every CTA of an SM reads at about the same k (its warps split K the same way),
// so L1 hits spare L2 bandwidth (at M = 8 the activation bytes are twice the weight bytes).
__device__ __forceinline__ void cp_async16_l1(void* smem, const void* global, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0));
}
// 16 bytes of shared memory. asm volatile: kept after the cp.async.wait_group (which the compiler
// does not see as a memory operation).
__device__ __forceinline__ uint4 lds128(const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
  return r;
}
// The same, 0 if !pred.
__device__ __forceinline__ uint4 lds128_if(const void* smem, bool pred) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  uint4 r;
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\nmov.b32 %3, 0;\n"
      "@p ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n}\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "r"(addr), "r"(static_cast<int>(pred)));
  return r;
}

// The activation pair (k_offset(word, p), k_offset(word, p + 4)) from the lane's 32 activations held
// as 16 T2 registers (register i = k 2i, 2i + 1). All indices are compile-time after unrolling.
template <Layout L>
__device__ __forceinline__ uint32_t activation_pair(const uint32_t (&xh)[16], int word, int p) {
  const int k_lo = LayoutTraits<L>::k_offset(word, p);
  const int k_hi = LayoutTraits<L>::k_offset(word, p + 4);
  if (k_hi == k_lo + 1 && k_lo % 2 == 0) return xh[k_lo / 2];
  const uint32_t selector = ((k_hi & 1) ? 0x7600u : 0x5400u) | ((k_lo & 1) ? 0x32u : 0x10u);
  return __byte_perm(xh[k_lo / 2], xh[k_hi / 2], selector);
}

// Format B keeps the scales of a row contiguous along the groups, and a qzeros word holds 8 groups:
// a 4-byte scale word serves two consecutive groups, a zero word eight. A v1 step therefore copies
// a word only when it differs from the previous step's (the first step of a warp always copies), and
// the lane keeps the words in registers across steps: at G = 128 that halves the scale copies and
// cuts the zero copies 8x. The scattered rows (one L1 wavefront per row and copy) made these copies
// the costly part of v1's loads. `elem`: the scale's element index, `group` its group.
struct V1Refresh {
  bool scale, zero;
};
__device__ __forceinline__ V1Refresh v1_refresh(bool first, int groups_per_step, int64_t elem, int group) {
  return {first || groups_per_step > 1 || (elem & 1) == 0, first || (group & 7) < groups_per_step};
}

template <typename T>
__device__ __forceinline__ float bits_to_float(uint32_t bits) {
  const uint16_t b = static_cast<uint16_t>(bits);
  return to_float(*reinterpret_cast<const T*>(&b));
}
#endif

// kScaleInA (G < 128): the four lanes of an mma's k slots hold different groups, so the scale is
// applied to each weight in T before the mma (w = (q - sub) * s + add, as mma_gemm.cuh). Otherwise
// (G = 128: one group per 128-wide step) the mma multiplies the biased codes b = q + magic and the
// group's affine map is applied once per step to the fp32 sums:
//   sum_k x * (s q + o) = s * sum_k x b + (o - magic s) * sum_k x,
// where sum_k x comes from a second mma with an all-ones A.
template <typename T, Layout L, int kXRows, bool kScaleInA>
__global__ void __launch_bounds__(kMmaGemvWarps * 32, 4)
    w4a16_mma_gemv_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                          float* __restrict__ partial, int m_total, int k_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Ring = GemvRing<kXRows>;
  constexpr int kMTiles = Ring::kMTiles;
  constexpr int kStages = Ring::kStages;
  constexpr uint32_t kStageBytes = Ring::kStageVectors * 16;
  using Traits = LayoutTraits<L>;
  using T2 = typename MmaTypes<T>::T2;
  extern __shared__ uint4 gemv_smem[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * kMmaGemvRows;
  const int m0 = blockIdx.z * kXRows;
  const int split = blockIdx.y;
  const bool x_lane = g < kXRows;  // this lane has activation slots

  // This warp's steps: the CTA's share of the split, cut into kMmaGemvWarps contiguous pieces.
  const int steps = (w.k + kMmaGemvStepK - 1) / kMmaGemvStepK;
  const int cta_begin = static_cast<int>(static_cast<int64_t>(split) * steps / k_splits);
  const int cta_end = static_cast<int>(static_cast<int64_t>(split + 1) * steps / k_splits);
  const int step_begin = cta_begin + (cta_end - cta_begin) * warp / kMmaGemvWarps;
  const int step_end = cta_begin + (cta_end - cta_begin) * (warp + 1) / kMmaGemvWarps;

  // The lane's weight rows g and g + 8 (rows past N read row N - 1) and their chunk addresses at
  // step_begin; a step advances them by a fixed number of bytes (both layouts are linear in k32).
  int rows[2];
  const uint8_t* chunk[2];
  int64_t chunk_step = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rows[h] = min(n0 + g + 8 * h, w.n - 1);
    const int64_t first = Traits::chunk_offset(rows[h], 32 * t, w.k);
    chunk_step = Traits::chunk_offset(rows[h], 32 * t + kMmaGemvStepK, w.k) - first;
    chunk[h] = w.qweight + first + step_begin * chunk_step;
  }
  const int groups_per_step = kMmaGemvStepK >> w.group_shift;
  const int lane_group = (32 * t) >> w.group_shift;
  // The scale (v2: and scaled zero) of rows g, g + 8 at the lane's group of step_begin, as an element
  // index (advanced per copied step) and its half of the aligned 4-byte word that cp.async copies.
  int64_t scale_elem[2];
  int scale_half[2];
  const int32_t* zero_row[2];  // v1: qzeros row of rows g, g + 8
  const int64_t scale_elem_step =
      L == Layout::kV2 ? static_cast<int64_t>(groups_per_step) * w.scale_stride : groups_per_step;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int group = step_begin * groups_per_step + lane_group;
    if constexpr (L == Layout::kV2) {
      scale_elem[h] = static_cast<int64_t>(group) * w.scale_stride + rows[h];
      scale_half[h] = rows[h] & 1;  // N is even
    } else {
      scale_elem[h] = static_cast<int64_t>(rows[h]) * w.scale_stride + group;
      scale_half[h] = static_cast<int>((static_cast<int64_t>(rows[h]) * w.scale_stride) & 1);  // ^ (group & 1)
    }
    zero_row[h] = static_cast<const int32_t*>(w.zeros) + static_cast<int64_t>(rows[h]) * w.zero_stride;
  }
  const int64_t scale_numel = static_cast<int64_t>(w.n) * w.scale_stride;  // v1
  bool m_valid[kMTiles];
  const T* x_next[kMTiles];  // the lane's activations at the next copied step
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = m0 + 8 * mt + g;
    m_valid[mt] = x_lane && m < m_total;
    x_next[mt] = x + static_cast<int64_t>(m_valid[mt] ? m : 0) * w.k + 32 * t + step_begin * kMmaGemvStepK;
  }

  // Shared-memory addresses of this lane's slots in stage 0 of its warp's ring: weight chunk h at
  // +512 h, the scale and zero words at +512 kAffineItem (bytes 4h: scale word of row h, 8 + 4h: zero
  // word), activation vector (mt, v) at x_slot + 16 kXLanes (4 mt + v).
  uint8_t* const ring = reinterpret_cast<uint8_t*>(gemv_smem) + warp * Ring::kWarpBytes;
  uint8_t* const lane_slot = ring + 16 * lane;
  uint8_t* const x_slot = ring + 16 * (3 * 32 + lane);
  uint8_t* const affine_slot = lane_slot + 512 * Ring::kAffineItem;

  // Issues the copies of step copy_step into its stage and commits them as one group (an empty group
  // past the warp's range, so that the wait_group counts stay uniform). A lane past K copies nothing
  // (zero-filled slots, source addresses kept inside the tensors).
  int copy_step = step_begin;
  uint32_t copy_offset = 0;
  auto copy_next = [&]() {
    if (copy_step < step_end) {
      const bool valid = copy_step * kMmaGemvStepK + 32 * t < w.k;
      const int group = copy_step * groups_per_step + lane_group;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        cp_async16(lane_slot + copy_offset + 512 * h, valid ? chunk[h] : w.qweight, valid);
        // The aligned 4-byte word holding the scale (the host gives 4-byte aligned tensors); v2 rows
        // have an even length N, a v1 element whose word would end past the tensor copies 2 bytes.
        const int64_t word_elem = valid ? scale_elem[h] & ~int64_t{1} : 0;
        int scale_bytes = valid ? 4 : 0, zero_bytes = valid ? 4 : 0;
        const void* zero_word;
        if constexpr (L == Layout::kV2) {
          zero_word = static_cast<const T*>(w.zeros) + word_elem;
        } else {
          if (word_elem + 1 >= scale_numel) scale_bytes = valid ? 2 : 0;
          // A word that the previous step copied is not copied again (0 bytes: the slot is only
          // zero-filled, no global access).
          const V1Refresh refresh = v1_refresh(copy_step == step_begin, groups_per_step, scale_elem[h], group);
          if (!refresh.scale) scale_bytes = 0;
          if (!refresh.zero) zero_bytes = 0;
          zero_word = valid ? zero_row[h] + (group >> 3) : w.zeros;
        }
        cp_async4(affine_slot + copy_offset + 4 * h, w.scales + word_elem, scale_bytes);
        cp_async4(affine_slot + copy_offset + 8 + 4 * h, zero_word, zero_bytes);
        chunk[h] += chunk_step;
        scale_elem[h] += scale_elem_step;
      }
      if (x_lane) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          const bool x_valid = valid && m_valid[mt];
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            cp_async16_l1(x_slot + copy_offset + 16 * Ring::kXLanes * (4 * mt + v), x_valid ? x_next[mt] + 8 * v : x,
                          x_valid);
          }
          x_next[mt] += kMmaGemvStepK;
        }
      }
    }
    cp_async_commit();
    ++copy_step;
    copy_offset = copy_offset + kStageBytes == kStages * kStageBytes ? 0 : copy_offset + kStageBytes;
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) copy_next();

  const uint32_t mask = 0x000F000Fu, magic = MmaTypes<T>::kMagic;
  const uint32_t ones[4] = {MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes};

  float acc[kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.f;

  uint32_t read_offset = 0;
  uint32_t s_word[2] = {0, 0}, z_word[2] = {0, 0};  // the scale and zero words of rows g, g + 8
  for (int step = step_begin; step < step_end; ++step) {
    cp_async_wait<kStages - 2>();  // this lane's copies of `step` have landed
    const uint4 codes[2] = {lds128(lane_slot + read_offset), lds128(lane_slot + read_offset + 512)};
    const uint4 affine_words = lds128(affine_slot + read_offset);
    uint32_t xh[kMTiles][16];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 xv = lds128_if(x_slot + read_offset + 16 * Ring::kXLanes * (4 * mt + v), x_lane);
        xh[mt][4 * v + 0] = xv.x;
        xh[mt][4 * v + 1] = xv.y;
        xh[mt][4 * v + 2] = xv.z;
        xh[mt][4 * v + 3] = xv.w;
      }
    // The stage read in the previous step is free again: its values were consumed there. Refill it
    // with the step kStages - 1 ahead before the math of this one.
    copy_next();
    read_offset = read_offset + kStageBytes == kStages * kStageBytes ? 0 : read_offset + kStageBytes;

    // Dequantization constants of rows g and g + 8 for this step.
    const int group = step * groups_per_step + lane_group;  // only used by lanes inside K
    T2 sub2[2], scale2[2], add2[2];
    float scale[2], offset[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if constexpr (L == Layout::kV2) {
        s_word[h] = h == 0 ? affine_words.x : affine_words.y;
        z_word[h] = h == 0 ? affine_words.z : affine_words.w;
      } else {
        const V1Refresh refresh = v1_refresh(step == step_begin, groups_per_step, scale_half[h] ^ group, group);
        if (refresh.scale) s_word[h] = h == 0 ? affine_words.x : affine_words.y;
        if (refresh.zero) z_word[h] = h == 0 ? affine_words.z : affine_words.w;
      }
      const int half_shift = 16 * (L == Layout::kV2 ? scale_half[h] : (scale_half[h] ^ group) & 1);
      const uint32_t s_bits = (s_word[h] >> half_shift) & 0xFFFFu;
      if constexpr (L == Layout::kV2) {
        const uint32_t z_bits = (z_word[h] >> half_shift) & 0xFFFFu;
        if constexpr (kScaleInA) {
          const uint32_t s2 = s_bits | (s_bits << 16), z2 = z_bits | (z_bits << 16);
          scale2[h] = *reinterpret_cast<const T2*>(&s2);
          add2[h] = *reinterpret_cast<const T2*>(&z2);
          sub2[h] = *reinterpret_cast<const T2*>(&magic);
        } else {
          scale[h] = bits_to_float<T>(s_bits);
          offset[h] = bits_to_float<T>(z_bits) - MmaTypes<T>::kMagicValue * scale[h];
        }
      } else {
        const uint32_t z = (z_word[h] >> (4 * (group & 7))) & 15u;
        if constexpr (kScaleInA) {
          const uint32_t s2 = s_bits | (s_bits << 16), sub = magic + (z | (z << 16));  // exact magic + z
          scale2[h] = *reinterpret_cast<const T2*>(&s2);
          sub2[h] = *reinterpret_cast<const T2*>(&sub);
          add2[h] = T2{from_float<T>(0.f), from_float<T>(0.f)};
        } else {
          scale[h] = bits_to_float<T>(s_bits);
          offset[h] = -scale[h] * (static_cast<float>(z) + MmaTypes<T>::kMagicValue);
        }
      }
    }

    float sums[kMTiles][4], x_sums[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) sums[mt][e] = x_sums[mt][e] = 0.f;
    // mma (p, j): slots 2t, 2t+1 <- nibble pair p of word 2j, slots 2t+8, 2t+9 <- pair p of word 2j+1
    // (in v2 the two activation pairs are then adjacent registers).
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      uint32_t bits[2][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        bits[h][0] = j == 0 ? codes[h].x : codes[h].z;
        bits[h][1] = j == 0 ? codes[h].y : codes[h].w;
      }
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t a[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int h = i & 1, word = i >> 1;
          const uint32_t biased = mask_or(bits[h][word] >> (4 * p), mask, magic);
          if constexpr (kScaleInA) {
            a[i] = dequant_pair<T>(biased, sub2[h], scale2[h], add2[h]);
          } else {
            a[i] = biased;
          }
        }
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          const uint32_t b[2] = {activation_pair<L>(xh[mt], 2 * j, p), activation_pair<L>(xh[mt], 2 * j + 1, p)};
          if constexpr (kScaleInA) {
            mma_16816<T>(acc[mt], a, b);
          } else {
            mma_16816<T>(sums[mt], a, b);
            mma_16816<T>(x_sums[mt], ones, b);
          }
        }
      }
    }
    if constexpr (!kScaleInA) {
      // sums[mt][e]: row g (e < 2) or g + 8, column 2t + (e & 1); x_sums is the same for every row.
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          acc[mt][e] = fmaf(scale[e >> 1], sums[mt][e], fmaf(offset[e >> 1], x_sums[mt][e], acc[mt][e]));
    }
  }
  cp_async_wait<0>();  // only empty groups remain; nothing in flight when the ring is reused below

  // acc[mt]: e = 0, 1 at row g, columns 2t, 2t + 1; e = 2, 3 at row g + 8 (rows n, columns m). The
  // ring's memory holds the warps' tiles (GemvRing is larger than kMmaGemvWarps * kMTiles * 512 bytes).
  float(*warp_acc)[kMTiles * 4][32] = reinterpret_cast<float(*)[kMTiles * 4][32]>(gemv_smem);
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) warp_acc[warp][4 * mt + e][lane] = acc[mt][e];
  __syncthreads();
  for (int i = threadIdx.x; i < kMTiles * 4 * 32; i += kMmaGemvWarps * 32) {
    const int slot = i / 32;  // 4 * mt + e
    const int src_lane = i % 32;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kMmaGemvWarps; ++wi) sum += warp_acc[wi][slot][src_lane];
    const int e = slot % 4;
    const int n = n0 + (src_lane >> 2) + (e >= 2 ? 8 : 0);
    const int m = m0 + 8 * (slot / 4) + 2 * (src_lane & 3) + (e & 1);
    if (n < w.n && m < m_total && m < m0 + kXRows) {
      if (k_splits == 1) {
        out[static_cast<int64_t>(m) * w.n + n] = from_float<T>(sum);
      } else {
        partial[(static_cast<int64_t>(split) * m_total + m) * w.n + n] = sum;
      }
    }
  }
#endif  // __CUDA_ARCH__ >= 800 (the host launches this kernel only on such devices)
}

}  // namespace w4a16
}  // namespace awq
