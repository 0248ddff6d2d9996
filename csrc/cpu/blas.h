// GEMM on row-major matrices through OpenBLAS (scipy-openblas32: 32-bit
// integers, symbols prefixed scipy_), run on fusednn's thread pool.
//
// OpenBLAS itself runs one thread per call: its own parallel GEMM is a
// fork-join team whose jobs busy-wait on each other, so every member must be
// running at once, and on a machine where another process holds a core each
// call waits a scheduler time slice for it. Instead the output is cut into
// tiles, each one single-threaded OpenBLAS call, claimed like any other chunk
// of the pool (cpu/threads.h). Each tile re-packs the operand the tiles share
// (B for row tiles): about 0.3 cycles per element against 2 m n k / 16 FMA
// cycles of work, a few per cent at the tile sizes below.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

// C[m x n] = alpha * op(A) op(B) + beta * C, all row-major. op(A) is m x k.
// One thread.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// The whole product by NumPy's BLAS (cpu/threads.h, PeerBlas), threaded by
// NumPy's pool; false (nothing done) when none was found.
template <typename T>
bool peer_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// FMAs from which a product goes to NumPy's BLAS when fusednn may use more
// than one thread: a product this large keeps a pool busy for ten
// milliseconds or more, so NumPy's pool, fork-join though it is, loses little
// to a late member, and when NumPy's last call left its pool spinning it is
// the pool that has the cores. Below it, fusednn's own pieces: NumPy's
// workers spin ~0.1 s after each call, and a training step of smaller
// products (a 1024 x 3072 x 100 first layer, 2^28 FMAs) lost a quarter of its
// rate to them on two cores.
constexpr double kPeerGemmMinFma = double(int64_t(1) << 29);

// Keeps OpenBLAS at one thread per call (threadpoolctl or a user may have
// raised it). Cheap: a read of OpenBLAS's setting.
void blas_single_thread();

// A tile of C: rows [r0, r0 + rows), columns [c0, c0 + cols).
struct Tile {
  int64_t r0, rows, c0, cols;
};

// FMAs per tile at least: about 12 us of one AVX-512 core, so a tile pays
// for its claim and its re-packing. Between the kernels of a training step
// the pool's workers are awake (they spin after their last chunk), and a
// handoff costs about a microsecond; a sleeping or descheduled worker costs
// nothing but the wake-up call, as the caller claims the chunks itself. At
// 2^21 the 128 x 100 x 100 products of a batch-128 step through 100-wide
// layers (29 us on one core) stayed on one core and the step took 1.2x as
// long; at 2^16 the extra re-packing showed (that step 1.18x faster than at
// 2^21, against 1.26x at 2^17 and 1.27x at 2^19, in the same run).
constexpr int64_t kGemmGrain = int64_t(1) << 19;
// Rows per row tile at least: each re-packs all of B, which stays under ~7%
// of the tile's work. Columns per column tile at least: each re-packs all of
// A, which is small when there are few rows (the case column tiles are for).
constexpr int64_t kGemmMinRows = 64;
constexpr int64_t kGemmMinCols = 32;

// Depth per K slice at least (see gemm_tiling).
constexpr int64_t kGemmMinDepth = 256;

// How the product is cut for `threads` threads: tiles of C by rows or by
// columns when there are enough of them, whichever re-packs less (each row
// tile re-packs all of op(B), k x n; each column tile all of op(A), m x k:
// columns when n > m. A transposed op(B) packs slowly, and the 256 x 1024 x
// 1024 dx product of a wide layer ran 1.29x faster in column tiles than in
// row tiles); else, for few rows and a deep product (a small batch through a
// wide first layer), slices of K, each a partial product added in slice
// order (no operand is re-packed twice: 1.5-1.9x the rate of column tiles
// at 32-64 x 3072 x 100); else column tiles. One piece when the work or the
// pool is too small. At most 2 pieces per thread: enough that the caller
// takes over a slow worker's share, few enough that re-packing stays small.
inline void gemm_tiling(int64_t m, int64_t n, int64_t k, int threads, int64_t* row_tiles,
                        int64_t* col_tiles, int64_t* k_slices) {
  *row_tiles = *col_tiles = *k_slices = 1;
  const double fma = double(m) * double(n) * double(k);
  if (threads <= 1 || fma < 2.0 * double(kGemmGrain)) return;
  const int64_t want = std::min<int64_t>(2 * threads, int64_t(fma / double(kGemmGrain)));
  const bool rows = m >= 2 * kGemmMinRows, cols = n >= 2 * kGemmMinCols;
  if (rows && cols && n > m)
    *col_tiles = std::min(want, n / kGemmMinCols);
  else if (rows)
    *row_tiles = std::min(want, m / kGemmMinRows);
  else if (k >= 2 * kGemmMinDepth)
    *k_slices = std::min(want, k / kGemmMinDepth);
  else if (cols)
    *col_tiles = std::min(want, n / kGemmMinCols);
}

