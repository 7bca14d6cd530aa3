// W4A16 for few activation rows (M <= 16 per CTA) on tensor cores, sm_80+: the weights are the
// mma's A operand ("swap AB"), so one m16n8k16 multiplies 16 weight rows by up to 8 activation rows
// and the cost per weight does not grow with M up to 8 (16 with a second n8 tile). It streams the
// weights once, straight from global memory into registers (no shared memory on the way).
//
// Work split: a CTA owns 16 * kRowTiles weight rows n (blockIdx.x), kMTiles * 8 activation rows m (blockIdx.z)
// and a range of K (blockIdx.y, the K split); its kWarps warps cut that range into contiguous
// pieces. K is walked in 128-wide steps. In a step, lane (g = lane / 4, t = lane % 4) loads the
// 16-byte chunks (layouts.cuh) of rows g and g + 8 for k in [k32, k32 + 32), k32 = 128 * step + 32 t,
// and reads the 32 activations of rows m = g (+ 8) at the same k32.
// Batches: a warp issues the loads of kUnroll steps before the first mma of any of them, so that each
// batch costs one memory round trip: the lane's activations of the batch are copied by cp.async into
// the warp's own shared-memory slice (no registers held while in flight), then the weight chunks go
// to registers; the lane waits for its copies once, then reads the activations from shared memory
// step by step. (Loading each step's activations within the step, as before, added one L2 round
// trip per step.) For G = 128 the scale / zero of step u is loaded by lane t = u of each row group
// and passed on by a shuffle, so a lane holds one step's parameters instead of kUnroll steps'. The mma reduces over k in any order,
// as long as A and B agree: lane t's k slots (2t, 2t+1, 2t+8, 2t+9) of one mma are filled with two
// code pairs of one chunk word and the matching activation pairs, so a chunk feeds 8 mma steps
// (4 words x 2) without any data exchange between lanes. A pair is the nibbles (p, p + 4) of a word,
// whose k are LayoutTraits::k_offset(word, p) and k_offset(word, p + 4): consecutive in v2 (the
// activation pair is then one register), 4 apart in v1 (one PRMT builds it).
// Codes are dequantized as in mma_gemm.cuh (magic-number OR, then (q - sub) * s + add in T2, one
// rounding in T as the original); all sums are fp32 in the mma accumulators. Lanes past K load
// nothing and use zero activations; rows past N read row N - 1 and rows past M read nothing (their
// outputs are not stored).
// Reduction: the kWarps accumulator tiles of a CTA through shared memory in warp order, then to
// `out`, or with a K split to the fp32 partials [split, M, N] that reduce_splits_kernel sums in
// order (deterministic; no atomics, no semaphores).
#pragma once

#include "w4a16/mma_gemm.cuh"

namespace awq {
namespace w4a16 {

constexpr int kMmaGemvWarps = 8;
constexpr int kMmaGemvRows = 16;   // weight rows per row tile (the mma's M)
constexpr int kMmaGemvStepK = 128;  // K per step: 4 lanes x 32 codes

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// Global loads that the compiler keeps in program order with the mma (all asm volatile), so that a
// batch of loads is issued before the first use of any of them. A false predicate loads nothing and
// gives 0.
__device__ __forceinline__ uint4 load_16_bytes(const void* ptr, bool pred) {
  uint4 r;
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\nmov.b32 %3, 0;\n"
      "@p ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n}\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr), "r"(static_cast<int>(pred)));
  return r;
}
__device__ __forceinline__ uint32_t load_4_bytes(const void* ptr, bool pred) {
  uint32_t r;
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\nmov.b32 %0, 0;\n@p ld.global.nc.u32 %0, [%1];\n}\n"
               : "=r"(r)
               : "l"(ptr), "r"(static_cast<int>(pred)));
  return r;
}
__device__ __forceinline__ uint16_t load_2_bytes(const void* ptr, bool pred) {
  uint16_t r;
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\nmov.b16 %0, 0;\n@p ld.global.nc.u16 %0, [%1];\n}\n"
               : "=h"(r)
               : "l"(ptr), "r"(static_cast<int>(pred)));
  return r;
}

// Shared-memory reads that stay behind the cp.async wait (all asm volatile, in program order).
// A false predicate reads nothing and gives 0.
__device__ __forceinline__ uint4 load_shared_16(uint32_t addr, bool pred) {
  uint4 r;
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\nmov.b32 %3, 0;\n"
      "@p ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n}\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "r"(addr), "r"(static_cast<int>(pred)));
  return r;
}

