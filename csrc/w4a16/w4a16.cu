#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <string>

#include "common/build_info.h"
#include "common/checks.h"
#include "common/dispatch.h"
#include "w4a16/gemv.cuh"
#include "w4a16/mma_gemm.cuh"
#include "w4a16/mma_gemv.cuh"
#include "w4a16/w4a16.h"
#ifdef AWQ_KERNELS_SM90A  // CUDA >= 12.0, sm_90a
#include "w4a16/wgmma_gemm.cuh"
#endif

namespace awq {
namespace {

using w4a16::Layout;

// kGemv: tensor-core GEMV (mma_gemv.cuh; per-warp or shared-activation kernel by shape),
// kGemvSharedX: its shared-activation kernel forced; kMma: tensor-core GEMM (mma_gemm.cuh); kWgmma:
// Hopper wgmma GEMM fed by cp.async, kWgmmaWs: its warp-specialized variant fed by TMA (both
// wgmma_gemm.cuh, sm_90a builds on compute capability 9.0); kPortable: the CUDA-core kernel
// (gemv.cuh), any arch.
enum class KernelChoice { kAuto, kGemv, kGemvSharedX, kMma, kWgmma, kWgmmaWs, kPortable };

// Rows of activations up to which "auto" takes the tensor-core GEMV on tensor-core devices. At
// M = 16 it measured faster than the mma GEMM on every bench shape (H100, lab S7-2: 11.6-68.1 us
// against 17.8-101.6 us), and the mma GEMM faster than wgmma's 128 x 16 tile (device run 6).
constexpr int64_t kGemvMaxRows = 16;
// Format B with G < 128 keeps the fp32 CUDA-core kernel up to this many rows (gemv_rounds_weights).
constexpr int64_t kFp32GemvMaxRowsV1 = 8;
// Above kGemvMaxRows, "auto" takes the warp-specialized TMA wgmma GEMM (wgmma_ws) for both
// layouts: with its scale/zero prefetch it measured faster than the cp.async wgmma GEMM at every M
// benchmarked above 16 (device run 10, 70B shapes, v2 M = 64: 0.1266 / 0.1140 ms against 0.1371 /
// 0.1260 ms; M = 1024: 0.69 / 0.76 ms against 1.49 / 1.49 ms; M = 17..63 were not benchmarked). The
// cp.async kernel stays selectable as "wgmma".

// Spec §2.2: int32 words holding the K/G zero points, padded for G = 64 and 32.
int64_t zeros_width(int64_t k, int64_t group_size) {
  const int64_t mult = group_size >= 128 ? 1 : (group_size == 64 ? 2 : 4);
  const int64_t words = (k / group_size + 7) / 8;
  return (words + mult - 1) / mult * mult;
}

int log2_exact(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

// A validated call: the activations as [M, K], the weight, and the output's leading shape.
struct Problem {
  Layout layout;
  at::Tensor x;  // [M, K], contiguous
  const at::Tensor* qweight;
  const at::Tensor* scales;
  const at::Tensor* zeros;
  int64_t m, n, k, group_size;
  int64_t scale_stride, zero_stride;
};

// The tensor-core GEMVs round s * (q - z) to fp16/bf16 per weight when G < 128 (they scale the fp32
// sums only for G = 128; the shared-activation kernel rounds for every G at M >= 9, as the GEMMs do).
// Format B's original GEMV (gemv_forward_cuda) computed in fp32 throughout, so for Format B with
// G < 128 "auto" keeps the fp32 CUDA-core kernel where that GEMV served (up to kFp32GemvMaxRowsV1
// rows): never less precise than the kernel it replaces.
bool gemv_rounds_weights(const Problem& p) { return p.layout == Layout::kV1 && p.group_size < 128; }

void check_group_size_common(const ArgChecker& c, int64_t k, int64_t group_size) {
  c.check(k > 0 && k % group_size == 0, "in_features K = ", k, " must be a positive multiple of group_size ",
          group_size);
  c.check(k <= (int64_t{1} << 30), "in_features K = ", k, " is too large");
}

void check_activations(const ArgChecker& c, const at::Tensor& x, const char* name) {
  c.dtype_in(x, name, {at::kHalf, at::kBFloat16});
  c.min_dim(x, name, 1);
  c.check(x.size(-1) > 0, "argument '", name, "' must have a positive last dim (in_features K), got shape ",
          x.sizes());
  c.contiguous(x, name);
}

// Format C: qweight int16 [N/4, K], scales and scaled zeros [Gp, N] in the activation dtype. Only the
// padded Gp of spec §2.2 is accepted: it differs between the group sizes at every K, whereas K/G of one
// group size can equal Gp of another (K = 256, 512), which would let a wrong group_size through.
Problem validate_v2(const ArgChecker& c, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                    const at::Tensor& zeros, int64_t group_size, const char* x_name, const char* q_name,
                    const char* s_name, const char* z_name) {
  check_activations(c, x, x_name);
  const int64_t k = x.size(-1);
  c.dtype(qweight, q_name, at::kShort);
  c.dim(qweight, q_name, 2);
  c.contiguous(qweight, q_name);
  c.check(qweight.size(0) > 0 && qweight.size(1) == k, "argument '", q_name, "' must have shape [N/4, K] with K = ",
          k, " (the last dim of '", x_name, "'), got ", qweight.sizes());
  const int64_t n = 4 * qweight.size(0);
  check_group_size_common(c, k, group_size);
  c.check(k % 64 == 0, "in_features K = ", k, " must be a multiple of 64 for the v2 layout");
  c.check(n <= (int64_t{1} << 30), "out_features N = ", n, " is too large");
  const int64_t padded = 8 * zeros_width(k, group_size);
  for (const auto& [t, name] : {std::pair{&scales, s_name}, std::pair{&zeros, z_name}}) {
    c.same_dtype(*t, name, x, x_name);
    c.dim(*t, name, 2);
    c.check(t->size(0) == padded && t->size(1) == n, "argument '", name, "' must have shape [Gp, N] = [", padded,
            ", ", n, "] for K = ", k, ", G = ", group_size, " (Gp = 8 * calculate_zeros_width(K, G)), got ",
            t->sizes());
    c.contiguous(*t, name);
  }
  return Problem{Layout::kV2, x, &qweight, &scales, &zeros, x.numel() / k, n, k, group_size, n, n};
}

// Format B: qweight int32 [N, K/8] (any N), scales [N, Gp = 8 Zw] in the activation dtype, qzeros int32
// [N, Zw]: the padded shapes only, as for Format C (and as the original, which derives its strides from K
// and G, requires).
Problem validate_v1(const ArgChecker& c, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                    const at::Tensor& qzeros, int64_t group_size, const char* x_name, const char* q_name,
                    const char* s_name, const char* z_name) {
  check_activations(c, x, x_name);
  const int64_t k = x.size(-1);
  c.dtype(qweight, q_name, at::kInt);
  c.dim(qweight, q_name, 2);
  c.contiguous(qweight, q_name);
  c.check(qweight.size(0) > 0 && qweight.size(1) * 8 == k, "argument '", q_name,
          "' must have shape [N, K/8] with K = ", k, " (the last dim of '", x_name, "'), got ", qweight.sizes());
  const int64_t n = qweight.size(0);
  check_group_size_common(c, k, group_size);
  c.check(n <= (int64_t{1} << 30), "out_features N = ", n, " is too large");
  const int64_t zw = zeros_width(k, group_size);
  c.same_dtype(scales, s_name, x, x_name);
  c.dim(scales, s_name, 2);
  c.check(scales.size(0) == n && scales.size(1) == 8 * zw, "argument '", s_name, "' must have shape [N, 8*Zw] = [",
          n, ", ", 8 * zw, "] for K = ", k, ", G = ", group_size, " (Zw = calculate_zeros_width(K, G)), got ",
          scales.sizes());
  c.contiguous(scales, s_name);
  c.dtype(qzeros, z_name, at::kInt);
  c.dim(qzeros, z_name, 2);
  c.check(qzeros.size(0) == n && qzeros.size(1) == zw, "argument '", z_name, "' must have shape [N, Zw] = [", n, ", ",
          zw, "] for K = ", k, ", G = ", group_size, ", got ", qzeros.sizes());
  c.contiguous(qzeros, z_name);
  return Problem{Layout::kV1,   x, &qweight, &scales, &qzeros, x.numel() / k, n, k, group_size, scales.size(1),
                 qzeros.size(1)};
}

KernelChoice parse_kernel(const ArgChecker& c, c10::string_view kernel) {
  if (kernel == "auto") return KernelChoice::kAuto;
  if (kernel == "gemv") return KernelChoice::kGemv;
  if (kernel == "gemv_shared_x") return KernelChoice::kGemvSharedX;
  if (kernel == "mma") return KernelChoice::kMma;
  if (kernel == "wgmma") return KernelChoice::kWgmma;
  if (kernel == "wgmma_ws") return KernelChoice::kWgmmaWs;
  if (kernel == "portable") return KernelChoice::kPortable;
  c.check(false,
          "argument 'kernel' must be one of \"auto\", \"gemv\", \"gemv_shared_x\", \"mma\", \"wgmma\", "
          "\"wgmma_ws\", \"portable\", got \"",
          std::string(kernel), "\"");
  return KernelChoice::kAuto;
}

template <typename T>
w4a16::WeightArgs<T> weight_args(const Problem& p, const at::Tensor& qweight) {
  return w4a16::WeightArgs<T>{static_cast<const uint8_t*>(qweight.data_ptr()),
                              static_cast<const T*>(p.scales->data_ptr()),
                              p.zeros->data_ptr(),
                              static_cast<int>(p.n),
                              static_cast<int>(p.k),
                              log2_exact(p.group_size),
                              static_cast<int>(p.k / p.group_size),
                              p.scale_stride,
                              p.zero_stride};
}

template <typename T>
void launch_reduce(const at::Tensor& partial, const at::Tensor& out, int splits, cudaStream_t stream) {
  const int64_t elements = out.numel();
  const int64_t blocks = std::min<int64_t>((elements + 255) / 256, 8192);
  w4a16::reduce_splits_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      partial.data_ptr<float>(), static_cast<T*>(out.data_ptr()), elements, splits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// One launch per block of at most 65535 M tiles (grid z) of a GEMV kernel with the signature
// (x, w, out, partial, m, k_splits) and CTAs of `rows_per_cta` weight rows x `m_tile` activation
// rows; `choose_splits(ctas)` gives the K split for a launch of `ctas` CTAs (fp32 partials + reduce).
template <typename T, typename Kernel, typename ChooseSplits>
void launch_gemv_grid(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, Kernel kernel,
                      int threads, int smem, int64_t rows_per_cta, int64_t m_tile, ChooseSplits choose_splits,
                      cudaStream_t stream) {
  if (smem > 48 * 1024) C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int64_t row_blocks = (p.n + rows_per_cta - 1) / rows_per_cta;
  constexpr int64_t kMaxGridZ = 65535;
  for (int64_t m_first = 0; m_first < p.m; m_first += kMaxGridZ * m_tile) {
    const int64_t m_count = std::min(p.m - m_first, kMaxGridZ * m_tile);
    const int64_t m_blocks = (m_count + m_tile - 1) / m_tile;
    const int splits = choose_splits(row_blocks * m_blocks);
    at::Tensor partial;
    if (splits > 1) partial = at::empty({splits, m_count, p.n}, p.x.options().dtype(at::kFloat));
    const T* x = static_cast<const T*>(p.x.data_ptr()) + m_first * p.k;
    T* y = static_cast<T*>(out.data_ptr()) + m_first * p.n;
    const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits), static_cast<unsigned>(m_blocks));
    kernel<<<grid, threads, smem, stream>>>(x, w, y, splits > 1 ? partial.data_ptr<float>() : nullptr,
                                            static_cast<int>(m_count), splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (splits > 1) launch_reduce<T>(partial, out.narrow(0, m_first, m_count), splits, stream);
  }
}

template <typename T, Layout L, int kM>
void launch_gemv(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                 cudaStream_t stream) {
  constexpr int kRows = kM <= 2 ? 8 : 4;
  const int slices = static_cast<int>((p.k + w4a16::kGemvSlice - 1) / w4a16::kGemvSlice);
  launch_gemv_grid<T>(p, w, out, w4a16::w4a16_gemv_kernel<T, L, kM, kRows>, w4a16::kGemvWarps * 32, 0, kRows, kM,
                      [&](int64_t ctas) {
                        int splits = 1;
                        while (ctas * splits < 4 * sms && slices / (2 * splits) >= w4a16::kGemvWarps) splits *= 2;
                        return splits;
                      }, stream);
}

// One configuration of the per-warp tensor-core GEMV (w4a16_mma_gemv_kernel): a K split only when
// the CTAs would not cover the SMs, keeping >= 2 batches of loads per warp.
template <typename T, Layout L, int kMTiles, int kUnroll, bool kPipelined, bool kStageX,
          int kWarps = w4a16::kMmaGemvWarps>
void launch_mma_gemv_config(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                            cudaStream_t stream) {
  const int64_t steps = (p.k + w4a16::kMmaGemvStepK - 1) / w4a16::kMmaGemvStepK;
  const int64_t max_splits = std::max<int64_t>(1, steps / (kWarps * 2 * kUnroll));
  // G < 128: scales applied per weight (several groups in a 128-wide step); G = 128: per step.
  auto kernel = p.group_size < w4a16::kMmaGemvStepK
                    ? w4a16::w4a16_mma_gemv_kernel<T, L, kMTiles, kUnroll, true, kPipelined, kStageX, kWarps>
                    : w4a16::w4a16_mma_gemv_kernel<T, L, kMTiles, kUnroll, false, kPipelined, kStageX, kWarps>;
  launch_gemv_grid<T>(p, w, out, kernel, kWarps * 32, w4a16::mma_gemv_x_stage_bytes<T>(kWarps, kUnroll, kStageX),
                      w4a16::kMmaGemvRows, 8 * kMTiles,
                      [&](int64_t ctas) {
                        int splits = 1;
                        while (ctas * splits < sms && splits * 2 <= max_splits) splits *= 2;
                        return splits;
                      }, stream);
}

// The shared-activation GEMV (w4a16_mma_gemv_shared_x_kernel). M <= 8: batches of 4 steps, the
// group's scale applied to the fp32 sums for G = 128; M 9..16: two batches of 2 steps in flight and
// the scales applied per weight (H100, lab S7-2, 70B shapes, M = 16: 68.1 / 64.9 us against 71.0 /
// 68.5 batched and 75.1 / 78.1 with fp32 scaling). A K split while the CTAs stay within two per SM,
// keeping >= 8 steps per split (more CTAs measured slower: 76.1 against 71.0 us at 8192 x 28672).
template <typename T, Layout L, int kMTiles, int kUnroll, bool kPipelined>
void launch_mma_gemv_shared_x_config(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out,
                                     int sms, cudaStream_t stream) {
  const int64_t steps = (p.k + w4a16::kMmaGemvStepK - 1) / w4a16::kMmaGemvStepK;
  auto kernel = w4a16::w4a16_mma_gemv_shared_x_kernel<T, L, kMTiles, kUnroll, true, kPipelined>;
  if constexpr (kMTiles == 1) {
    if (p.group_size == w4a16::kMmaGemvStepK) {
      kernel = w4a16::w4a16_mma_gemv_shared_x_kernel<T, L, 1, kUnroll, false, kPipelined>;
    }
  }
  launch_gemv_grid<T>(p, w, out, kernel, w4a16::kSharedXWarps * 32, w4a16::shared_x_stage_bytes<T>(kMTiles, kUnroll),
                      w4a16::kSharedXRows, 8 * kMTiles,
                      [&](int64_t ctas) {
                        int splits = 1;
                        while (ctas * splits * 2 <= 2 * sms && steps / (splits * 2) >= 8) splits *= 2;
                        return splits;
                      }, stream);
}

template <typename T, Layout L>
void launch_mma_gemv_shared_x(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                              cudaStream_t stream) {
  if (p.m <= 8) {
    launch_mma_gemv_shared_x_config<T, L, 1, 4, false>(p, w, out, sms, stream);
  } else {
    launch_mma_gemv_shared_x_config<T, L, 2, 2, true>(p, w, out, sms, stream);
  }
}

// Whether "gemv" takes the shared-activation kernel (H100, lab S7-2): it reads the activations once
// per 128 weight rows instead of once per 16, but its CTAs are 8x larger, so it needs a large grid.
// M = 9..16: 1.36-1.45x faster than the per-warp GEMV on the 70B shapes, 1.17-1.25x on 4096 x 14336
// and 14336 x 4096, 0.79x at 4096 x 4096. M = 2..8 (Format C): 1.08-1.19x on the 70B shapes, level
// at 4096 x 14336, 0.90-0.96x with N = 4096. M = 1 keeps the per-warp staged kernel (as fast or
// faster everywhere). Format B against its pipelined per-warp kernel (S9-8, N >= 8192): M = 8
// 1.10-1.17x, M = 4 0.99-1.09x, M = 2 0.94-1.01x, so from M = 4.
bool gemv_shares_x(const Problem& p) {
  if (p.m >= 9) return p.n * p.k >= (int64_t{1} << 25);
  return p.m >= (p.layout == Layout::kV2 ? 2 : 4) && p.n >= 8192;
}

// "gemv": the per-warp kernel's loads in flight per lane: M = 1: the activation row staged in shared
// memory (both layouts; H100 labs S6-7 and S6-12: 9-14% faster for Format C on four of five bench
// shapes, Format B 1% slower to 12% faster than its pipelined kernel); CTAs of 8 warps with batches
// of 2 steps while the grid fits in one wave of 2 CTAs per SM, else CTAs of 4 warps with batches of 4
// steps (4 CTAs per SM), so that every warp gets more batches of K (H100 lab S10-2, against 8 warps
// and batches of 4 on every grid: 4-10% faster on four of the five bench shapes in both layouts,
// 28672 x 8192 0-1%; CTAs of 1 or 2 warps were slower on four shapes; S10-3: two batches in flight
// gained nothing).
// M 2..8, Format C: the same batches with per-step activation loads; Format B: two batches of 2 steps,
// the next requested before the current one is multiplied (8-15% faster for Format B, no gain for
// Format C: lab run S3-7). M >= 9: one batch of 2 steps (pipelined it spills). Large grids take the
// shared-activation kernel instead (gemv_shares_x).
template <typename T, Layout L>
void launch_mma_gemv(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                     cudaStream_t stream) {
  if (p.m == 1) {
    if ((p.n + w4a16::kMmaGemvRows - 1) / w4a16::kMmaGemvRows <= 2 * sms) {
      launch_mma_gemv_config<T, L, 1, 2, false, true, 8>(p, w, out, sms, stream);
    } else {
      launch_mma_gemv_config<T, L, 1, 4, false, true, 4>(p, w, out, sms, stream);
    }
  } else if (gemv_shares_x(p)) {
    launch_mma_gemv_shared_x<T, L>(p, w, out, sms, stream);
  } else if (p.m > 8) {
    launch_mma_gemv_config<T, L, 2, 2, false, false>(p, w, out, sms, stream);
  } else if constexpr (L == Layout::kV1) {
    launch_mma_gemv_config<T, L, 1, 2, true, false>(p, w, out, sms, stream);
  } else {
    launch_mma_gemv_config<T, L, 1, 4, false, false>(p, w, out, sms, stream);
  }
}

template <typename T, Layout L, int kBM, int kWarpsM, int kWarpsN>
void launch_mma(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms, int64_t user_splits,
                cudaStream_t stream) {
  const int64_t m_tiles = (p.m + kBM - 1) / kBM;
  const int64_t n_tiles = (p.n + w4a16::kMmaBN - 1) / w4a16::kMmaBN;
  const int64_t tiles = m_tiles * n_tiles;
  TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), "w4a16: too many output tiles (M = ", p.m, ")");
  const int64_t k_tiles = (p.k + w4a16::kMmaBK - 1) / w4a16::kMmaBK;
  int64_t splits = user_splits;
  if (splits == 0) {  // fill the SMs twice over, keeping at least 4 k tiles per split
    splits = 1;
    while (tiles * splits < 2 * sms && k_tiles / (splits + 1) >= 4) ++splits;
  }
  splits = std::max<int64_t>(1, std::min({splits, k_tiles, int64_t{65535}}));
  at::Tensor partial;
  if (splits > 1) partial = at::empty({splits, p.m, p.n}, p.x.options().dtype(at::kFloat));
  constexpr int kSmem = w4a16::kMmaStages * w4a16::mma_stage_bytes<kBM>();
  auto kernel = w4a16::w4a16_mma_kernel<T, L, kBM, kWarpsM, kWarpsN>;
  if (kSmem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  kernel<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)), kWarpsM * kWarpsN * 32, kSmem,
           stream>>>(static_cast<const T*>(p.x.data_ptr()), w, static_cast<T*>(out.data_ptr()),
                     splits > 1 ? partial.data_ptr<float>() : nullptr, static_cast<int>(p.m),
                     static_cast<int>(splits));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (splits > 1) launch_reduce<T>(partial, out, static_cast<int>(splits), stream);
}

