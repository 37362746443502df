// Communication benchmark: recall's all-gather (MPI backend, blocking and under the watchdog)
// and merge exchange against raw MPI calls moving the same bytes in the same run, with ratios.
// Run: mpirun -np 2 --oversubscribe build/bin/bench_comm [--mib 1,16,64] [--iters 10]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "mpi_timing.h"
#include "recall/dist/collectives.h"
#include "recall/dist/comm.h"
#include "recall/dist/context.h"
#include "recall/dist/exchange.h"
#include "recall/dist/failure.h"

using namespace recall;
using namespace recall::dist;

namespace {

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Medians of the reference and of recall's call, measured alternately (reference first on even
// iterations, second on odd ones) so that load from other processes hits both alike.
std::pair<double, double> time_pair(const std::function<void()>& ref, const std::function<void()>& ours,
                                    int iters) {
  ref();  // warm-up: connections, page faults
  ours();
  std::vector<double> a, b;
  for (int i = 0; i < iters; ++i) {
    if (i % 2 == 0) {
      a.push_back(slowest_rank_seconds(ref));
      b.push_back(slowest_rank_seconds(ours));
    } else {
      b.push_back(slowest_rank_seconds(ours));
      a.push_back(slowest_rank_seconds(ref));
    }
  }
  return {median(a), median(b)};
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::atoi(item.c_str()));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Context ctx(&argc, &argv);
  std::vector<int> mibs = {1, 16, 64};
  int iters = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--mib") mibs = parse_list(argv[i + 1]);
    if (std::string(argv[i]) == "--iters") iters = std::atoi(argv[i + 1]);
  }
  const int P = ctx.world(), me = ctx.rank();
  const bool root = me == 0;
  if (root) std::printf("%s", ctx.versions().c_str());
  try {
    auto plain = make_mpi_communicator(MPI_COMM_WORLD);
    CommOptions wd;
    wd.timeout_s = 300;
    auto watched = make_mpi_communicator(MPI_COMM_WORLD, wd);

    if (root)
      std::printf("\nall-gather, %d ranks; GB/s = bytes received per rank / time (median of %d)\n"
                  "%10s %12s %12s %8s %12s %8s %12s %12s %8s\n",
                  P, iters, "MiB/rank", "raw Allgather", "recall", "ratio", "recall+wd", "ratio",
                  "raw Allgatherv", "recall-v", "ratio");
    for (int mib : mibs) {
      const size_t n = static_cast<size_t>(mib) * (1 << 20) / 4;
      std::vector<float> send(n, 1.0f + me), recv(n * P);
      const double bytes = static_cast<double>(n) * 4 * P;
      auto raw_op = [&] {
        MPI_Allgather(send.data(), static_cast<int>(n), MPI_FLOAT, recv.data(), static_cast<int>(n),
                      MPI_FLOAT, MPI_COMM_WORLD);
      };
      const std::vector<size_t> eq(P, n);
      const auto [raw, ours] = time_pair(raw_op, [&] { plain->all_gather_v(send.data(), recv.data(), eq, DType::F32); }, iters);
      const auto [raw2, ours_wd] = time_pair(raw_op, [&] { watched->all_gather_v(send.data(), recv.data(), eq, DType::F32); }, iters);
      // Unequal pieces: rank r sends n - r * (n / (2P)) elements.
      std::vector<size_t> uneq(P);
      std::vector<int> c(P), d(P);
      int off = 0;
      for (int r = 0; r < P; ++r) {
        uneq[r] = n - r * (n / (2 * P));
        c[r] = static_cast<int>(uneq[r]);
        d[r] = off;
        off += c[r];
      }
      const auto [rawv, oursv] = time_pair([&] {
        MPI_Allgatherv(send.data(), c[me], MPI_FLOAT, recv.data(), c.data(), d.data(), MPI_FLOAT, MPI_COMM_WORLD);
      }, [&] { plain->all_gather_v(send.data(), recv.data(), uneq, DType::F32); }, iters);
      if (root)
        std::printf("%10d %12.2f %12.2f %8.3f %12.2f %8.3f %12.2f %12.2f %8.3f\n", mib, bytes / raw / 1e9,
                    bytes / ours / 1e9, raw / ours, bytes / ours_wd / 1e9, raw2 / ours_wd,
                    static_cast<double>(off) * 4 / rawv / 1e9, static_cast<double>(off) * 4 / oursv / 1e9,
                    rawv / oursv);
    }

    // Stage hand-over (the pipelined extraction): rank 0 sends, rank 1 receives. recall's
    // send_bytes/recv_bytes are MPI_Isend/MPI_Irecv polled with the failure-notice probe; the
    // reference is what they were before, blocking MPI_Send/MPI_Recv of the same bytes.
    if (P >= 2) {
      if (root)
        std::printf("\nstage hand-over, rank 0 -> rank 1; GB/s = bytes / time (median of %d)\n%10s %12s %12s %8s\n",
                    iters, "KiB", "raw Send/Recv", "recall", "ratio");
      for (int kib : {7, 64, 1024, 16384}) {
        std::vector<char> buf(static_cast<size_t>(kib) * 1024, static_cast<char>(me));
        const int n = static_cast<int>(buf.size());
        const auto [raw, ours] = time_pair([&] {
          if (me == 0) MPI_Send(buf.data(), n, MPI_BYTE, 1, 5, MPI_COMM_WORLD);
          if (me == 1) MPI_Recv(buf.data(), n, MPI_BYTE, 0, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }, [&] {
          if (me == 0) send_bytes(MPI_COMM_WORLD, buf.data(), buf.size(), 1, 5);
          if (me == 1) recv_bytes(MPI_COMM_WORLD, buf.data(), buf.size(), 0, 5);
        }, iters);
        if (root) std::printf("%10d %12.2f %12.2f %8.3f\n", kib, n / raw / 1e9, n / ours / 1e9, raw / ours);
      }
    }

    // Merge exchange: M = P models x 1 stage, so each rank owns one model's tensor; bf16 [R, 4096].
    if (root)
      std::printf("\nmerge exchange, %d models x 1 stage on %d ranks, bf16 [R, 4096]; GB/s = bytes "
                  "received per rank / time\n%10s %12s %12s %8s %14s %8s %14s %12s\n",
                  P, P, "MiB/model", "raw Scatterv", "recall scat", "ratio", "raw Allgather*", "ratio",
                  "exchange+sum", "sum only");
    GridSpec spec;
    spec.models = P;
    spec.stages = 1;
    spec.block_bytes = {1};
    const Grid grid(spec, P);
    ctx.set_grid(grid);
    Communicator& axis = ctx.model_axis(0);
    std::vector<double> weights(P, 1.0 / P);
    for (int mib : mibs) {
      const int64_t cols = 4096;
      const int64_t rows = static_cast<int64_t>(mib) * (1 << 20) / (cols * 2);
      std::vector<uint16_t> tensor(rows * cols);
      for (size_t i = 0; i < tensor.size(); ++i) tensor[i] = float_to_bf16(0.001f * (i % 1000) + me);
      std::vector<size_t> counts(P);
      std::vector<int> c(P), d(P);
      for (int r = 0; r < P; ++r) {
        counts[r] = static_cast<size_t>(row_range(rows, P, r).count() * cols);
        c[r] = static_cast<int>(counts[r]);
        d[r] = static_cast<int>(row_range(rows, P, r).first * cols);
      }
      std::vector<std::vector<uint16_t>> got(P, std::vector<uint16_t>(counts[me]));
      const double recv_bytes = static_cast<double>(counts[me]) * 2 * P;
      const auto [raw, ours] = time_pair([&] {
        for (int m = 0; m < P; ++m)
          MPI_Scatterv(tensor.data(), c.data(), d.data(), MPI_UINT16_T, got[m].data(), c[me], MPI_UINT16_T, m,
                       MPI_COMM_WORLD);
      }, [&] {
        for (int m = 0; m < P; ++m) axis.scatter_v(tensor.data(), counts, got[m].data(), DType::BF16, m);
      }, iters);
      // The same bytes received per rank, moved by one raw MPI_Allgather.
      const int per = static_cast<int>(counts[me]);
      std::vector<uint16_t> ag_send(per), ag_recv(static_cast<size_t>(per) * P);
      const auto [raw_ag, ours2] = time_pair([&] {
        MPI_Allgather(ag_send.data(), per, MPI_UINT16_T, ag_recv.data(), per, MPI_UINT16_T, MPI_COMM_WORLD);
      }, [&] {
        for (int m = 0; m < P; ++m) axis.scatter_v(tensor.data(), counts, got[m].data(), DType::BF16, m);
      }, iters);
      ExchangeTensor t;
      t.rows = rows;
      t.cols = cols;
      t.local[me] = tensor.data();
      std::vector<double> full_t, sum_t;
      ExchangeWorkspace ws;
      std::vector<uint16_t> merged(counts[me]);
      merge_exchange_into(axis, grid, 0, me, t, weights, merged.data(), ws, 1);  // warm-up
      for (int i = 0; i < iters; ++i)
        full_t.push_back(slowest_rank_seconds([&] { merge_exchange_into(axis, grid, 0, me, t, weights, merged.data(), ws, 1); }));
      const double full = median(full_t);
      std::vector<const void*> in(P);
      for (int m = 0; m < P; ++m) in[m] = got[m].data();
      std::vector<uint16_t> out(counts[me]);
      for (int i = 0; i < iters; ++i)
        sum_t.push_back(slowest_rank_seconds([&] {
          weighted_sum_rows(in.data(), P, DType::BF16, weights.data(), counts[me] / cols, cols, DType::BF16,
                            out.data(), 1);
        }));
      const double sum = median(sum_t);
      if (root)
        std::printf("%10d %12.2f %12.2f %8.3f %14.2f %8.3f %14.2f %12.2f\n", mib, recv_bytes / raw / 1e9,
                    recv_bytes / ours / 1e9, raw / ours, recv_bytes / raw_ag / 1e9, raw_ag / ours2,
                    recv_bytes / full / 1e9, (recv_bytes + counts[me] * 2.0) / sum / 1e9);
    }
    if (root)
      std::printf("(ratio = raw time / recall time; >= 0.9 is the target. * raw Allgather receiving the "
                  "same bytes per rank as the exchange. sum only: bytes read + written by the kernel.)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm: rank %d: %s\n", me, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