__device__ __forceinline__ uint2 load_shared_8(uint32_t addr, bool pred) {
  uint2 r;
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %3, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\n"
               "@p ld.shared.v2.u32 {%0, %1}, [%2];\n}\n"
               : "=r"(r.x), "=r"(r.y)
               : "r"(addr), "r"(static_cast<int>(pred)));
  return r;
}

// Waits for the cp.async groups of this thread but the newest one (one_pending) or all of them.
__device__ __forceinline__ void cp_async_wait_pending(bool one_pending) {
  if (one_pending) {
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
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

// The lane's activations that the mma of word pair j (words 2j, 2j + 1) read, from its 16-byte units
// v = 0..3 of one step at `stage` + 64 v, into the registers xh[i] (k 2i, 2i + 1) that
// activation_pair takes (the others are not set): v2 pairs k 8p + 2 word (+1): 8 bytes of each unit;
// v1 pairs 8 word + p, + 4: units 2j and 2j + 1. Lanes of rows past M read nothing and give zeros.
template <Layout L>
__device__ __forceinline__ void load_x_half(uint32_t (&xh)[16], uint32_t stage, int j, bool row_valid) {
  if constexpr (L == Layout::kV2) {
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const uint2 r = load_shared_8(stage + 64 * v + 8 * j, row_valid);
      xh[4 * v + 2 * j] = r.x;
      xh[4 * v + 2 * j + 1] = r.y;
    }
  } else {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const uint4 r = load_shared_16(stage + 64 * (2 * j + q), row_valid);
      xh[4 * (2 * j + q) + 0] = r.x;
      xh[4 * (2 * j + q) + 1] = r.y;
      xh[4 * (2 * j + q) + 2] = r.z;
      xh[4 * (2 * j + q) + 3] = r.w;
    }
  }
}

// The raw per-(row, group) quantization parameters of a chunk: scale bits (T) and the zero (v2:
// scaled zero bits in T; v1: the int32 qzeros word holding z).
struct RawAffine {
  uint16_t scale;
  uint32_t zero;
};

template <typename T, Layout L>
__device__ __forceinline__ RawAffine load_affine(const WeightArgs<T>& w, int n, int group, bool pred) {
  if constexpr (L == Layout::kV2) {
    const int64_t i = static_cast<int64_t>(group) * w.scale_stride + n;
    return {load_2_bytes(w.scales + i, pred), load_2_bytes(static_cast<const T*>(w.zeros) + i, pred)};
  } else {
    return {load_2_bytes(w.scales + static_cast<int64_t>(n) * w.scale_stride + group, pred),
            load_4_bytes(static_cast<const int32_t*>(w.zeros) + static_cast<int64_t>(n) * w.zero_stride + (group >> 3),
                         pred)};
  }
}

template <typename T>
__device__ __forceinline__ float bits_to_float(uint16_t bits) {
  return to_float(*reinterpret_cast<const T*>(&bits));
}
#endif

// Bytes per activation row of a warp's shared-memory slice: kUnroll steps x 128 k in T, + 64 so
// that rows g and g + 1 fall in different bank halves.
template <int kUnroll>
constexpr int mma_gemv_row_bytes() {
  return kUnroll * kMmaGemvStepK * 2 + 64;
}
// Dynamic shared memory of a launch: x_buffers copies of each warp's activation slice of one batch,
// x_rows rows (min(8 * kMTiles, M)).
template <int kUnroll>
constexpr int mma_gemv_smem_bytes(int x_rows, int x_buffers) {
  return x_buffers * kMmaGemvWarps * x_rows * mma_gemv_row_bytes<kUnroll>();
}
// Two activation buffers (the next batch's copies in flight during this batch) where they take
// <= 72 KiB (3 CTAs per SM fit): kUnroll = 4 up to 4 rows, kUnroll = 2 up to 8 rows; else one.
template <int kUnroll>
constexpr int mma_gemv_x_buffers(int x_rows) {
  return mma_gemv_smem_bytes<kUnroll>(x_rows, 2) <= 72 * 1024 ? 2 : 1;
}

// CTAs per SM that the register budget must allow: 3 (<= 80 registers) for one n8 tile and one row
// tile, so that 24 warps per SM hide the load latency (2 CTAs = 16 warps measured latency-bound with
// the run-12 kernel, NOTES.md); 2 (<= 128) otherwise: two row tiles spill 64-172 bytes at 80.
template <int kMTiles, int kRowTiles>
constexpr int mma_gemv_min_blocks() {
  return kMTiles == 1 && kRowTiles == 1 ? 3 : 2;
}

