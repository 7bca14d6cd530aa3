// Launch shape of the row kernels (one row per group of threads, several rows per block):
// `threads_per_row` is a power of two <= 32 (narrow rows share a warp) or a multiple of 32 up to
// 1024, sized so each thread holds about `items_per_thread` vectors of its row; `rows_per_block`
// fills a block of about `threads_per_block` threads. Matches the contract of row_reduce().
// `max_threads_per_row` (a multiple of 32, <= 1024) caps the row's threads: a kernel declared
// __launch_bounds__(N) must pass N (a block of more than N threads is refused at launch); rows
// longer than items_per_thread * max_threads_per_row vectors then re-read the rest past the cache.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace awq {

struct RowLayout {
  int threads_per_row;
  int rows_per_block;
  unsigned blocks;
};

inline RowLayout row_layout(const char* op, int64_t rows, int64_t vecs_per_row, int items_per_thread,
                            int threads_per_block, int max_threads_per_row = 1024) {
  const int64_t needed = (vecs_per_row + items_per_thread - 1) / items_per_thread;
  int threads_per_row = 1;
  if (needed <= 32) {
    while (threads_per_row < needed) threads_per_row <<= 1;
  } else {
    threads_per_row = static_cast<int>(std::min<int64_t>(max_threads_per_row, (needed + 31) / 32 * 32));
  }
  const int rows_per_block = std::max(1, threads_per_block / threads_per_row);
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), op, ": too many rows (", rows, ")");
  return {threads_per_row, rows_per_block, static_cast<unsigned>(blocks)};
}

}  // namespace awq
