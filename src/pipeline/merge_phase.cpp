// The merge phase: writers, resume checkpoints, progress lines, metadata (see merge_phase.h).
#include "recall/pipeline/merge_phase.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <nlohmann/json.hpp>

#include "recall/build_id.h"
#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/io/h5_reader.h"
#include "recall/pipeline/checksums.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fault.h"
#include "recall/util/fs.h"
#include "recall/util/format.h"
#include "recall/util/progress.h"

namespace recall {

namespace {

using ojson = nlohmann::ordered_json;

// Cumulative input bytes per rank behind the tensors still to merge, in merge order (progress lines).
std::vector<double> cumulative_input_bytes(const MergeInputs& in, const std::set<std::string>& done, int world) {
  std::vector<double> out;
  double sum = 0;
  for (size_t s = 0; s < in.slots.size(); ++s) {
    if (done.count(in.slots[s].name)) continue;
    for (size_t m = 0; m < in.models.size(); ++m) sum += static_cast<double>(in.slot_bytes[m][s]);
    out.push_back(sum / world);
  }
  return out;
}

// What produced these tensors, for people and tools that read merged.h5 alone (collective).
void write_metadata(H5Writer& h5, const MergeConfig& cfg, const MergeInputs& in, const MergeReport& report,
                    const std::string& resolved_yaml, int world) {
  const size_t L = report.blocks.size(), M = in.models.size();
  if (!h5.exists("/recall")) h5.create_group("/recall");
  if (L > 0 && !h5.exists("/recall/weights")) {
    std::vector<double> s(L * M), w(L * M), sig(L);
    for (size_t l = 0; l < L; ++l) {
      sig[l] = report.blocks[l].sigma2;
      for (size_t m = 0; m < M; ++m) s[l * M + m] = report.blocks[l].similarity[m], w[l * M + m] = report.blocks[l].weights[m];
    }
    const std::vector<int64_t> lm = {static_cast<int64_t>(L), static_cast<int64_t>(M)};
    h5.write_small("/recall/similarity", DType::F64, lm, s.data());
    h5.write_small("/recall/weights", DType::F64, lm, w.data());
    h5.write_small("/recall/sigma2", DType::F64, {static_cast<int64_t>(L)}, sig.data());
    h5.write_small("/recall/typical_samples", DType::I64, {static_cast<int64_t>(report.typical_samples.size())},
                   report.typical_samples.data());
  }
  // The parameters every tensor was merged with, resolved, for `recall export`'s model card (a
  // dataset, not an attribute: a 70B model's list passes HDF5's 64 KiB attribute limit).
  if (!h5.exists("/recall/tensor_params")) {
    const std::string text = ojson(report.tensor_params).dump();
    h5.write_small("/recall/tensor_params", DType::U8, {static_cast<int64_t>(text.size())}, text.data());
  }
  ojson models = ojson::array();
  for (size_t m = 0; m < M; ++m)
    models.push_back({{"name", cfg.models[m].name}, {"path", cfg.models[m].path},
                      {"bytes", in.models[m].checkpoint.total_bytes()}});
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  ojson provenance = {{"tool", "recall"}, {"version", RECALL_VERSION}, {"git_revision", RECALL_GIT_REVISION},
                      {"time_utc", utc_now()}, {"host", host}, {"world_size", world}, {"inputs", models}};
  h5.set_attribute("/", "architecture_config", in.output_config_json);
  h5.set_attribute("/", "merge_config", resolved_yaml);
  h5.set_attribute("/", "provenance", provenance.dump());
  h5.set_attribute("/", "method", cfg.method->name);
  h5.set_attribute("/", "models", models.dump());
}

}  // namespace

namespace {

// The outputs of a merge phase, opened on every rank: merged.h5 (when the config writes it) and
// the HF shards (when it writes them), fresh or, on resume, as the interrupted job left them.
struct Outputs {
  std::unique_ptr<H5Writer> h5;
  HfShardWriter* hf = nullptr;
  std::set<std::string> done;  // tensors an interrupted job merged and synced
};

Outputs open_outputs(MPI_Comm comm, const MergeConfig& cfg, const OutputDir& out, bool resume, HfShardWriter& hf,
                     const Log& log, size_t tensors) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const bool h5 = cfg.output.writes(OutputFormat::H5), shards = cfg.output.writes(OutputFormat::Hf);
  Outputs o;
  // Tensors an interrupted job merged: only when its shards and merged.h5 survived with them
  // (rank 0 looks; a failure to read progress.txt or the shards is agreed on, not a lonely throw).
  bool outputs_ok = false;
  dist::agreed(comm, [&] {
    o.done = resume ? out.merged_tensors() : std::set<std::string>{};
    outputs_ok = rank == 0 && !o.done.empty() && (!shards || hf.intact()) && (!h5 || path_exists(out.h5()));
  });
  if (!dist::broadcast_flag(comm, outputs_ok, 0)) o.done.clear();
  if (!o.done.empty() && h5) {
    try {
      o.h5 = std::make_unique<H5Writer>(out.h5(), comm, H5Writer::Mode::Append);
    } catch (const std::exception&) {
      o.done.clear();  // the same unreadable file on every rank: start the merge over
    }
  }
  if (o.done.empty()) {
    // Rank 0 creates the files, inside an agreement: a full disk here fails every rank with its
    // message, and the agreement orders the creation before any rank opens the shards.
    dist::agreed(comm, [&] {
      if (rank != 0) return;
      out.start_progress();
      if (shards) hf.create();
    });
    if (h5) o.h5 = std::make_unique<H5Writer>(out.h5(), comm);
  } else {
    log("resuming: ", o.done.size(), " of ", tensors, " tensors already merged");
  }
  if (shards) {
    dist::agreed(comm, [&] { hf.open(); });
    o.hf = &hf;
  }
  return o;
}

}  // namespace