// kScaleInA (G < 128): the four lanes of an mma's k slots hold different groups, so the scale is
// applied to each weight in T before the mma (w = (q - sub) * s + add, as mma_gemm.cuh). Otherwise
// (G = 128: one group per 128-wide step) the mma multiplies the biased codes b = q + magic and the
// group's affine map is applied once per step to the fp32 sums:
//   sum_k x * (s q + o) = s * sum_k x b + (o - magic s) * sum_k x,
// where sum_k x comes from a second mma with an all-ones A (one for all kRowTiles row tiles).
// kRowTiles: 16-row tiles per warp (and CTA), multiplied by the same activation registers: 2 halves
// the activation traffic per weight (shared memory and L2), which at 5..8 rows exceeds the weights'.
// x_rows = min(8 * kMTiles, m_total): the activation rows staged per CTA; x_buffers: 1 or 2
// (mma_gemv_smem_bytes, mma_gemv_x_buffers).
template <typename T, Layout L, int kMTiles, int kRowTiles, int kUnroll, bool kScaleInA>
__global__ void __launch_bounds__(kMmaGemvWarps * 32, mma_gemv_min_blocks<kMTiles, kRowTiles>())
    w4a16_mma_gemv_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                          float* __restrict__ partial, int m_total, int x_rows, int x_buffers,
                          int k_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static_assert(kUnroll <= 4, "the G = 128 parameters of step u come from lane t = u of the row group");
  using Traits = LayoutTraits<L>;
  using T2 = typename MmaTypes<T>::T2;
  constexpr int kTiles = kRowTiles * 2;  // (row tile, half h): rows 16 rt + g + 8 h
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * (kMmaGemvRows * kRowTiles);
  const int m0 = blockIdx.z * (8 * kMTiles);
  const int split = blockIdx.y;

  // This warp's steps: the CTA's share of the split, cut into kMmaGemvWarps contiguous pieces.
  const int steps = (w.k + kMmaGemvStepK - 1) / kMmaGemvStepK;
  const int cta_begin = static_cast<int>(static_cast<int64_t>(split) * steps / k_splits);
  const int cta_end = static_cast<int>(static_cast<int64_t>(split + 1) * steps / k_splits);
  const int step_begin = cta_begin + (cta_end - cta_begin) * warp / kMmaGemvWarps;
  const int step_end = cta_begin + (cta_end - cta_begin) * (warp + 1) / kMmaGemvWarps;

  // The lane's weight rows 16 rt + g (+ 8) (rows past N read row N - 1) and their chunk addresses at
  // step_begin. A step advances a chunk by 256 bytes in v2 (two 128-byte K blocks of a packed row)
  // and by 64 in v1 (128 codes of a row): compile-time offsets within a batch.
  constexpr int kChunkStep = L == Layout::kV2 ? 256 : 64;
  int rows[kTiles];
  const uint8_t* chunk[kTiles];
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    rows[i] = min(n0 + g + 8 * i, w.n - 1);
    chunk[i] = w.qweight + Traits::chunk_offset(rows[i], 32 * t, w.k) + static_cast<int64_t>(step_begin) * kChunkStep;
  }
  const int groups_per_step = kMmaGemvStepK >> w.group_shift;
  const int lane_group = (32 * t) >> w.group_shift;

  // The warp's activation slice: 16-byte units [row][u][v][t] (v: 8 k each of the lane's 32; rows
  // mma_gemv_row_bytes apart), so that the offsets of a batch are compile-time and the 8 lanes of a
  // quarter warp (rows g, g + 1) read 128 consecutive bytes modulo 128 (no bank conflicts). Rows past
  // M are neither copied nor read (their B columns are zero; their outputs are not stored).
  extern __shared__ __align__(16) uint8_t x_stage[];
  bool m_valid[kMTiles];
  const T* x_lane[kMTiles];
  uint8_t* lane_stage[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int r = 8 * mt + g;
    m_valid[mt] = m0 + r < m_total;
    x_lane[mt] = x + static_cast<int64_t>(m_valid[mt] ? m0 + r : 0) * w.k + 32 * t;
    lane_stage[mt] = x_stage + (warp * x_rows + r) * mma_gemv_row_bytes<kUnroll>() + 16 * t;
  }
  const uint32_t mask = 0x000F000Fu, magic = MmaTypes<T>::kMagic;
  const uint32_t ones[4] = {MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes};

  float acc[kRowTiles][kMTiles][4];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt)
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[rt][mt][e] = 0.f;

  // The activations of the batch at `first` (zero-filled past the warp's steps and K: a zero source
  // size reads nothing) into buffer `buffer`. The wait for them is the only wait before a batch's
  // mma; ptxas places it before most of the batch's weight loads (whatever the source order), so
  // with two buffers the copies are issued one batch ahead and that wait finds them done.
  const int buffer_bytes = kMmaGemvWarps * x_rows * mma_gemv_row_bytes<kUnroll>();
  auto copy_activations = [&](int first, int buffer) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
      if (m_valid[mt]) {
        const T* src = x_lane[mt] + static_cast<int64_t>(first) * kMmaGemvStepK;
        uint8_t* dst = lane_stage[mt] + buffer * buffer_bytes;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const bool valid = first + u < step_end && (first + u) * kMmaGemvStepK + 32 * t < w.k;
#pragma unroll
          for (int v = 0; v < 4; ++v) cp_async16(dst + 64 * (4 * u + v), src + u * kMmaGemvStepK + 8 * v, valid);
        }
      }
    cp_async_commit();
  };
  if (x_buffers == 2 && step_begin < step_end) copy_activations(step_begin, 0);

  for (int step0 = step_begin, batch = 0; step0 < step_end; step0 += kUnroll, ++batch) {
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int step = step0 + u;
      valid[u] = step < step_end && step * kMmaGemvStepK + 32 * t < w.k;
    }
    // Every load of the batch is issued before the first mma: the weights and parameters, then the
    // activations (two buffers: the next batch's).
    uint4 codes[kUnroll][kTiles];
    // G < 128: each lane's own parameters per step; G = 128: those of step t % kUnroll (shared by
    // shuffles below).
    RawAffine affine[kScaleInA ? kUnroll : 1][kTiles];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int i = 0; i < kTiles; ++i) codes[u][i] = load_16_bytes(chunk[i] + u * kChunkStep, valid[u]);
    const int own_step = step0 + t % kUnroll;  // G = 128: the step whose parameters this lane loads
    if constexpr (kScaleInA) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int i = 0; i < kTiles; ++i)
          affine[u][i] = load_affine<T, L>(w, rows[i], (step0 + u) * groups_per_step + lane_group, valid[u]);
    } else {
      const bool own_valid = own_step < step_end && own_step * kMmaGemvStepK < w.k;
#pragma unroll
      for (int i = 0; i < kTiles; ++i) affine[0][i] = load_affine<T, L>(w, rows[i], own_step, own_valid);
    }
