// The distributed context: MPI, local rank, device, NCCL and the grid's axis communicators, set
// up in a fixed order and torn down in reverse.
#include "recall/dist/context.h"

#include <sstream>

#include "recall/dist/failure.h"
#include "recall/dist/mpi_check.h"
#include "recall/dist/notice.h"
#include "recall/util/error.h"

#ifdef RECALL_HAVE_NCCL
#include <cuda_runtime.h>
#endif

namespace recall::dist {

Context::Context(int* argc, char*** argv, const ContextOptions& options) : options_(options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // FUNNELED: only the main thread calls MPI (the kernels' worker threads never do).
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &thread_level_) != MPI_SUCCESS)
      fail("MPI_Init_thread failed on host ", host_name());
    owns_mpi_ = true;
  } else {
    MPI_Query_thread(&thread_level_);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (thread_level_ < MPI_THREAD_FUNNELED)
    fail("the MPI library gives thread level ", thread_level_, "; expected at least MPI_THREAD_FUNNELED (",
         MPI_THREAD_FUNNELED, ")");
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_));
  host_ = host_name();
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_));
  MPI_CHECK(MPI_Comm_rank(node_, &local_rank_));
  MPI_CHECK(MPI_Comm_size(node_, &local_size_));
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &control_));
  watch_failure_notices(control_);  // the polling waits stop on a failing rank's notice (notice.h)

  // MPI until a device is set: set_device agrees on it first (over the control communicator).
  const Device wanted = options_.device;
  options_.device = Device::Cpu;
  world_comm_ = make_mpi_communicator(MPI_COMM_WORLD, options_.comm);
  if (wanted == Device::Cuda) set_device(Device::Cuda, "device");
}

std::string Context::device_problem(Device device, const std::string& setting, int* index) const {
  *index = -1;
  if (device != Device::Cuda) return "";
#ifdef RECALL_HAVE_NCCL
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    return setting + " is cuda but this node has no CUDA device (cudaGetDeviceCount: " +
           (e == cudaSuccess ? std::string("0 devices") : std::string(cudaGetErrorString(e))) + ", on host " +
           host_ + "); use " + setting + ": cpu";
  if (local_size_ > count)
    return setting + " is cuda and " + std::to_string(local_size_) + " ranks on host " + host_ + " share " +
           std::to_string(count) + " GPUs; NCCL refuses two ranks on one GPU. ---> HINT: launch " +
           std::to_string(count) + " ranks per node (e.g. srun --ntasks-per-node=" + std::to_string(count) + ")";
  const int chosen = local_rank_ % count;
  if (const cudaError_t set = cudaSetDevice(chosen); set != cudaSuccess)
    return "cudaSetDevice(" + std::to_string(chosen) + ") failed on host " + host_ + ": " + cudaGetErrorString(set);
  *index = chosen;
  return "";
#else
  return setting + " is cuda but this build of recall has no CUDA/NCCL backend (host " + host_ +
         "); use " + setting + ": cpu, or rebuild with -DRECALL_WITH_NCCL=ON";
#endif
}

void Context::set_device(Device device, const std::string& setting) {
  if (grid_) fail("distributed context: set the device before the grid");
  // Every rank checks its node, then all agree before any rank starts the collective NCCL set-up:
  // a rank without a GPU fails every rank at once instead of leaving the others in ncclCommInitRank.
  AgreementOptions agreement;
  agreement.timeout_s = 120;  // the check is local; a rank this late is stuck (a CUDA driver hanging at start-up)
  int index = -1;
  const Verdict v = agree(control_, where(), "device", device_problem(device, setting, &index), agreement);
  if (!v.ok()) throw CollectiveError(v);
  options_.device = device;
  device_index_ = index;
  world_comm_ = make_comm(MPI_COMM_WORLD);
}

