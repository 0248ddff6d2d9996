// fusednn's CPU thread pool (libfusednn_threads.so, one per process, shared by
// fusednn._C and every level's kernel library).
//
// Work is cut into chunks. The calling thread claims chunks itself, one at a
// time, and so does every pool worker that is awake; the call returns when
// every chunk is done. The caller never waits for a worker that has not
// started: on a machine where another process holds a core, a worker that is
// not scheduled simply claims nothing and the caller does its share. A
// fork-join team (OpenMP's) instead waits at its barrier for every member, a
// scheduler time slice each time a member's core is busy.
//
// Workers spin for a few tens of microseconds after their last chunk (so the
// kernels of one training step, called back to back, find them awake), then
// sleep in the kernel; nothing spins while the caller is elsewhere, e.g. in
// NumPy's BLAS.
//
// Chunk boundaries depend only on the size of the work, never on the thread
// count or on which thread ran a chunk, so per-chunk partial sums combined in
// chunk order give the same bits with 1 thread or 16.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#define FUSEDNN_THREADS_API __attribute__((visibility("default")))

extern "C" {
// The thread limit (>= 1), for threadpoolctl's controller
// (python/fusednn/_threads.py) and fd.num_threads.
FUSEDNN_THREADS_API int fusednn_get_num_threads(void);
// Sets the limit; n < 1 is taken as 1 (threadpoolctl never passes it; the
// Python entry points refuse it first).
FUSEDNN_THREADS_API void fusednn_set_num_threads(int n);
}