#ifdef AWQ_KERNELS_SM90A
// The CTAs of a wgmma grid that count as "the SMs covered" when choosing the tile (7/8 of them: 128
// tiles on 132 SMs keep the larger tile).
int64_t wgmma_target_ctas(int sms) { return sms - sms / 8; }

// The wgmma CTA tile for M rows: kRT row tiles of 64 per warpgroup (CTA rows = 128 * kRT) x kBN tokens.
struct WgmmaTile {
  int rt, bn;
};

// 128 x 16 up to M = 16 and 128 x 64 up to M = 64 (weight streaming, split K to fill the SMs); beyond,
// the first of 256 x 128 (least L2 traffic per flop: 24 KiB per k tile), 128 x 128 whose grid covers
// the SMs, else 128 x 64 (more CTAs instead of a K split whose fp32 partials would cost as much as
// the weights at M = 256).
WgmmaTile wgmma_tile(int64_t m, int64_t n, int sms) {
  if (m <= 16) return {1, 16};
  if (m <= 64) return {1, 64};
  for (const WgmmaTile tile : {WgmmaTile{2, 128}, WgmmaTile{1, 128}}) {
    const int64_t rows = 128 * tile.rt;
    if ((m + tile.bn - 1) / tile.bn * ((n + rows - 1) / rows) >= wgmma_target_ctas(sms)) return tile;
  }
  return {1, 64};
}

