// W4A16 for few activation rows (M <= 16 per CTA) on tensor cores, sm_80+: the weights are the
// mma's A operand ("swap AB"), so one m16n8k16 multiplies 16 weight rows by up to 8 activation rows
// and the cost per weight does not grow with M up to 8 (16 with a second n8 tile). It streams the
// weights once, straight from global memory into registers (no shared memory on the way); at M = 1
// (kStageX) the activations go through a small per-warp shared-memory stage. A second kernel,
// w4a16_mma_gemv_shared_x_kernel (below), runs the same steps with the warps of a CTA on different
// row tiles, so that the CTA stages each batch of activations once for all of them (M = 2..16 on
// large grids).
//
// Work split: a CTA owns 16 weight rows n (blockIdx.x), kMTiles * 8 activation rows m (blockIdx.z)
// and a range of K (blockIdx.y, the K split); its kWarps warps (kMmaGemvWarps unless the host picks
// another count for the grid at hand) cut that range into contiguous pieces. K is walked in
// 128-wide steps. In a step, lane (g = lane / 4, t = lane % 4) loads the 16-byte chunks
// (layouts.cuh) of rows g and g + 8 for k in [k32, k32 + 32), k32 = 128 * step + 32 t,
// and the 32 activations of rows m = g (+ 8) at the same k32. The mma reduces over k in any order,
// as long as A and B agree: lane t's k slots (2t, 2t+1, 2t+8, 2t+9) of one mma are filled with two
// code pairs of one chunk word and the matching activation pairs, so a chunk feeds 8 mma steps
// (4 words x 2) without any data exchange between lanes. A pair is the nibbles (p, p + 4) of a word,
// whose k are LayoutTraits::k_offset(word, p) and k_offset(word, p + 4): consecutive in v2 (the
// activation pair is then one register), 4 apart in v1 (one PRMT builds it).
// Codes are dequantized as in mma_gemm.cuh (magic-number OR, then (q - sub) * s + add in T2, one
// rounding in T as the original); all sums are fp32 in the mma accumulators. Lanes past K load
// nothing and use zero activations; rows past N read row N - 1 and rows past M read nothing (their
// outputs are not stored).
// Loads come in batches of kUnroll steps (the chunks and scale / zero words, asm volatile so that a
// batch is issued before its first use); kPipelined keeps two batches in registers and requests
// batch i + 1 before multiplying batch i, so a warp has loads in flight while it computes
// (H100, M = 1: 8-15% faster than one batch at a time for Format B on 4 of the 5 bench shapes, and
// no faster for Format C: NOTES.md, session 3; Format B now takes it for M = 2..8 only).
// Reduction: the kWarps accumulator tiles of a CTA through shared memory in warp order, then to
// `out`, or with a K split to the fp32 partials [split, M, N] that reduce_splits_kernel sums in
// order (deterministic; no atomics, no semaphores).
#pragma once

#include "w4a16/mma_gemm.cuh"

