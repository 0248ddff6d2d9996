// Picks and loads the CPU kernels' library (cpu/dispatch.h).
#include "cpu/dispatch.h"

#include <dlfcn.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#ifndef FUSEDNN_CPU_LEVELS
#error "FUSEDNN_CPU_LEVELS lists the levels built, lowest first, separated by ','"
#endif

namespace fusednn {
namespace cpu {

namespace {

const KernelTable* g_table = nullptr;
DispatchInfo g_info;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    const std::string item = s.substr(start, end == std::string::npos ? end : end - start);
    if (!item.empty()) out.push_back(item);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// Whether this CPU (and its operating system, for the vector registers'
// state) runs the code of `level`. The x86-64 levels are the psABI's:
// baseline x86-64-v2 (SSE4.2, POPCNT), avx2 x86-64-v3 (AVX2, FMA, BMI2),
// avx512 x86-64-v4 (AVX-512 F, BW, CD, DQ, VL). A level built for a named
// -march (native, or another machine) is taken to run: it was asked for.
bool runs(const std::string& level) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (level == "baseline") return __builtin_cpu_supports("x86-64-v2");
  if (level == "avx2") return __builtin_cpu_supports("x86-64-v3");
  if (level == "avx512") return __builtin_cpu_supports("x86-64-v4");
#endif
  return true;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

std::string directory_of(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) == 0 || info.dli_fname == nullptr)
    throw std::runtime_error("fusednn: cannot find the directory of fusednn._C");
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

}  // namespace

void load_kernels(const void* module_address) {
  DispatchInfo info;
  info.compiled = split(FUSEDNN_CPU_LEVELS);
  for (const auto& level : info.compiled)
    if (runs(level)) info.supported.push_back(level);

  const char* env = std::getenv("FUSEDNN_CPU_DISPATCH");
  if (env != nullptr && *env != '\0') {
    const std::string want = env;
    bool built = false;
    for (const auto& level : info.compiled) built = built || level == want;
    if (!built)
      throw std::runtime_error("FUSEDNN_CPU_DISPATCH=" + want + " is not a level of this build; "
                               "levels built: " + joined(info.compiled) +
                               "; this CPU runs: " + joined(info.supported));
    if (!runs(want))
      throw std::runtime_error("FUSEDNN_CPU_DISPATCH=" + want + " is a level this CPU lacks; " +
                               "this CPU runs: " + joined(info.supported));
    info.level = want;
    info.chosen_by = "FUSEDNN_CPU_DISPATCH";
  } else {
    if (info.supported.empty())
      throw std::runtime_error("fusednn: this CPU runs none of the levels built (" +
                               joined(info.compiled) + "); rebuild with "
                               "-C cmake.define.FUSEDNN_CPU_ARCH=native");
    info.level = info.supported.back();
    info.chosen_by = "cpuid";
  }

  const std::string path = directory_of(module_address) + "/_cpu_" + info.level + ".so";
  // RTLD_LOCAL: the library's own copies of shared code stay its own.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = dlerror();
    throw std::runtime_error("fusednn: cannot load the CPU kernels for level " + info.level +
                             " (" + (err ? err : path) + ")");
  }
  using Entry = const KernelTable* (*)();
  auto entry = reinterpret_cast<Entry>(dlsym(lib, FUSEDNN_CPU_KERNELS_SYMBOL));
  const KernelTable* table = entry != nullptr ? entry() : nullptr;
  if (table == nullptr || table->abi != kKernelAbi)
    throw std::runtime_error("fusednn: " + path + " is not a CPU kernel library of this build "
                             "(reinstall fusednn)");
  g_table = table;
  g_info = info;
}

const DispatchInfo& dispatch_info() { return g_info; }

const KernelTable& kernel_table() { return *g_table; }

}  // namespace cpu
}  // namespace fusednn