// Output tiles of bn tokens x `rows` weight rows, and k tiles of 64, of a wgmma GEMM.
struct WgmmaTiles {
  int64_t tiles_m, tiles_n, tiles, k_tiles;
};
WgmmaTiles wgmma_tiles(const Problem& p, int64_t bn, int64_t rows) {
  const int64_t tiles_m = (p.m + bn - 1) / bn;
  const int64_t tiles_n = (p.n + rows - 1) / rows;
  TORCH_CHECK(tiles_m * tiles_n <= std::numeric_limits<int32_t>::max(), "w4a16: too many output tiles (M = ", p.m,
              ")");
  return {tiles_m, tiles_n, tiles_m * tiles_n, (p.k + w4a16::kWgmmaBK - 1) / w4a16::kWgmmaBK};
}

// 256 threads and up to 181 KiB of shared memory (1 CTA per SM from a 128-token tile; 2 below): the
// largest K split whose CTAs still fit in one wave of CTA slots (more would leave a partial second
// wave), keeping at least 8 k tiles (512 of K) per split so that the ring fills. It splits only grids
// that leave SMs idle; for small M (weight streaming) the fp32 partials are small next to the weights.
// A caller's split (gemm_forward_cuda's split_k_iters, tuned for the original kernel; WQLinear passes
// 8) only caps it: at large M it would multiply the output traffic by 8 fp32 partials.
template <typename T, Layout L, int kRT, int kBN>
void launch_wgmma(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                  int64_t user_splits, cudaStream_t stream) {
  const WgmmaTiles grid = wgmma_tiles(p, kBN, w4a16::wgmma_rows<kRT>());
  const int64_t tiles = grid.tiles;
  const int64_t k_tiles = grid.k_tiles;
  const int64_t slots = (kBN <= 64 ? 2 : 1) * static_cast<int64_t>(sms);
  int64_t own = 1;
  while (tiles * (own + 1) <= slots && k_tiles / (own + 1) >= 8 && own < 65535) ++own;
  const int64_t splits = user_splits > 0 ? std::min(own, user_splits) : own;
  at::Tensor partial;
  if (splits > 1) partial = at::empty({splits, p.m, p.n}, p.x.options().dtype(at::kFloat));
  constexpr int kSmem = w4a16::wgmma_smem_bytes<kRT, kBN>();
  auto kernel = w4a16::w4a16_wgmma_kernel<T, L, kRT, kBN>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  kernel<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)), w4a16::kWgmmaThreads, kSmem,
           stream>>>(static_cast<const T*>(p.x.data_ptr()), w, static_cast<T*>(out.data_ptr()),
                     splits > 1 ? partial.data_ptr<float>() : nullptr, static_cast<int>(p.m),
                     static_cast<int>(splits));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (splits > 1) launch_reduce<T>(partial, out, static_cast<int>(splits), stream);
}