namespace awq {
namespace w4a16 {

constexpr int kMmaGemvWarps = 8;   // warps per CTA, unless a configuration says otherwise
constexpr int kMmaGemvRows = 16;   // weight rows per CTA (the mma's M)
constexpr int kMmaGemvStepK = 128;  // K per step: 4 lanes x 32 codes
// A staged activation row of one step in shared memory (kStageX below): 128 values + 16 bytes of
// padding (a warp's buffer stays 16-byte aligned).
constexpr int kMmaGemvXRowStride = kMmaGemvStepK + 8;

// Dynamic shared memory of w4a16_mma_gemv_kernel: with kStageX every warp stages the activation row
// of one batch (kUnroll steps), else none.
template <typename T>
constexpr int mma_gemv_x_stage_bytes(int warps, int k_unroll, bool staged) {
  return staged ? warps * k_unroll * kMmaGemvXRowStride * static_cast<int>(sizeof(T)) : 0;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// Global loads that the compiler keeps in program order with the mma (all asm volatile), so that a
// batch of loads is issued before the first use of any of them. A false predicate loads nothing and
// gives 0 (kZeroFill; else the registers are left undefined).
// kWeights: the weight chunks, read once, bypass L1 (L1::no_allocate) and leave it to the activations
// that every warp of the SM reads at the same k (H100, lab S6-1: Format B 4-8% faster on the 70B
// shapes, Format C up to 1%). Their zero fill only steers ptxas (sm_90a, fp16, G = 128): with it the
// batched kernel takes 112 registers (138 without: 1 CTA per SM), the staged one spills less without
// (lab S6-7). Without it a step that is not the lane's still adds exactly 0: its activations and
// scale / zero words are zero and the magic-number decode is finite for any bits.
#define AWQ_GEMV_LOAD_16(QUALIFIERS, ZERO_FILL)                                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\n" ZERO_FILL "@p ld.global.nc" QUALIFIERS \
               ".v4.u32 {%0, %1, %2, %3}, [%4];\n}\n"                                                 \
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)                                          \
               : "l"(ptr), "r"(static_cast<int>(pred)))
#define AWQ_GEMV_ZERO_FILL "mov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\nmov.b32 %3, 0;\n"
template <bool kWeights = false, bool kZeroFill = true>
__device__ __forceinline__ uint4 load_16_bytes(const void* ptr, bool pred) {
  uint4 r;
  if constexpr (!kWeights) {
    static_assert(kZeroFill, "activation loads are always zero-filled");
    AWQ_GEMV_LOAD_16("", AWQ_GEMV_ZERO_FILL);
  } else if constexpr (kZeroFill) {
    AWQ_GEMV_LOAD_16(".L1::no_allocate", AWQ_GEMV_ZERO_FILL);
  } else {
    AWQ_GEMV_LOAD_16(".L1::no_allocate", "");
  }
  return r;
}
#undef AWQ_GEMV_ZERO_FILL
#undef AWQ_GEMV_LOAD_16
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

// A lane's share of a 16-row weight tile at n0: rows g and g + 8 (rows past N read row N - 1), their
// chunk addresses from step `step_begin` on (a step advances them by a fixed number of bytes: both
// layouts are linear in k32), and the lane's scale / zero group of a step.
template <typename T, Layout L>
struct LaneWeights {
  int rows[2];
  const uint8_t* chunk[2];
  int64_t chunk_step = 0;
  int groups_per_step, lane_group;

  __device__ __forceinline__ LaneWeights(const WeightArgs<T>& w, int n0, int g, int t, int step_begin) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      rows[h] = min(n0 + g + 8 * h, w.n - 1);
      const int64_t first = LayoutTraits<L>::chunk_offset(rows[h], 32 * t, w.k);
      chunk_step = LayoutTraits<L>::chunk_offset(rows[h], 32 * t + kMmaGemvStepK, w.k) - first;
      chunk[h] = w.qweight + first + step_begin * chunk_step;
    }
    groups_per_step = kMmaGemvStepK >> w.group_shift;
    lane_group = (32 * t) >> w.group_shift;
  }
  __device__ __forceinline__ int group(int step) const { return step * groups_per_step + lane_group; }
};

// A batch of kUnroll steps of a lane's weights: the chunks, their raw affine, which steps are the lane's.
template <int kUnroll>
struct WeightBatch {
  uint4 codes[kUnroll][2];
  RawAffine affine[kUnroll][2];
  bool valid[kUnroll];
};

// Issues the loads of the batch of kUnroll steps from step0 (steps from step_end on, or past K, are
// not the lane's) and advances the chunk addresses past it: batches are loaded in order. kZeroFill:
// see load_16_bytes.
template <bool kZeroFill, int kUnroll, typename T, Layout L>
__device__ __forceinline__ void load_weight_batch(const WeightArgs<T>& w, LaneWeights<T, L>& lane, int t, int step0,
                                                  int step_end, WeightBatch<kUnroll>& b) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int step = step0 + u;
    b.valid[u] = step < step_end && step * kMmaGemvStepK + 32 * t < w.k;
    const int group = lane.group(step);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      b.codes[u][h] = load_16_bytes<true, kZeroFill>(lane.chunk[h] + u * lane.chunk_step, b.valid[u]);
      b.affine[u][h] = load_affine<T, L>(w, lane.rows[h], group, b.valid[u]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) lane.chunk[h] += kUnroll * lane.chunk_step;
}

