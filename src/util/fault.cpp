// Fault injection points (see fault.h).
#include "recall/util/fault.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include "recall/util/error.h"

namespace recall {

void fault_point(const std::string& phase, int rank, int64_t count) {
  static const char* spec = std::getenv("RECALL_FAULT_INJECT");
  if (!spec || !*spec) return;
  const std::string s = spec;
  const auto a = s.find(':'), b = s.find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos) return;
  const auto c = s.find(':', b + 1);
  if (s.substr(0, a) != phase || std::atoi(s.substr(a + 1, b - a - 1).c_str()) != rank ||
      std::atoll(s.substr(b + 1, c == std::string::npos ? std::string::npos : c - b - 1).c_str()) != count)
    return;
  if (c != std::string::npos && s.substr(c + 1) == "error")
    fail("fault injection: rank ", rank, " fails in phase '", phase, "' at ", count);
  std::fprintf(stderr, "recall: fault injection: rank %d kills itself in phase '%s' at %lld\n", rank, phase.c_str(),
               static_cast<long long>(count));
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
}

}  // namespace recall