// The pieces parallel_gemm cuts an m x n x k product into at this thread
// limit (1: it runs whole on the calling thread).
inline int64_t gemm_pieces(int64_t m, int64_t n, int64_t k) {
  int64_t rt, ct, ks;
  gemm_tiling(m, n, k, num_threads(), &rt, &ct, &ks);
  return rt * ct * ks;
}

// gemm() cut over the pool; epi(tile) runs after each tile's GEMM on the
// same thread while the tile is in cache (after the sum, on all of C, when K
// is sliced). `row_tile_rows` > 0 cuts rows into tiles of that many rows
// instead of gemm_tiling's choice.
template <typename T, class Epi>
void parallel_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, Epi&& epi,
                   int64_t row_tile_rows = 0) {
  if (m <= 0 || n <= 0) return;
  if (row_tile_rows <= 0 && num_threads() > 1 &&
      double(m) * double(n) * double(k) >= kPeerGemmMinFma &&
      peer_gemm<T>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) {
    // The epilogue then runs on fusednn's pool, rows at a time.
    const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 14) / n);
    parallel_for(m, rows, [&](int64_t r0, int64_t r1) { epi(Tile{r0, r1 - r0, 0, n}); });
    return;
  }
  blas_single_thread();
  int64_t rt, ct, ks;
  if (row_tile_rows > 0) {
    rt = (m + row_tile_rows - 1) / row_tile_rows;
    ct = ks = 1;
  } else {
    gemm_tiling(m, n, k, num_threads(), &rt, &ct, &ks);
  }
  if (ks > 1) {
    // Slice 0 goes to C (with beta), the others to scratch, added in order.
    std::vector<T> part(size_t(ks - 1) * size_t(m) * size_t(n));
    parallel_chunks(ks, [&](int64_t i) {
      int64_t k0, k1;
      chunk_range(k, ks, i, &k0, &k1);
      const T* as = ta ? a + k0 * lda : a + k0;
      const T* bs = tb ? b + k0 : b + k0 * ldb;
      if (i == 0)
        gemm<T>(ta, tb, m, n, k1 - k0, alpha, as, lda, bs, ldb, beta, c, ldc);
      else
        gemm<T>(ta, tb, m, n, k1 - k0, alpha, as, lda, bs, ldb, T(0),
                part.data() + size_t(i - 1) * size_t(m) * size_t(n), n);
    });
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 1; i < ks; ++i) {
        const T* p = part.data() + (size_t(i - 1) * size_t(m) + size_t(r)) * size_t(n);
        T* cr = c + r * ldc;
        for (int64_t j = 0; j < n; ++j) cr[j] += p[j];
      }
    epi(Tile{0, m, 0, n});
    return;
  }
  parallel_chunks(rt * ct, [&](int64_t i) {
    Tile t;
    if (row_tile_rows > 0) {
      t.r0 = i * row_tile_rows;
      t.rows = std::min(row_tile_rows, m - t.r0);
    } else {
      int64_t hi;
      chunk_range(m, rt, i / ct, &t.r0, &hi);
      t.rows = hi - t.r0;
    }
    int64_t chi;
    chunk_range(n, ct, i % ct, &t.c0, &chi);
    t.cols = chi - t.c0;
    if (t.rows <= 0 || t.cols <= 0) return;
    const T* at = ta ? a + t.r0 : a + t.r0 * lda;
    const T* bt = tb ? b + t.c0 * ldb : b + t.c0;
    gemm<T>(ta, tb, t.rows, t.cols, k, alpha, at, lda, bt, ldb, beta, c + t.r0 * ldc + t.c0, ldc);
    epi(t);
  });
}

template <typename T>
void parallel_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  parallel_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, [](const Tile&) {});
}

int blas_num_threads();  // OpenBLAS's own setting (1 unless changed from outside)
std::string blas_config();

// Sends large GEMMs to the cblas_sgemm/dgemm of the library already loaded
// from `path` (NumPy's BLAS): the sgemm symbol used, or null when it is not
// loaded or has none.
const char* use_peer_blas(const char* path);

}  // namespace cpu
}  // namespace fusednn
