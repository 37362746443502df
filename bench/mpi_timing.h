// Timing for the MPI benchmarks: the slowest rank's wall time of one call, after a barrier.
#pragma once

#include <mpi.h>

#include <utility>

template <typename F>
double slowest_rank_seconds(F&& fn) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  std::forward<F>(fn)();
  double local = MPI_Wtime() - t0, worst = 0;
  MPI_Allreduce(&local, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
