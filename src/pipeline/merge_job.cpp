// The merge job: phases in order, each agreed on by every rank before the next starts.
#include "recall/pipeline/merge_job.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "recall/build_id.h"
#include "recall/dist/failure.h"
#include "recall/dist/grid.h"
#include "recall/io/h5_writer.h"
#include "recall/merge/similarity.h"
#include "recall/merge/weights.h"
#include "recall/pipeline/export.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/hf_shards.h"
#include "recall/pipeline/merge_tensors.h"
#include "recall/pipeline/preflight.h"
#include "recall/pipeline/report.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fault.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

using ojson = nlohmann::ordered_json;

namespace {

class Log {
 public:
  Log(int rank, bool quiet) : on_(rank == 0 && !quiet), t0_(std::chrono::steady_clock::now()) {}
  template <typename... Parts>
  void operator()(Parts&&... parts) const {
    if (!on_) return;
    std::ostringstream os;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[recall %8.2fs] ", t);
    os << stamp;
    (os << ... << parts);
    std::cout << os.str() << std::endl;
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

dist::GridSpec grid_spec(const MergeInputs& in) {
  const ModelConfig& cfg = in.models[in.reference].config;
  dist::GridSpec spec;
  spec.models = static_cast<int>(in.models.size());
  spec.block_bytes.assign(cfg.num_hidden_layers, 0);
  for (size_t i = 0; i < in.slots.size(); ++i) {
    const TensorSlot& s = in.slots[i];
    const uint64_t n = in.slot_bytes[in.reference][i];
    if (s.block >= 0) spec.block_bytes[s.block] += n;
    else if (s.role == Role::Embed) spec.first_stage_extra_bytes += n;
    else spec.last_stage_extra_bytes += n;
  }
  return spec;
}

// The memory plan of one rank, in bytes, and its text.
struct MemoryPlan {
  uint64_t weights = 0, activations = 0, merge_buffers = 0;
  uint64_t total() const { return weights + activations + merge_buffers; }
};

MemoryPlan memory_plan(const MergeConfig& c, const MergeInputs& in, const dist::GridSpec& spec, const dist::Grid* grid,
                       int rank) {
  MemoryPlan p;
  const ModelConfig& cfg = in.models[in.reference].config;
  const size_t M = in.models.size();
  if (grid) {
    // Extraction holds one model's cells at a time, converted to float32 compute.
    uint64_t widest = 0;
    for (const dist::Cell& cell : grid->cells_of(rank)) {
      const auto& st = grid->stage(cell.stage);
      uint64_t b = st.bytes;
      widest = std::max(widest, b);
    }
    p.weights = widest * 2;  // bf16 on disk -> f32 in memory (f32 inputs: an upper bound)
    const uint64_t tokens = static_cast<uint64_t>(c.parallel.micro_batch) * c.max_length;
    uint64_t held = 0;  // streaming: the hidden states of a group of samples
    if (c.parallel.stream_samples > 0) {
      // One block (or the embedding, at stage 0) resident at a time.
      uint64_t largest = 0;
      for (const dist::Cell& cell : grid->cells_of(rank)) {
        const auto& st = grid->stage(cell.stage);
        for (int b = st.first_block; b < st.end_block; ++b) largest = std::max(largest, spec.block_bytes[b]);
        if (cell.stage == 0) largest = std::max(largest, spec.first_stage_extra_bytes);
      }
      p.weights = largest * 2;
      const uint64_t mb = static_cast<uint64_t>(c.parallel.micro_batch);
      const uint64_t group = std::max<uint64_t>(1, static_cast<uint64_t>(c.parallel.stream_samples) / mb) * mb;
      held = group * c.max_length * cfg.hidden_size * 4;
    }
    // Hidden states, attention scores (SDPA fused on CPU is smaller) and the MLP's activations.
    p.activations = held + tokens * 4 * (6 * cfg.hidden_size + 3 * cfg.intermediate_size) +
                    static_cast<uint64_t>(c.parallel.micro_batch) * cfg.num_attention_heads * c.max_length *
                        c.max_length * 4;
  }
  uint64_t largest = 0;
  for (const auto& per_model : in.slot_bytes)
    for (uint64_t b : per_model) largest = std::max(largest, b);
  if (whole_tensor_method(c.method))
    p.merge_buffers = (M + 1) * largest * 2;
  else
    p.merge_buffers = (2 * M + 1) * std::min<uint64_t>(largest, c.parallel.merge_chunk_bytes);  // inputs double-buffered
  return p;
}

std::vector<RepMatrix> block_reps(const Representations& reps, int64_t layer) {
  std::vector<RepMatrix> out;
  for (int64_t m = 0; m < reps.models; ++m) {
    RepMatrix r;
    r.rows = reps.samples;
    r.cols = reps.hidden;
    const float* p = reps.at(m, layer);
    r.values.assign(p, p + reps.samples * reps.hidden);
    out.push_back(std::move(r));
  }
  return out;
}

// What must be equal for a rerun to reuse an interrupted job's work: the resolved config (output
// overwrite aside) and the identity of every input shard (path, size, modification time).
std::string job_key(MergeConfig cfg, const MergeInputs& in) {
  cfg.output.overwrite = false;
  cfg.output.checkpoint_bytes = 0;  // how often progress is saved does not change the result
  std::string text = to_yaml(cfg);
  for (const ModelDir& m : in.models)
    for (const Checkpoint* ckpt : {&m.checkpoint, m.lora ? &m.lora->checkpoint() : nullptr}) {
      if (!ckpt) continue;
      for (const auto& f : ckpt->files()) {
        const int64_t mtime = modification_time_ns(f->path());
        text += f->path() + "\t" + std::to_string(f->file_size()) + "\t" + std::to_string(mtime) + "\n";
      }
    }
  return checksum_hex(xxh3_64(text.data(), text.size())) + "\n";
}

std::string recall_state_json(const MergeReport& r) {
  ojson blocks = ojson::array();
  for (const auto& b : r.blocks)
    blocks.push_back({{"index", b.index}, {"sigma2", b.sigma2}, {"similarity", b.similarity}, {"weights", b.weights}});
  return ojson({{"typical_samples", r.typical_samples}, {"blocks", blocks}}).dump() + "\n";
}

void load_recall_state(const std::string& text, MergeReport* r, std::vector<std::vector<double>>* block_w) {
  const auto j = nlohmann::json::parse(text);
  r->typical_samples = j.at("typical_samples").get<std::vector<int64_t>>();
  r->blocks.clear();
  block_w->clear();
  for (const auto& b : j.at("blocks")) {
    r->blocks.push_back({b.at("index").get<int64_t>(), b.at("sigma2").get<double>(),
                         b.at("similarity").get<std::vector<double>>(), b.at("weights").get<std::vector<double>>()});
    block_w->push_back(r->blocks.back().weights);
  }
}

// Cumulative input bytes per rank behind the tensors still to merge, in merge order (progress lines).
std::vector<double> cumulative_input_bytes(const MergeInputs& in, const std::set<std::string>& done, int world) {
  std::vector<double> out;
  double sum = 0;
  for (const TensorSlot& s : in.slots) {
    if (done.count(s.name)) continue;
    for (const ModelDir& m : in.models) sum += static_cast<double>(m.checkpoint.at(s.name).info->nbytes());
    out.push_back(sum / world);
  }
  return out;
}

void append_lines(const std::string& path, const std::string& lines) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("cannot append to '", path, "'");
  const bool ok = std::fputs(lines.c_str(), f) >= 0 && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail("cannot append to '", path, "' (disk full?)");
}

}  // namespace

MergeConfig run_merge_job(dist::Context& ctx, const MergeJobOptions& opt) {
  const int rank = ctx.rank(), world = ctx.world();
  MPI_Comm comm = ctx.world_mpi(), control = ctx.control_mpi();
  const std::string where = ctx.where();
  Log log(rank, opt.quiet);
  auto step = [&](const std::string& name, auto&& fn) {
    return dist::run_collectively(control, where, name, std::forward<decltype(fn)>(fn));
  };
  MergeReport report;
  auto timed = [&](const std::string& phase, auto&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    auto result = step(phase, std::forward<decltype(fn)>(fn));
    report.timings.emplace_back(phase, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return result;
  };

  // ---- config and preflight -----------------------------------------------------------------
  MergeConfig cfg = step("config", [&] { return load_merge_config(opt.config_path, opt.overrides); });
  const std::string resolved_yaml = to_yaml(cfg);
  if (rank == 0) log(ctx.versions());
  log("resolved config:\n", resolved_yaml);
  if (opt.preflight.shapes_only && !opt.preflight_only) fail("shapes-only preflight is for `recall preflight` only");
  MergeInputs in = timed("preflight", [&] { return preflight(cfg, opt.preflight); });
  const ModelConfig& arch = in.models[in.reference].config;
  uint64_t input_bytes = 0;
  for (size_t m = 0; m < in.models.size(); ++m) input_bytes += in.model_bytes(m);
  const int plan_world = opt.plan_world > 0 ? opt.plan_world : world;
  for (const std::string& n : in.notes) log("note: ", n);
  log("preflight ok: ", in.models.size(), " ", arch_name(arch.arch), " models, ", arch.num_hidden_layers, " blocks, ",
      in.slots.size(), " tensors each, ", format_bytes(input_bytes), " to read; ", plan_world, " rank(s)",
      plan_world != world ? " (planned)" : "");

  // ---- grid and memory plan -----------------------------------------------------------------
  const dist::GridSpec spec = grid_spec(in);
  std::optional<dist::Grid> grid;
  if (cfg.method == "recall") {
    grid = step("plan", [&] {
      dist::GridSpec staged = spec;
      staged.stages = static_cast<int>(cfg.parallel.stages);
      return dist::Grid(staged, plan_world);
    });
    log("plan:\n", grid->plan());
  }
  // Every rank computes the plan of every planned rank (cheap, deterministic): the budget verdict
  // is the same everywhere, and a preflight can plan a cluster's world from one process.
  std::vector<MemoryPlan> plans;
  for (int r = 0; r < plan_world; ++r) plans.push_back(memory_plan(cfg, in, spec, grid ? &*grid : nullptr, r));
  const auto worst = std::max_element(plans.begin(), plans.end(),
                                      [](const MemoryPlan& a, const MemoryPlan& b) { return a.total() < b.total(); });
  {
    std::ostringstream os;
    os << "memory plan per rank (weights + activations + merge buffers = total"
       << (cfg.memory_budget ? "; budget " + format_bytes(cfg.memory_budget) : std::string()) << "):";
    auto line = [&](const std::string& who, const MemoryPlan& p) {
      os << "\n  " << who << ": " << format_bytes(p.weights) << " + " << format_bytes(p.activations) << " + "
         << format_bytes(p.merge_buffers) << " = " << format_bytes(p.total());
    };
    if (plan_world <= 64 || opt.verbose)
      for (int r = 0; r < plan_world; ++r) line("rank " + std::to_string(r), plans[r]);
    else
      line("largest (rank " + std::to_string(worst - plans.begin()) + " of " + std::to_string(plan_world) + ")", *worst);
    log(os.str());
    step("memory plan", [&] {
      if (cfg.memory_budget && worst->total() > cfg.memory_budget)
        fail("the memory plan needs ", format_bytes(worst->total()), " on rank ", worst - plans.begin(),
             " but memory_budget is ", format_bytes(cfg.memory_budget), " (weights ", format_bytes(worst->weights),
             ", activations ", format_bytes(worst->activations), ", merge buffers ",
             format_bytes(worst->merge_buffers),
             ")\n---> HINT: more parallel.stages or more ranks lower the weights, and parallel.stream_samples "
             "(e.g. 32) keeps one block resident at a time; a smaller parallel.micro_batch or max_length "
             "lowers the activations, and a smaller parallel.merge_chunk_bytes the merge buffers");
    });
  }
  if (opt.preflight_only) return cfg;

  // ---- output: written under <dir>.partial, committed at the end; a rerun resumes -------------
  const std::string final_dir = cfg.output.dir;
  const std::string tmp_dir = final_dir + ".partial";
  const std::string h5_path = join_path(tmp_dir, "merged.h5"), hf_dir = join_path(tmp_dir, "hf");
  const std::string key_path = join_path(tmp_dir, "job.key"), state_path = join_path(tmp_dir, "recall_state.json"),
                    progress_path = join_path(tmp_dir, "progress.txt");
  const std::string key = job_key(cfg, in);
  int resume = step("prepare output", [&] {
    int same = 0;
    if (rank == 0) {
      same = !opt.fresh && path_exists(key_path) && read_text_file(key_path) == key;
      if (!same) {
        remove_tree(tmp_dir);
        make_directories(hf_dir);
        write_file_atomic(key_path, key);
      }
    }
    return same;
  });
  MPI_Bcast(&resume, 1, MPI_INT, 0, comm);
  if (resume) log("resuming the interrupted job in ", tmp_dir, " (same config and inputs; --fresh restarts)");

  // ---- RECALL: typical samples, representations, similarity, weights --------------------------
  std::vector<std::vector<double>> block_w;
  if (cfg.method == "recall" && resume && path_exists(state_path)) {
    step("load saved weights", [&] {
      load_recall_state(read_text_file(state_path), &report, &block_w);
      return 0;
    });
    log("resuming: typical samples and per-block weights from ", state_path);
  } else if (cfg.method == "recall") {
    std::vector<std::vector<int64_t>> task = timed("tokenize", [&] { return load_task_samples(cfg, in); });
    log("data: ", task.size(), " samples from ", cfg.data);
    TypicalSelection sel = timed("typical samples", [&] {
      return select_typical_samples(*grid, comm, in, cfg, task);
    });
    report.typical_samples = sel.sample_ids;
    log("typical samples: K=", sel.sample_ids.size(), " by k-means on hidden.", sel.layer, " of '", cfg.reference,
        "' (", sel.iterations, " iterations)");
    std::vector<std::vector<int64_t>> typical;
    for (int64_t i : sel.sample_ids) typical.push_back(task[i]);
    Representations reps = timed("representations", [&] {
      ExtractOptions eo;
      eo.device = cfg.parallel.device;
      eo.micro_batch = cfg.parallel.micro_batch;
      eo.stream_samples = cfg.parallel.stream_samples;
      return extract_representations(*grid, comm, in, typical, eo);
    });
    SimilarityOptions so;
    so.kind = parse_similarity_kind(cfg.kernel.kind);
    so.median_factor = cfg.kernel.bandwidth_factor;
    so.gamma = cfg.kernel.gamma;
    so.cka_threshold = cfg.kernel.cka_threshold;
    std::vector<std::vector<double>> sim;
    timed("similarity", [&] {
      for (int64_t l = 0; l < arch.num_hidden_layers; ++l) {
        BlockSimilarity bs = with_context("block " + std::to_string(l), [&] {
          return block_similarity(block_reps(reps, l + 1), static_cast<int64_t>(in.reference), so);
        });
        sim.push_back(bs.similarity);
        report.blocks.push_back({l, bs.sigma2, bs.similarity, {}});
      }
      if (cfg.recall.granularity == "global")
        block_w.assign(sim.size(), global_weights(sim, cfg.recall.temperature));
      else
        block_w = block_weights(sim, cfg.recall.temperature);
      for (size_t l = 0; l < block_w.size(); ++l) report.blocks[l].weights = block_w[l];
      return 0;
    });
    for (const auto& b : report.blocks) {
      std::ostringstream os;
      os << "block " << b.index << ": sigma2 " << b.sigma2 << "  similarity/weight";
      for (size_t m = 0; m < in.models.size(); ++m)
        os << "  " << cfg.models[m].name << " " << b.similarity[m] << "/" << b.weights[m];
      log(os.str());
    }
  }
  if (cfg.method == "recall" && rank == 0 && !path_exists(state_path))
    write_file_atomic(state_path, recall_state_json(report));
  const std::vector<std::vector<double>> weights = slot_weights(cfg, in, block_w);
  for (size_t t = 0; t < in.slots.size(); ++t)
    if (in.slots[t].block < 0) {
      report.non_block_by_tensor[in.slots[t].name] = weights[t];
      if (in.slots[t].role == Role::Embed) report.non_block_weights = weights[t];
    }

  const DType out_dtype = output_dtype(cfg);
  std::vector<TensorSpec> out_specs;
  for (const TensorSlot& slot : in.slots) out_specs.push_back({slot.name, out_dtype, slot.shape});
  HfShardWriter hf(hf_dir, out_specs, cfg.output.shard_bytes);
  MergeStats ms;
  timed("merge", [&] {
    std::set<std::string> done;
    if (resume && path_exists(progress_path) && path_exists(h5_path)) {
      std::istringstream lines(read_text_file(progress_path));
      for (std::string line; std::getline(lines, line);)
        if (!line.empty()) done.insert(line);
    }
    // The export's shards must have survived with the recorded tensors; if not, start over.
    int shards_ok = rank == 0 && !done.empty() && hf.intact();
    MPI_Bcast(&shards_ok, 1, MPI_INT, 0, comm);
    if (!shards_ok) done.clear();
    std::unique_ptr<H5Writer> writer;
    if (!done.empty()) {
      try {
        writer = std::make_unique<H5Writer>(h5_path, comm, H5Writer::Mode::Append);
      } catch (const std::exception&) {
        done.clear();  // the same unreadable file on every rank: start the merge over
      }
    }
    if (!writer) {
      if (rank == 0) {
        write_file_atomic(progress_path, "");
        hf.create();
      }
      writer = std::make_unique<H5Writer>(h5_path, comm);
    } else {
      log("resuming: ", done.size(), " of ", in.slots.size(), " tensors already merged");
    }
    MPI_Barrier(comm);  // the shards exist before any rank opens them
    hf.open();
    H5Writer& h5 = *writer;
    int64_t merged_now = 0;
    // Resume checkpoints: every checkpoint_bytes of merged output (the same tensors on every rank,
    // so no extra agreement is needed) each rank syncs what it wrote, then rank 0 records the
    // tensors merged since the last checkpoint. progress.txt never lists a tensor whose bytes could
    // be lost with the node.
    std::vector<std::string> pending;
    uint64_t since_checkpoint = 0;
    auto checkpoint = [&] {
      if (h5.is_open()) h5.flush();  // collective: every rank checkpoints after the same tensor
      sync_file(h5_path);
      hf.sync();
      MPI_Barrier(comm);
      if (rank == 0 && !pending.empty()) {
        std::string lines;
        for (const auto& n : pending) lines += n + "\n";
        append_lines(progress_path, lines);
      }
      pending.clear();
      since_checkpoint = 0;
    };
    // Progress with an ETA from rank 0: a plain line every 5 s and at the end (batch logs such as
    // slurm-%j.out; under mpirun stdout is a pty, so no terminal tricks).
    const auto started = std::chrono::steady_clock::now();
    auto last = started;
    const std::vector<double> progress_bytes = cumulative_input_bytes(in, done, world);
    const size_t todo = progress_bytes.size();
    std::map<std::string, uint64_t> out_bytes;
    for (const TensorSpec& t : out_specs) out_bytes[t.name] = t.nbytes();
    // merged.h5 is written through HDF5; a descriptor of our own lets us start its writeback too.
    struct Fd {
      int fd;
      ~Fd() {
        if (fd >= 0) ::close(fd);
      }
    } h5_fd{::open(h5_path.c_str(), O_RDONLY | O_CLOEXEC)};
    ms = merge_into_h5(h5, comm, cfg, in, weights, !done.empty(), done, &hf, [&](const std::string& name) {
      if (h5_fd.fd >= 0) start_writeback(h5_fd.fd);
      pending.push_back(name);
      since_checkpoint += out_bytes.at(name);
      if (since_checkpoint >= cfg.output.checkpoint_bytes) checkpoint();
      fault_point("merge", rank, ++merged_now);
      const auto now = std::chrono::steady_clock::now();
      if (rank != 0 || opt.quiet ||
          (now - last < std::chrono::seconds(5) && merged_now < static_cast<int64_t>(todo)))
        return;
      last = now;
      const double t = std::chrono::duration<double>(now - started).count();
      const double eta = t / merged_now * (static_cast<double>(todo) - merged_now);
      const double gb = progress_bytes[merged_now - 1] / 1e9;
      log("merge: ", merged_now, "/", todo, " tensors, ", gb, " GB read per rank (", gb / std::max(t, 1e-9),
          " GB/s), ETA ", static_cast<int64_t>(eta), " s");
    });
    if (ms.aborted) {
      h5.close();
      if (!ms.error.empty()) throw Error(ms.error);
      return 0;  // another rank failed; the agreement reports its error
    }
    // What produced these tensors, for people and tools that read merged.h5 alone.
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
    ojson models = ojson::array();
    for (size_t m = 0; m < M; ++m)
      models.push_back({{"name", cfg.models[m].name}, {"path", cfg.models[m].path},
                        {"bytes", in.models[m].checkpoint.total_bytes()}});
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    ojson provenance = {{"tool", "recall"}, {"version", RECALL_VERSION}, {"git_revision", RECALL_GIT_REVISION},
                        {"time_utc", utc_now()}, {"host", host}, {"world_size", world}, {"inputs", models}};
    h5.set_attribute("/", "architecture_config", arch.raw_json);
    h5.set_attribute("/", "merge_config", resolved_yaml);
    h5.set_attribute("/", "provenance", provenance.dump());
    h5.set_attribute("/", "method", cfg.method);
    h5.set_attribute("/", "models", models.dump());
    h5.close();
    checkpoint();  // everything merged is on disk before the checksums and the commit
    return 0;
  });
  log("merge: ", format_bytes(ms.bytes_read), " read and ", format_bytes(ms.bytes_written), " written by rank 0 in ",
      report.timings.back().second, " s");

  // The export was written during the merge. A tensor one rank wrote whole was hashed as it was
  // written; the others are read back and hashed (one rank per tensor). The same checksums go to
  // merged.h5, whose tensors hold the same bytes.
  std::map<std::string, uint64_t> checksums;
  timed("checksums", [&] {
    checksums = hf_checksums(comm, hf, ms.checksums);
    H5Writer h5(h5_path, comm, H5Writer::Mode::Append);
    for (const TensorSlot& s : in.slots) h5.set_attribute("/tensors/" + s.name, "xxh3_64", checksum_hex(checksums.at(s.name)));
    h5.close();
    hf.close();
    return 0;
  });
  std::vector<std::string> shard_files;
  for (const std::string& f : hf.files()) shard_files.push_back(f.substr(f.rfind('/') + 1));
  log("export: ", shard_files.size(), " shard(s) in hf/, written during the merge");

  // ---- totals, report, manifest (last), commit --------------------------------------------------
  uint64_t local[3] = {ms.bytes_read, ms.bytes_written, ms.bytes_written}, total[3] = {0, 0, 0};
  MPI_Allreduce(local, total, 3, MPI_UINT64_T, MPI_SUM, comm);
  report.bytes_read = total[0];
  report.merge_bytes_written = total[1];
  report.export_bytes_written = total[2];
  report.bytes_written = total[1] + total[2];
  double loop[3] = {ms.wait_seconds, ms.merge_seconds, ms.write_seconds};
  std::vector<double> loops(3 * static_cast<size_t>(world));
  MPI_Allgather(loop, 3, MPI_DOUBLE, loops.data(), 3, MPI_DOUBLE, comm);
  for (int r = 0; r < world; ++r) report.merge_loop_seconds.push_back({loops[3 * r], loops[3 * r + 1], loops[3 * r + 2]});
  uint64_t rss = peak_rss_bytes();
  report.peak_rss_bytes.resize(world);
  MPI_Allgather(&rss, 1, MPI_UINT64_T, report.peak_rss_bytes.data(), 1, MPI_UINT64_T, comm);
  report.method = cfg.method;
  report.reference = cfg.reference;
  report.world = world;
  report.output_dtype = cfg.output.dtype;
  for (const auto& m : cfg.models) report.models.push_back(m.name);

  step("commit", [&] {
    if (rank != 0) return 0;
    std::vector<std::string> paths;
    for (const auto& m : cfg.models) paths.push_back(m.path);
    write_file_atomic(join_path(hf_dir, "config.json"), export_config_json(arch.raw_json, cfg.output.dtype));
    copy_tokenizer_files(in.models[in.reference].path, hf_dir);
    write_file_atomic(join_path(hf_dir, "README.md"), model_card(report, resolved_yaml, paths));
    write_file_atomic(join_path(tmp_dir, "config.resolved.yaml"), resolved_yaml);
    write_file_atomic(join_path(tmp_dir, "report.json"), report_json(report));
    write_file_atomic(join_path(tmp_dir, "report.svg"), report_svg(report));
    ojson tensors = ojson::array();
    for (const TensorSlot& s : in.slots)
      tensors.push_back({{"name", s.name}, {"dtype", std::string(dtype_name(out_dtype))}, {"shape", s.shape},
                         {"xxh3_64", checksum_hex(checksums.at(s.name))}});
    ojson inputs = ojson::array();
    for (size_t m = 0; m < in.models.size(); ++m)
      inputs.push_back({{"name", cfg.models[m].name}, {"path", cfg.models[m].path},
                        {"tensor_bytes", in.models[m].checkpoint.total_bytes()}});
    ojson manifest = {{"format", "recall-merge-1"}, {"checksum", "xxh3_64"}, {"method", cfg.method},
                      {"tensors", tensors}, {"inputs", inputs}, {"hf_shards", shard_files},
                      {"config", resolved_yaml}, {"created_utc", utc_now()}};
    write_file_atomic(join_path(tmp_dir, "manifest.json"), manifest.dump(2) + "\n");
    // Commit: the finished directory takes the final name in one rename.
    const std::string old = final_dir + ".old";
    if (path_exists(final_dir)) {
      remove_tree(old);
      rename_path(final_dir, old);
    }
    rename_path(tmp_dir, final_dir);
    remove_tree(old);
    return 0;
  });
  log("done: ", final_dir, " (merged.h5, hf/, report.json, report.svg, manifest.json)");
  return cfg;
}

}  // namespace recall
