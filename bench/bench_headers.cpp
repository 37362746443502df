// bench_headers: how long reading and validating the headers of a 70B-shaped checkpoint takes.
// Builds a Llama-3-70B-shaped model directory (hidden 8192, 80 blocks, 64 heads, 8 KV heads, MLP
// 28672, vocab 128256, bf16: 723 tensors, ~141 GB) as SPARSE files (each shard's header written,
// then ftruncate to its full size) in ~30 shards of at most 5 GB with model.safetensors.index.json
// and config.json, in a temporary directory; times Checkpoint::open + validate_model_tensors and
// open_model_dir over several runs; then builds three more such models and times the preflight of
// a RECALL merge of all four (library call, and `recall preflight` end to end from the binary next
// to this one, MPI start-up included); prints the times, the targets (< 1 s per checkpoint, < 2 s
// for the four-model preflight) and the ratios; cleans up.
//   usage: bench_headers [--runs N] [--dir PARENT]      (PARENT defaults to $TMPDIR or /tmp)
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "recall/io/checkpoint.h"
#include "recall/io/safetensors.h"
#include "recall/config/merge_config.h"
#include "recall/model/config.h"
#include "recall/model/model_dir.h"
#include "recall/model/tensor_names.h"
#include "recall/pipeline/hf_shards.h"
#include "recall/pipeline/preflight.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace {

using namespace recall;
using Clock = std::chrono::steady_clock;

constexpr double kTargetSeconds = 1.0;
constexpr double kPreflightTargetSeconds = 2.0;  // four 70B-shaped models
constexpr uint64_t kShardBytes = 5'000'000'000;  // what transformers' save_pretrained uses ("5GB")

const char* kConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false,
  "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 8192,
  "intermediate_size": 28672, "max_position_embeddings": 8192, "mlp_bias": false,
  "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 128256
})";

