// Registration of every op of the `awq_inference_engine` extension.
//
// The schemas are the llm-awq interface (shared/spec/awq-interface.md §1.4): names, argument
// order, keyword names and defaults, and which arguments are written (`(a!)`). The Python module
// `awq_inference_engine` wraps these with positional-only signatures where llm-awq had them.
//
// Implementations are registered for CUDA and for CPU. The CPU registration is the same function:
// it validates every argument and then rejects the CPU tensors with a message naming the argument,
// instead of the dispatcher's generic "could not run ... with arguments from the 'CPU' backend".
// Shape functions for torch.compile are registered in Python (awq_kernels/_meta.py).
//
// `single_query_attention` is defined here but implemented in the ft_attention extension, which
// registers the one attention implementation under both namespaces (so its many kernel variants
// are compiled once); the `awq_inference_engine` Python module loads both extensions.
#include "common/python_module.h"  // must come first: Python.h with the limited API

#include <torch/library.h>

#include "activation/activation.h"
#include "common/build_info.h"
#include "layernorm/layernorm.h"
#include "rotary/rotary.h"
#include "w4a16/w4a16.h"
#include "w8a8/quantize.h"
#include "w8a8/w8a8_gemm.h"

AWQ_PYTHON_MODULE(_awq_inference_engine)

TORCH_LIBRARY(awq_inference_engine, m) {
  m.def("build_info() -> str", &awq::build_info);

  m.def("layernorm_forward_cuda(Tensor input, Tensor gamma, Tensor(a!) out, float eps) -> ()");
  m.def("gemm_forward_cuda(Tensor in_feats, Tensor kernel, Tensor scaling_factors, Tensor zeros, int group_size, "
        "int split_k_iters) -> Tensor");
  m.def("gemv_forward_cuda(Tensor in_feats, Tensor kernel, Tensor scaling_factors, Tensor zeros, int group_size) "
        "-> Tensor");
  m.def("gemm_forward_cuda_new(Tensor in_feats, Tensor kernel, Tensor scales, Tensor zeros) -> Tensor");
  m.def("gemv_forward_cuda_new(Tensor in_feats, Tensor kernel, Tensor scaling_factors, Tensor zeros, int m, int n, "
        "int k, int group_size) -> Tensor");
  m.def("awq_w4a16_gemm(Tensor in_feats, Tensor qweight, Tensor scales, Tensor zeros, str layout, int group_size, "
        "str kernel=\"auto\") -> Tensor");
  m.def("rotary_embedding_neox(Tensor positions, Tensor(a!) query, Tensor(b!) key, int head_size, "
        "Tensor cos_sin_cache) -> ()");
  m.def("single_query_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor? length_per_sample_, Tensor? alibi_slopes_, int timestep, int rotary_embedding_dim=0, "
        "float rotary_base=10000.0, float rotary_scale=1.0, bool neox_rotary_style=True) -> Tensor");
  m.def("fused_rope_with_pos_forward_func(Tensor input, Tensor freqs, bool transpose_output_memory) -> Tensor");
  m.def("w8a8_gemm_forward_cuda(Tensor in_feats, Tensor kernel, Tensor wscales, Tensor ascales, "
        "Tensor(a!) out_feats) -> ()");
  m.def("w8a8_gemm_fuse_bias_forward_cuda(Tensor in_feats, Tensor kernel, Tensor wscales, Tensor ascales, "
        "Tensor(a!) out_feats, Tensor bias) -> ()");
  m.def("awq_w8a8_gemm(Tensor in_feats, Tensor weight, Tensor wscales, Tensor ascales, Tensor(a!) out_feats, "
        "Tensor? bias=None, str kernel=\"auto\") -> ()");
  m.def("invoke_quant(Tensor(a!) out, Tensor input, Tensor(b!) scale) -> ()");
  m.def("rms_norm_general(Tensor(a!) out, Tensor input, Tensor weight, Tensor bias, Tensor(b!) scaling, "
        "float epsilon, bool use_per_token_quant=True) -> ()");
  m.def("silu_and_mul(Tensor input) -> Tensor");
  m.def("gelu_and_quant(Tensor(a!) out, Tensor input, Tensor(b!) scale_out, Tensor(c!) tmp) -> ()");
}

namespace {

void register_impls(torch::Library& m) {
  m.impl("layernorm_forward_cuda", &awq::layernorm_forward_cuda);
  m.impl("gemm_forward_cuda", &awq::gemm_forward_cuda);
  m.impl("gemv_forward_cuda", &awq::gemv_forward_cuda);
  m.impl("gemm_forward_cuda_new", &awq::gemm_forward_cuda_new);
  m.impl("gemv_forward_cuda_new", &awq::gemv_forward_cuda_new);
  m.impl("awq_w4a16_gemm", &awq::awq_w4a16_gemm);
  m.impl("w8a8_gemm_forward_cuda", &awq::w8a8_gemm_forward_cuda);
  m.impl("w8a8_gemm_fuse_bias_forward_cuda", &awq::w8a8_gemm_fuse_bias_forward_cuda);
  m.impl("awq_w8a8_gemm", &awq::awq_w8a8_gemm);
  m.impl("rotary_embedding_neox", &awq::rotary_embedding_neox);
  m.impl("fused_rope_with_pos_forward_func", &awq::fused_rope_with_pos_forward_func);
  m.impl("silu_and_mul", &awq::silu_and_mul);
  m.impl("invoke_quant", &awq::invoke_quant);
  m.impl("rms_norm_general", &awq::rms_norm_general);
  m.impl("gelu_and_quant", &awq::gelu_and_quant);
}

}  // namespace

TORCH_LIBRARY_IMPL(awq_inference_engine, CUDA, m) { register_impls(m); }
TORCH_LIBRARY_IMPL(awq_inference_engine, CPU, m) { register_impls(m); }