// Activation registers 4 v .. 4 v + 3 of a lane (register i holds k 2i, 2i + 1) from 16-byte piece v.
__device__ __forceinline__ void set_activation_piece(uint32_t (&xh)[16], int v, const uint4& piece) {
  xh[4 * v + 0] = piece.x;
  xh[4 * v + 1] = piece.y;
  xh[4 * v + 2] = piece.z;
  xh[4 * v + 3] = piece.w;
}

template <typename T>
__device__ __forceinline__ float bits_to_float(uint16_t bits) {
  return to_float(*reinterpret_cast<const T*>(&bits));
}
// kScaleInA (G < 128): the four lanes of an mma's k slots hold different groups, so the scale is
// applied to each weight in T before the mma (w = (q - sub) * s + add, as mma_gemm.cuh). Otherwise
// (G = 128: one group per 128-wide step) the mma multiplies the biased codes b = q + bias and the
// group's affine map is applied once per step to the fp32 sums:
//   sum_k x * (s q + o) = s * sum_k x b + sum_parity (o - bias_parity s) * sum_{k of that parity} x,
// where the sums of x come from a second mma with an all-ones A.
// Decode of pair p (nibbles p, p + 4 of a word): in fp16 the even pairs are read in bits 0..3 / 16..19
// against the magic 1024 (bias 1024) and the odd pairs in place, in bits 4..7 / 20..23, against the
// magic 64 (bias 64), so a word costs one shift (by 8, for p >= 2) and four LOP3; the two biases keep
// separate activation sums. bf16 shifts every pair down by 4p (one bias).
//
// One 128-wide step of a warp: the lane's chunks of rows g and g + 8 (`codes`), its 32 activations
// of each m tile (`xh`, register i = k 2i, 2i + 1 of the lane's k32) and the rows' raw affine of
// the lane's group `group`, accumulated into `acc` (the mma C fragments, rows n x columns m).
template <typename T, Layout L, int kMTiles, bool kScaleInA, bool kInPlaceHighNibble>
__device__ __forceinline__ void mma_gemv_step(const uint4 (&codes)[2], const uint32_t (&xh)[kMTiles][16],
                                              const RawAffine (&affine)[2], int group,
                                              float (&acc)[kMTiles][4]) {
  using T2 = typename MmaTypes<T>::T2;
  constexpr bool kInPlace = MmaTypes<T>::kInPlaceHighNibble && kInPlaceHighNibble;
  constexpr int kParities = kInPlace ? 2 : 1;  // biases (and activation sums) per step
  const uint32_t magic[2] = {MmaTypes<T>::kMagic, MmaTypes<T>::kMagicHigh};
  const uint32_t mask[2] = {0x000F000Fu, kInPlace ? 0x00F000F0u : 0x000F000Fu};
  constexpr float kBias[2] = {MmaTypes<T>::kMagicValue, MmaTypes<T>::kMagicHighValue};
  const uint32_t ones[4] = {MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes, MmaTypes<T>::kOnes};
  // Dequantization constants of rows g and g + 8 for this step, per bias where they depend on it.
  T2 sub2[2][kParities], scale2[2], add2[2];
  float scale[2], offset[2][kParities];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const RawAffine& a = affine[h];
    const uint32_t s_bits = a.scale;
    if constexpr (L == Layout::kV2) {
      const uint32_t z_bits = a.zero & 0xFFFFu;
      if constexpr (kScaleInA) {
        const uint32_t s2 = s_bits | (s_bits << 16), z2 = z_bits | (z_bits << 16);
        scale2[h] = *reinterpret_cast<const T2*>(&s2);
        add2[h] = *reinterpret_cast<const T2*>(&z2);
#pragma unroll
        for (int par = 0; par < kParities; ++par) sub2[h][par] = *reinterpret_cast<const T2*>(&magic[par]);
      } else {
        scale[h] = bits_to_float<T>(s_bits);
        const float o = bits_to_float<T>(static_cast<uint16_t>(z_bits));
#pragma unroll
        for (int par = 0; par < kParities; ++par) offset[h][par] = o - kBias[par] * scale[h];
      }
    } else {
      const uint32_t z = (a.zero >> (4 * (group & 7))) & 15u;
      if constexpr (kScaleInA) {
        const uint32_t s2 = s_bits | (s_bits << 16);
        scale2[h] = *reinterpret_cast<const T2*>(&s2);
        add2[h] = T2{from_float<T>(0.f), from_float<T>(0.f)};
#pragma unroll
        for (int par = 0; par < kParities; ++par) {
          // bias + z, exact: z added to the magic's bits, times 16 for the high magic (ulp 1/16).
          const uint32_t sub = magic[par] + ((z | (z << 16)) << (par == 0 ? 0 : 4));
          sub2[h][par] = *reinterpret_cast<const T2*>(&sub);
        }
      } else {
        scale[h] = bits_to_float<T>(static_cast<uint16_t>(s_bits));
#pragma unroll
        for (int par = 0; par < kParities; ++par) offset[h][par] = -scale[h] * (static_cast<float>(z) + kBias[par]);
      }
    }
  }

  float sums[kMTiles][4], x_sums[kMTiles][kParities][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      sums[mt][e] = 0.f;
#pragma unroll
      for (int par = 0; par < kParities; ++par) x_sums[mt][par][e] = 0.f;
    }
  // mma (p, j): slots 2t, 2t+1 <- nibble pair p of word 2j, slots 2t+8, 2t+9 <- pair p of word 2j+1
  // (in v2 the two activation pairs are then adjacent registers).
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    uint32_t bits[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4& c = codes[h];
      bits[h][0] = j == 0 ? c.x : c.z;
      bits[h][1] = j == 0 ? c.y : c.w;
    }
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int par = kInPlace ? p & 1 : 0;
      const int shift = kInPlace ? 8 * (p >> 1) : 4 * p;
      uint32_t a[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int h = i & 1, word = i >> 1;
        const uint32_t biased = mask_or(bits[h][word] >> shift, mask[par], magic[par]);
        if constexpr (kScaleInA) {
          a[i] = dequant_pair<T>(biased, sub2[h][par], scale2[h], add2[h]);
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
          mma_16816<T>(x_sums[mt][par], ones, b);
        }
      }
    }
  }
  if constexpr (!kScaleInA) {
    // sums[mt][e]: row g (e < 2) or g + 8, column 2t + (e & 1); x_sums is the same for every row.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float r = acc[mt][e];
#pragma unroll
        for (int par = 0; par < kParities; ++par) r = fmaf(offset[e >> 1][par], x_sums[mt][par][e], r);
        acc[mt][e] = fmaf(scale[e >> 1], sums[mt][e], r);
      }
  }
}

