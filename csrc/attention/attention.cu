#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "attention/attention.h"
#include "attention/single_query_attention.cuh"
#ifdef AWQ_KERNELS_SM90A
#include "attention/single_query_attention_sm90.cuh"
#endif
#include "common/checks.h"
#include "common/dispatch.h"

namespace awq {
namespace {

constexpr const char* kOp = "single_query_attention";
constexpr int kMinSplit = 256;       // positions per CTA: at least one per thread of the score phase
constexpr int kSplitGranule = 32;    // split sizes are multiples of a warp's positions (512-byte K loads)
constexpr int kResidentPerSm = 2;    // CTAs of either kernel per SM (their launch bounds)
// A CTA's fixed cost (setup, phase changes, reduction, combine share) in positions streamed: a guess
// (~4 us at a CTA's share of the bandwidth, about 100 positions), to be refined from measurements.
constexpr int64_t kCtaOverheadPositions = 128;

bool supported_head_dim(int64_t dh) {
  for (int64_t s : {32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256}) {
    if (dh == s) return true;
  }
  return false;
}

// q, k and v: [B, heads, Dh] with unit element stride and head stride Dh; the batch stride is free.
void check_token_tensor(const ArgChecker& c, const at::Tensor& t, const char* name, int64_t batch, int64_t heads,
                        int64_t dh, const char* what) {
  c.shape(t, name, {batch, heads, dh}, what);
  c.check(t.stride(2) == 1 && (t.stride(1) == dh || heads == 1), "argument '", name,
          "' must have stride(2) == 1 and stride(1) == head_dim (", dh, "), got strides ", t.strides());
}

// Which kernel runs on this device: the bulk-copy ring kernel (single_query_attention_sm90.cuh)
// on compute capability 9.0 when this build has sm_90a code, for fp16/bf16 (its products are
// mma.sync, the CTA's up to 8 query heads being the mma's 8 columns) and caches of at most 2^31 - 1
// V rows (B * Hkv * L, its tensor-map coordinates); else (fp32, other GPUs, builds without sm_90a)
// the register-load kernel.
struct KernelChoice {
  bool ring_allowed;     // device 9.0, an sm_90a build and at most 2^31 - 1 V rows
  bool overlap_combine;  // launch the combine kernel with programmatic stream serialisation (sm_90+), so
                         // its CTAs are scheduled during the split kernel's last wave, not after a launch gap
};

// The ring kernel (fp16/bf16) processes a split of any length in chunks; the register kernel's
// split is one chunk, at most kScoreCapacity / G_MAX positions.
template <typename T>
constexpr bool ring_kernel_exists() {
#ifdef AWQ_KERNELS_SM90A
  return sizeof(T) == 2;
#else
  return false;
#endif
}

template <typename T, int DH_MAX, int G_MAX>
void launch_split_kernel(const attention::Params& p, const dim3& grid, bool ring_allowed, cudaStream_t stream) {
#ifdef AWQ_KERNELS_SM90A
  if constexpr (ring_kernel_exists<T>()) {
    if (ring_allowed) {
      using RG = attention::RingLayout<T, DH_MAX>;
      // The V cache as rows of Dh elements (B * Hkv * L of them), read in boxes of kTile rows x 64
      // elements with the 128-byte swizzle the kernel's ldmatrix addressing expects.
      CUtensorMap v_map;
      sm90::encode_tensor_map_2d(&v_map, std::is_same_v<T, half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                                 p.v_cache, static_cast<uint64_t>(grid.z) * p.num_kv_heads * p.cache_len, p.head_dim,
                                 static_cast<uint64_t>(p.head_dim) * sizeof(T), RG::kTile, RG::kVBoxCols,
                                 CU_TENSOR_MAP_SWIZZLE_128B);
      constexpr int smem = RG::kRingBytes;
      const auto kernel = attention::single_query_attention_ring_kernel<T, DH_MAX, G_MAX>;
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kernel<<<grid, attention::kRingThreads, smem, stream>>>(p, v_map);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
#endif
  attention::single_query_attention_split_kernel<T, DH_MAX, G_MAX><<<grid, attention::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int DH_MAX, int G_MAX>
void launch(attention::Params& p, int batch, int num_sms, KernelChoice choice, int64_t window_max,
            const at::TensorOptions& options, cudaStream_t stream) {
  const int group_size = p.num_heads / p.num_kv_heads;
  p.head_groups = (group_size + G_MAX - 1) / G_MAX;
  // Splits per (batch, KV head, head group) row: minimise waves x (split + per-CTA overhead), waves
  // counted against the resident CTA slots. Equal splits in whole waves leave no tail wave, and each
  // CTA's fixed costs (q and rotary setup, the ramp-up of its loads, the final reduction, a partial
  // for the combine) are paid on fewer, larger splits. The ring kernel takes splits of any length
  // (benchmark shapes: one wave of 256-264 CTAs); the register kernel's are bounded by its score
  // buffer (several waves at long contexts).
  const int64_t rows = static_cast<int64_t>(batch) * p.num_kv_heads * p.head_groups;
  const int64_t slots = static_cast<int64_t>(kResidentPerSm) * num_sms;
  const int64_t max_split =
      ring_kernel_exists<T>() && choice.ring_allowed ? window_max : attention::kScoreCapacity / G_MAX;
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  int64_t split = 0, best_cost = std::numeric_limits<int64_t>::max();
  const int64_t min_splits = ceil_div(window_max, max_split);
  const int64_t max_splits = std::max(min_splits, std::min(slots, window_max / kMinSplit));
  for (int64_t splits = min_splits; splits <= max_splits; ++splits) {
    const int64_t size = std::min(
        max_split, std::max<int64_t>(kMinSplit, ceil_div(ceil_div(window_max, splits), kSplitGranule) * kSplitGranule));
    const int64_t cost = ceil_div(rows * ceil_div(window_max, size), slots) * (size + kCtaOverheadPositions);
    if (cost < best_cost) {  // ties keep the fewer, larger splits
      best_cost = cost;
      split = size;
    }
  }
  p.split_size = static_cast<int>(split);
  const int64_t num_splits = ceil_div(window_max, split);
  TORCH_CHECK(num_splits * p.head_groups <= std::numeric_limits<int32_t>::max(), kOp, ": cache too long");
  p.num_splits = static_cast<int>(num_splits);

  at::Tensor partial_out, partial_stats;
  if (p.num_splits > 1) {
    // Every entry the combine kernel reads is written by a split's CTA first: no initialisation needed.
    partial_out = at::empty({batch, p.num_heads, p.num_splits, p.head_dim}, options);
    partial_stats = at::empty({batch, p.num_heads, p.num_splits, 2}, options);
    p.partial_out = partial_out.data_ptr<float>();
    p.partial_stats = reinterpret_cast<float2*>(partial_stats.data_ptr<float>());
  }
  const dim3 grid(static_cast<unsigned>(p.num_splits * p.head_groups), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(batch));
  launch_split_kernel<T, DH_MAX, G_MAX>(p, grid, choice.ring_allowed, stream);
  if (p.num_splits > 1) {
    cudaLaunchAttribute overlap{};
    overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    overlap.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(batch));
    config.blockDim = dim3(attention::kThreads);
    config.stream = stream;
    config.attrs = &overlap;
    config.numAttrs = choice.overlap_combine ? 1 : 0;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, attention::single_query_attention_combine_kernel<T>, p));
  }
}

template <typename T, int DH_MAX>
void launch_for_group(attention::Params& p, int batch, int num_sms, KernelChoice choice, int64_t window_max,
                      const at::TensorOptions& options, cudaStream_t stream) {
  const int group_size = p.num_heads / p.num_kv_heads;
  if (group_size == 1) {
    launch<T, DH_MAX, 1>(p, batch, num_sms, choice, window_max, options, stream);
  } else if (group_size <= 4) {
    launch<T, DH_MAX, 4>(p, batch, num_sms, choice, window_max, options, stream);
  } else {
    launch<T, DH_MAX, 8>(p, batch, num_sms, choice, window_max, options, stream);
  }
}

}  // namespace

at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const std::optional<at::Tensor>& length_per_sample_,
                                  const std::optional<at::Tensor>& alibi_slopes_, int64_t timestep,
                                  int64_t rotary_embedding_dim, double rotary_base, double rotary_scale,
                                  bool neox_rotary_style) {
  const ArgChecker c(kOp);
  c.dtype_in(q, "q", {at::kFloat, at::kHalf, at::kBFloat16});
  c.same_dtype(k, "k", q, "q");
  c.same_dtype(v, "v", q, "q");
  c.same_dtype(k_cache, "k_cache", q, "q");
  c.same_dtype(v_cache, "v_cache", q, "q");
  c.dim(v_cache, "v_cache", 4);
  const int64_t batch = v_cache.size(0), num_kv_heads = v_cache.size(1), cache_len = v_cache.size(2),
                dh = v_cache.size(3);
  c.check(supported_head_dim(dh), "unsupported head size ", dh,
          " (v_cache.size(3)); supported: 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256");
  c.check(num_kv_heads >= 1 && cache_len >= 1, "argument 'v_cache' must have at least one KV head and one slot, got "
          "shape ", v_cache.sizes());
  c.check(cache_len < (int64_t{1} << 30), "argument 'v_cache' has ", cache_len, " slots; at most 2^30 - 1 supported");
  c.dim(q, "q", 3);
  const int64_t num_heads = q.size(1);
  check_token_tensor(c, q, "q", batch, num_heads, dh, "[B, H, Dh]");
  c.check(num_heads >= 1 && num_heads % num_kv_heads == 0, "the number of query heads (", num_heads,
          ") must be a positive multiple of the number of KV heads (", num_kv_heads, ")");
  check_token_tensor(c, k, "k", batch, num_kv_heads, dh, "[B, Hkv, Dh]");
  check_token_tensor(c, v, "v", batch, num_kv_heads, dh, "[B, Hkv, Dh]");
  const int64_t x = 16 / q.element_size();
  c.shape(k_cache, "k_cache", {batch, num_kv_heads, dh / x, cache_len, x}, "[B, Hkv, Dh/x, L, x] (x = 16 / element size)");
  c.contiguous(k_cache, "k_cache");
  c.contiguous(v_cache, "v_cache");
  if (length_per_sample_.has_value()) {
    const at::Tensor& lengths = *length_per_sample_;
    c.dtype(lengths, "length_per_sample_", at::kInt);
    c.shape(lengths, "length_per_sample_", {batch}, "[B]");
    c.contiguous(lengths, "length_per_sample_");
  } else {
    // The kernels walk positions in int32, a chunk (<= kScoreCapacity positions) past the new one.
    constexpr int64_t kMaxTimestep = std::numeric_limits<int32_t>::max() - 1 - attention::kScoreCapacity;
    c.check(timestep >= 0 && timestep <= kMaxTimestep, "argument 'timestep' must be in [0, ", kMaxTimestep, "], got ",
            timestep);
  }
  if (alibi_slopes_.has_value()) {
    const at::Tensor& slopes = *alibi_slopes_;
    c.dtype(slopes, "alibi_slopes_", at::kFloat);
    c.shape(slopes, "alibi_slopes_", {num_heads}, "[H]");
    c.contiguous(slopes, "alibi_slopes_");
  }
  c.check(rotary_embedding_dim >= 0 && rotary_embedding_dim <= dh && rotary_embedding_dim % 2 == 0,
          "argument 'rotary_embedding_dim' must be even and in [0, head size ", dh, "], got ", rotary_embedding_dim);
  if (rotary_embedding_dim > 0) {
    c.check(std::isfinite(rotary_base) && rotary_base > 0, "argument 'rotary_base' must be finite and > 0, got ",
            rotary_base);
    c.check(std::isfinite(rotary_scale), "argument 'rotary_scale' must be finite, got ", rotary_scale);
  }
  c.check(batch <= 65535 && num_kv_heads <= 65535, "at most 65535 sequences and 65535 KV heads supported, got ", batch,
          " and ", num_kv_heads);
  c.check(c.aligned16(k_cache) && c.aligned16(v_cache),
          "arguments 'k_cache' and 'v_cache' must be 16-byte aligned (they are read in 16-byte pieces)");
  c.cuda(q, "q", {{&k, "k"}, {&v, "v"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}});
  if (length_per_sample_.has_value()) c.cuda(*length_per_sample_, "length_per_sample_", {{&q, "q"}});
  if (alibi_slopes_.has_value()) c.cuda(*alibi_slopes_, "alibi_slopes_", {{&q, "q"}});

  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty({batch, num_heads, dh}, q.options());
  if (batch == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  const int num_sms = props->multiProcessorCount;
#ifdef AWQ_KERNELS_SM90A
  // (The ring kernel addresses V rows of the whole cache with 32-bit tensor-map coordinates.)
  const bool ring_allowed = props->major == 9 && props->minor == 0 &&
                            batch * num_kv_heads * cache_len <= std::numeric_limits<int32_t>::max();
#else
  const bool ring_allowed = false;
#endif
  const KernelChoice choice{ring_allowed, props->major >= 9};
  // Longest window over the batch: known from timestep, or bounded by L when lengths live on the GPU.
  const int64_t window_max = length_per_sample_.has_value() ? cache_len : std::min(timestep + 1, cache_len);

  attention::Params p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.out = out.data_ptr();
  p.length_per_sample = length_per_sample_.has_value() ? length_per_sample_->data_ptr<int>() : nullptr;
  p.alibi_slopes = alibi_slopes_.has_value() ? alibi_slopes_->data_ptr<float>() : nullptr;
  p.q_batch_stride = q.stride(0);
  p.k_batch_stride = k.stride(0);
  p.v_batch_stride = v.stride(0);
  p.timestep = length_per_sample_.has_value() ? 0 : static_cast<int>(timestep);
  p.num_heads = static_cast<int>(num_heads);
  p.num_kv_heads = static_cast<int>(num_kv_heads);
  p.head_dim = static_cast<int>(dh);
  p.cache_len = static_cast<int>(cache_len);
  p.rotary_dim = static_cast<int>(rotary_embedding_dim);
  p.rotary_base = rotary_base;
  p.rotary_scale = rotary_scale;
  p.neox_rotary = neox_rotary_style;
  p.inv_sqrt_dh = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));

  dispatch_float_types(q.scalar_type(), kOp, [&](auto tag) {
    using T = decltype(tag);
    const int b = static_cast<int>(batch);
    const at::TensorOptions partial_options = q.options().dtype(at::kFloat);
    if (dh <= 64) {
      launch_for_group<T, 64>(p, b, num_sms, choice, window_max, partial_options, stream);
    } else if (dh <= 128) {
      launch_for_group<T, 128>(p, b, num_sms, choice, window_max, partial_options, stream);
    } else {
      launch_for_group<T, 256>(p, b, num_sms, choice, window_max, partial_options, stream);
    }
  });
  return out;
}

}  // namespace awq
