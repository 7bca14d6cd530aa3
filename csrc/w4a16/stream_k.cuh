// Persistent tile schedule of the wgmma_ws GEMM: whole tiles in full waves, then the rest cut along K
// ("stream-K"), and the kernel that adds up the tiles it cuts.
//
// The work is `tiles` output tiles of `k_tiles` k tiles each. `ctas` persistent CTAs (one per SM):
//  * data-parallel part: the tiles below dp_tiles (a whole number of waves of `ctas`); CTA c computes
//    tiles c, c + ctas, c + 2 ctas, ... each over its full K and stores it as the output;
//  * stream-K part: the remaining tiles (less than one wave) as one run of "units" (tile by tile, k tile
//    by k tile), cut into sk_ctas contiguous ranges of equal length (+-1) for CTAs 0 .. sk_ctas - 1.
//    The host picks sk_ctas (make_stream_k_schedule in w4a16.cu): all SMs, so that every CTA ends
//    within a k tile of the others where a partial last wave would leave SMs idle for a whole tile time
//    (224 tiles on 132 SMs: 15% of the kernel), or a whole number of ranges per tile, which start at
//    the same k in every cut tile.
// A range covers a piece of its first tile, whole tiles, and a piece of its last tile. A whole tile is
// stored as the output; a piece goes as fp32 into the CTA's partial slot 0 (first tile) or 1 (last
// tile), [2 * sk_ctas][tile elements], and stream_k_fixup_kernel adds each cut tile's pieces in CTA
// order: deterministic, no atomics, no flags.
// Every range holds at least one unit (sk_ctas <= units, see make_stream_k_schedule in w4a16.cu).
#pragma once

#include <cstdint>

#include "common/cuda_utils.cuh"

namespace awq {
namespace w4a16 {

struct StreamKSchedule {
  int tiles;     // output tiles, in the grouped raster of grouped_tile
  int k_tiles;   // k tiles per output tile
  int ctas;      // the grid
  int dp_tiles;  // tiles computed whole, in waves of `ctas`
  int sk_ctas;   // CTAs sharing the units of tiles dp_tiles .. tiles - 1 (0: none)

  // Units of the stream-K part (< 2^31: the host checks).
  __host__ __device__ int sk_units() const { return (tiles - dp_tiles) * k_tiles; }
  // First unit of CTA c's range (c <= sk_ctas); the range ends where c + 1's begins.
  __host__ __device__ int sk_begin(int c) const {
    return static_cast<int>(static_cast<int64_t>(c) * sk_units() / sk_ctas);
  }
  // The CTA whose range holds `unit`: the largest c with sk_begin(c) <= unit.
  __host__ __device__ int sk_owner(int unit) const {
    const int64_t c = ((unit + int64_t{1}) * sk_ctas - 1) / sk_units();
    return static_cast<int>(c < sk_ctas - 1 ? c : sk_ctas - 1);
  }
};

// Calls work(tile, kt_begin, kt_end, slot) for each piece of CTA `cta` in order: k tiles [kt_begin, kt_end)
// of output tile `tile`; slot -1 = the whole tile (store the output), 0 / 1 = a piece (store into the
// CTA's partial slot). Two plain loops, so that ptxas keeps the loop control on the uniform datapath
// (an iterator object moved it to the vector pipes: ~7% slower k tiles, S8-5).
template <typename Work>
__device__ __forceinline__ void for_each_piece(StreamKSchedule s, int cta, Work&& work) {
  for (int tile = cta; tile < s.dp_tiles; tile += s.ctas) work(tile, 0, s.k_tiles, -1);
  if (cta >= s.sk_ctas) return;
  const int begin = s.sk_begin(cta);
  const int end = s.sk_begin(cta + 1);
  for (int unit = begin; unit < end;) {
    const int tile = unit / s.k_tiles;
    const int tile_start = tile * s.k_tiles;
    const int kt_begin = unit - tile_start;
    const int kt_end = min(end - tile_start, s.k_tiles);
    work(s.dp_tiles + tile, kt_begin, kt_end, kt_begin == 0 && kt_end == s.k_tiles ? -1 : (unit == begin ? 0 : 1));
    unit = tile_start + kt_end;
  }
}

// Grid (stream-K tiles, chunks): block (x, y) adds up the pieces of tile dp_tiles + x, if it was cut, for
// its y-th share of the tile's elements, in CTA order, rounded to T into out [M, N]. A tile is `rows` weight
// rows x `tokens` tokens; a partial slot holds element (token m, row n) at m * rows + n. Tiles one CTA
// computed whole were stored by it. Four consecutive rows per thread, each stored only if it is < N.
constexpr int kFixupMaxPieces = 64;
template <typename T>
__global__ void __launch_bounds__(256) stream_k_fixup_kernel(const float* __restrict__ partial, T* __restrict__ out,
                                                             StreamKSchedule s, int rows, int tokens, int tiles_m,
                                                             int tiles_n, int group_m, int m_total, int n_total) {
  const int first_unit = static_cast<int>(blockIdx.x) * s.k_tiles;
  const int first_cta = s.sk_owner(first_unit);
  const int pieces = s.sk_owner(first_unit + s.k_tiles - 1) - first_cta + 1;
  if (pieces == 1) return;
  const int tile_elements = rows * tokens;
  // Where each piece's slot starts: the tile is CTA c's first piece if c's range starts inside it, else
  // its last (the host keeps pieces <= kFixupMaxPieces).
  __shared__ int64_t slot_start[kFixupMaxPieces];
  for (int i = static_cast<int>(threadIdx.x); i < pieces; i += static_cast<int>(blockDim.x)) {
    const int c = first_cta + i;
    slot_start[i] = (2 * static_cast<int64_t>(c) + (s.sk_begin(c) >= first_unit ? 0 : 1)) * tile_elements;
  }
  __syncthreads();
  const TileCoord tile = grouped_tile(s.dp_tiles + static_cast<int>(blockIdx.x), tiles_m, tiles_n, group_m);
  const int per_chunk = (tile_elements / 4 + gridDim.y - 1) / gridDim.y * 4;
  const int chunk_end = min(tile_elements, (static_cast<int>(blockIdx.y) + 1) * per_chunk);
  for (int e = static_cast<int>(blockIdx.y) * per_chunk + 4 * static_cast<int>(threadIdx.x); e < chunk_end;
       e += 4 * static_cast<int>(blockDim.x)) {
    const int m = tile.m * tokens + e / rows;
    const int n = tile.n * rows + e % rows;
    if (m >= m_total || n >= n_total) continue;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i = 0; i < pieces; ++i) {
      const float4 v = *reinterpret_cast<const float4*>(partial + slot_start[i] + e);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    // Rows past N (Format B allows any N) are computed on clamped weights and never stored.
    const float values[4] = {sum.x, sum.y, sum.z, sum.w};
    T* dst = out + static_cast<int64_t>(m) * n_total + n;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (n + i < n_total) dst[i] = from_float<T>(values[i]);
  }
}

}  // namespace w4a16
}  // namespace awq
