"""Every bad input of the W4A16 ops raises before touching the GPU (spec §3.2-§3.5, and ours)."""

from __future__ import annotations

import pytest
import torch

import awq_inference_engine as aie
from awq_kernels import ops

M, N, K, G = 3, 64, 512, 128


def v2_args(dtype: torch.dtype = torch.float16, k: int = K, g: int = G) -> list:
    gp = 8 * ((-(-(k // g) // 8) + (4 if g == 32 else 2 if g == 64 else 1) - 1)
              // (4 if g == 32 else 2 if g == 64 else 1) * (4 if g == 32 else 2 if g == 64 else 1))
    return [torch.randn(M, k, dtype=dtype), torch.zeros(N // 4, k, dtype=torch.int16),
            torch.rand(gp, N, dtype=dtype), torch.rand(gp, N, dtype=dtype)]


def v1_args(dtype: torch.dtype = torch.float16, g: int = G) -> list:
    zw = {32: 4, 64: 2, 128: 1}[g] * ((-(-(K // g) // 8) + {32: 4, 64: 2, 128: 1}[g] - 1) // {32: 4, 64: 2, 128: 1}[g])
    return [torch.randn(M, K, dtype=dtype), torch.zeros(N, K // 8, dtype=torch.int32),
            torch.rand(N, 8 * zw, dtype=dtype), torch.zeros(N, zw, dtype=torch.int32)]


def _replace(args: list, i: int, value: object) -> list:
    return [value if j == i else a for j, a in enumerate(args)]


# ---- valid arguments reach the device check (so each case below fails only its own check)

def test_valid_arguments_fail_only_on_device() -> None:
    with pytest.raises(RuntimeError, match="gemm_forward_cuda_new: argument 'in_feats' must be a CUDA tensor"):
        aie.gemm_forward_cuda_new(*v2_args())
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: argument 'in_feats' must be a CUDA tensor"):
        aie.gemv_forward_cuda_new(*v2_args(), M, N, K, G)
    with pytest.raises(RuntimeError, match="gemm_forward_cuda: argument 'in_feats' must be a CUDA tensor"):
        aie.gemm_forward_cuda(*v1_args(), G, 8)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda: argument 'in_feats' must be a CUDA tensor"):
        aie.gemv_forward_cuda(*v1_args(), G)
    for g in (32, 64, 128):
        with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'in_feats' must be a CUDA tensor"):
            ops.w4a16_gemm(*v2_args(g=g), group_size=g, layout="v2")
        with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'in_feats' must be a CUDA tensor"):
            ops.w4a16_gemm(*v1_args(g=g), group_size=g, layout="v1")


# ---- gemm_forward_cuda / gemv_forward_cuda (Format B)

@pytest.mark.parametrize("g", [0, 16, 96, 256, -1])
def test_v1_group_size_unsupported(g: int) -> None:
    with pytest.raises(ValueError, match="Group size temporarily not supported"):
        aie.gemm_forward_cuda(*v1_args(), g, 8)
    with pytest.raises(ValueError, match="Group size temporarily not supported"):
        aie.gemv_forward_cuda(*v1_args(), g)


@pytest.mark.parametrize("split", [0, -3])
def test_v1_split_k_iters(split: int) -> None:
    with pytest.raises(RuntimeError, match="gemm_forward_cuda: argument 'split_k_iters' must be >= 1"):
        aie.gemm_forward_cuda(*v1_args(), G, split)


V1_BAD = [
    (0, torch.randn(M, K), "argument 'in_feats' must have dtype one of"),
    (0, torch.randn(2, M, K, dtype=torch.float16), "argument 'in_feats' must be 2-D"),
    (0, torch.randn(K, M, dtype=torch.float16).t(), "argument 'in_feats' must be contiguous"),
    (0, torch.randn(M, K + 8, dtype=torch.float16), "argument 'kernel' must have shape \\[N, K/8\\]"),
    (0, torch.randn(M, 520, dtype=torch.float16), "argument 'kernel' must have shape"),
    (1, torch.zeros(N, K // 8, dtype=torch.int16), "argument 'kernel' must have dtype Int"),
    (1, torch.zeros(N, K // 4, dtype=torch.int32), "argument 'kernel' must have shape \\[N, K/8\\]"),
    (1, torch.zeros(N, K // 8, 1, dtype=torch.int32), "argument 'kernel' must be 2-D"),
    (1, torch.zeros(K // 8, N, dtype=torch.int32).t(), "argument 'kernel' must be contiguous"),
    (2, torch.rand(N, 8, dtype=torch.bfloat16), "argument 'scaling_factors' must have the dtype of 'in_feats'"),
    (2, torch.rand(N, 9, dtype=torch.float16), "argument 'scaling_factors' must have shape \\[N, 8\\*Zw\\]"),
    (2, torch.rand(N + 1, 8, dtype=torch.float16), "argument 'scaling_factors' must have shape"),
    (2, torch.rand(8, N, dtype=torch.float16).t(), "argument 'scaling_factors' must be contiguous"),
    (3, torch.zeros(N, 1, dtype=torch.float16), "argument 'zeros' must have dtype Int"),
    (3, torch.zeros(N, 3, dtype=torch.int32), "argument 'zeros' must have shape \\[N, Zw\\]"),
    (3, torch.zeros(N - 8, 1, dtype=torch.int32), "argument 'zeros' must have shape"),
]


@pytest.mark.parametrize(("index", "value", "message"), V1_BAD)
def test_v1_bad_argument(index: int, value: torch.Tensor, message: str) -> None:
    args = _replace(v1_args(), index, value)
    with pytest.raises(RuntimeError, match="gemm_forward_cuda: " + message):
        aie.gemm_forward_cuda(*args, G, 4)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda: " + message):
        aie.gemv_forward_cuda(*args, G)


def test_v1_k_not_multiple_of_group() -> None:
    args = v1_args()
    args[0] = torch.randn(M, 544, dtype=torch.float16)
    args[1] = torch.zeros(N, 544 // 8, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda: in_features K = 544 must be a positive multiple"):
        aie.gemv_forward_cuda(*args, G)


# ---- gemm_forward_cuda_new / gemv_forward_cuda_new (Format C)

V2_BAD = [
    (0, torch.randn(M, K), "argument 'in_feats' must have dtype one of"),
    (0, torch.randn(K, M, dtype=torch.float16).t(), "argument 'in_feats' must be contiguous"),
    (0, torch.randn(M, K + 128, dtype=torch.float16), "argument 'kernel' must have shape \\[N/4, K\\]"),
    (1, torch.zeros(N // 4, K, dtype=torch.int32), "argument 'kernel' must have dtype Short"),
    (1, torch.zeros(N // 4, K // 2, dtype=torch.int16), "argument 'kernel' must have shape \\[N/4, K\\]"),
    (1, torch.zeros(0, K, dtype=torch.int16), "argument 'kernel' must have shape \\[N/4, K\\]"),
    (1, torch.zeros(K, N // 4, dtype=torch.int16).t(), "argument 'kernel' must be contiguous"),
    (2, torch.rand(8, N, dtype=torch.bfloat16), "argument 'scaling_factors|scales' must have the dtype of"),
    (2, torch.rand(8, N + 4, dtype=torch.float16), "argument '(scaling_factors|scales)' must have shape \\[Gp, N\\]"),
    (2, torch.rand(16, N, dtype=torch.float16), "argument '(scaling_factors|scales)' must have shape \\[Gp, N\\]"),
    (2, torch.rand(N, 8, dtype=torch.float16).t(), "argument '(scaling_factors|scales)' must be contiguous"),
    (3, torch.rand(8, N, dtype=torch.float32), "argument 'zeros' must have the dtype of 'in_feats'"),
    (3, torch.rand(8, N // 2, dtype=torch.float16), "argument 'zeros' must have shape \\[Gp, N\\]"),
]


@pytest.mark.parametrize(("index", "value", "message"), V2_BAD)
def test_v2_bad_argument(index: int, value: torch.Tensor, message: str) -> None:
    args = _replace(v2_args(), index, value)
    with pytest.raises(RuntimeError, match="gemm_forward_cuda_new: " + message.replace("scaling_factors|", "")):
        aie.gemm_forward_cuda_new(*args)
    m = args[0].numel() // args[0].shape[-1]
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: " + message.replace("|scales", "")):
        aie.gemv_forward_cuda_new(*args, m, N, args[0].shape[-1], G)


def test_v2_gemm_k_multiple_of_128() -> None:
    # G is 128 in the compat GEMM: K = 192 (a multiple of 64) is not a whole number of groups.
    with pytest.raises(RuntimeError, match="gemm_forward_cuda_new: in_features K = 192 must be a positive multiple"):
        aie.gemm_forward_cuda_new(*v2_args(k=192, g=64))


def test_v2_k_multiple_of_64() -> None:
    args = v2_args(k=K, g=32)
    args[0] = torch.randn(M, 544, dtype=torch.float16)
    args[1] = torch.zeros(N // 4, 544, dtype=torch.int16)
    args[2] = args[3] = torch.rand(24, N, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: in_features K = 544 must be a multiple of 64"):
        aie.gemv_forward_cuda_new(*args, M, N, 544, 32)


@pytest.mark.parametrize("g", [0, 16, 96, 256])
def test_v2_gemv_group_size(g: int) -> None:
    with pytest.raises(RuntimeError, match="Unsupported group size for gemv kernel"):
        aie.gemv_forward_cuda_new(*v2_args(), M, N, K, g)


@pytest.mark.parametrize("m", [0, -1])
def test_v2_gemv_batch_size(m: int) -> None:
    with pytest.raises(RuntimeError, match="Unsupported batch size for gemv kernel"):
        aie.gemv_forward_cuda_new(*v2_args(), m, N, K, G)


@pytest.mark.parametrize(("mnk", "message"), [
    ((M + 1, N, K), "argument 'm' = 4 must equal the number of rows"),
    ((M, N + 8, K), "argument 'n' = 72 must equal out_features"),
    ((M, N, K * 2), "argument 'k' = 1024 must equal in_features"),
])
def test_v2_gemv_mnk_checked(mnk: tuple[int, int, int], message: str) -> None:
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: " + message):
        aie.gemv_forward_cuda_new(*v2_args(), *mnk, G)


def test_v2_group_size_must_match_scales() -> None:
    # Scales packed for G = 128 ([8, N] for K = 512) do not describe G = 32.
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'scales' must have shape \\[Gp, N\\]"):
        ops.w4a16_gemm(*v2_args(), group_size=32)


@pytest.mark.parametrize(("k", "packed_g", "called_g"), [(256, 128, 32), (256, 32, 128), (512, 128, 64),
                                                         (512, 64, 128), (512, 64, 32), (512, 32, 64)])
def test_group_size_must_match_padded_shapes(k: int, packed_g: int, called_g: int) -> None:
    # At K = 256 and 512, K/G of one group size equals the padded Gp of another: only the padded shapes
    # (spec §2.2) are accepted, and those differ between group sizes, so a wrong group_size is an error.
    v2 = v2_args(k=k, g=packed_g)
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'scales' must have shape \\[Gp, N\\]"):
        ops.w4a16_gemm(*v2, group_size=called_g)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: argument 'scaling_factors' must have shape"):
        aie.gemv_forward_cuda_new(*v2, M, N, k, called_g)
    # The unpadded [K/G, N] of the right group size (fewer rows than Gp in every case here) is refused too.
    unpadded = [v2[0], v2[1], v2[2][: k // packed_g], v2[3][: k // packed_g]]
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'scales' must have shape \\[Gp, N\\]"):
        ops.w4a16_gemm(*unpadded, group_size=packed_g)
    zw = v2[2].shape[0] // 8
    x = torch.randn(M, k, dtype=torch.float16)
    v1 = [x, torch.zeros(N, k // 8, dtype=torch.int32), torch.rand(N, 8 * zw, dtype=torch.float16),
          torch.zeros(N, zw, dtype=torch.int32)]
    with pytest.raises(RuntimeError, match="gemv_forward_cuda: argument 'scaling_factors' must have shape"):
        aie.gemv_forward_cuda(*v1, called_g)
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'scales' must have shape \\[N, 8\\*Zw\\]"):
        ops.w4a16_gemm(*v1, group_size=called_g, layout="v1")


def test_zero_in_features_names_the_argument() -> None:
    x = torch.randn(M, 0, dtype=torch.float16)
    q2, q1 = torch.zeros(N // 4, 0, dtype=torch.int16), torch.zeros(N, 0, dtype=torch.int32)
    s2, s1, z1 = torch.zeros(8, N, dtype=torch.float16), torch.zeros(N, 8, dtype=torch.float16), torch.zeros(
        N, 1, dtype=torch.int32)
    message = "argument 'in_feats' must have a positive last dim"
    with pytest.raises(RuntimeError, match="gemm_forward_cuda_new: " + message):
        aie.gemm_forward_cuda_new(x, q2, s2, s2)
    with pytest.raises(RuntimeError, match="gemv_forward_cuda_new: " + message):
        aie.gemv_forward_cuda_new(x, q2, s2, s2, M, N, 0, G)
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: " + message):
        ops.w4a16_gemm(x, q2, s2, s2, group_size=G)
    with pytest.raises(RuntimeError, match="gemm_forward_cuda: " + message):
        aie.gemm_forward_cuda(x, q1, s1, z1, G, 8)


# ---- awq_w4a16_gemm / ops.w4a16_gemm

def test_new_op_bad_strings() -> None:
    op = torch.ops.awq_inference_engine.awq_w4a16_gemm
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'layout' must be \"v2\" or \"v1\""):
        op(*v2_args(), "v3", G, "auto")
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'kernel' must be one of"):
        op(*v2_args(), "v2", G, "hgemm")
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'group_size' must be 32, 64 or 128"):
        op(*v2_args(), "v2", 256, "auto")
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'layout' must be"):
        ops.w4a16_gemm(*v2_args(), group_size=G, layout="v3")
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'kernel' must be one of"):
        ops.w4a16_gemm(*v2_args(), group_size=G, kernel="fast")


@pytest.mark.parametrize("kernel", ["wgmma", "wgmma_ws"])
def test_new_op_wgmma_is_a_kernel_name(kernel: str) -> None:
    # "wgmma" / "wgmma_ws" are parsed (the CPU tensors then fail the device check, not the kernel-name
    # check); their availability (sm_90a build, compute capability 9.0) is checked on the GPU:
    # test_w4a16_gpu.py.
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: .*CUDA") as info:
        ops.w4a16_gemm(*v2_args(), group_size=G, kernel=kernel)
    assert "must be one of" not in str(info.value)


def test_new_op_layout_mismatch() -> None:
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'qweight' must have dtype Int"):
        ops.w4a16_gemm(*v2_args(), group_size=G, layout="v1")
    with pytest.raises(RuntimeError, match="awq_w4a16_gemm: argument 'qweight' must have dtype Short"):
        ops.w4a16_gemm(*v1_args(), group_size=G, layout="v2")


def test_fake_shapes() -> None:
    x = torch.empty(2, 5, K, dtype=torch.float16, device="meta")
    qw = torch.empty(N // 4, K, dtype=torch.int16, device="meta")
    s = torch.empty(8, N, dtype=torch.float16, device="meta")
    assert aie.gemm_forward_cuda_new(x, qw, s, s).shape == (2, 5, N)
    assert aie.gemv_forward_cuda_new(x, qw, s, s, 10, N, K, G).shape == (2, 5, N)
    assert ops.w4a16_gemm(x, qw, s, s, group_size=G).shape == (2, 5, N)
