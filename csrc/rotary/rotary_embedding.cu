#include <ATen/MemoryOverlap.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <c10/util/accumulate.h>

#include <limits>

#include "common/checks.h"
#include "common/dispatch.h"
#include "rotary/rotary.cuh"
#include "rotary/rotary.h"

namespace awq {
namespace {

constexpr int kThreadsPerBlock = 256;

// The stride between consecutive tokens of a [..., H, D] tensor whose leading dims flatten into
// one token dim (they need not be contiguous with the heads, e.g. a view into a fused qkv);
// -1 if they do not flatten.
int64_t token_stride(const at::Tensor& t) {
  int64_t stride = -1;
  int64_t expected = -1;
  for (int64_t d = t.dim() - 3; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (expected != -1 && t.stride(d) != expected) return -1;
    if (stride == -1) stride = t.stride(d);
    expected = t.stride(d) * t.size(d);
  }
  return stride == -1 ? t.size(-2) * t.stride(-2) : stride;
}

void check_heads_tensor(const ArgChecker& c, const at::Tensor& t, const char* name, int64_t head_size) {
  c.check(t.dim() >= 3, "argument '", name, "' must be [..., heads, head_size] (at least 3-D), got shape ",
          t.sizes());
  c.check(t.size(-1) == head_size, "argument '", name, "' must have a last dimension equal to head_size (",
          head_size, "), got shape ", t.sizes());
  c.check(t.stride(-1) == 1 && token_stride(t) != -1, "argument '", name,
          "' must have a contiguous last dimension and leading (token) dimensions that flatten into one, got strides ",
          t.strides(), " for shape ", t.sizes());
}

}  // namespace

void rotary_embedding_neox(const at::Tensor& positions, const at::Tensor& query, const at::Tensor& key,
                           int64_t head_size, const at::Tensor& cos_sin_cache) {
  const ArgChecker c("rotary_embedding_neox");
  c.dtype_in(query, "query", {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16});
  c.same_dtype(key, "key", query, "query");
  c.same_dtype(cos_sin_cache, "cos_sin_cache", query, "query");
  c.dtype(positions, "positions", at::kLong);
  c.check(head_size > 0, "argument 'head_size' must be positive, got ", head_size);
  check_heads_tensor(c, query, "query", head_size);
  check_heads_tensor(c, key, "key", head_size);
  c.check(key.sizes().slice(0, key.dim() - 2) == query.sizes().slice(0, query.dim() - 2),
          "argument 'key' must have the leading (token) dimensions of 'query' ", query.sizes(), ", got ",
          key.sizes());
  c.dim(cos_sin_cache, "cos_sin_cache", 2);
  c.contiguous(cos_sin_cache, "cos_sin_cache");
  const int64_t rot_dim = cos_sin_cache.size(1);
  c.check(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= head_size,
          "argument 'cos_sin_cache' must be [max_position, rot_dim] with rot_dim even and in [2, head_size=",
          head_size, "], got shape ", cos_sin_cache.sizes());
  const int64_t tokens = c10::multiply_integers(query.sizes().slice(0, query.dim() - 2));
  c.contiguous(positions, "positions");
  c.check(positions.numel() >= tokens, "argument 'positions' must have at least one entry per token (", tokens,
          "), got shape ", positions.sizes());
  c.check(query.size(-2) + key.size(-2) <= std::numeric_limits<int32_t>::max() / head_size,
          "too many heads: query ", query.sizes(), ", key ", key.sizes());
  at::assert_no_internal_overlap(query);
  at::assert_no_internal_overlap(key);
  const at::MemOverlapStatus overlap = at::get_overlap_status(query, key);
  c.check(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
          "arguments 'query' and 'key' must not share memory");
  c.cuda(query, "query", {{&key, "key"}, {&positions, "positions"}, {&cos_sin_cache, "cos_sin_cache"}});

  if (tokens == 0 || query.numel() + key.numel() == 0) return;
  c.check(tokens <= std::numeric_limits<int32_t>::max(), "too many tokens (", tokens, ")");
  const c10::cuda::CUDAGuard guard(query.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t q_token_stride = token_stride(query), k_token_stride = token_stride(key);
  const int rot_half = static_cast<int>(rot_dim / 2);
  const int q_heads = static_cast<int>(query.size(-2)), k_heads = static_cast<int>(key.size(-2));
  auto run = [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      const int items = (q_heads + k_heads) * (rot_half / V);
      const int threads = std::min(kThreadsPerBlock, (items + 31) / 32 * 32);
      rope_cache_kernel<T, V><<<static_cast<unsigned>(tokens), threads, 0, stream>>>(
          static_cast<const int64_t*>(positions.data_ptr()), static_cast<T*>(query.data_ptr()),
          static_cast<T*>(key.data_ptr()), static_cast<const T*>(cos_sin_cache.data_ptr()), cos_sin_cache.size(0),
          rot_half, q_heads, k_heads, q_token_stride, query.stride(-2), k_token_stride, key.stride(-2));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    const bool vectorized = rot_half % kVec == 0 && q_token_stride % kVec == 0 && query.stride(-2) % kVec == 0 &&
                            k_token_stride % kVec == 0 && key.stride(-2) % kVec == 0 && c.aligned16(query) &&
                            c.aligned16(key) && c.aligned16(cos_sin_cache);
    if (vectorized) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  };
  if (query.scalar_type() == at::kDouble) {
    run(double{});
  } else {
    dispatch_float_types(query.scalar_type(), "rotary_embedding_neox", run);
  }
}

}  // namespace awq
