// Hopper (sm_90a) primitives: warpgroup MMA (wgmma) ordering and shared-memory matrix descriptors,
// and the proxy fence between ordinary shared-memory writes and the tensor cores' reads.
//
// Everything here exists only in the arch-specific sm_90a target: callers put their device code under
// `#if defined(__CUDA_ARCH_FEAT_SM90_ALL)` and the host selects it only when the build defines
// AWQ_KERNELS_SM90A and the device's compute capability is exactly 9.0.
#pragma once

#include <cstdint>

namespace awq {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Orders this thread's earlier register writes (wgmma operands: the A fragment, the accumulators)
// before the warpgroup's next wgmma.mma_async. Required before the first wgmma and after any
// ordinary write of a register that a wgmma reads.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

// Closes the group of wgmma.mma_async issued since the previous commit.
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

// Waits until at most kPending committed groups are still running; their registers and shared
// memory may be touched only after that.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving ordinary reads or writes of a wgmma register operand across a
// wgmma_fence / wgmma_wait (the asm statements themselves do not name the accumulators).
__device__ __forceinline__ void wgmma_fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void wgmma_fence_operand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// Shared-memory writes of the generic proxy (st.shared, cp.async) become visible to the async proxy
// (wgmma operand reads, TMA) after this fence in each writing thread, followed by a barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Matrix descriptor of a K-major operand tile in the 128-byte swizzle: rows of 128 bytes (64 fp16 /
// bf16 along K), grouped in 1024-byte atoms of 8 rows, in which the 16-byte chunk c of row r is
// stored at chunk c ^ (r % 8). The tile must start 1024-byte aligned; `smem_addr` may be advanced by
// 32 bytes per k16 step inside the atom (the swizzle applies to the final address bits).
// Bits: [0, 14) start >> 4; [16, 30) leading byte offset >> 4 (unused for swizzled K-major, 1);
// [32, 46) stride byte offset >> 4 (1024: from one 8-row atom to the next); [62, 64) layout 1 =
// 128-byte swizzle.
__device__ __forceinline__ uint64_t smem_desc_128b_swizzle(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace awq