// The CTA's kWarps accumulator tiles summed through shared memory in warp order, then stored to
// `out` (rows n0.., columns m0..) or, with a K split, to the fp32 partials of split `split`.
template <typename T, int kWarps, int kMTiles>
__device__ __forceinline__ void mma_gemv_store(const float (&acc)[kMTiles][4], int n0, int n, int m0, int m_total,
                                               int split, int k_splits, T* __restrict__ out,
                                               float* __restrict__ partial) {
  // acc[mt]: e = 0, 1 at row g, columns 2t, 2t + 1; e = 2, 3 at row g + 8 (rows n, columns m).
  __shared__ float warp_acc[kWarps][kMTiles * 4][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) warp_acc[warp][4 * mt + e][lane] = acc[mt][e];
  __syncthreads();
  for (int i = threadIdx.x; i < kMTiles * 4 * 32; i += kWarps * 32) {
    const int slot = i / 32;  // 4 * mt + e
    const int src_lane = i % 32;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) sum += warp_acc[wi][slot][src_lane];
    const int e = slot % 4;
    const int row = n0 + (src_lane >> 2) + (e >= 2 ? 8 : 0);
    const int m = m0 + 8 * (slot / 4) + 2 * (src_lane & 3) + (e & 1);
    store_result(out, partial, split, k_splits, m, m_total, row, n, sum);
  }
}
#endif

