// Hopper (sm_90a) primitives shared by the wgmma kernels: mbarriers, TMA (bulk tensor copies),
// wgmma fences/commits/waits, shared-memory matrix descriptors, and the host-side tensor-map encoder.
//
// The device helpers exist only in the sm_90a device pass (`__CUDA_ARCH_FEAT_SM90_ALL`): every kernel
// that uses them guards its body the same way, and the host dispatch picks such a kernel only on
// `AWQ_KERNELS_SM90A` builds running on a compute capability 9.0 GPU. Include it only in such builds
// (CUDA >= 12.0: CUtensorMap and cuTensorMapEncodeTiled do not exist before).
#pragma once

#include <c10/util/Exception.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

namespace awq {
namespace sm90 {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// --- mbarriers (64-bit, in shared memory) ---

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrive_count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrive_count));
}

// Makes the barrier initialisations visible to the async proxy (TMA completes transactions on them);
// followed by a CTA barrier before any thread uses them.
__device__ __forceinline__ void fence_barrier_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::); }

// Arrives once and announces `bytes` of TMA transactions that complete the current phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// Blocks until the phase of parity `phase` (0 or 1) has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t phase) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(phase)
        : "memory");
  } while (!done);
}

// --- TMA ---

// Copies the box at (inner coordinate c0, outer coordinate c1) of `map` into shared memory at `dst`;
// completes `bytes = box size` transactions on `bar` (elements outside the tensor are zero-filled and
// still counted).
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}

// Plain bulk copy of `bytes` (multiple of 16, both addresses 16-byte aligned), completing on `bar`.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy (wgmma, TMA) accesses.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// --- wgmma ---

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Tells the compiler that `r` may change here: keeps reads of wgmma accumulators after the wait
// that completes them (the wgmma asm's outputs look ready to the compiler as soon as it is issued).
__device__ __forceinline__ void fence_register(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void fence_register(int& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void fence_register(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Register budget of the executing warpgroup (all its threads execute it); needs a kernel launched
// with a register cap (`__launch_bounds__(threads, 1)`).
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
}

// wgmma shared-memory matrix descriptor of a K-major operand tile written by TMA with 128-byte
// swizzle: rows of exactly 128 bytes, groups of 8 rows (1024 bytes, the swizzle atom) one after
// the other, the tile 1024-byte aligned. Fields: start address >> 4 (bits 0-13), leading byte
// offset >> 4 (bits 16-29; unused for swizzled K-major layouts, 1 by convention), stride byte
// offset >> 4 = 1024 >> 4 between 8-row groups (bits 32-45), base offset 0 (bits 49-51, the atom
// is aligned), swizzle mode 1 = 128B (bits 62-63). A k step of `b` bytes within the 128-byte row
// adds b >> 4 to the start address (the hardware applies the swizzle to the absolute address).
__device__ __forceinline__ uint64_t smem_desc_128b_swizzle(const void* tile) {
  const uint64_t start = (smem_addr(tile) & 0x3FFFFu) >> 4;
  constexpr uint64_t kLeading = 1;
  constexpr uint64_t kStride = 1024 >> 4;
  return start | (kLeading << 16) | (kStride << 32) | (uint64_t{1} << 62);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// --- host ---

// Encodes a 2-D row-major tensor map: `rows` rows of `cols` elements of `dtype`, `row_stride_bytes`
// apart (a multiple of 16, the base 16-byte aligned); boxes of box_rows x box_cols elements, with
// the given shared-memory swizzle; elements outside the tensor read as zeros. The driver entry point
// is looked up through the runtime, so nothing links against libcuda.
inline void encode_tensor_map_2d(CUtensorMap* map, CUtensorMapDataType dtype, const void* base, uint64_t rows,
                                 uint64_t cols, uint64_t row_stride_bytes, uint32_t box_rows, uint32_t box_cols,
                                 CUtensorMapSwizzle swizzle) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                             &status);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &status);
#endif
    TORCH_CHECK(err == cudaSuccess && status == cudaDriverEntryPointSuccess && fn != nullptr,
                "could not get the driver's cuTensorMapEncodeTiled (", cudaGetErrorString(err), ")");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_stride_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult res = encode(map, dtype, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(res == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed with CUresult ", static_cast<int>(res),
              " (rows = ", rows, ", cols = ", cols, ", row stride = ", row_stride_bytes, " bytes, box ", box_rows,
              " x ", box_cols, ")");
}

}  // namespace sm90
}  // namespace awq
