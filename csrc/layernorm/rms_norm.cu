#include <ATen/MemoryOverlap.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/row_layout.h"
#include "layernorm/layernorm.h"
#include "layernorm/rms_norm.cuh"

namespace awq {
namespace {

constexpr int kItemsPerThread = 4;   // vectors of a row cached in registers per thread
constexpr int kThreadsPerBlock = 256;

template <typename T, int VEC>
void launch_rms_norm(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& out, int64_t rows,
                     int hidden, float eps, cudaStream_t stream) {
  const RowLayout l = row_layout("layernorm_forward_cuda", rows, hidden / VEC, kItemsPerThread, kThreadsPerBlock);
  rms_norm_kernel<T, VEC, kItemsPerThread><<<l.blocks, dim3(l.threads_per_row, l.rows_per_block), 0, stream>>>(
          static_cast<const T*>(input.data_ptr()), static_cast<const T*>(gamma.data_ptr()),
          static_cast<T*>(out.data_ptr()), rows, hidden, eps);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void layernorm_forward_cuda(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& out, double eps) {
  const ArgChecker c("layernorm_forward_cuda");
  c.dtype_in(input, "input", {at::kHalf, at::kBFloat16});
  const int64_t hidden = c.hidden_size(input, "input");
  c.same_dtype(gamma, "gamma", input, "input");
  c.shape(gamma, "gamma", {hidden}, "[input.size(-1)]");
  c.same_dtype(out, "out", input, "input");
  c.check(out.sizes() == input.sizes(), "argument 'out' must have the shape of 'input' ", input.sizes(), ", got ",
          out.sizes());
  c.contiguous(input, "input");
  c.contiguous(gamma, "gamma");
  c.contiguous(out, "out");
  c.check(std::isfinite(eps) && eps >= 0, "argument 'eps' must be a finite float >= 0, got ", eps);
  c.check(at::get_overlap_status(out, input) != at::MemOverlapStatus::Partial,
          "arguments 'out' and 'input' partially overlap in memory (pass the same tensor, or disjoint ones)");
  c.cuda(input, "input", {{&gamma, "gamma"}, {&out, "out"}});

  const int64_t rows = input.numel() / hidden;
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_half_types(input.scalar_type(), "layernorm_forward_cuda", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    const bool vectorized = hidden % kVec == 0 && c.aligned16(input) && c.aligned16(gamma) && c.aligned16(out);
    if (vectorized) {
      launch_rms_norm<T, kVec>(input, gamma, out, rows, static_cast<int>(hidden), static_cast<float>(eps), stream);
    } else {
      launch_rms_norm<T, 1>(input, gamma, out, rows, static_cast<int>(hidden), static_cast<float>(eps), stream);
    }
  });
}

}  // namespace awq