// The warp-specialized kernel's persistent schedule (stream_k.cuh) of `tiles` output tiles x `k_tiles`
// on one CTA per SM: whole waves of tiles, then the rest of the tiles in K ranges, one per CTA.
//  * `balance`: ranges of equal length over all SMs, so that every CTA ends together. Pieces of fewer
//    than 8 k tiles are not cut (per piece: a pipeline restart and an fp32 tile written and read
//    back), nor a tile into more than 16 ranges (pieces per tile <= 16 + 2 <= kFixupMaxPieces).
//  * otherwise the rest tiles are split into equal K ranges, as many per tile as the SMs allow (none
//    if the rest is more than half a wave). CTAs that start a range at the same k share the
//    activation tiles of that k in L2, which balanced ranges (scattered k) do not.
// A caller's split (gemm_forward_cuda's split_k_iters, tuned for the original kernel; WQLinear passes
// 8) caps the ranges per cut tile.
w4a16::StreamKSchedule make_stream_k_schedule(int64_t tiles, int64_t k_tiles, int sms, bool balance,
                                              int64_t user_splits) {
  constexpr int64_t kMinPieceKTiles = 8;
  constexpr int64_t kMaxRangesPerTile = 16;
  static_assert(kMaxRangesPerTile + 2 <= w4a16::kFixupMaxPieces, "pieces of a cut tile: its ranges + 2");
  const int64_t waves = tiles / sms;
  const int64_t rest = tiles - waves * sms;
  TORCH_CHECK(rest * k_tiles <= std::numeric_limits<int32_t>::max(), "w4a16: K = ", k_tiles * w4a16::kWgmmaBK,
              " is too long for the wgmma_ws schedule (at most 2^31 k tiles of 64 in a partial wave)");
  const int64_t max_ranges = user_splits > 0 ? std::min(user_splits, kMaxRangesPerTile) : kMaxRangesPerTile;
  int64_t sk_ctas = 0;
  if (rest > 0 && balance) {
    sk_ctas = std::min({rest * k_tiles / std::min(k_tiles, kMinPieceKTiles), int64_t{sms}, rest * max_ranges});
  } else if (rest > 0) {
    sk_ctas = rest * std::min({sms / rest, std::max<int64_t>(1, k_tiles / kMinPieceKTiles), max_ranges});
  }
  return {static_cast<int>(tiles), static_cast<int>(k_tiles), static_cast<int>(waves > 0 ? sms : sk_ctas),
          static_cast<int>(waves * sms), static_cast<int>(sk_ctas)};
}

