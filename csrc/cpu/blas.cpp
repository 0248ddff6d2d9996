#include "cpu/blas.h"

#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "cblas.h"

namespace fusednn {
namespace cpu {

// OpenBLAS's parallel jobs run on fusednn's OpenMP team instead of
// OpenBLAS's own pthread pool. With two pools on the same cores, the pool
// that just finished keeps spinning and slows the other: a GEMM followed by
// an OpenMP epilogue lost up to 10% at 1024^3 on two cores. With one pool the
// epilogue starts on the threads the GEMM just used.
//
// Contract (openblas_threads_callback, scipy-openblas >= 0.3.28): every job
// must be done on return; job i is dojob(i, jobdata + i * elsize, dojob_data),
// and i also indexes a static per-job scratch buffer inside OpenBLAS.
//  - Level-3 jobs busy-wait on each other, so all numjobs jobs must run at
//    the same time: a team smaller than numjobs (nested region, thread limit)
//    falls back to one std::thread per job, decided before any job starts.
//  - Jobs of two concurrent calls would share those scratch buffers, so calls
//    are serialised. OpenBLAS never calls exec_blas from inside a job, so the
//    lock is never taken twice by one thread.
namespace {

std::mutex g_blas_call;
std::atomic<uint64_t> g_blas_calls{0};

void blas_on_openmp(int /*sync*/, openblas_dojob_callback dojob, int numjobs,
                    size_t elsize, void* jobdata, int dojob_data) noexcept {
  char* base = static_cast<char*>(jobdata);
  std::lock_guard<std::mutex> lock(g_blas_call);
  g_blas_calls.fetch_add(1, std::memory_order_relaxed);
  if (numjobs <= 1) {
    if (numjobs == 1) dojob(0, base, dojob_data);
    return;
  }
  int team = 0;
#pragma omp parallel num_threads(numjobs)
  {
#pragma omp single
    team = omp_get_num_threads();
    // implicit barrier: every member sees the final team size
    if (team == numjobs) {
      const int i = omp_get_thread_num();
      dojob(i, base + (size_t)i * elsize, dojob_data);
    }
  }
  if (team == numjobs) return;
  std::vector<std::thread> workers;
  workers.reserve((size_t)numjobs - 1);
  for (int i = 1; i < numjobs; ++i)
    workers.emplace_back([=] { dojob(i, base + (size_t)i * elsize, dojob_data); });
  dojob(0, base, dojob_data);
  for (auto& t : workers) t.join();
}

// A forked child must not use the parent's OpenMP team (libgomp is not
// fork-safe); its GEMMs go back to OpenBLAS's own pool.
void blas_native_in_child() { scipy_openblas_set_threads_callback_function(nullptr); }

}  // namespace

bool install_blas_threads() {
  const char* env = std::getenv("FUSEDNN_BLAS_THREADS");
  if (env != nullptr && std::strcmp(env, "native") == 0) return false;
  static std::once_flag once;
  std::call_once(once, [] {
    scipy_openblas_set_threads_callback_function(&blas_on_openmp);
    pthread_atfork(nullptr, nullptr, &blas_native_in_child);
  });
  return true;
}

uint64_t blas_callback_calls() { return g_blas_calls.load(std::memory_order_relaxed); }

int blas_num_threads() { return scipy_openblas_get_num_threads(); }

void set_num_threads(int n) {
  scipy_openblas_set_num_threads(n);
  omp_set_num_threads(n);
}

std::string blas_config() { return std::string(scipy_openblas_get_config()); }

}  // namespace cpu
}  // namespace fusednn