void remove_tree(const std::string& dir) {
  ::nftw(dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
         16, FTW_DEPTH | FTW_PHYS);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Stats {
  double best, median, worst;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

// A Llama-3-70B-shaped model directory of sparse shards; returns its tensors and their bytes.
std::pair<std::vector<TensorSpec>, uint64_t> build_sparse_model(const std::string& dir) {
  make_directories(dir);
  write_file_atomic(join_path(dir, "config.json"), kConfig);
  const ModelConfig config = load_model_config(dir);
  std::vector<TensorSpec> specs;
  for (const TensorSlot& s : expected_tensors(config)) specs.push_back({s.name, DType::BF16, s.shape});
  // The merge's own export writer lays out the shards and creates them: headers written, data
  // regions left as holes (sparse files), plus the index.
  HfShardWriter(dir, specs, kShardBytes).create();
  uint64_t total = 0;
  for (const TensorSpec& t : specs) total += t.nbytes();
  return {specs, total};
}

// The recall binary next to this benchmark (both are built into bin/).
std::string sibling_recall_binary() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + "recall";
}

int run(int runs, const std::string& parent) {
  std::string pattern = parent + "/recall-bench-headers-XXXXXX";
  if (!::mkdtemp(pattern.data())) fail("cannot create a directory under '", parent, "': ", std::strerror(errno));
  const std::string root = pattern;
  struct Cleanup {
    std::string dir;
    ~Cleanup() { remove_tree(dir); }
  } cleanup{root};

  // ---- build the sparse checkpoint ----
  auto t_build = Clock::now();
  const std::string dir = join_path(root, "model0");
  const auto [specs, total] = build_sparse_model(dir);
  std::printf("built %s: %zu tensors, %s (%.2f s)\n", dir.c_str(), specs.size(), format_bytes(total).c_str(),
              seconds_since(t_build));

  // ---- time the header reads and validation ----
  std::vector<double> open_validate, open_dir;
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    {
      const ModelConfig c = load_model_config(dir);
      const Checkpoint ckpt = Checkpoint::open(dir);
      const auto problems = validate_model_tensors(c, ckpt);
      if (!problems.empty()) fail("the benchmark checkpoint is invalid: ", problems.front());
      if (ckpt.entries().size() != specs.size() || ckpt.total_bytes() != total)
        fail("the benchmark checkpoint reads back ", ckpt.entries().size(), " tensors");
    }
    open_validate.push_back(seconds_since(t0));
    t0 = Clock::now();
    {
      const ModelDir m = open_model_dir(dir);
      if (m.slots.size() != specs.size()) fail("open_model_dir found ", m.slots.size(), " slots");
    }
    open_dir.push_back(seconds_since(t0));
  }
  const Stats a = stats(open_validate), b = stats(open_dir);
  std::printf("config + Checkpoint::open + validate_model_tensors (%d runs): best %.1f ms, median %.1f ms, worst %.1f ms\n",
              runs, a.best * 1e3, a.median * 1e3, a.worst * 1e3);
  std::printf("open_model_dir (%d runs):                                 best %.1f ms, median %.1f ms, worst %.1f ms\n",
              runs, b.best * 1e3, b.median * 1e3, b.worst * 1e3);
  std::printf("target: < %.0f ms; ratio target / median = %.1fx (open + validate), %.1fx (open_model_dir)\n",
              kTargetSeconds * 1e3, kTargetSeconds / a.median, kTargetSeconds / b.median);
  bool ok = a.median < kTargetSeconds && b.median < kTargetSeconds;

  // ---- preflight of a four-model RECALL merge ----
  t_build = Clock::now();
  std::string yaml = "models:\n";
  for (int m = 0; m < 4; ++m) {
    const std::string d = join_path(root, "model" + std::to_string(m));
    if (m > 0) build_sparse_model(d);
    yaml += "  - {name: m" + std::to_string(m) + ", path: " + d + "}\n";
  }
  std::string data;
  for (int i = 0; i < 256; ++i) data += "{\"text\": \"sample " + std::to_string(i) + "\"}\n";
  write_file_atomic(join_path(root, "data.jsonl"), data);
  yaml += "base: m0\nreference: m3\nmethod: recall\ndata: " + join_path(root, "data.jsonl") +
          "\ntypical: {clusters: 32}\nparallel: {stages: 8}\noutput: {dir: " + join_path(root, "out") + "}\n";
  const std::string config_path = join_path(root, "merge.yaml");
  write_file_atomic(config_path, yaml);
  std::printf("built 3 more models and %s (%.2f s)\n", config_path.c_str(), seconds_since(t_build));
  const MergeConfig merge_config = load_merge_config(config_path, {});
  std::vector<double> lib, cli;
  const std::string bin = sibling_recall_binary();
  const bool have_bin = !bin.empty() && path_exists(bin);
  const std::string cmd = "'" + bin + "' preflight --config '" + config_path + "' --world 32 >/dev/null 2>&1";
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    const MergeInputs in = preflight(merge_config);
    lib.push_back(seconds_since(t0));
    if (in.models.size() != 4 || in.slots.size() != specs.size()) fail("preflight saw ", in.models.size(), " models");
    if (!have_bin) continue;
    t0 = Clock::now();
    if (std::system(cmd.c_str()) != 0) fail("`", cmd, "` failed");
    cli.push_back(seconds_since(t0));
  }
  const Stats p = stats(lib);
  std::printf("preflight() of 4 x %s (%d runs):                   best %.1f ms, median %.1f ms, worst %.1f ms\n",
              format_bytes(total).c_str(), runs, p.best * 1e3, p.median * 1e3, p.worst * 1e3);
  ok = ok && p.median < kPreflightTargetSeconds;
  if (have_bin) {
    const Stats q = stats(cli);
    std::printf("recall preflight --world 32, whole process (%d runs):     best %.1f ms, median %.1f ms, worst %.1f ms\n",
                runs, q.best * 1e3, q.median * 1e3, q.worst * 1e3);
    std::printf("target: < %.0f ms; ratio target / median = %.1fx (preflight()), %.1fx (recall preflight)\n",
                kPreflightTargetSeconds * 1e3, kPreflightTargetSeconds / p.median, kPreflightTargetSeconds / q.median);
    ok = ok && q.median < kPreflightTargetSeconds;
  } else {
    std::printf("(no recall binary next to this benchmark: only the library call was timed)\n");
  }
  std::printf("%s\n", ok ? "PASS: under the targets" : "FAIL: over a target");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  const char* tmp = std::getenv("TMPDIR");
  std::string parent = tmp && *tmp ? tmp : "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--dir" && i + 1 < argc) parent = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_headers [--runs N] [--dir PARENT]\n");
      return 2;
    }
  }
  try {
    return run(runs, parent);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_headers: error: %s\n", e.what());
    return 1;
  }
}