// Balanced ranges for the 64-token tile (weight streaming: pieces of 48 KiB of fp32) when all of x
// stays in L2 (<= 16 MiB); the larger tiles' pieces cost more traffic than the balance gains
// (S8-3: M = 256 on 8192 x 28672, pieces of 128 KiB, fixup 20 us of 206).
bool balance_wgmma_ws(int bn, int64_t m, int64_t k) { return bn == 64 && m * k * 2 <= (int64_t{16} << 20); }

// Token tile of the warp-specialized kernel: 64 up to M = 64 (weight streaming, 192 weight rows per CTA);
// beyond, 128 or 256 tokens (128 rows), whichever has the least estimated time: k tiles per CTA x
// clocks per k tile (the HGMMA's 4 * bn, at least ~640: the consumers' issue), plus the cut tiles'
// fp32 pieces written and read at ~1.9 KB per clock of DRAM bandwidth.
int plan_wgmma_ws_tile(const Problem& p, int sms, int64_t user_splits) {
  if (p.m <= 64) return 64;
  int best = 0;
  double best_cost = 0.0;
  static_assert(w4a16::wgmma_ws_rows<128>() == w4a16::wgmma_ws_rows<256>(), "one row count for both candidates");
  constexpr int64_t rows = w4a16::wgmma_ws_rows<256>();
  for (const int bn : {128, 256}) {
    const WgmmaTiles grid = wgmma_tiles(p, bn, rows);
    const w4a16::StreamKSchedule s =
        make_stream_k_schedule(grid.tiles, grid.k_tiles, sms, balance_wgmma_ws(bn, p.m, p.k), user_splits);
    const int64_t sk_units = s.sk_ctas > 0 ? (s.sk_units() + s.sk_ctas - 1) / s.sk_ctas : 0;
    const int64_t units = s.dp_tiles / s.ctas * grid.k_tiles + sk_units;
    const int64_t pieces = s.sk_ctas > s.tiles - s.dp_tiles ? s.sk_ctas + (s.tiles - s.dp_tiles) : 0;
    const double cost = static_cast<double>(units) * std::max(4.0 * bn, 640.0) +
                        static_cast<double>(pieces) * rows * bn * 8.0 / 1900.0;
    if (best == 0 || cost < best_cost) {
      best = bn;
      best_cost = cost;
    }
  }
  return best;
}

