// Input validation shared by every op.
//
// Each op validates all of its arguments before touching the GPU, and every message starts with
// the op's name and names the offending argument, the expectation and what was received. Checks
// that do not need the device (dtype, shape, contiguity, scalar ranges) run first, so they are
// testable on a CPU-only machine; the device check runs last.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <limits>
#include <sstream>
#include <utility>

namespace awq {

class ArgChecker {
 public:
  explicit ArgChecker(const char* op) : op_(op) {}

  // A free-form condition; the message parts follow the op name.
  template <typename... Args>
  void check(bool cond, const Args&... msg) const {
    TORCH_CHECK(cond, op_, ": ", msg...);
  }

  // Like check(), raising ValueError (for arguments whose value, not type, is unsupported).
  template <typename... Args>
  void check_value(bool cond, const Args&... msg) const {
    TORCH_CHECK_VALUE(cond, op_, ": ", msg...);
  }

  void dtype(const at::Tensor& t, const char* name, at::ScalarType expected) const {
    check(t.scalar_type() == expected, "argument '", name, "' must have dtype ", expected, ", got ",
          t.scalar_type());
  }

  void dtype_in(const at::Tensor& t, const char* name, std::initializer_list<at::ScalarType> allowed) const {
    for (auto s : allowed) {
      if (t.scalar_type() == s) return;
    }
    std::ostringstream list;
    const char* sep = "";
    for (auto s : allowed) {
      list << sep << s;
      sep = ", ";
    }
    check(false, "argument '", name, "' must have dtype one of {", list.str(), "}, got ", t.scalar_type());
  }

  void same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) const {
    check(t.scalar_type() == ref.scalar_type(), "argument '", name, "' must have the dtype of '", ref_name,
          "' (", ref.scalar_type(), "), got ", t.scalar_type());
  }

  void contiguous(const at::Tensor& t, const char* name) const {
    check(t.is_contiguous(), "argument '", name, "' must be contiguous (got strides ", t.strides(),
          " for shape ", t.sizes(), ")");
  }

  void dim(const at::Tensor& t, const char* name, int64_t expected) const {
    check(t.dim() == expected, "argument '", name, "' must be ", expected, "-D, got shape ", t.sizes());
  }

  void min_dim(const at::Tensor& t, const char* name, int64_t minimum) const {
    check(t.dim() >= minimum, "argument '", name, "' must have at least ", minimum, " dimension(s), got shape ",
          t.sizes());
  }

  // The last dimension of a row-wise input [..., hidden]: at least 1-D, 1 <= hidden <= 2^30 (the
  // kernels index within a row in 32 bits, and a loop index one block past the row must not overflow).
  int64_t hidden_size(const at::Tensor& t, const char* name) const {
    min_dim(t, name, 1);
    const int64_t hidden = t.size(-1);
    check(hidden > 0 && hidden <= (int64_t{1} << 30), "argument '", name,
          "' must have a last dimension in [1, 2^30], got shape ", t.sizes());
    return hidden;
  }

  // `t` holds one element per element of `ref`, in any shape (flat outputs of row-wise ops).
  void same_numel(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) const {
    check(t.numel() == ref.numel(), "argument '", name, "' must have as many elements as '", ref_name, "' ",
          ref.sizes(), ", got shape ", t.sizes());
  }

  // Exact shape; `what` describes it symbolically, e.g. "[N, K/8]".
  void shape(const at::Tensor& t, const char* name, c10::IntArrayRef expected, const char* what) const {
    check(t.sizes() == expected, "argument '", name, "' must have shape ", what, " = ", expected, ", got ",
          t.sizes());
  }

  // `t` is a CUDA tensor; every tensor of `others` is on the same device.
  void cuda(const at::Tensor& t, const char* name,
            std::initializer_list<std::pair<const at::Tensor*, const char*>> others = {}) const {
    check(t.is_cuda(), "argument '", name, "' must be a CUDA tensor, got a tensor on ", t.device());
    for (const auto& [other, other_name] : others) {
      check(other->device() == t.device(), "argument '", other_name, "' must be on ", t.device(), " like '", name,
            "', got ", other->device());
    }
  }

  // 16-byte alignment of the data pointer, needed by vectorized loads.
  bool aligned16(const at::Tensor& t) const { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

 private:
  const char* op_;
};

}  // namespace awq
