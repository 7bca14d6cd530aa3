// rms_norm_general: LayerNorm with bias (despite the name) fused with int8 quantization, per row x
// of H elements (layout: quant.cuh), in fp32:
//   mean = Σx·(1/H);  var = Σ(x - mean)²·(1/H);  r = rsqrt(var + eps);  y_i = (x_i - mean) * r * γ_i + β_i
//   (variance of the centred values, from registers: the original's E[x²] - mean² can go negative;
//   1/H is rounded once on the host, so the products are within an ulp of the quotients).
// Per-token mode: A = max(T(1e-6), max_i |T(y_i)|); scaling[t] = fp16(A/127);
//   q_i = int8_rn_sat(y_i * (127/A)).
// Per-tensor mode (as the original): β is ignored and scaling[0] is a multiplier (1/scale):
//   q_i = int8_rn_sat(fp32(T((x_i - mean) * r * γ_i)) * scaling[0]); scaling is not written.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <limits>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/row_layout.h"
#include "w8a8/quant.cuh"
#include "w8a8/quantize.h"

namespace awq {
namespace {

constexpr int kItemsPerThread = 4;
constexpr int kThreadsPerBlock = 256;

// The cached values are fp32 and change in place: x, then d = x - mean (the variance pass), then,
// in per-token mode, y (the max pass), so each element is converted once and d and y are computed
// once; `load` replays those steps for vectors past the cache. Three barriers (one per reduction,
// each with its own shared buffer).
template <typename T, int VEC, int ITEMS, bool PER_TOKEN>
__global__ void __launch_bounds__(kThreadsPerBlock)
    layernorm_quant_kernel(const T* __restrict__ input, const T* __restrict__ gamma, const T* __restrict__ beta,
                           int8_t* __restrict__ out, half* __restrict__ scaling, int64_t rows, int hidden,
                           float inv_hidden, float eps) {
  using V = Vec<T, VEC>;
  using FV = Vec<float, VEC>;
  __shared__ float partials[3][32];  // one buffer per reduction, one float per warp
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const V* in_row = reinterpret_cast<const V*>(input + row * hidden);
  const V* gamma_v = reinterpret_cast<const V*>(gamma);
  const V* beta_v = reinterpret_cast<const V*>(beta);

  enum Stage { kInput, kCentered, kNormalized };
  Stage stage = kInput;
  float mean = 0.f;
  float inv_std = 0.f;
  // d -> y = (d * r) * γ + β (per-token) or (d * r) * γ (per-tensor: β ignored), in place.
  auto normalize = [&](int idx, FV& v) {
    float g[VEC];
    to_float(gamma_v[idx], g);
    if constexpr (PER_TOKEN) {
      float b[VEC];
      to_float(beta_v[idx], b);
#pragma unroll
      for (int j = 0; j < VEC; ++j) v.v[j] = v.v[j] * inv_std * g[j] + b[j];
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) v.v[j] = v.v[j] * inv_std * g[j];
    }
  };
  auto load = [&](int idx, FV& v) {
    to_float(in_row[idx], v.v);
    if (stage >= kCentered) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) v.v[j] -= mean;
    }
    if (stage >= kNormalized) normalize(idx, v);
  };
  auto x = make_row_cache<float, VEC, ITEMS>(load, hidden, row < rows);

  float sum = 0.f;
  x.for_each([&](int, const FV& v) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) sum += v.v[j];
  });
  mean = row_sum(sum, partials[0]) * inv_hidden;
  float sum_sq = 0.f;
  x.for_each([&](int, FV& v) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      v.v[j] -= mean;
      sum_sq += v.v[j] * v.v[j];
    }
  });
  stage = kCentered;
  inv_std = rsqrtf(row_sum(sum_sq, partials[1]) * inv_hidden + eps);
  Vec<int8_t, VEC>* out_row = reinterpret_cast<Vec<int8_t, VEC>*>(out + row * hidden);

  if constexpr (PER_TOKEN) {
    RoundedAbsMax<T> rounded_amax;
    x.for_each([&](int idx, FV& v) {
      normalize(idx, v);
      add_rounded_abs(rounded_amax, v.v);
    });
    stage = kNormalized;
    const float amax = fmaxf(row_max(rounded_amax.value(), partials[2]), to_float(from_float<T>(1e-6f)));
    if (row >= rows) return;
    if (threadIdx.x == 0) scaling[row] = __float2half_rn(amax / 127.f);
    const float inv_scale = 127.f / amax;
    x.for_each([&](int idx, const FV& y) {
      float scaled[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) scaled[j] = y.v[j] * inv_scale;
      store_int8_rn_sat(out_row + idx, scaled);
    });
  } else {
    if (row >= rows) return;
    const float multiplier = __half2float(scaling[0]);
    x.for_each([&](int idx, const FV& d) {
      FV y = d;
      normalize(idx, y);
      float scaled[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) scaled[j] = to_float(from_float<T>(y.v[j])) * multiplier;
      store_int8_rn_sat(out_row + idx, scaled);
    });
  }
}

}  // namespace

