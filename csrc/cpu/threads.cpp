// The claim-based thread pool of cpu/threads.h.
#include "cpu/threads.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FUSEDNN_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FUSEDNN_PAUSE() __asm__ __volatile__("yield")
#else
#define FUSEDNN_PAUSE() ((void)0)
#endif

namespace fusednn {
namespace cpu {
namespace {

constexpr int kMaxWorkers = 255;

// How long an idle worker polls for the next call before it sleeps: long
// enough to span the Python between two kernels of one step, short enough
// that a pool left idle costs nothing measurable to the next NumPy call or to
// another process.
constexpr int64_t kSpinMicros = 50;

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
          nullptr, 0);
}

// The job word: generation (24 bits) | chunk count (20) | next chunk (20).
// Claiming a chunk is one compare-and-swap on it, so a worker holding a
// stale view of a finished job can never claim: the word has moved on.
constexpr uint64_t kFieldBits = 20, kFieldMask = (uint64_t(1) << kFieldBits) - 1;
inline uint64_t pack(uint64_t gen, uint64_t n, uint64_t next) {
  return (gen << (2 * kFieldBits)) | (n << kFieldBits) | next;
}
inline uint64_t count_of(uint64_t s) { return (s >> kFieldBits) & kFieldMask; }
inline uint64_t next_of(uint64_t s) { return s & kFieldMask; }
inline uint64_t gen_of(uint64_t s) { return s >> (2 * kFieldBits); }
static_assert(kMaxChunks <= int64_t(kFieldMask), "chunk count must fit its field");

struct Pool {
  std::atomic<uint64_t> job{0};
  // The current job's function, written before `job` is published (release)
  // and read after a successful claim (acquire).
  ChunkFn fn = nullptr;
  void* ctx = nullptr;
  std::atomic<int64_t> done{0};

  std::atomic<uint32_t> wake_seq{0};  // futex word the sleepers wait on
  std::atomic<int> sleepers{0};
  std::atomic<int> limit{1};
  std::atomic<int> started{0};  // worker threads running
  std::atomic_flag in_use = ATOMIC_FLAG_INIT;

  std::atomic<uint64_t> calls{0}, worker_chunks{0};

  // The background job (cpu/threads.h): its own word, in the layout of
  // `job`, and a release mark; claims need next < min(count, ready).
  std::atomic<uint64_t> bg_job{0};
  std::atomic<int64_t> bg_ready{0};
  ChunkFn bg_fn = nullptr;
  void* bg_ctx = nullptr;
  std::atomic<int64_t> bg_done{0};
  std::atomic_flag bg_in_use = ATOMIC_FLAG_INIT;
  std::atomic<uint64_t> bg_jobs{0}, bg_worker_chunks{0};

