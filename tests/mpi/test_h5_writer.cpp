// Collective failures of the parallel-HDF5 writer on 1..4 ranks: a write limit that only rank 0
// meets (its file-size limit, standing in for a full disk) makes every rank throw the same message,
// naming the file, at the same call, before any rank enters HDF5; the writer then refuses further
// calls and closes without hanging (today's HDF5 1.10.8 splits the ranks inside its own collectives
// when a write fails on some of them). first_error() gives every rank the lowest failing rank's text.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <memory>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpi_world.h"
#include "recall/dist/failure.h"
#include "recall/io/h5_writer.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

using namespace recall;

namespace {

// A directory made by rank 0, known to every rank.
std::string shared_temp_dir() {
  char buf[256] = {0};
  if (world_rank() == 0) {
    std::string tmpl = ::testing::TempDir() + "recall-h5w-XXXXXX";
    tmpl.copy(buf, sizeof buf - 1);
    if (!::mkdtemp(buf)) buf[0] = '\0';
  }
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}

// Rank 0's text, on every rank.
std::string rank0_text(const std::string& mine) {
  uint64_t n = mine.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  std::string s = mine;
  s.resize(n);
  MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  return s;
}

// Lowers this process's file-size limit for the scope (SIGXFSZ ignored, as `recall` does).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit l = saved_;
    l.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &l);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = SIG_DFL;
};

}  // namespace

TEST(MpiFirstError, EveryRankGetsTheLowestFailingRanksText) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int r = world_rank();
  EXPECT_EQ(dist::first_error(MPI_COMM_WORLD, ""), "");
  const std::string mine = r % 2 == 1 || size == 1 ? "disk full on rank " + std::to_string(r) : "";
  EXPECT_EQ(dist::first_error(MPI_COMM_WORLD, mine), size == 1 ? "disk full on rank 0" : "disk full on rank 1");
}

TEST(MpiFirstError, AgreedThrowsTheFailingRanksMessageEverywhere) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int r = world_rank(), bad = size - 1;
  int ran = 0;
  EXPECT_NO_THROW(dist::agreed(MPI_COMM_WORLD, [&] { ++ran; }));
  EXPECT_EQ(ran, 1);
  try {
    dist::agreed(MPI_COMM_WORLD, [&] {
      if (r == bad) fail("cannot write 'x': No space left on device");
    });
    ADD_FAILURE() << "no error on rank " << r;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write 'x': No space left on device");
  }
}

TEST(MpiH5Writer, ALimitOnRankZeroFailsEveryRankAtTheSameCallWithTheSameMessage) {
  const std::string dir = shared_temp_dir();
  ASSERT_FALSE(dir.empty());
  const std::string path = join_path(dir, "merged.h5");
  const int r = world_rank();
  int failed_at = -1;
  std::string message;
  {
    // 512 KiB on rank 0 only; 16 datasets of 64 KiB need more.
    std::unique_ptr<FileSizeLimit> limit(r == 0 ? new FileSizeLimit(512 << 10) : nullptr);
    H5Writer w(path, MPI_COMM_WORLD);
    w.create_group("/t");
    std::vector<float> rows(16384, 1.5f);
    for (int i = 0; i < 16 && failed_at < 0; ++i) {
      try {
        const std::string name = "/t/x" + std::to_string(i);
        w.create_dataset(name, DType::F32, {16384});
        w.write_rows(name, 0, r == 0 ? 16384 : 0, rows.data());
        w.flush();
      } catch (const Error& e) {
        failed_at = i;
        message = e.what();
      }
    }
    // Every rank failed, at the same call, with rank 0's message naming the file and the limit.
    EXPECT_GE(failed_at, 1) << "rank " << r;
    int lo = failed_at, hi = failed_at;
    MPI_Allreduce(&failed_at, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&failed_at, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_EQ(lo, hi);
    EXPECT_EQ(message, rank0_text(message));
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("file-size limit"), std::string::npos) << message;
    // A failed writer refuses further calls with the same message, on every rank, and closes.
    try {
      w.create_group("/u");
      ADD_FAILURE() << "a failed writer accepted a call on rank " << r;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
    EXPECT_NO_THROW(w.close());
  }
  // What was written before the failure is a valid file.
  H5Writer again(path, MPI_COMM_WORLD, H5Writer::Mode::Append);
  EXPECT_TRUE(again.exists("/t/x0"));
  EXPECT_FALSE(again.exists("/u"));
  again.close();
  MPI_Barrier(MPI_COMM_WORLD);
  if (r == 0) remove_tree(dir);
}
