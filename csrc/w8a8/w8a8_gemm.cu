#include <ATen/MemoryOverlap.h>
#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/build_info.h"
#include "common/checks.h"
#include "w8a8/w8a8_gemm.cuh"
#include "w8a8/w8a8_gemm.h"
#ifdef AWQ_KERNELS_SM90A  // CUDA >= 12.0 (tensor maps, sm_90a)
#include "w8a8/w8a8_gemm_sm90.cuh"
#endif

namespace awq {
namespace {

using w8a8::Epilogue;
using w8a8::GemmConfig;

// Tile shapes by M (GemmConfig<BLOCK_M, BLOCK_N, BLOCK_K, WARPS_M, WARPS_N, STAGES, CTAS_PER_SM>):
//  * M <= 16 (decode): the GEMM is a stream over W, so many small CTAs (16 x 64 tiles, 4 warps of
//    16 x 16) with 128-byte K slices (whole 128-byte lines of each W row per copy) and 5 stages
//    (50 KiB, 4 CTAs per SM: ~140 KiB in flight per SM) to saturate DRAM;
//  * M <= 128, or too few large tiles to fill the GPU with a short K: 64 x 128 tiles, 8 warps of
//    32 x 32, 64-byte slices, 4 stages (48 KiB);
//  * otherwise (compute bound): 128 x 256 tiles, 8 warps of 64 x 64 (the best ldmatrix-to-mma
//    ratio that fits the registers: 255 of them with the double-buffered fragments; 128-byte
//    slices spill), 64-byte slices, 5 stages (120 KiB).
// All split K when their tiles alone do not fill the GPU (split_k_count, large_split_k_count).
using SmallConfig = GemmConfig<16, 64, 128, 1, 4, 5, 4>;
using MediumConfig = GemmConfig<64, 128, 64, 2, 4, 4, 2>;
using LargeConfig = GemmConfig<128, 256, 64, 2, 4, 5, 1>;

constexpr int kMaxSplits = 16;
constexpr int kMinKTilesPerSplit = 8;  // keeps each split's pipeline busy
// The large tile splits K only for long K (each split >= 8192 bytes of K), where the partial sums
// (8 bytes of traffic per output and split) cost a few % of the tile's work.
constexpr int kMaxLargeSplits = 4;
constexpr int64_t kMinLargeSplitK = 8192;
constexpr int kReduceThreads = 256;
constexpr int kDefaultSmemLimit = 48 * 1024;  // dynamic shared memory a launch gets without opting in

// Largest K for which |acc| <= K * 128 * 128 cannot overflow the int32 accumulators.
constexpr int64_t kMaxK = std::numeric_limits<int32_t>::max() / (128 * 128);

enum class KernelChoice { kAuto, kMma, kWgmma };

struct GemmArgs {
  const at::Tensor& in_feats;
  const at::Tensor& kernel;
  const at::Tensor& wscales;
  const at::Tensor& ascales;
  const at::Tensor& out_feats;
  const at::Tensor* bias;  // null for the plain GEMM
};

// Every check that needs no GPU, then the device check last (spec §3.9/§3.10 checks nothing; the
// original's undocumented requirements K % 64 == 0 and N % CTA_N == 0 are lifted here).
void validate(const ArgChecker& c, const GemmArgs& args) {
  const at::Tensor& in_feats = args.in_feats;
  const at::Tensor& kernel = args.kernel;
  c.dtype(in_feats, "in_feats", at::kChar);
  c.dim(in_feats, "in_feats", 2);
  c.dtype(kernel, "kernel", at::kChar);
  c.dim(kernel, "kernel", 2);
  const int64_t M = in_feats.size(0);
  const int64_t K = in_feats.size(1);
  const int64_t N = kernel.size(0);
  c.check(kernel.size(1) == K, "argument 'kernel' must have shape [N, K] with K = in_feats.size(1) = ", K,
          ", got ", kernel.sizes());
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  c.check(M <= kIntMax && N <= kIntMax && K <= kIntMax, "M, N and K must each be < 2^31, got M = ", M,
          ", N = ", N, ", K = ", K);
  c.check(K <= kMaxK, "K = in_feats.size(1) must be <= ", kMaxK, " so that the int32 accumulators cannot overflow, ",
          "got K = ", K);
  // Rows are copied as 16-byte vectors (cp.async), so each row must start 16-byte aligned.
  c.check(K % 16 == 0, "K = in_feats.size(1) must be a multiple of 16 (rows of in_feats and kernel are read as ",
          "16-byte vectors), got K = ", K);
  c.dtype(args.wscales, "wscales", at::kHalf);
  c.shape(args.wscales, "wscales", {N}, "[N]");
  c.dtype(args.ascales, "ascales", at::kHalf);
  const bool ascales_shape_ok =
      args.ascales.numel() == M && (args.ascales.dim() == 1 || (args.ascales.dim() == 2 && args.ascales.size(1) == 1));
  c.check(ascales_shape_ok,
          "argument 'ascales' must have shape [M] or [M, 1] with M = in_feats.size(0) = ", M, ", got ",
          args.ascales.sizes());
  c.dtype(args.out_feats, "out_feats", at::kHalf);
  c.shape(args.out_feats, "out_feats", {M, N}, "[M, N]");
  if (args.bias != nullptr) {
    c.dtype(*args.bias, "bias", at::kHalf);
    c.shape(*args.bias, "bias", {N}, "[N]");
  }
  c.contiguous(in_feats, "in_feats");
  c.contiguous(kernel, "kernel");
  c.contiguous(args.wscales, "wscales");
  c.contiguous(args.ascales, "ascales");
  c.contiguous(args.out_feats, "out_feats");
  if (args.bias != nullptr) c.contiguous(*args.bias, "bias");
  c.check(c.aligned16(in_feats), "argument 'in_feats' must start at a 16-byte aligned address (it is read as ",
          "16-byte vectors), got storage offset ", in_feats.storage_offset());
  c.check(c.aligned16(kernel), "argument 'kernel' must start at a 16-byte aligned address (it is read as ",
          "16-byte vectors), got storage offset ", kernel.storage_offset());
  const at::Tensor& any_bias = args.bias != nullptr ? *args.bias : args.wscales;
  c.cuda(in_feats, "in_feats",
         {{&kernel, "kernel"}, {&args.wscales, "wscales"}, {&args.ascales, "ascales"}, {&args.out_feats, "out_feats"},
          {&any_bias, args.bias != nullptr ? "bias" : "wscales"}});
  for (const at::Tensor* input : {&in_feats, &kernel, &args.wscales, &args.ascales, &any_bias}) {
    at::assert_no_overlap(args.out_feats, *input);
  }
}

// Splits of K (a power of two) so that the GPU gets about Cfg::kCtasPerSm CTAs per SM, each with at
// least kMinKTilesPerSplit K slices. 1 when the output tiles alone fill the GPU.
template <class Cfg>
int64_t tile_count(int M, int N) {
  return static_cast<int64_t>((M + Cfg::kBlockM - 1) / Cfg::kBlockM) * ((N + Cfg::kBlockN - 1) / Cfg::kBlockN);
}

template <class Cfg>
int k_tile_count(int K) {
  return (K + Cfg::kBlockK - 1) / Cfg::kBlockK;
}

template <class Cfg>
int split_k_count(int M, int N, int K, int sm_count) {
  const int64_t tiles = tile_count<Cfg>(M, N);
  const int k_tiles = k_tile_count<Cfg>(K);
  const int64_t target_ctas = static_cast<int64_t>(Cfg::kCtasPerSm) * sm_count;
  int splits = 1;
  while (splits < kMaxSplits && tiles * splits * 2 <= target_ctas && k_tiles >= splits * 2 * kMinKTilesPerSplit) {
    splits *= 2;
  }
  return splits;
}

// Splits of K for the large tile (one CTA per SM): as many as keep tiles * splits within one wave,
// each split long enough to amortise its partial sums. 1 when the tiles alone fill the GPU.
int large_split_k_count(int M, int N, int K, int sm_count) {
  const int64_t tiles = tile_count<LargeConfig>(M, N);
  if (tiles >= sm_count) return 1;
  int splits = static_cast<int>(std::min<int64_t>(kMaxLargeSplits, sm_count / tiles));
  while (splits > 1 && K < splits * kMinLargeSplitK) --splits;
  return splits;
}

// K slices per split and the number of (non-empty) splits for `splits` requested.
struct SplitPlan {
  int k_tiles_per_split;
  int splits;
};

SplitPlan plan_splits(int k_tiles, int splits) {
  const int per_split = splits == 1 ? k_tiles : (k_tiles + splits - 1) / splits;
  return {per_split, splits == 1 ? 1 : (k_tiles + per_split - 1) / per_split};
}

struct Pointers {
  const int8_t* a;
  const int8_t* w;
  const half* wscales;
  const half* ascales;
  const half* bias;  // null for the plain GEMM
  half* out;
  bool paired_stores;  // N even and out 4-byte aligned: the epilogue stores fp16 pairs
};

Pointers pointers(const GemmArgs& args, int N) {
  return {static_cast<const int8_t*>(args.in_feats.data_ptr()),
          static_cast<const int8_t*>(args.kernel.data_ptr()),
          static_cast<const half*>(args.wscales.data_ptr()),
          static_cast<const half*>(args.ascales.data_ptr()),
          args.bias != nullptr ? static_cast<const half*>(args.bias->data_ptr()) : nullptr,
          static_cast<half*>(args.out_feats.data_ptr()),
          N % 2 == 0 && reinterpret_cast<uintptr_t>(args.out_feats.data_ptr()) % 4 == 0};
}

at::Tensor allocate_partials(const GemmArgs& args, int splits, int M, int N) {
  return splits > 1 ? at::empty({splits, M, N}, args.in_feats.options().dtype(at::kInt)) : at::Tensor();
}

// Split-K second pass: out = epilogue(sum of the splits' partial sums).
void reduce_splits(const Pointers& p, const int* partials, int splits, int M, int N, cudaStream_t stream) {
  const int64_t outputs = static_cast<int64_t>(M) * N;
  const auto blocks = static_cast<unsigned>((outputs + kReduceThreads - 1) / kReduceThreads);
  if (p.bias != nullptr) {
    w8a8::w8a8_split_k_reduce_kernel<true>
        <<<blocks, kReduceThreads, 0, stream>>>(partials, splits, p.wscales, p.ascales, p.bias, p.out, M, N);
  } else {
    w8a8::w8a8_split_k_reduce_kernel<false>
        <<<blocks, kReduceThreads, 0, stream>>>(partials, splits, p.wscales, p.ascales, p.bias, p.out, M, N);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Launches kernel<kPartials> (then the reduction) when K is split, else kernel<kScaleBias> or
// kernel<kScale>; `launch_one(kernel_fn, partials)` does one launch.
template <template <Epilogue> class Kernels, class LaunchOne>
void launch_with_epilogue(const Pointers& p, int* partials, int splits, int M, int N, cudaStream_t stream,
                          const LaunchOne& launch_one) {
  if (splits > 1) {
    launch_one(Kernels<Epilogue::kPartials>::fn, partials);
    reduce_splits(p, partials, splits, M, N, stream);
  } else if (p.bias != nullptr) {
    launch_one(Kernels<Epilogue::kScaleBias>::fn, partials);
  } else {
    launch_one(Kernels<Epilogue::kScale>::fn, partials);
  }
}

void check_tiles_and_smem(const ArgChecker& c, int64_t tiles, int smem_bytes, const cudaDeviceProp& prop, int M,
                          int N) {
  c.check(tiles <= std::numeric_limits<int32_t>::max(), "too many output tiles (M = ", M, ", N = ", N, ")");
  c.check(static_cast<size_t>(smem_bytes) <= prop.sharedMemPerBlockOptin, "needs ", smem_bytes,
          " bytes of shared memory per block, the GPU allows ", prop.sharedMemPerBlockOptin);
}

template <class Cfg>
struct MmaKernels {
  template <Epilogue EPILOGUE>
  struct Of {
    static constexpr auto fn = w8a8::w8a8_gemm_kernel<Cfg, EPILOGUE>;
  };
};

template <class Cfg>
void launch(const ArgChecker& c, const GemmArgs& args, int M, int N, int K, int splits, const cudaDeviceProp& prop,
            cudaStream_t stream) {
  const int64_t tiles_m = (M + Cfg::kBlockM - 1) / Cfg::kBlockM;
  const int64_t tiles_n = (N + Cfg::kBlockN - 1) / Cfg::kBlockN;
  check_tiles_and_smem(c, tiles_m * tiles_n, Cfg::kSmemBytes, prop, M, N);
  const SplitPlan plan = plan_splits(k_tile_count<Cfg>(K), splits);
  const Pointers p = pointers(args, N);
  at::Tensor partials = allocate_partials(args, plan.splits, M, N);
  const dim3 grid(static_cast<unsigned>(tiles_m * tiles_n), static_cast<unsigned>(plan.splits));
  launch_with_epilogue<MmaKernels<Cfg>::template Of>(
      p, partials.defined() ? partials.data_ptr<int>() : nullptr, plan.splits, M, N, stream,
      [&](auto kernel_fn, int* partials_ptr) {
        if constexpr (Cfg::kSmemBytes > kDefaultSmemLimit) {
          C10_CUDA_CHECK(
              cudaFuncSetAttribute(kernel_fn, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
        }
        kernel_fn<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(
            p.a, p.w, p.wscales, p.ascales, p.bias, p.out, partials_ptr, M, N, K, static_cast<int>(tiles_m),
            static_cast<int>(tiles_n), plan.k_tiles_per_split, p.paired_stores);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

#ifdef AWQ_KERNELS_SM90A
template <Epilogue EPILOGUE>
struct WgmmaKernel {
  static constexpr auto fn = w8a8::w8a8_wgmma_kernel<EPILOGUE>;
};

// The sm_90a kernel (w8a8_gemm_sm90.cuh): operands through TMA tensor maps (boxes of 128-byte K
// slices with the 128-byte swizzle; K % 16 == 0 and 16-byte aligned bases, as validate() checks).
void launch_wgmma(const ArgChecker& c, const GemmArgs& args, int M, int N, int K, int splits,
                  const cudaDeviceProp& prop, cudaStream_t stream) {
  using Cfg = w8a8::WgmmaConfig;
  const int64_t tiles_m = (M + Cfg::kBlockM - 1) / Cfg::kBlockM;
  const int64_t tiles_n = (N + Cfg::kBlockN - 1) / Cfg::kBlockN;
  check_tiles_and_smem(c, tiles_m * tiles_n, Cfg::kSmemBytes, prop, M, N);
  const SplitPlan plan = plan_splits((K + Cfg::kBlockK - 1) / Cfg::kBlockK, splits);
  const Pointers p = pointers(args, N);
  CUtensorMap a_map;
  CUtensorMap w_map;
  sm90::encode_tensor_map_2d(&a_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.a, M, K, K, Cfg::kBlockM, Cfg::kBlockK,
                             CU_TENSOR_MAP_SWIZZLE_128B);
  sm90::encode_tensor_map_2d(&w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.w, N, K, K, Cfg::kBlockN, Cfg::kBlockK,
                             CU_TENSOR_MAP_SWIZZLE_128B);
  at::Tensor partials = allocate_partials(args, plan.splits, M, N);
  const dim3 grid(static_cast<unsigned>(tiles_m * tiles_n), static_cast<unsigned>(plan.splits));
  launch_with_epilogue<WgmmaKernel>(
      p, partials.defined() ? partials.data_ptr<int>() : nullptr, plan.splits, M, N, stream,
      [&](auto kernel_fn, int* partials_ptr) {
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel_fn, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
        kernel_fn<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(
            a_map, w_map, p.wscales, p.ascales, p.bias, p.out, partials_ptr, M, N, K, static_cast<int>(tiles_m),
            static_cast<int>(tiles_n), plan.k_tiles_per_split, p.paired_stores);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}
#endif

KernelChoice parse_kernel(const ArgChecker& c, c10::string_view kernel) {
  if (kernel == "auto") return KernelChoice::kAuto;
  if (kernel == "mma") return KernelChoice::kMma;
  if (kernel == "wgmma") return KernelChoice::kWgmma;
  c.check(false, "argument 'kernel' must be \"auto\", \"mma\" or \"wgmma\", got \"", kernel, "\"");
  return KernelChoice::kAuto;
}

void w8a8_gemm(const char* op, const GemmArgs& args, c10::string_view kernel = "auto") {
  const ArgChecker c(op);
  const KernelChoice choice = parse_kernel(c, kernel);
  validate(c, args);
  const int M = static_cast<int>(args.in_feats.size(0));
  const int K = static_cast<int>(args.in_feats.size(1));
  const int N = static_cast<int>(args.kernel.size(0));
  if (M == 0 || N == 0) return;

  const c10::cuda::CUDAGuard guard(args.in_feats.device());
  const cudaDeviceProp& prop = *at::cuda::getCurrentDeviceProperties();
  c.check(prop.major >= 8, "needs a GPU of compute capability >= 8.0 (int8 mma.sync, ldmatrix, cp.async), got ",
          prop.name, " (sm_", prop.major, prop.minor, ")");
  const bool wgmma = sm90a_kernels_run_on(prop);
  c.check(choice != KernelChoice::kWgmma || wgmma,
          "kernel \"wgmma\" needs a build for compute capability 9.0 (sm_90a, CUDA >= 12.0) running on a compute ",
          "capability 9.0 GPU, got ", prop.name, " (sm_", prop.major, prop.minor, ")");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int sms = prop.multiProcessorCount;
  const int large_splits = large_split_k_count(M, N, K, sms);
#ifdef AWQ_KERNELS_SM90A
  // wgmma on request, or (auto) wherever the mma.sync choice below would take its large tile (the
  // same 128 x 256 tile and K splits); K = 0 has no K slice to load: the mma.sync path writes the
  // epilogue of zero sums.
  const bool large = M > 128 && (tile_count<LargeConfig>(M, N) >= sms || large_splits > 1);
  if (K > 0 && (choice == KernelChoice::kWgmma || (choice == KernelChoice::kAuto && wgmma && large))) {
    launch_wgmma(c, args, M, N, K, large_splits, prop, stream);
    return;
  }
#endif
  // mma.sync: the large tile only when M is large and its tiles fill the GPU, alone or split along
  // a long K, and where its 120 KiB of shared memory fit (not on sm_86 / sm_89 / sm_120: 99 KiB); else
  // the medium tile (which also splits K when its tiles do not fill the GPU either).
  const bool large_fits = static_cast<size_t>(LargeConfig::kSmemBytes) <= prop.sharedMemPerBlockOptin;
  if (M <= 16) {
    launch<SmallConfig>(c, args, M, N, K, split_k_count<SmallConfig>(M, N, K, sms), prop, stream);
  } else if (!large_fits || M <= 128 || (tile_count<LargeConfig>(M, N) < sms && large_splits == 1)) {
    launch<MediumConfig>(c, args, M, N, K, split_k_count<MediumConfig>(M, N, K, sms), prop, stream);
  } else {
    launch<LargeConfig>(c, args, M, N, K, large_splits, prop, stream);
  }
}

}  // namespace

void w8a8_gemm_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& wscales,
                            const at::Tensor& ascales, const at::Tensor& out_feats) {
  w8a8_gemm("w8a8_gemm_forward_cuda", {in_feats, kernel, wscales, ascales, out_feats, nullptr});
}

void w8a8_gemm_fuse_bias_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel,
                                      const at::Tensor& wscales, const at::Tensor& ascales,
                                      const at::Tensor& out_feats, const at::Tensor& bias) {
  w8a8_gemm("w8a8_gemm_fuse_bias_forward_cuda", {in_feats, kernel, wscales, ascales, out_feats, &bias});
}

void awq_w8a8_gemm(const at::Tensor& in_feats, const at::Tensor& weight, const at::Tensor& wscales,
                   const at::Tensor& ascales, const at::Tensor& out_feats, const std::optional<at::Tensor>& bias,
                   c10::string_view kernel) {
  w8a8_gemm("awq_w8a8_gemm", {in_feats, weight, wscales, ascales, out_feats, bias ? &*bias : nullptr}, kernel);
}

}  // namespace awq
