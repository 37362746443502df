// The MPI return-code check shared by the distributed runtime.
#include "recall/dist/mpi_check.h"

#include <unistd.h>

#include <cstring>
#include <string>

#include "recall/util/error.h"

namespace recall::dist {

int world_rank_or_minus_one() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

const char* host_name() {
  static const std::string name = [] {
    char buf[256] = {0};
    if (gethostname(buf, sizeof(buf) - 1) != 0) return std::string("unknown-host");
    return std::string(buf);
  }();
  return name.c_str();
}

void mpi_check(int code, const char* call, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) std::strcpy(text, "(no MPI error string)");
  const char* base = std::strrchr(file, '/');
  fail(call, " failed at ", base ? base + 1 : file, ":", line, " on rank ", world_rank_or_minus_one(),
       " (host ", host_name(), "): ", text);
}

}  // namespace recall::dist