void rms_norm_general(const at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& scaling, double epsilon, bool use_per_token_quant) {
  const ArgChecker c("rms_norm_general");
  c.dtype_in(input, "input", {at::kFloat, at::kHalf, at::kBFloat16});
  const int64_t hidden = c.hidden_size(input, "input");
  c.contiguous(input, "input");
  c.same_dtype(weight, "weight", input, "input");
  c.shape(weight, "weight", {hidden}, "[input.size(-1)]");
  c.contiguous(weight, "weight");
  c.same_dtype(bias, "bias", input, "input");
  c.shape(bias, "bias", {hidden}, "[input.size(-1)]");
  c.contiguous(bias, "bias");
  c.dtype(out, "out", at::kChar);
  c.check(out.sizes() == input.sizes(), "argument 'out' must have the shape of 'input' ", input.sizes(), ", got ",
          out.sizes());
  c.contiguous(out, "out");
  c.dtype(scaling, "scaling", at::kHalf);
  c.contiguous(scaling, "scaling");
  const int64_t rows = input.numel() / hidden;
  if (use_per_token_quant) {
    c.check(scaling.numel() >= rows, "argument 'scaling' must have one element per token (", rows,
            ") in per-token mode, got shape ", scaling.sizes());
  } else {
    c.check(scaling.numel() >= 1, "argument 'scaling' must hold the per-tensor multiplier in per-tensor mode, "
            "got shape ", scaling.sizes());
  }
  c.check(std::isfinite(epsilon) && epsilon >= 0, "argument 'epsilon' must be a finite float >= 0, got ", epsilon);
  c.cuda(input, "input", {{&out, "out"}, {&weight, "weight"}, {&bias, "bias"}, {&scaling, "scaling"}});
  if (rows == 0) return;

  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_types(input.scalar_type(), "rms_norm_general", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto vec_tag, auto per_token_tag) {
      constexpr int V = decltype(vec_tag)::value;
      const RowLayout l = row_layout("rms_norm_general", rows, hidden / V, kItemsPerThread, kThreadsPerBlock,
                                     /*max_threads_per_row=*/kThreadsPerBlock);
      layernorm_quant_kernel<T, V, kItemsPerThread, decltype(per_token_tag)::value>
          <<<l.blocks, dim3(l.threads_per_row, l.rows_per_block), 0, stream>>>(
              static_cast<const T*>(input.data_ptr()), static_cast<const T*>(weight.data_ptr()),
              static_cast<const T*>(bias.data_ptr()), static_cast<int8_t*>(out.data_ptr()),
              static_cast<half*>(scaling.data_ptr()), rows, static_cast<int>(hidden),
              static_cast<float>(1.0 / static_cast<double>(hidden)), static_cast<float>(epsilon));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    auto with_mode = [&](auto vec_tag) {
      if (use_per_token_quant) {
        launch(vec_tag, std::true_type{});
      } else {
        launch(vec_tag, std::false_type{});
      }
    };
    const bool vectorized = hidden % kVec == 0 && c.aligned16(input) && c.aligned16(weight) &&
                            c.aligned16(bias) && c.aligned16(out);
    if (vectorized) {
      with_mode(std::integral_constant<int, kVec>{});
    } else {
      with_mode(std::integral_constant<int, 1>{});
    }
  });
}

}  // namespace awq