  const char* chosen_by = "default";
  std::string env_error;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destructors
  return *p;
}

thread_local bool t_inside = false;  // inside a chunk or a caller's run

// Claims and runs chunks of the current job until none is left. Returns the
// number run.
int64_t work(Pool& p) {
  int64_t ran = 0;
  uint64_t s = p.job.load(std::memory_order_acquire);
  while (next_of(s) < count_of(s)) {
    if (!p.job.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      continue;
    p.fn(p.ctx, int64_t(next_of(s)));
    ++ran;
    p.done.fetch_add(1, std::memory_order_acq_rel);
    s = p.job.load(std::memory_order_acquire);
  }
  return ran;
}

inline bool has_work(const Pool& p, int index) {
  const uint64_t s = p.job.load(std::memory_order_seq_cst);
  return next_of(s) < count_of(s) && index < p.limit.load(std::memory_order_relaxed) - 1;
}

// The background chunk that may be claimed next, if any (`s`: the word it
// was read from, for the claim).
inline bool bg_next(const Pool& p, uint64_t* s) {
  *s = p.bg_job.load(std::memory_order_seq_cst);
  const uint64_t ready = uint64_t(p.bg_ready.load(std::memory_order_seq_cst));
  return next_of(*s) < std::min(count_of(*s), ready);
}

inline bool bg_has_work(const Pool& p, int index) {
  uint64_t s;
  return bg_next(p, &s) && index < p.limit.load(std::memory_order_relaxed) - 1;
}

// Claims and runs one background chunk. Returns whether it ran one. The
// ready mark is read after the word: a word of the next job (another
// generation) makes the claim fail.
bool bg_work_one(Pool& p) {
  uint64_t s;
  while (bg_next(p, &s)) {
    if (!p.bg_job.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      continue;
    p.bg_fn(p.bg_ctx, int64_t(next_of(s)));
    p.bg_done.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }
  return false;
}

void* worker_main(void* arg) {
  const int index = int(reinterpret_cast<intptr_t>(arg));
  Pool& p = pool();
  t_inside = true;
  for (;;) {
    if (has_work(p, index)) {
      const int64_t ran = work(p);
      if (ran > 0) p.worker_chunks.fetch_add(uint64_t(ran), std::memory_order_relaxed);
      continue;
    }
    // One background chunk, then the caller's calls are looked at again.
    if (index < p.limit.load(std::memory_order_relaxed) - 1 && bg_work_one(p)) {
      p.bg_worker_chunks.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // Poll a while, then sleep until the next call.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    bool found = false;
    while (!found) {
      for (int i = 0; i < 64 && !found; ++i) {
        FUSEDNN_PAUSE();
        found = has_work(p, index) || bg_has_work(p, index);
      }
      if (std::chrono::steady_clock::now() >= until) break;
    }
    if (found) continue;
    p.sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seq = p.wake_seq.load(std::memory_order_seq_cst);
    if (!has_work(p, index) && !bg_has_work(p, index)) futex_wait(&p.wake_seq, seq);
    p.sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
  return nullptr;
}

// Starts workers up to limit - 1. Called by the pool's holder only.
void ensure_workers(Pool& p, int limit) {
  int have = p.started.load(std::memory_order_relaxed);
  while (have < limit - 1 && have < kMaxWorkers) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    const int rc = pthread_create(&th, &attr, &worker_main,
                                  reinterpret_cast<void*>(static_cast<intptr_t>(have)));
    pthread_attr_destroy(&attr);
    if (rc != 0) break;  // no more threads: the caller and the others do the work
    p.started.store(++have, std::memory_order_relaxed);
  }
}

// A forked child has only the thread that forked: its pool starts empty.
void reset_in_child() {
  Pool& p = pool();
  p.started.store(0);
  p.sleepers.store(0);
  p.job.store(0);
  p.in_use.clear();
  p.bg_job.store(0);
  p.bg_ready.store(0);
  p.bg_in_use.clear();
  t_inside = false;
}

bool parse_count(const char* text, int* out) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || v < 1 || v > INT_MAX) return false;
  while (*end == ' ') ++end;
  if (*end != '\0' && *end != ',') return false;  // OMP_NUM_THREADS may list nesting levels
  *out = int(v);
  return true;
}

int affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? int(n) : 1;
}

// The default limit: FUSEDNN_NUM_THREADS, else OMP_NUM_THREADS (its first
// level), else the CPUs this process may run on.
struct Init {
  Init() {
    Pool& p = pool();
    int n = affinity_cpus();
    p.chosen_by = "cpus";
    int v = 0;
    const char* fusednn_env = std::getenv("FUSEDNN_NUM_THREADS");
    const char* omp_env = std::getenv("OMP_NUM_THREADS");
    if (fusednn_env != nullptr && *fusednn_env != '\0') {
      if (parse_count(fusednn_env, &v) && std::strchr(fusednn_env, ',') == nullptr) {
        n = v;
        p.chosen_by = "FUSEDNN_NUM_THREADS";
      } else {
        p.env_error = std::string("FUSEDNN_NUM_THREADS=") + fusednn_env +
                      " is not a thread count; give a whole number >= 1";
      }
    } else if (parse_count(omp_env, &v)) {
      n = v;
      p.chosen_by = "OMP_NUM_THREADS";
    }
    p.limit.store(std::min(n, kMaxWorkers + 1));
    pthread_atfork(nullptr, nullptr, &reset_in_child);
  }
};
Init g_init;

}  // namespace

