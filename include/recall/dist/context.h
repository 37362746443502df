// The one distributed context of a job: MPI, local rank, device, NCCL, and the grid's model-axis
// and stage-axis communicators, set up in that order and torn down in reverse.
//
// Axes when a rank owns several cells. The grid assigns cells model-major in contiguous runs, so
// for a fixed stage s the owners of cells (0,s), (1,s), .., (M-1,s) form an ascending rank list
// in which one rank may appear for several consecutive models. The *model axis at stage s* is the
// communicator over those distinct ranks (ascending). A collective along it has each member
// contribute the data of all its cells of stage s, concatenated in model order; since owners
// ascend with the model, the rank-ordered result is in model order 0..M-1. A rank owning cells of
// several stages is a member of several model-axis communicators, one per stage (likewise the
// *stage axis of model m*: the distinct owners of (m,0), .., (m,S-1), the pipeline of model m).
// Ranks outside an axis hold no communicator for it.
#pragma once

#include <mpi.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "recall/dist/comm.h"
#include "recall/dist/grid.h"
#include "recall/util/device.h"

namespace recall::dist {

struct ContextOptions {
  Device device = Device::Cpu;  // cuda: one GPU per rank, local rank % device count
  CommOptions comm;                     // watchdog for every communicator the context makes
};

class Context {
 public:
  // Initialises MPI with MPI_THREAD_FUNNELED (only the main thread calls MPI; worker threads do
  // compute) unless the caller already did (tests' main); in that case finalize is left to it.
  // Then: MPI_COMM_WORLD errors return codes (checked by MPI_CHECK), local rank from
  // MPI_Comm_split_type(SHARED), device, and on cuda (with RECALL_HAVE_NCCL) the world NCCL
  // communicator bootstrapped over MPI.
  Context(int* argc, char*** argv, const ContextOptions& options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  Device device() const { return options_.device; }
  int device_index() const { return device_index_; }  // -1 on cpu
  const ContextOptions& options() const { return options_; }

  MPI_Comm world_mpi() const { return MPI_COMM_WORLD; }
  // A private duplicate of MPI_COMM_WORLD for failure agreement (failure.h), so its messages
  // never match anything else in flight.
  MPI_Comm control_mpi() const { return control_; }
  // The world communicator of this context's device (MPI on cpu, NCCL on cuda).
  Communicator& world_comm() { return *world_comm_; }

  // Selects the device once the job knows it (from its config): collective over the world. Every
  // rank checks its node (cuda: a visible GPU for each rank of the node; a build with NCCL), the
  // ranks agree (a problem on any rank throws the same CollectiveError, step 'device', on every
  // rank, naming the rank, its host and `setting`, the config key to change), then the world
  // communicator of the device is built (NCCL on cuda). Before set_grid.
  void set_device(Device device, const std::string& setting);

  // Builds the axis communicators of `grid` (collective over the world: every rank calls it with
  // the same grid). Fails if grid.world() != world(). Replaces any previous grid.
  void set_grid(const Grid& grid);
  bool has_grid() const { return grid_.has_value(); }
  const Grid& grid() const;
  // The model axis at `stage` / stage axis of `model`; fails if this rank is not a member.
  Communicator& model_axis(int stage);
  Communicator& stage_axis(int model);
  bool in_model_axis(int stage) const { return model_axis_.count(stage) > 0; }
  bool in_stage_axis(int model) const { return stage_axis_.count(model) > 0; }

  // "rank 2 (host node07, cells m1.s0 m1.s1)" for messages.
  std::string where() const;
  // MPI library version, thread level, NCCL version, ranks per node and device, one line each.
  std::string versions() const;

 private:
  struct AxisComm {
    MPI_Comm mpi = MPI_COMM_NULL;
    std::unique_ptr<Communicator> comm;
  };
  std::unique_ptr<Communicator> make_comm(MPI_Comm comm) const;
  // This rank's problem with `device` ("" when usable; then *index is its GPU, or -1 on cpu).
  std::string device_problem(Device device, const std::string& setting, int* index) const;
  void free_grid();

  ContextOptions options_;
  bool owns_mpi_ = false;
  int thread_level_ = 0;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1, device_index_ = -1;
  std::string host_;
  MPI_Comm node_ = MPI_COMM_NULL;
  MPI_Comm control_ = MPI_COMM_NULL;
  std::unique_ptr<Communicator> world_comm_;
  std::optional<Grid> grid_;
  std::map<int, AxisComm> model_axis_;  // by stage
  std::map<int, AxisComm> stage_axis_;  // by model
};

}  // namespace recall::dist