#pragma unroll
    for (int i = 0; i < kTiles; ++i) chunk[i] += kUnroll * kChunkStep;
    const int buffer = x_buffers == 2 ? batch & 1 : 0;
    if (x_buffers == 2) {
      // The next batch's activations (none past the warp's steps: no copy outlives the loop).
      if (step0 + kUnroll < step_end) copy_activations(step0 + kUnroll, buffer ^ 1);
      cp_async_wait_pending(step0 + kUnroll < step_end);
    } else {
      copy_activations(step0, 0);
      cp_async_wait<0>();
    }

    // G = 128: this lane's step parameters as scale bits | zero << 16 (v2: scaled zero bits; v1: z).
    uint32_t packed[kTiles];
    if constexpr (!kScaleInA) {
#pragma unroll
      for (int i = 0; i < kTiles; ++i) {
        const RawAffine& a = affine[0][i];
        const uint32_t zero =
            L == Layout::kV2 ? a.zero & 0xFFFFu : (a.zero >> (4 * (own_step & 7))) & 15u;  // group = step
        packed[i] = a.scale | (zero << 16);
      }
    }

#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // Dequantization constants of the lane's rows for this step.
      T2 sub2[kTiles], scale2[kTiles], add2[kTiles];
      float scale[kTiles], offset[kTiles];