// kStageX (one activation row, batched; the host's choice for M = 1 in both layouts): the activations
// go through shared memory (below) instead of per-step global loads. The in-place fp16 decode of
// mma_gemv_step is used where it measured faster on the H100 (labs S6-2, S6-6: the pipelined and the
// staged kernel, 1-7%); the batched kernel with per-step activation loads spilled with it and was 5%
// slower at M = 4 (S6-2).
// Register budget: pipelined, two m tiles or staged: <= 128 (16 warps per SM: 2 CTAs of 8 warps or 4
// of 4; unbounded they take 136-170, the staged one up to 144). Otherwise no minimum (0 emits no
// .minnctapersm): ptxas then gives the batched M <= 8 kernel 78-112 registers, where an explicit
// minimum of 1 CTA makes it take 166.
template <typename T, Layout L, int kMTiles, int kUnroll, bool kScaleInA, bool kPipelined = false,
          bool kStageX = false, int kWarps = kMmaGemvWarps>
__global__ void __launch_bounds__(kWarps * 32, kPipelined || kMTiles == 2 || kStageX ? 16 / kWarps : 0)
    w4a16_mma_gemv_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                          float* __restrict__ partial, int m_total, int k_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * kMmaGemvRows;
  const int m0 = blockIdx.z * (8 * kMTiles);
  const int split = blockIdx.y;

  // This warp's steps: the CTA's share of the split, cut into kWarps contiguous pieces.
  const int steps = (w.k + kMmaGemvStepK - 1) / kMmaGemvStepK;
  const int cta_begin = split_begin(steps, split, k_splits);
  const int cta_end = split_begin(steps, split + 1, k_splits);
  const int step_begin = cta_begin + (cta_end - cta_begin) * warp / kWarps;
  const int step_end = cta_begin + (cta_end - cta_begin) * (warp + 1) / kWarps;

  LaneWeights<T, L> lane_weights(w, n0, g, t, step_begin);

  constexpr bool kInPlace = kStageX || kPipelined;
  // Activations, direct: lane (g, t) loads the 32 values of rows m0 + 8 mt + g at the step's k32 from
  // global memory before each step's mma. Staged (kStageX): the batch's row for its kUnroll steps is
  // copied into this warp's shared-memory buffer by 16-byte cp.async through L1 (zero-filled past K
  // and past the warp's steps) together with the batch's weight loads, then read with LDS. The direct
  // path's 4 narrow loads per step add round trips to each batch's critical path (Nsight, S6-19: no
  // L1 or LSU throughput limit) and held M = 1 at ~68% of copy on the 70B shapes (lab S6-3: weights
  // alone 92-95%, weights + those loads 68-70%); staged, M = 1 was 9-14% faster on four of the five
  // bench shapes (lab S6-7; 4096 x 4096 2.5% slower; Format B 1% slower to 12% faster than its
  // pipelined kernel, S6-12). Staging all rows made M = 4 and 8 slower (S6-5, S6-6), so they stay
  // direct.
  extern __shared__ __align__(16) uint8_t gemv_smem[];
  T* const x_stage = reinterpret_cast<T*>(gemv_smem) + warp * kUnroll * kMmaGemvXRowStride;
  bool m_valid[kMTiles];
  const T* x_lane[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = m0 + 8 * mt + g;
    m_valid[mt] = m < m_total;
    x_lane[mt] = x + static_cast<int64_t>(m_valid[mt] ? m : 0) * w.k + 32 * t;
  }

  float acc[kMTiles][4] = {};

  using Batch = WeightBatch<kUnroll>;
  auto load_batch = [&](Batch& b, int step0) {
    load_weight_batch<!kStageX>(w, lane_weights, t, step0, step_end, b);
    if constexpr (kStageX) {
      static_assert(kMTiles == 1 && !kPipelined, "the stage holds one activation row of one batch");
      __syncwarp();  // every lane has read the previous batch
      constexpr int kPieces = kUnroll * kMmaGemvStepK / 8;  // 16-byte pieces of the batch's row
#pragma unroll
      for (int i = lane; i < kPieces; i += 32) {
        const int u = i / (kMmaGemvStepK / 8), v = i % (kMmaGemvStepK / 8);
        const int step = step0 + u, k = step * kMmaGemvStepK + 8 * v;
        const bool valid = step < step_end && k < w.k;
        cp_async16<true>(x_stage + u * kMmaGemvXRowStride + 8 * v, valid ? x + static_cast<int64_t>(m0) * w.k + k : x,
                         valid);
      }
      cp_async_commit();
    }
  };
  auto compute_batch = [&](const Batch& b, int step0) {
    if constexpr (kStageX) {
      cp_async_wait<0>();
      __syncwarp();  // the whole warp's copies of the batch's row have landed
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int step = step0 + u;
      uint32_t xh[kMTiles][16];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          // Staged: every lane reads the one row (columns past M are computed and never stored).
          set_activation_piece(
              xh[mt], v,
              kStageX ? *reinterpret_cast<const uint4*>(x_stage + u * kMmaGemvXRowStride + 32 * t + 8 * v)
                      : load_16_bytes(x_lane[mt] + step * kMmaGemvStepK + 8 * v, b.valid[u] && m_valid[mt]));
        }
      mma_gemv_step<T, L, kMTiles, kScaleInA, kInPlace>(b.codes[u], xh, b.affine[u], lane_weights.group(step), acc);
    }
  };
  if constexpr (kPipelined) {
    // Two batches in registers: batch i + 1 is requested before batch i is multiplied, so a warp
    // keeps loads in flight while it computes.
    Batch a, b;
    load_batch(a, step_begin);
    for (int step0 = step_begin; step0 < step_end; step0 += 2 * kUnroll) {
      load_batch(b, step0 + kUnroll);
      compute_batch(a, step0);
      if (step0 + kUnroll >= step_end) break;
      load_batch(a, step0 + 2 * kUnroll);
      compute_batch(b, step0 + kUnroll);
    }
  } else {
    // Every weight and parameter load of a batch is issued before its first mma.
    for (int step0 = step_begin; step0 < step_end; step0 += kUnroll) {
      Batch a;
      load_batch(a, step0);
      compute_batch(a, step0);
    }
  }

  mma_gemv_store<T, kWarps, kMTiles>(acc, n0, w.n, m0, m_total, split, k_splits, out, partial);
