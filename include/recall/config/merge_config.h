// The merge job's configuration: YAML decoded once into typed structs with defaults. Unknown
// keys and wrong types are errors carrying the YAML line and column; `--set key.sub=value`
// overrides any key before decoding; the resolved config is printed and saved with the output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace recall {

struct ModelEntry {
  std::string name;  // used in reports and as `base` / `reference`
  std::string path;  // Hugging Face model directory, or a PEFT LoRA adapter directory
  std::string base_model;  // for an adapter: the model directory it was trained on
};

struct TypicalConfig {
  int64_t clusters = 32;         // K typical samples
  int64_t layer = -1;            // hidden state clustered: -1 = last block, i = hidden.i
  uint64_t seed = 0;             // k-means++ seed
  int64_t iterations = 100;      // max Lloyd iterations
  int64_t max_samples = 0;       // use at most this many lines of `data` (0 = all)
};

struct KernelConfig {
  std::string kind = "rbf";      // rbf | linear_cka | rbf_cka
  double bandwidth_factor = 1.0; // rbf: sigma^2 = factor x median squared pairwise distance
  double gamma = 0.0;            // rbf: fixed exp(-gamma d^2) when > 0 (overrides the median)
  double cka_threshold = 0.5;    // rbf_cka: sigma = threshold x median distance
};

struct RecallConfig {
  double temperature = 1.0;          // tau of the softmax over models
  std::string non_block = "uniform"; // uniform | nearest_block | reference
  std::string granularity = "block"; // block: per-block weights; global: one weight vector
};

// Parameters of the baselines, with mergekit's names.
struct MethodParams {
  std::vector<double> weight;    // per model, in config order (default: all 1)
  double density = 1.0;          // ties/dare: fraction of each task vector kept
  double lambda = 1.0;           // task_arithmetic/ties/dare: scale of the merged task vector
  double epsilon = 0.0;          // reserved for magnitude-adaptive DARE variants
  double t = 0.5;                // slerp: interpolation from the first model (0) to the second (1)
  // Divide by the sum of weights. Unset: the method's mergekit default (linear and ties: true;
  // task_arithmetic, dare_linear, dare_ties: false).
  std::optional<bool> normalize;
  uint64_t seed = 0;             // dare: drop-mask seed
};

struct ParallelConfig {
  int64_t stages = 1;            // pipeline stages per model
  int64_t micro_batch = 8;       // samples per micro-batch in the extraction
  // Streaming extraction: 0 = a rank keeps its stage's blocks resident; N > 0 = it loads one
  // block at a time, runs the hidden states of N samples through it and drops it (each group of
  // N samples reads the stage's weights again), for nodes whose memory cannot hold a stage.
  int64_t stream_samples = 0;
  std::string device = "cpu";    // cpu | cuda
  // Bytes of one input's rows the merge reads per step (whole-tensor methods read whole tensors).
  // A rank's merge buffers are (2M + 1) x this for M models: inputs double-buffered, one output.
  uint64_t merge_chunk_bytes = 64ull << 20;
};

struct OutputConfig {
  std::string dir;               // output directory (created; must not exist unless overwrite)
  std::string dtype = "bfloat16";// bfloat16 | float16 | float32
  uint64_t shard_bytes = 5000000000;  // HF export shard size limit, bytes
  // Resume checkpoints: after this many merged bytes (and at the end) the outputs are synced to
  // disk and the finished tensors recorded, so a rerun skips them; 0 = after every tensor.
  uint64_t checkpoint_bytes = 4000000000;
  bool overwrite = false;
};

struct MergeConfig {
  std::vector<ModelEntry> models;
  std::string base;              // base model name for task-vector methods ("" = none)
  std::string reference;         // RECALL's M_N (default: the last model)
  std::string method = "recall"; // recall | linear | task_arithmetic | ties | dare_linear | dare_ties | slerp
  std::string data;              // JSONL samples for typical-sample selection (recall only)
  int64_t max_length = 512;      // tokens per sample (longer samples are truncated)
  uint64_t memory_budget = 0;    // bytes per rank; 0 = no limit
  TypicalConfig typical;
  KernelConfig kernel;
  RecallConfig recall;
  MethodParams params;
  ParallelConfig parallel;
  OutputConfig output;

  size_t model_index(const std::string& name) const;  // throws if absent
};

// The supported values, for help texts and errors.
extern const char* const kMergeMethods;

// Decodes YAML text with overrides ("key.sub=value", applied in order). `where` names the file.
MergeConfig parse_merge_config(const std::string& yaml_text, const std::string& where,
                               const std::vector<std::string>& overrides = {});
MergeConfig load_merge_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved config as YAML (every field, defaults included).
std::string to_yaml(const MergeConfig& c);

}  // namespace recall