MergeStats run_merge_phase(MPI_Comm comm, const MergeConfig& cfg, const MergeInputs& in,
                           const std::vector<TensorParams>& params, const OutputDir& out, bool resume,
                           HfShardWriter& hf, const MergeReport& report, const std::string& resolved_yaml,
                           const Log& log, const StatisticsStore* statistics) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const std::string h5_path = out.h5();
  Outputs o = open_outputs(comm, cfg, out, resume, hf, log, in.slots.size());
  H5Writer* h5 = o.h5.get();

  // Resume checkpoints: every checkpoint_bytes of merged output (the same tensors on every rank,
  // so every rank checkpoints after the same tensor) each rank syncs what it wrote, then rank 0
  // records the tensors merged since the last checkpoint; each part is agreed on, so a failed
  // fsync or a full disk fails every rank with its message. progress.txt never lists a tensor
  // whose bytes could be lost with the node.
  std::vector<std::string> pending;
  uint64_t since_checkpoint = 0;
  int64_t checkpoints = 0;
  auto checkpoint = [&] {
    if (h5 && h5->is_open()) h5->flush();  // collective: every rank checkpoints after the same tensor
    ++checkpoints;
    dist::agreed(comm, [&] {
      fault_point("checkpoint", rank, checkpoints);
      if (h5) sync_file(h5_path);
      if (o.hf) o.hf->sync();
    });
    dist::agreed(comm, [&] {
      if (rank != 0) return;
      fault_point("record", rank, checkpoints);
      out.record_merged(pending);
    });
    pending.clear();
    since_checkpoint = 0;
  };
  // Progress with an ETA from rank 0: a plain line every 5 s and at the end (batch logs such as
  // slurm-%j.out; under mpirun stdout is a pty, so no terminal tricks).
  const auto started = std::chrono::steady_clock::now();
  auto last = started;
  const std::vector<double> progress_bytes = cumulative_input_bytes(in, o.done, world);
  const size_t todo = progress_bytes.size();
  std::map<std::string, uint64_t> out_bytes;
  for (const TensorSpec& t : hf.specs()) out_bytes[t.name] = t.nbytes();
  // merged.h5 is written through HDF5; a descriptor of our own lets us start its writeback too.
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } h5_fd{h5 ? ::open(h5_path.c_str(), O_RDONLY | O_CLOEXEC) : -1};
  int64_t merged_now = 0;
  MergeStats ms = merge_tensors(h5, comm, cfg, in, params, !o.done.empty(), o.done, o.hf, [&](const std::string& name) {
    if (h5_fd.fd >= 0) start_writeback(h5_fd.fd);
    pending.push_back(name);
    since_checkpoint += out_bytes.at(name);
    if (since_checkpoint >= cfg.output.checkpoint_bytes) checkpoint();
    fault_point("merge", rank, ++merged_now);
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(5) && merged_now < static_cast<int64_t>(todo)) return;
    last = now;
    const double t = std::chrono::duration<double>(now - started).count();
    const double eta = t / merged_now * (static_cast<double>(todo) - merged_now);
    const double gb = progress_bytes[merged_now - 1] / 1e9;
    log("merge: ", merged_now, "/", todo, " tensors, ", gb, " GB read per rank (", gb / std::max(t, 1e-9),
        " GB/s), ETA ", static_cast<int64_t>(eta), " s");
  }, statistics);
  if (ms.aborted) {
    if (h5) h5->close();
    if (!ms.error.empty()) throw Error(ms.error);
    return ms;  // another rank failed: the caller's agreement reports its error
  }
  if (h5) {
    write_metadata(*h5, cfg, in, report, resolved_yaml, world);
    h5->close();
  }
  checkpoint();  // everything merged is on disk before the checksums and the commit
  return ms;
}