Context::~Context() {
  // Reverse order of construction; errors are ignored (destructors do not throw).
  free_grid();
  world_comm_.reset();
  if (control_ != MPI_COMM_NULL) {
    watch_failure_notices(MPI_COMM_NULL);
    MPI_Comm_free(&control_);
  }
  if (node_ != MPI_COMM_NULL) MPI_Comm_free(&node_);
  if (owns_mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

std::unique_ptr<Communicator> Context::make_comm(MPI_Comm comm) const {
  if (options_.device == Device::Cuda) return make_nccl_communicator(comm, device_index_, options_.comm);
  return make_mpi_communicator(comm, options_.comm);
}

void Context::free_grid() {
  for (auto* axes : {&stage_axis_, &model_axis_}) {
    for (auto& [index, axis] : *axes) {
      axis.comm.reset();
      if (axis.mpi != MPI_COMM_NULL) MPI_Comm_free(&axis.mpi);
    }
    axes->clear();
  }
  grid_.reset();
}

void Context::set_grid(const Grid& grid) {
  if (grid.world() != world_)
    fail("grid placed for ", grid.world(), " ranks but the job runs on ", world_);
  free_grid();
  grid_ = grid;
  MPI_Group world_group;
  MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  // MPI_Comm_create over the world, once per axis, in the same order on every rank; the groups of
  // one kind overlap when a rank owns cells of several stages, so they cannot share one split.
  auto create = [&](const std::vector<int>& ranks) {
    MPI_Group g;
    MPI_CHECK(MPI_Group_incl(world_group, static_cast<int>(ranks.size()), ranks.data(), &g));
    MPI_Comm c = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_create(MPI_COMM_WORLD, g, &c));
    MPI_Group_free(&g);
    return c;
  };
  for (int s = 0; s < grid.stages(); ++s) {
    const MPI_Comm c = create(grid.model_axis_ranks(s));
    if (c != MPI_COMM_NULL) model_axis_[s].mpi = c;
  }
  for (int m = 0; m < grid.models(); ++m) {
    const MPI_Comm c = create(grid.stage_axis_ranks(m));
    if (c != MPI_COMM_NULL) stage_axis_[m].mpi = c;
  }
  MPI_Group_free(&world_group);
  // Backend communicators (NCCL init blocks until all members join): every rank initialises its
  // axes in one global order (model axes by stage, then stage axes by model), so no cycle waits.
  for (auto* axes : {&model_axis_, &stage_axis_})
    for (auto& [index, axis] : *axes) axis.comm = make_comm(axis.mpi);
}

const Grid& Context::grid() const {
  if (!grid_) fail("distributed context: no grid set (call set_grid first)");
  return *grid_;
}

Communicator& Context::model_axis(int stage) {
  auto it = model_axis_.find(stage);
  if (it == model_axis_.end())
    fail(where(), " is not on the model axis of stage ", stage, " (it owns no cell of that stage)");
  return *it->second.comm;
}

Communicator& Context::stage_axis(int model) {
  auto it = stage_axis_.find(model);
  if (it == stage_axis_.end())
    fail(where(), " is not on the stage axis of model ", model, " (it owns no cell of that model)");
  return *it->second.comm;
}

std::string Context::where() const {
  std::ostringstream os;
  os << "rank " << rank_ << " (host " << host_;
  if (grid_) os << ", cells " << grid_->describe_cells(rank_);
  os << ")";
  return os.str();
}

std::string Context::versions() const {
  char lib[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(lib, &len);
  std::string mpi(lib, static_cast<size_t>(len));
  if (const auto nl = mpi.find('\n'); nl != std::string::npos) mpi.resize(nl);
  while (!mpi.empty() && (mpi.back() == ',' || mpi.back() == ' ' || mpi.back() == '\0')) mpi.pop_back();
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  std::ostringstream os;
  os << "mpi: " << mpi << " (MPI " << major << "." << minor << ", thread level "
     << (thread_level_ >= MPI_THREAD_MULTIPLE ? "multiple" : thread_level_ >= MPI_THREAD_SERIALIZED
             ? "serialized" : thread_level_ >= MPI_THREAD_FUNNELED ? "funneled" : "single")
     << ")\n";
  os << "nccl: " << (have_nccl() ? nccl_version() : std::string("not built")) << "\n";
  os << "ranks: " << world_ << " (" << local_size_ << " on host " << host_ << "); device "
     << (options_.device == Device::Cuda ? "cuda:" + std::to_string(device_index_) : std::string("cpu"))
     << ", communicators " << backend_name(world_comm_->backend()) << "\n";
  return os.str();
}

}  // namespace recall::dist
