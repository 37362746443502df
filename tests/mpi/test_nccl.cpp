// The NCCL backend gives the MPI backend's results (all-gather-v with padding, broadcast,
// all-reduce, scatter-v) on device buffers. Runs where recall has NCCL and every rank of the node
// has its own GPU (NCCL refuses two ranks on one GPU); skipped elsewhere (CI has no GPU).
#include <gtest/gtest.h>
#include <mpi.h>

#include "recall/dist/comm.h"

#ifdef RECALL_HAVE_NCCL
#include <cuda_runtime.h>
#endif

using namespace recall;
using namespace recall::dist;

#ifdef RECALL_HAVE_NCCL
namespace {

int usable_device() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return -1;
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0, local_size = 1;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  int ok = local_size <= count ? 1 : 0, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all_ok ? local % count : -1;
}

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  void put(const std::vector<T>& v) { EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  T* p = nullptr;
  size_t n;
};

}  // namespace

TEST(MpiNccl, MatchesTheMpiBackend) {
  const int device = usable_device();
  if (device < 0) GTEST_SKIP() << "no GPU for every rank of this node";
  auto mpi = make_mpi_communicator(MPI_COMM_WORLD);
  CommOptions opt;
  opt.timeout_s = 60;
  auto nccl = make_nccl_communicator(MPI_COMM_WORLD, device, opt);
  const int me = mpi->rank(), P = mpi->size();
  ASSERT_EQ(nccl->rank(), me);

  // All-gather-v with unequal pieces (padding path when P > 1) and equal pieces.
  for (bool equal : {false, true}) {
    std::vector<size_t> counts(P);
    for (int r = 0; r < P; ++r) counts[r] = equal ? 1000 : 1000 + 37 * r;
    size_t total = 0;
    for (size_t c : counts) total += c;
    std::vector<float> mine(counts[me]);
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = me * 1e4f + i;
    std::vector<float> host_out(total);
    mpi->all_gather_v(mine.data(), host_out.data(), counts, DType::F32);
    DeviceBuffer<float> dsend(mine.size()), drecv(total);
    dsend.put(mine);
    nccl->all_gather_v(dsend.p, drecv.p, counts, DType::F32);
    ASSERT_EQ(drecv.get(), host_out) << (equal ? "equal" : "unequal") << " pieces";
  }
  // Broadcast from the last rank, all-reduce sum/max, scatter-v from rank 0.
  std::vector<double> b(513, -1.0);
  if (me == P - 1)
    for (size_t i = 0; i < b.size(); ++i) b[i] = 0.5 * i;
  DeviceBuffer<double> db(b.size());
  db.put(b);
  nccl->broadcast(db.p, b.size(), DType::F64, P - 1);
  mpi->broadcast(b.data(), b.size(), DType::F64, P - 1);
  ASSERT_EQ(db.get(), b);
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
    std::vector<int32_t> x(100), want(100);
    for (int i = 0; i < 100; ++i) x[i] = (me + 1) * (i - 50);
    mpi->all_reduce(x.data(), want.data(), 100, DType::I32, op);
    DeviceBuffer<int32_t> dx(100);
    dx.put(x);
    nccl->all_reduce(dx.p, dx.p, 100, DType::I32, op);
    ASSERT_EQ(dx.get(), want);
  }
  std::vector<size_t> counts(P);
  size_t total = 0;
  for (int r = 0; r < P; ++r) total += counts[r] = 10 + r;
  std::vector<uint16_t> all(total);
  for (size_t i = 0; i < total; ++i) all[i] = static_cast<uint16_t>(i * 7);
  std::vector<uint16_t> want(counts[me]);
  mpi->scatter_v(all.data(), counts, want.data(), DType::BF16, 0);
  DeviceBuffer<uint16_t> dall(total), dmine(counts[me]);
  dall.put(all);
  nccl->scatter_v(dall.p, counts, dmine.p, DType::BF16, 0);
  ASSERT_EQ(dmine.get(), want);
  nccl->barrier();
}

#else

TEST(MpiNccl, NotBuiltFailsClearly) {
  try {
    make_nccl_communicator(MPI_COMM_WORLD, 0);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("the NCCL backend is not in this build"), std::string::npos);
  }
}

#endif