std::map<std::string, uint64_t> write_checksums(MPI_Comm comm, const MergeConfig& cfg, const std::string& h5_path,
                                                HfShardWriter& hf, const MergeInputs& in,
                                                const std::map<size_t, uint64_t>& known, const Log& log) {
  std::unique_ptr<ProgressMeter> meter;
  const ChecksumProgress progress = [&](int64_t done, int64_t total) {
    if (!meter) meter = std::make_unique<ProgressMeter>(total, "tensors");
    if (meter->advance(done - meter->done())) log("checksums: read back ", meter->line(), " (rank 0's share)");
  };
  std::map<std::string, uint64_t> checksums;
  if (cfg.output.writes(OutputFormat::Hf)) {
    checksums = hf_checksums(comm, hf, known, progress);
  } else {
    std::vector<std::string> names;
    for (const TensorSlot& s : in.slots) names.push_back(s.name);
    std::unique_ptr<H5Reader> reader;  // opened by the ranks that read something back
    checksums = collective_checksums(comm, names, known, [&](size_t t) {
      if (!reader) reader = std::make_unique<H5Reader>(h5_path);
      const std::vector<uint8_t> bytes = reader->read("/tensors/" + names[t]);
      return xxh3_64(bytes.data(), bytes.size());
    }, progress);
  }
  if (cfg.output.writes(OutputFormat::H5)) {
    H5Writer h5(h5_path, comm, H5Writer::Mode::Append);
    for (const TensorSlot& s : in.slots)
      h5.set_attribute("/tensors/" + s.name, "xxh3_64", checksum_hex(checksums.at(s.name)));
    h5.close();
  }
  hf.close();
  return checksums;
}

void gather_merge_totals(MPI_Comm comm, const MergeConfig& cfg, const MergeInputs& in, const MergeStats& ms, uint64_t planned,
                         const MemoryPeaks& peaks, MergeReport* report) {
  int world = 1;
  MPI_Comm_size(comm, &world);
  std::vector<uint64_t> total = {ms.bytes_read, ms.bytes_written};
  dist::all_reduce(comm, total, dist::ReduceOp::Sum);
  report->bytes_read = total[0];
  report->merge_bytes_written = total[1];
  // The same bytes go to each output the config asks for (merged.h5, the shards).
  report->export_bytes_written = cfg.output.writes(OutputFormat::Hf) ? total[1] : 0;
  report->bytes_written = total[1] * cfg.output.formats.size();
  const std::vector<double> loops = dist::all_gather(comm, std::vector<double>{ms.wait_seconds, ms.merge_seconds,
                                                                               ms.write_seconds});
  for (int r = 0; r < world; ++r)
    report->merge_loop_seconds.push_back({loops[3 * r], loops[3 * r + 1], loops[3 * r + 2]});
  // RegMean's condition estimates, from the ranks that solved them: "<slot> <rcond>" lines.
  std::string rcond;
  for (const auto& [slot, value] : ms.rcond) rcond += std::to_string(slot) + " " + shortest_number(value) + "\n";
  std::istringstream lines(dist::all_gather_bytes(comm, rcond));
  for (size_t slot = 0; lines >> slot;) lines >> report->rcond[in.slots.at(slot).name];
  const std::vector<uint64_t> all =
      dist::all_gather(comm, std::vector<uint64_t>{planned, peaks.anon(), peaks.file(), peaks.hwm()});
  for (int r = 0; r < world; ++r)
    report->memory.push_back({all[4 * r], all[4 * r + 1], all[4 * r + 2], all[4 * r + 3]});
}

}  // namespace recall