#pragma unroll
      for (int i = 0; i < kTiles; ++i) {
        uint32_t s_bits, zero;  // zero: v2 scaled-zero bits, v1 zero point z
        if constexpr (kScaleInA) {
          const RawAffine& a = affine[u][i];
          const int group = (step0 + u) * groups_per_step + lane_group;
          s_bits = a.scale;
          zero = L == Layout::kV2 ? a.zero & 0xFFFFu : (a.zero >> (4 * (group & 7))) & 15u;
        } else {
          const uint32_t p = __shfl_sync(0xFFFFFFFFu, packed[i], (lane & ~3) | u);
          s_bits = p & 0xFFFFu;
          zero = p >> 16;
        }
        if constexpr (L == Layout::kV2) {
          if constexpr (kScaleInA) {
            const uint32_t s2 = s_bits | (s_bits << 16), z2 = zero | (zero << 16);
            scale2[i] = *reinterpret_cast<const T2*>(&s2);
            add2[i] = *reinterpret_cast<const T2*>(&z2);
            sub2[i] = *reinterpret_cast<const T2*>(&magic);
          } else {
            scale[i] = bits_to_float<T>(static_cast<uint16_t>(s_bits));
            offset[i] = bits_to_float<T>(static_cast<uint16_t>(zero)) - MmaTypes<T>::kMagicValue * scale[i];
          }
        } else {
          if constexpr (kScaleInA) {
            const uint32_t s2 = s_bits | (s_bits << 16), sub = magic + (zero | (zero << 16));  // exact magic + z
            scale2[i] = *reinterpret_cast<const T2*>(&s2);
            sub2[i] = *reinterpret_cast<const T2*>(&sub);
            add2[i] = T2{from_float<T>(0.f), from_float<T>(0.f)};
          } else {
            scale[i] = bits_to_float<T>(static_cast<uint16_t>(s_bits));
            offset[i] = -scale[i] * (static_cast<float>(zero) + MmaTypes<T>::kMagicValue);
          }
        }
      }

      float sums[kRowTiles][kMTiles][4], x_sums[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          x_sums[mt][e] = 0.f;
#pragma unroll
          for (int rt = 0; rt < kRowTiles; ++rt) sums[rt][mt][e] = 0.f;
        }
      // mma (p, j): slots 2t, 2t+1 <- nibble pair p of word 2j, slots 2t+8, 2t+9 <- pair p of word 2j+1
      // (in v2 the two activation pairs are then adjacent registers).
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        uint32_t xh[kMTiles][16];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
          load_x_half<L>(xh[mt],
                         static_cast<uint32_t>(__cvta_generic_to_shared(lane_stage[mt] + buffer * buffer_bytes)) +
                             256 * u,
                         j, m_valid[mt]);
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          uint32_t b[kMTiles][2];
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            b[mt][0] = activation_pair<L>(xh[mt], 2 * j, p);
            b[mt][1] = activation_pair<L>(xh[mt], 2 * j + 1, p);
            if constexpr (!kScaleInA) mma_16816<T>(x_sums[mt], ones, b[mt]);
          }
#pragma unroll
          for (int rt = 0; rt < kRowTiles; ++rt) {
            uint32_t a[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              const int i = 2 * rt + (q & 1), word = 2 * j + (q >> 1);
              const uint4& c = codes[u][i];
              const uint32_t bits = word == 0 ? c.x : word == 1 ? c.y : word == 2 ? c.z : c.w;
              const uint32_t biased = mask_or(bits >> (4 * p), mask, magic);
              if constexpr (kScaleInA) {
                a[q] = dequant_pair<T>(biased, sub2[i], scale2[i], add2[i]);
              } else {
                a[q] = biased;
              }
            }
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) mma_16816<T>(kScaleInA ? acc[rt][mt] : sums[rt][mt], a, b[mt]);
          }
        }
      }
      if constexpr (!kScaleInA) {
        // sums[rt][mt][e]: row 16 rt + g (e < 2) or + 8, column 2t + (e & 1); x_sums is the same for
        // every row.
#pragma unroll
        for (int rt = 0; rt < kRowTiles; ++rt)
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int i = 2 * rt + (e >> 1);
              acc[rt][mt][e] = fmaf(scale[i], sums[rt][mt][e], fmaf(offset[i], x_sums[mt][e], acc[rt][mt][e]));
            }
      }
    }
  }

  // acc[rt][mt]: e = 0, 1 at row 16 rt + g, columns 2t, 2t + 1; e = 2, 3 at row 16 rt + g + 8 (rows n,
  // columns m).
  constexpr int kSlots = kRowTiles * kMTiles * 4;
  __shared__ float warp_acc[kMmaGemvWarps][kSlots][32];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt)
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) warp_acc[warp][(rt * kMTiles + mt) * 4 + e][lane] = acc[rt][mt][e];
  __syncthreads();
  for (int i = threadIdx.x; i < kSlots * 32; i += kMmaGemvWarps * 32) {
    const int slot = i / 32;  // (rt * kMTiles + mt) * 4 + e
    const int src_lane = i % 32;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kMmaGemvWarps; ++wi) sum += warp_acc[wi][slot][src_lane];
    const int e = slot % 4;
    const int mt = (slot / 4) % kMTiles;
    const int rt = slot / (4 * kMTiles);
    const int n = n0 + 16 * rt + (src_lane >> 2) + (e >= 2 ? 8 : 0);
    const int m = m0 + 8 * mt + 2 * (src_lane & 3) + (e & 1);
    if (n < w.n && m < m_total) {
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