void run_chunks(int64_t n_chunks, ChunkFn fn, void* ctx) {
  Pool& p = pool();
  const int limit = p.limit.load(std::memory_order_relaxed);
  if (n_chunks <= 0) return;
  if (n_chunks == 1 || limit <= 1 || t_inside || p.in_use.test_and_set(std::memory_order_acquire)) {
    for (int64_t i = 0; i < n_chunks; ++i) fn(ctx, i);
    return;
  }
  if (n_chunks > kMaxChunks) {  // never from parallel_for; keep the field in range
    p.in_use.clear(std::memory_order_release);
    const int64_t per = (n_chunks + kMaxChunks - 1) / kMaxChunks;
    struct Outer {
      int64_t n, per;
      ChunkFn fn;
      void* ctx;
    } outer{n_chunks, per, fn, ctx};
    run_chunks((n_chunks + per - 1) / per,
               [](void* c, int64_t i) {
                 auto* o = static_cast<Outer*>(c);
                 for (int64_t j = i * o->per; j < std::min(o->n, (i + 1) * o->per); ++j)
                   o->fn(o->ctx, j);
               },
               &outer);
    return;
  }
  ensure_workers(p, limit);
  t_inside = true;
  p.calls.fetch_add(1, std::memory_order_relaxed);
  p.fn = fn;
  p.ctx = ctx;
  p.done.store(0, std::memory_order_relaxed);
  const uint64_t gen = (gen_of(p.job.load(std::memory_order_relaxed)) + 1) & ((1u << 24) - 1);
  p.job.store(pack(gen, uint64_t(n_chunks), 0), std::memory_order_seq_cst);
  p.wake_seq.fetch_add(1, std::memory_order_seq_cst);
  const int helpers = int(std::min<int64_t>(n_chunks - 1, limit - 1));
  if (p.sleepers.load(std::memory_order_seq_cst) > 0) futex_wake(&p.wake_seq, helpers);
  work(p);
  // Only chunks a worker has claimed remain; wait for those alone.
  for (int spins = 0; p.done.load(std::memory_order_acquire) < n_chunks; ++spins) {
    if (spins < 4096)
      FUSEDNN_PAUSE();
    else
      sched_yield();
  }
  t_inside = false;
  p.in_use.clear(std::memory_order_release);
}

namespace {

// Wakes sleeping workers for new background work.
void bg_wake(Pool& p) {
  p.wake_seq.fetch_add(1, std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0)
    futex_wake(&p.wake_seq, p.limit.load(std::memory_order_relaxed) - 1);
}

// Waits until `n` background chunks are done (those a worker holds).
void bg_wait(Pool& p, int64_t n) {
  for (int spins = 0; p.bg_done.load(std::memory_order_acquire) < n; ++spins) {
    if (spins < 4096)
      FUSEDNN_PAUSE();
    else
      sched_yield();
  }
}

}  // namespace

bool background_begin(int64_t n_chunks, ChunkFn fn, void* ctx) {
  Pool& p = pool();
  const int limit = p.limit.load(std::memory_order_relaxed);
  if (n_chunks <= 0 || n_chunks > int64_t(kFieldMask) || limit <= 1 || t_inside) return false;
  if (p.bg_in_use.test_and_set(std::memory_order_acquire)) return false;
  ensure_workers(p, limit);
  p.bg_jobs.fetch_add(1, std::memory_order_relaxed);
  p.bg_fn = fn;
  p.bg_ctx = ctx;
  p.bg_done.store(0, std::memory_order_relaxed);
  p.bg_ready.store(0, std::memory_order_seq_cst);
  const uint64_t gen = (gen_of(p.bg_job.load(std::memory_order_relaxed)) + 1) & ((1u << 24) - 1);
  p.bg_job.store(pack(gen, uint64_t(n_chunks), 0), std::memory_order_seq_cst);
  return true;
}

