// Loads librecall_engine.so on first use (see recall/engine/library.h).
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "recall/build_id.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

using Entry = const Library* (*)(unsigned long);
constexpr const char* kFileName = "librecall_engine.so";

std::atomic<bool> g_loaded{false};

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// Where to look, in order, without duplicates.
std::vector<std::string> candidate_paths() {
  if (const char* env = std::getenv("RECALL_ENGINE_LIBRARY"); env && *env) return {env};
  std::vector<std::string> out;
  auto add = [&](const std::string& p) {
    for (const std::string& q : out)
      if (q == p) return;
    out.push_back(p);
  };
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&library), &info) && info.dli_fname && *info.dli_fname)
    add(directory_of(info.dli_fname) + "/" + kFileName);
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    const std::string dir = directory_of(std::string(exe, static_cast<size_t>(n)));
    add(dir + "/../lib/" + kFileName);
    add(dir + "/" + kFileName);
  }
  return out;
}

const Library* checked(Entry entry, const std::string& where) {
  const Library* table = entry(sizeof(Library));
  if (!table)
    fail("the model engine ", where, " was built from different sources than this program (its table of "
         "entry points differs)\n---> HINT: rebuild recall (cmake --build) so that both come from one build");
  if (std::strcmp(table->build, RECALL_ENGINE_BUILD) != 0)
    fail("the model engine ", where, " is build ", table->build, ", this program is build ", RECALL_ENGINE_BUILD,
         "\n---> HINT: rebuild recall, or set RECALL_ENGINE_LIBRARY to the librecall_engine.so of this build");
  return table;
}

const Library* load() {
  // Linked into this program already (tests, benchmarks): use that copy.
  if (auto entry = reinterpret_cast<Entry>(dlsym(RTLD_DEFAULT, kLibrarySymbol)))
    return checked(entry, "linked into this program");
  std::string tried;
  for (const std::string& path : candidate_paths()) {
    if (!path_exists(path)) {
      tried += "\n  " + path + ": no such file";
      continue;
    }
    // A library that exists but does not load (libtorch missing, wrong architecture) is the error
    // to report, not a reason to try an older copy elsewhere.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const std::string why = dlerror();
      const bool torch = why.find("libtorch") != std::string::npos || why.find("libc10") != std::string::npos;
      fail("cannot load the model engine '", path, "': ", why,
           torch ? "\n---> HINT: the engine finds libtorch in the Python environment it was built with (its RUNPATH: "
                   "readelf -d " + path + "); if that environment moved or was removed (RECALL_CACHE), rebuild "
                   "(source scripts/setup.sh && recall_build) to point it at the current one"
                 : "");
    }
    auto entry = reinterpret_cast<Entry>(dlsym(handle, kLibrarySymbol));
    if (!entry) fail("'", path, "' is not recall's model engine: it has no symbol ", kLibrarySymbol);
    return checked(entry, "'" + path + "'");
  }
  fail("this command runs models, but the model engine (", kFileName, ", which links libtorch) was not found; "
       "tried:", tried, "\n---> HINT: build the whole project (cmake --build build), or set RECALL_ENGINE_LIBRARY "
       "to the path of ", kFileName);
}

}  // namespace

const Library& library() {
  static const Library* const table = load();  // retried on the next call if load() throws
  g_loaded.store(true);
  return *table;
}

bool library_loaded() { return g_loaded.load(); }

}  // namespace recall::engine
