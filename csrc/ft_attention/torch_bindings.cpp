// Registration of the `ft_attention` extension: the decode-attention op alone, with the same
// schema as awq_inference_engine.single_query_attention (llm-awq's standalone module, which was
// never importable upstream). See csrc/awq_inference_engine/torch_bindings.cpp for conventions.
#include "common/python_module.h"  // must come first: Python.h with the limited API

#include <torch/library.h>

#include "attention/attention.h"
#include "common/build_info.h"

AWQ_PYTHON_MODULE(_ft_attention)

TORCH_LIBRARY(ft_attention, m) {
  m.def("build_info() -> str", &awq::build_info);
  m.def("single_query_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor? length_per_sample_, Tensor? alibi_slopes_, int timestep, int rotary_embedding_dim=0, "
        "float rotary_base=10000.0, float rotary_scale=1.0, bool neox_rotary_style=True) -> Tensor");
}

namespace {

void register_impls(torch::Library& m) { m.impl("single_query_attention", &awq::single_query_attention); }

}  // namespace

TORCH_LIBRARY_IMPL(ft_attention, CUDA, m) { register_impls(m); }
TORCH_LIBRARY_IMPL(ft_attention, CPU, m) { register_impls(m); }

// The same implementation serves awq_inference_engine.single_query_attention (its schema is defined
// by the awq_inference_engine extension; an implementation may be registered before its schema).
TORCH_LIBRARY_IMPL(awq_inference_engine, CUDA, m) { register_impls(m); }
TORCH_LIBRARY_IMPL(awq_inference_engine, CPU, m) { register_impls(m); }