#endif  // __CUDA_ARCH__ >= 800 (the host launches this kernel only on such devices)
}

// Shared-activation GEMV (M = 2..16): the same step math as w4a16_mma_gemv_kernel, but the warps of
// a CTA own different row tiles (warp w: rows n0 + 16 w ..) and walk the same K range, so that the
// activations of a batch are copied once per CTA into shared memory (cp.async, triple-buffered)
// instead of once per warp. Per-warp activation loads read 8 kMTiles * 256 bytes per 1 KiB of
// weights per warp and step (4x the weight bytes at M = 16); here the CTA reads them once for its
// kSharedXWarps row tiles.
// Stage layout (one batch): [kUnroll][8 kMTiles rows m][16 slots of 16 bytes], rows of 256 bytes.
// Lane (g, t) reads the four 16-byte pieces v of its k32 = 32 t of row m; piece v sits in slot
// 4 t + (v ^ key), key = (t >> 1) | ((m & 1) << 1), so that the 8 lanes of each quarter warp
// (g = 2q, 2q + 1; t = 0..3) hit 8 different bank groups (LDS.128 is served a quarter warp at a time).
// Three buffers let one barrier per batch order both the copies (landed before any warp reads) and
// the reuse (buffer b is refilled two batches after it was read, past another barrier).
constexpr int kSharedXWarps = 8;
constexpr int kSharedXRows = kSharedXWarps * kMmaGemvRows;  // weight rows per CTA
constexpr int kSharedXBuffers = 3;

template <typename T>
constexpr int shared_x_stage_bytes(int m_tiles, int k_unroll) {
  return kSharedXBuffers * k_unroll * 8 * m_tiles * kMmaGemvStepK * static_cast<int>(sizeof(T));
}

__device__ __forceinline__ int shared_x_slot(int m, int t, int v) { return 4 * t + (v ^ ((t >> 1) | ((m & 1) << 1))); }