namespace fusednn {
namespace cpu {

using ChunkFn = void (*)(void* ctx, int64_t chunk);

// Runs fn(ctx, i) for every i in [0, n_chunks) on the caller and awake
// workers; returns when all are done. Inline, in chunk order, when the limit
// is 1, when called from inside a chunk, or while another thread's call holds
// the pool.
FUSEDNN_THREADS_API void run_chunks(int64_t n_chunks, ChunkFn fn, void* ctx);

// A background job: chunks that workers claim whenever no run_chunks call
// has work for them, while the caller goes on with its own calls (which still
// use the pool as usual: a worker looks at the caller's calls first, between
// any two background chunks). The caller releases the chunks in order as
// their inputs become ready, then finishes the job, running what no worker
// took, and returns when every chunk is done. One background job at a time;
// begin returns false (and starts nothing) when the pool has no worker to
// give, when called from inside a chunk, or while another background job is
// open. Chunks never wait for one another: any order of running them must
// give the same result.
FUSEDNN_THREADS_API bool background_begin(int64_t n_chunks, ChunkFn fn, void* ctx);
// Chunks [0, ready) may now be claimed (ready only grows).
FUSEDNN_THREADS_API void background_release(int64_t ready);
// Releases all chunks, runs the unclaimed ones on the caller and waits for
// the rest.
FUSEDNN_THREADS_API void background_finish();
// Stops the job where it is: no chunk is claimed any more; waits for the
// claimed ones. Returns how many ran (chunks [0, that) ran, the rest not).
FUSEDNN_THREADS_API int64_t background_cancel();

// When a step hands work to a background job: Auto (the default) only while
// the calling thread was not preempted lately, Always, or Never (what tests
// and benchmarks set to compare the two forms; the results are the same bits
// either way). Work the caller would have to wait for on a worker pays only
// on cores that are not shared: a worker preempted in the middle of it holds
// the caller for the rest of a time slice.
enum class Background : int { Auto = 0, Always = 1, Never = 2 };
FUSEDNN_THREADS_API void set_background(Background mode);
FUSEDNN_THREADS_API Background background_setting();
// Whether a step should use a background job now, by the setting; called
// once per step. Auto: no involuntary context switch of the calling thread
// (another thread or process took its core) during its last 16 calls, which
// on idle cores happen a few times a second.
FUSEDNN_THREADS_API bool background_pays();

struct PoolStats {
  uint64_t calls;          // run_chunks calls that used the pool
  uint64_t worker_chunks;  // chunks that a worker (not the caller) ran
  int workers;             // worker threads started
  uint64_t background;     // background jobs begun
  uint64_t background_worker_chunks;  // their chunks that a worker ran
};
FUSEDNN_THREADS_API PoolStats pool_stats();

// How the limit was chosen at load: FUSEDNN_NUM_THREADS, OMP_NUM_THREADS or
// the CPUs this process may run on. An invalid FUSEDNN_NUM_THREADS leaves
// the default and is reported by env_error() (non-empty), which fusednn._C
// raises at import.
FUSEDNN_THREADS_API const char* threads_chosen_by();
FUSEDNN_THREADS_API const char* threads_env_error();

inline int num_threads() { return fusednn_get_num_threads(); }

// NumPy's own BLAS, where fusednn found it (python/fusednn/_threads.py): the
// cblas_sgemm / cblas_dgemm of that library, with 64-bit (int64 != 0) or
// 32-bit integers. Large GEMMs go to it (cpu/blas.h), so a program that
// alternates NumPy's matrix products with fusednn's uses one BLAS pool, the
// one NumPy's last call left awake, instead of two pools on the same cores.
struct PeerBlas {
  void* sgemm;
  void* dgemm;
  int int64;
};
FUSEDNN_THREADS_API const PeerBlas* peer_blas();  // null when none is set
FUSEDNN_THREADS_API void set_peer_blas(void* sgemm, void* dgemm, int int64);

// Chunks never exceed this many per call: the claim counter, the per-chunk
// partial sums and the caller's share of the bookkeeping stay small.
constexpr int64_t kMaxChunks = 256;

// The number of chunks for n items of which each chunk takes at least
// `grain`: a function of n and grain only (see the top of this file).
inline int64_t chunk_count(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  grain = std::max<int64_t>(1, grain);
  return std::min<int64_t>(kMaxChunks, (n + grain - 1) / grain);
}

// [lo, hi) of chunk i when n items are cut into `chunks` near-equal chunks.
inline void chunk_range(int64_t n, int64_t chunks, int64_t i, int64_t* lo, int64_t* hi) {
  const int64_t base = n / chunks, extra = n % chunks;
  *lo = i * base + std::min(i, extra);
  *hi = *lo + base + (i < extra ? 1 : 0);
}

// f(i) for every chunk i in [0, n_chunks).
template <class F>
void parallel_chunks(int64_t n_chunks, F&& f) {
  if (n_chunks <= 0) return;
  if (n_chunks == 1) {
    f(int64_t(0));
    return;
  }
  using Fn = typename std::remove_reference<F>::type;
  run_chunks(n_chunks, [](void* ctx, int64_t i) { (*static_cast<Fn*>(ctx))(i); },
             const_cast<void*>(static_cast<const void*>(&f)));
}

// f(lo, hi) over [0, n) in chunk_count(n, grain) chunks.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  const int64_t chunks = chunk_count(n, grain);
  parallel_chunks(chunks, [&](int64_t i) {
    int64_t lo, hi;
    chunk_range(n, chunks, i, &lo, &hi);
    f(lo, hi);
  });
}

// The sum of f(lo, hi) (a double) over the chunks of parallel_for, added in
// chunk order: the same bits at any thread count.
template <class F>
double parallel_sum(int64_t n, int64_t grain, F&& f) {
  const int64_t chunks = chunk_count(n, grain);
  double part[kMaxChunks];
  parallel_chunks(chunks, [&](int64_t i) {
    int64_t lo, hi;
    chunk_range(n, chunks, i, &lo, &hi);
    part[i] = f(lo, hi);
  });
  double total = 0.0;
  for (int64_t i = 0; i < chunks; ++i) total += part[i];
  return total;
}

}  // namespace cpu
}  // namespace fusednn