template <typename T, Layout L, int kBN>
void launch_wgmma_ws(const Problem& p, const w4a16::WeightArgs<T>& w, const at::Tensor& out, int sms,
                     int64_t user_splits, cudaStream_t stream) {
  constexpr int64_t kRows = w4a16::wgmma_ws_rows<kBN>();
  const WgmmaTiles grid = wgmma_tiles(p, kBN, kRows);
  const w4a16::StreamKSchedule schedule =
      make_stream_k_schedule(grid.tiles, grid.k_tiles, sms, balance_wgmma_ws(kBN, p.m, p.k), user_splits);
  // x [M, K] in boxes of kBN tokens x 64 k with the 128-byte swizzle the wgmma descriptor reads; the
  // packed weight as bytes in boxes of one k tile of kRows rows, in the layout's own order.
  CUtensorMap x_map;
  CUtensorMap w_map;
  sm90::encode_tensor_map_2d(&x_map, CU_TENSOR_MAP_DATA_TYPE_UINT16, p.x.data_ptr(), p.m, p.k, 2 * p.k, kBN,
                             w4a16::kWgmmaBK, CU_TENSOR_MAP_SWIZZLE_128B);
  if constexpr (L == Layout::kV2) {  // [N/4, 2K] bytes: kRows / 4 packed rows x 128 bytes per tile
    sm90::encode_tensor_map_2d(&w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, w.qweight, p.n / 4, 2 * p.k, 2 * p.k,
                               kRows / 4, 2 * w4a16::kWgmmaBK, CU_TENSOR_MAP_SWIZZLE_NONE);
  } else {  // [N, K/2] bytes: kRows rows x 32 bytes per tile
    sm90::encode_tensor_map_2d(&w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, w.qweight, p.n, p.k / 2, p.k / 2, kRows,
                               w4a16::kWgmmaBK / 2, CU_TENSOR_MAP_SWIZZLE_NONE);
  }
  // Two fp32 piece slots per CTA of the stream-K part (one range per rest tile cuts nothing).
  const bool cuts = schedule.sk_ctas > schedule.tiles - schedule.dp_tiles;
  at::Tensor partial;
  if (cuts) partial = at::empty({2 * schedule.sk_ctas, kRows * kBN}, p.x.options().dtype(at::kFloat));
  constexpr int kSmem = w4a16::wgmma_ws_smem_bytes<kBN>();
  auto kernel = w4a16::w4a16_wgmma_ws_kernel<T, L, kBN>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  kernel<<<static_cast<unsigned>(schedule.ctas), w4a16::wgmma_ws_threads<kBN>(), kSmem, stream>>>(
      x_map, w_map, w, static_cast<T*>(out.data_ptr()), cuts ? partial.data_ptr<float>() : nullptr,
      static_cast<int>(p.m), schedule);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (cuts) {
    // Each cut tile's elements in chunks of >= 1024, about two blocks per SM in all.
    const int rest = schedule.tiles - schedule.dp_tiles;
    const int chunks = static_cast<int>(std::clamp<int64_t>(2 * sms / rest, 1, kRows * kBN / 1024));
    w4a16::stream_k_fixup_kernel<T><<<dim3(static_cast<unsigned>(rest), static_cast<unsigned>(chunks)), 256, 0,
                                      stream>>>(partial.data_ptr<float>(), static_cast<T*>(out.data_ptr()), schedule,
                                                static_cast<int>(kRows), kBN, static_cast<int>(grid.tiles_m),
                                                static_cast<int>(grid.tiles_n), w4a16::kMmaGroupM, static_cast<int>(p.m),
                                                static_cast<int>(p.n));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}
#endif

// Runs a validated problem; returns [M, N]. `user_splits` = 0 lets the tensor-core path choose.
at::Tensor run(const char* op, const Problem& p, KernelChoice choice, int64_t user_splits) {
  at::Tensor out = at::empty({p.m, p.n}, p.x.options());
  if (p.m == 0) return out;
  const c10::cuda::CUDAGuard guard(p.x.device());
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const bool tensor_cores = prop->major >= 8;
  const bool needs_tensor_cores =
      choice == KernelChoice::kMma || choice == KernelChoice::kGemv || choice == KernelChoice::kGemvSharedX;
  TORCH_CHECK(!needs_tensor_cores || tensor_cores, op, ": kernel \"",
              choice == KernelChoice::kMma ? "mma" : choice == KernelChoice::kGemv ? "gemv" : "gemv_shared_x",
              "\" needs compute capability >= 8.0 (tensor-core mma.sync with fp32 accumulation); this device is ",
              prop->major, ".", prop->minor, ": use kernel \"portable\" or \"auto\"");
  const bool wgmma = sm90a_kernels_run_on(*prop);
#ifdef AWQ_KERNELS_SM90A
  constexpr const char* kSm90aBuild = "this build has sm_90a";
#else
  constexpr const char* kSm90aBuild = "this build has no sm_90a (TORCH_CUDA_ARCH_LIST without 9.0 or CUDA < 12.0)";
#endif
  TORCH_CHECK((choice != KernelChoice::kWgmma && choice != KernelChoice::kWgmmaWs) || wgmma, op, ": kernel \"",
              choice == KernelChoice::kWgmma ? "wgmma" : "wgmma_ws", "\" needs an sm_90a build and a ",
              "compute capability 9.0 device (Hopper wgmma); this device is ", prop->major, ".", prop->minor, " and ",
              kSm90aBuild, ": use kernel \"mma\" or \"auto\"");
  if (choice == KernelChoice::kAuto) {
    if (!tensor_cores) {
      choice = KernelChoice::kPortable;
    } else if (p.m <= kGemvMaxRows) {
      choice = p.m <= kFp32GemvMaxRowsV1 && gemv_rounds_weights(p) ? KernelChoice::kPortable : KernelChoice::kGemv;
    } else if (!wgmma) {
      choice = KernelChoice::kMma;
    } else {
      choice = KernelChoice::kWgmmaWs;
    }
  }
  // 16-byte vector loads: re-allocate the rare misaligned view.
  const at::Tensor x = reinterpret_cast<uintptr_t>(p.x.data_ptr()) % 16 == 0 ? p.x : p.x.clone();
  const at::Tensor qweight =
      reinterpret_cast<uintptr_t>(p.qweight->data_ptr()) % 16 == 0 ? *p.qweight : p.qweight->clone();
  Problem aligned = p;
  aligned.x = x;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int sms = prop->multiProcessorCount;

  dispatch_half_types(p.x.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    const auto w = weight_args<T>(aligned, qweight);
    auto by_layout = [&](auto layout_tag) {
      constexpr Layout L = decltype(layout_tag)::value;
      if (choice == KernelChoice::kMma) {
        if (p.m <= 16) {
          launch_mma<T, L, 16, 1, 4>(aligned, w, out, sms, user_splits, stream);
        } else if (p.m <= 64) {
          launch_mma<T, L, 64, 2, 4>(aligned, w, out, sms, user_splits, stream);
        } else {
          launch_mma<T, L, 128, 2, 4>(aligned, w, out, sms, user_splits, stream);
        }
      } else if (choice == KernelChoice::kWgmma) {
#ifdef AWQ_KERNELS_SM90A
        const WgmmaTile tile = wgmma_tile(p.m, p.n, sms);
        if (tile.bn == 16) {
          launch_wgmma<T, L, 1, 16>(aligned, w, out, sms, user_splits, stream);
        } else if (tile.bn == 64) {
          launch_wgmma<T, L, 1, 64>(aligned, w, out, sms, user_splits, stream);
        } else if (tile.rt == 1) {
          launch_wgmma<T, L, 1, 128>(aligned, w, out, sms, user_splits, stream);
        } else {
          launch_wgmma<T, L, 2, 128>(aligned, w, out, sms, user_splits, stream);
        }
#endif
      } else if (choice == KernelChoice::kWgmmaWs) {
#ifdef AWQ_KERNELS_SM90A
        const int bn = plan_wgmma_ws_tile(p, sms, user_splits);
        if (bn == 64) {
          launch_wgmma_ws<T, L, 64>(aligned, w, out, sms, user_splits, stream);
        } else if (bn == 128) {
          launch_wgmma_ws<T, L, 128>(aligned, w, out, sms, user_splits, stream);
        } else {
          launch_wgmma_ws<T, L, 256>(aligned, w, out, sms, user_splits, stream);
        }
#endif
      } else if (choice == KernelChoice::kGemv) {
        launch_mma_gemv<T, L>(aligned, w, out, sms, stream);
      } else if (choice == KernelChoice::kGemvSharedX) {
        launch_mma_gemv_shared_x<T, L>(aligned, w, out, sms, stream);
      } else if (p.m == 1) {
        launch_gemv<T, L, 1>(aligned, w, out, sms, stream);
      } else if (p.m == 2) {
        launch_gemv<T, L, 2>(aligned, w, out, sms, stream);
      } else if (p.m == 3) {
        launch_gemv<T, L, 3>(aligned, w, out, sms, stream);
      } else {
        launch_gemv<T, L, 4>(aligned, w, out, sms, stream);
      }
    };
    if (p.layout == Layout::kV2) {
      by_layout(std::integral_constant<Layout, Layout::kV2>{});
    } else {
      by_layout(std::integral_constant<Layout, Layout::kV1>{});
    }
  });
  return out;
}

