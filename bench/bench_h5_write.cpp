// bench_h5_write: parallel HDF5 write throughput of recall's H5Writer against a plain write of the
// same bytes, in one run. Each rank writes its row range of T bf16 tensors (rows x 4096): once
// through H5Writer (collective, contiguous datasets, recall's bf16 type) into one .h5 file, and
// once with pwrite at the same offsets into one flat file. Both include creating the file and an
// fsync at the end, so both measure what reaches the disk. Prints best/median GB/s of each, the
// ratio (target >= 0.8) and exits non-zero below it.
//   mpirun -np N build/bin/bench_h5_write [--gib 1] [--tensors 8] [--runs 3] [--dir PARENT]
#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mpi_timing.h"
#include "recall/io/h5_writer.h"
#include "recall/dist/grid.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

using namespace recall;

namespace {

constexpr double kTarget = 0.8;
constexpr uint64_t kCols = 4096;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  double gib = 1;
  int tensors = 8, runs = 3;
  const char* tmp = std::getenv("TMPDIR");
  std::string parent = tmp && *tmp ? tmp : "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc) gib = std::atof(argv[++i]);
    else if (a == "--tensors" && i + 1 < argc) tensors = std::max(1, std::atoi(argv[++i]));
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--dir" && i + 1 < argc) parent = argv[++i];
    else {
      if (rank == 0) std::fprintf(stderr, "usage: bench_h5_write [--gib G] [--tensors T] [--runs R] [--dir PARENT]\n");
      return 2;
    }
  }
  const uint64_t total = static_cast<uint64_t>(gib * (1ull << 30));
  const uint64_t rows = std::max<uint64_t>(1, total / tensors / (kCols * 2));
  const uint64_t tensor_bytes = rows * kCols * 2, bytes = tensor_bytes * tensors;
  const dist::RowRange mine = dist::row_range(static_cast<int64_t>(rows), world, rank);
  const uint64_t r0 = static_cast<uint64_t>(mine.first), r1 = static_cast<uint64_t>(mine.end);
  std::vector<uint16_t> data((r1 - r0) * kCols);
  uint64_t x = 0x9E3779B97F4A7C15ull + rank;
  for (auto& v : data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<uint16_t>(0x3c00 + (x & 0x3ff));  // finite bf16 values
  }
  // One directory for all ranks: rank 0 names it and broadcasts its pid.
  long pid = ::getpid();
  MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  const std::string dir = parent + "/recall-bench-h5-" + std::to_string(pid);
  if (rank == 0) make_directories(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string h5_path = dir + "/bench.h5", flat_path = dir + "/bench.bin";
  if (rank == 0)
    std::printf("writing %d tensors of %llu x %llu bf16 (%.2f GB) from %d rank(s), %d runs, into %s\n", tensors,
                static_cast<unsigned long long>(rows), static_cast<unsigned long long>(kCols), bytes / 1e9, world, runs,
                dir.c_str());

  std::vector<double> h5_gbs, flat_gbs;
  for (int r = 0; r < runs; ++r) {
    for (int which = 0; which < 2; ++which) {
      const bool h5_first = r % 2 == 0;
      const bool do_h5 = (which == 0) == h5_first;
      if (do_h5) {
        const double t = slowest_rank_seconds([&] {
          H5Writer h5(h5_path, MPI_COMM_WORLD);
          h5.create_group("/tensors");
          for (int k = 0; k < tensors; ++k)
            h5.create_dataset("/tensors/t" + std::to_string(k), DType::BF16,
                              {static_cast<int64_t>(rows), static_cast<int64_t>(kCols)});
          for (int k = 0; k < tensors; ++k) h5.write_rows("/tensors/t" + std::to_string(k), r0, r1 - r0, data.data());
          h5.close();
          sync_file(h5_path);
        });
        h5_gbs.push_back(bytes / t / 1e9);
        if (rank == 0) ::unlink(h5_path.c_str());
      } else {
        const double t = slowest_rank_seconds([&] {
          if (rank == 0) {
            const int fd = ::open(flat_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) fail("cannot create '", flat_path, "': ", std::strerror(errno));
            ::close(fd);
          }
          MPI_Barrier(MPI_COMM_WORLD);
          const int fd = ::open(flat_path.c_str(), O_WRONLY | O_CLOEXEC);
          if (fd < 0) fail("cannot open '", flat_path, "': ", std::strerror(errno));
          for (int k = 0; k < tensors; ++k)
            pwrite_exact(fd, data.data(), data.size() * 2, k * tensor_bytes + r0 * kCols * 2, flat_path);
          if (::fsync(fd) != 0) fail("cannot sync '", flat_path, "'");
          ::close(fd);
        });
        flat_gbs.push_back(bytes / t / 1e9);
        if (rank == 0) ::unlink(flat_path.c_str());
      }
      MPI_Barrier(MPI_COMM_WORLD);
    }
  }
  if (rank == 0) ::rmdir(dir.c_str());
  const double h = median(h5_gbs), f = median(flat_gbs);
  if (rank == 0) {
    std::printf("parallel HDF5 (H5Writer, collective): best %.3f GB/s, median %.3f GB/s\n",
                *std::max_element(h5_gbs.begin(), h5_gbs.end()), h);
    std::printf("plain pwrite of the same bytes:       best %.3f GB/s, median %.3f GB/s\n",
                *std::max_element(flat_gbs.begin(), flat_gbs.end()), f);
    std::printf("ratio HDF5 / plain (median) = %.2f (target >= %.2f): %s\n", h / f, kTarget,
                h / f >= kTarget ? "PASS" : "FAIL");
  }
  return h / f >= kTarget ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 1;
  try {
    rc = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_h5_write: error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}