template <typename T, Layout L, int kMTiles, int kUnroll, bool kScaleInA, bool kPipelined = false>
__global__ void __launch_bounds__(kSharedXWarps * 32, 2)
    w4a16_mma_gemv_shared_x_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out,
                                   float* __restrict__ partial, int m_total, int k_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kMRows = 8 * kMTiles;
  constexpr int kRowElems = kMmaGemvStepK;                   // one staged row of one step
  constexpr int kBatchElems = kUnroll * kMRows * kRowElems;  // one buffer
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int n0 = blockIdx.x * kSharedXRows + warp * kMmaGemvRows;
  const int m0 = blockIdx.z * kMRows;
  const int split = blockIdx.y;

  const int steps = (w.k + kMmaGemvStepK - 1) / kMmaGemvStepK;
  const int step_begin = split_begin(steps, split, k_splits);
  const int step_end = split_begin(steps, split + 1, k_splits);

  LaneWeights<T, L> lane_weights(w, n0, g, t, step_begin);

  extern __shared__ __align__(16) uint8_t gemv_smem[];
  T* const stage = reinterpret_cast<T*>(gemv_smem);
  // The activations of the kUnroll steps from step0 into buffer `buffer`, zero past M, K and the split.
  auto copy_x = [&](int buffer, int step0) {
    constexpr int kPieces = kUnroll * kMRows * (kRowElems / 8);
#pragma unroll
    for (int i = threadIdx.x; i < kPieces; i += kSharedXWarps * 32) {
      const int piece = i % 16, m = (i / 16) % kMRows, u = i / (16 * kMRows);
      const int step = step0 + u, k = step * kMmaGemvStepK + 8 * piece;
      const bool valid = step < step_end && k < w.k && m0 + m < m_total;
      const int slot = shared_x_slot(m, piece / 4, piece % 4);
      cp_async16<true>(stage + buffer * kBatchElems + (u * kMRows + m) * kRowElems + 8 * slot,
                       valid ? x + static_cast<int64_t>(m0 + m) * w.k + k : x, valid);
    }
    cp_async_commit();
  };

  float acc[kMTiles][4] = {};

  using Batch = WeightBatch<kUnroll>;
  // The weight loads of the batch from step0 (the activations come through the stage).
  auto load_weights = [&](Batch& b, int step0) { load_weight_batch<false>(w, lane_weights, t, step0, step_end, b); };
  // Requests the activations of the batch after step0's, then waits until step0's have landed.
  int buffer = 0;
  auto next_x = [&](int step0) {
    const int next = buffer == kSharedXBuffers - 1 ? 0 : buffer + 1;
    copy_x(next, step0 + kUnroll);  // an empty group past the end keeps the wait count uniform
    cp_async_wait<1>();
    __syncthreads();  // every thread's copies of this batch have landed
  };
  auto compute = [&](const Batch& b, int step0) {
    const T* batch_x = stage + buffer * kBatchElems;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      uint32_t xh[kMTiles][16];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const int m = 8 * mt + g;
          set_activation_piece(xh[mt], v,
                               *reinterpret_cast<const uint4*>(batch_x + (u * kMRows + m) * kRowElems +
                                                               8 * shared_x_slot(m, t, v)));
        }
      mma_gemv_step<T, L, kMTiles, kScaleInA, true>(b.codes[u], xh, b.affine[u], lane_weights.group(step0 + u), acc);
    }
    buffer = buffer == kSharedXBuffers - 1 ? 0 : buffer + 1;
  };

  copy_x(0, step_begin);
  if constexpr (kPipelined) {
    Batch a, b;
    load_weights(a, step_begin);
    for (int step0 = step_begin; step0 < step_end; step0 += 2 * kUnroll) {
      load_weights(b, step0 + kUnroll);
      next_x(step0);
      compute(a, step0);
      if (step0 + kUnroll >= step_end) break;
      load_weights(a, step0 + 2 * kUnroll);
      next_x(step0 + kUnroll);
      compute(b, step0 + kUnroll);
    }
  } else {
    for (int step0 = step_begin; step0 < step_end; step0 += kUnroll) {
      Batch a;
      load_weights(a, step0);
      next_x(step0);
      compute(a, step0);
    }
  }
  cp_async_wait<0>();

  // acc[mt][e]: weight row n0 + g (e < 2) or n0 + g + 8, activation row m0 + 8 mt + 2 t + (e & 1).
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = n0 + g + (e >= 2 ? 8 : 0);
      store_result(out, partial, split, k_splits, m0 + 8 * mt + 2 * t + (e & 1), m_total, row, w.n, acc[mt][e]);
    }
#endif  // __CUDA_ARCH__ >= 800
}

}  // namespace w4a16
}  // namespace awq