std::vector<int64_t> output_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
}

const at::Tensor& device_check(const ArgChecker& c, const Problem& p, const char* x_name, const char* q_name,
                               const char* s_name, const char* z_name) {
  c.cuda(p.x, x_name, {{p.qweight, q_name}, {p.scales, s_name}, {p.zeros, z_name}});
  return p.x;
}

}  // namespace

at::Tensor gemm_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scaling_factors,
                             const at::Tensor& zeros, int64_t group_size, int64_t split_k_iters) {
  const ArgChecker c("gemm_forward_cuda");
  c.check_value(group_size == 32 || group_size == 64 || group_size == 128,
                "Group size temporarily not supported. (group_size = ", group_size, "; supported: 32, 64, 128)");
  c.check(split_k_iters >= 1, "argument 'split_k_iters' must be >= 1, got ", split_k_iters);
  c.dim(in_feats, "in_feats", 2);
  const Problem p = validate_v1(c, in_feats, kernel, scaling_factors,
                                zeros, group_size, "in_feats", "kernel", "scaling_factors", "zeros");
  device_check(c, p, "in_feats", "kernel", "scaling_factors", "zeros");
  return run("gemm_forward_cuda", p, KernelChoice::kAuto, split_k_iters);
}

at::Tensor gemv_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scaling_factors,
                             const at::Tensor& zeros, int64_t group_size) {
  const ArgChecker c("gemv_forward_cuda");
  c.check_value(group_size == 32 || group_size == 64 || group_size == 128,
                "Group size temporarily not supported. (group_size = ", group_size, "; supported: 32, 64, 128)");
  c.dim(in_feats, "in_feats", 2);
  const Problem p = validate_v1(c, in_feats, kernel, scaling_factors, zeros, group_size, "in_feats", "kernel",
                                "scaling_factors", "zeros");
  device_check(c, p, "in_feats", "kernel", "scaling_factors", "zeros");
  return run("gemv_forward_cuda", p, KernelChoice::kAuto, 0);
}