void background_release(int64_t ready) {
  Pool& p = pool();
  if (ready <= p.bg_ready.load(std::memory_order_relaxed)) return;
  p.bg_ready.store(ready, std::memory_order_seq_cst);
  bg_wake(p);
}

void background_finish() {
  Pool& p = pool();
  const int64_t n = int64_t(count_of(p.bg_job.load(std::memory_order_relaxed)));
  p.bg_ready.store(n, std::memory_order_seq_cst);
  const bool was_inside = t_inside;
  t_inside = true;  // a chunk's own pool calls run inline, as in run_chunks
  while (bg_work_one(p)) {
  }
  t_inside = was_inside;
  bg_wait(p, n);
  p.bg_in_use.clear(std::memory_order_release);
}

int64_t background_cancel() {
  Pool& p = pool();
  // The word's count is cut to the claims made so far: a claim in flight
  // (read before the cut) fails its compare-and-swap.
  uint64_t s = p.bg_job.load(std::memory_order_acquire);
  while (!p.bg_job.compare_exchange_weak(s, pack(gen_of(s), next_of(s), next_of(s)),
                                         std::memory_order_acq_rel, std::memory_order_acquire)) {
  }
  const int64_t claimed = int64_t(next_of(s));
  bg_wait(p, claimed);
  p.bg_in_use.clear(std::memory_order_release);
  return claimed;
}

namespace {

// Whether the calling thread was preempted lately (background_pays).
bool preempted_lately() {
  // Calls in a row without an involuntary switch before the caller counts as
  // not preempted again: 16 steps, tens of milliseconds at small batches.
  // The first 16 calls of a thread count as preempted.
  constexpr int kQuietCalls = 16;
  thread_local long last = -1;
  thread_local int quiet = 0;
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return true;
  const long now = ru.ru_nivcsw;
  if (last < 0 || now != last)
    quiet = 0;
  else if (quiet < kQuietCalls)
    ++quiet;
  last = now;
  return quiet < kQuietCalls;
}

std::atomic<int> g_background{int(Background::Auto)};

}  // namespace

void set_background(Background mode) { g_background.store(int(mode)); }

Background background_setting() { return Background(g_background.load()); }

bool background_pays() {
  switch (background_setting()) {
    case Background::Always:
      return true;
    case Background::Never:
      return false;
    default:
      return !preempted_lately();
  }
}

PoolStats pool_stats() {
  Pool& p = pool();
  return {p.calls.load(), p.worker_chunks.load(), p.started.load(), p.bg_jobs.load(),
          p.bg_worker_chunks.load()};
}

namespace {
std::atomic<const PeerBlas*> g_peer{nullptr};
}

const PeerBlas* peer_blas() { return g_peer.load(std::memory_order_acquire); }

void set_peer_blas(void* sgemm, void* dgemm, int int64) {
  if (sgemm == nullptr || dgemm == nullptr) {
    g_peer.store(nullptr, std::memory_order_release);
    return;
  }
  // Kept for the life of the process: a kernel may hold the old one.
  g_peer.store(new PeerBlas{sgemm, dgemm, int64}, std::memory_order_release);
}

const char* threads_chosen_by() { return pool().chosen_by; }
const char* threads_env_error() { return pool().env_error.c_str(); }

}  // namespace cpu
}  // namespace fusednn

extern "C" int fusednn_get_num_threads(void) {
  return fusednn::cpu::pool().limit.load(std::memory_order_relaxed);
}

extern "C" void fusednn_set_num_threads(int n) {
  fusednn::cpu::pool().limit.store(std::max(1, std::min(n, fusednn::cpu::kMaxWorkers + 1)),
                                   std::memory_order_relaxed);
}