at::Tensor gemm_forward_cuda_new(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scales,
                                 const at::Tensor& zeros) {
  const ArgChecker c("gemm_forward_cuda_new");
  check_activations(c, in_feats, "in_feats");
  const Problem p = validate_v2(c, in_feats.reshape({-1, in_feats.size(-1)}), kernel, scales, zeros, 128,
                                "in_feats", "kernel", "scales", "zeros");
  device_check(c, p, "in_feats", "kernel", "scales", "zeros");
  return run("gemm_forward_cuda_new", p, KernelChoice::kAuto, 0).view(output_shape(in_feats, p.n));
}

at::Tensor gemv_forward_cuda_new(const at::Tensor& in_feats, const at::Tensor& kernel,
                                 const at::Tensor& scaling_factors, const at::Tensor& zeros, int64_t m, int64_t n,
                                 int64_t k, int64_t group_size) {
  const ArgChecker c("gemv_forward_cuda_new");
  c.check(group_size == 32 || group_size == 64 || group_size == 128,
          "Unsupported group size for gemv kernel. (group_size = ", group_size, "; supported: 32, 64, 128)");
  c.check(m >= 1, "Unsupported batch size for gemv kernel. (m = ", m, "; must be >= 1)");
  check_activations(c, in_feats, "in_feats");
  const Problem p = validate_v2(c, in_feats.reshape({-1, in_feats.size(-1)}), kernel, scaling_factors, zeros,
                                group_size, "in_feats", "kernel", "scaling_factors", "zeros");
  c.check(k == p.k, "argument 'k' = ", k, " must equal in_features = in_feats.size(-1) = ", p.k);
  c.check(n == p.n, "argument 'n' = ", n, " must equal out_features = 4 * kernel.size(0) = ", p.n);
  c.check(m == p.m, "argument 'm' = ", m, " must equal the number of rows of in_feats = numel / k = ", p.m);
  device_check(c, p, "in_feats", "kernel", "scaling_factors", "zeros");
  return run("gemv_forward_cuda_new", p, KernelChoice::kAuto, 0).view(output_shape(in_feats, p.n));
}

at::Tensor awq_w4a16_gemm(const at::Tensor& in_feats, const at::Tensor& qweight, const at::Tensor& scales,
                          const at::Tensor& zeros, c10::string_view layout, int64_t group_size,
                          c10::string_view kernel) {
  const ArgChecker c("awq_w4a16_gemm");
  c.check(layout == "v2" || layout == "v1", "argument 'layout' must be \"v2\" or \"v1\", got \"", std::string(layout),
          "\"");
  c.check(group_size == 32 || group_size == 64 || group_size == 128,
          "argument 'group_size' must be 32, 64 or 128, got ", group_size);
  const KernelChoice choice = parse_kernel(c, kernel);
  check_activations(c, in_feats, "in_feats");
  const at::Tensor x = in_feats.reshape({-1, in_feats.size(-1)});
  const Problem p = layout == "v2"
                        ? validate_v2(c, x, qweight, scales, zeros, group_size, "in_feats", "qweight", "scales", "zeros")
                        : validate_v1(c, x, qweight, scales, zeros, group_size, "in_feats", "qweight", "scales", "zeros");
  device_check(c, p, "in_feats", "qweight", "scales", "zeros");
  return run("awq_w4a16_gemm", p, choice, 0).view(output_shape(in_feats, p.n));
}

}  // namespace awq
