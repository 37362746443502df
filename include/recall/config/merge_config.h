// The merge job's configuration, decoded once from YAML into typed values by one field table
// (src/config/merge_config.cpp): the table drives reading, the allowed keys, the defaults (the
// initializers below), the checks with the YAML line and column, `to_yaml` and the generated
// reference docs/CONFIG.md (`recall help config`). Method parameters are declared by the method
// registry (recall/merge/registry.h) and given in mergekit's forms (recall/config/param_setting.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "recall/config/param_setting.h"
#include "recall/merge/pooling.h"
#include "recall/merge/registry.h"
#include "recall/merge/similarity.h"
#include "recall/merge/weights.h"
#include "recall/util/device.h"
#include "recall/util/dtype.h"

namespace recall {

struct ModelEntry {
  std::string name;        // used in reports and as `base` / `reference`
  std::string path;        // Hugging Face model directory, or a PEFT LoRA adapter directory
  std::string base_model;  // for an adapter: the model directory it was trained on
  ParamSettings params;    // this model's method parameters (mergekit's models[i].parameters)
};

// One source of a slice: blocks [first, end) of a model (mergekit's `layer_range`).
struct SliceSource {
  std::string model;     // a model's name
  int64_t first = 0;     // first block
  int64_t end = 0;       // one past the last block
  ParamSettings params;  // this source's method parameters (mergekit's sources[i].parameters)
};

// One slice of the output's blocks (mergekit's `slices`): its blocks are merged from the same
// number of consecutive blocks of every source; the output stacks the slices in order, so the
// output's block count is the sum of the slices' lengths.
struct SliceConfig {
  std::vector<SliceSource> sources;
  ParamSettings params;  // method parameters of this slice (mergekit's slices[i].parameters)
  int64_t length() const { return sources.empty() ? 0 : sources[0].end - sources[0].first; }
};

struct TypicalConfig {
  int64_t clusters = 32;        // K typical samples
  int64_t hidden_state = -1;    // hidden state clustered: -1 = last block's output, i = hidden.i
  uint64_t seed = 0;            // k-means++ seed
  int64_t iterations = 100;     // max Lloyd iterations
  int64_t max_samples = 0;      // use at most this many lines of `data` (0 = all)
  // Above this many samples k-means runs on a seeded subset of this size, and each centroid then
  // takes its nearest sample among all N (docs/ALGORITHM.md, "Typical samples at scale"); 0 = all.
  int64_t kmeans_samples = 50000;
  // Token states -> one vector per sample, for the clustering. Not `mean`: pretrained LLMs put
  // massive activations on the first token (docs/ALGORITHM.md, "Pooling").
  Pooling pooling = Pooling::MeanSkipFirst;
};

// The kernel section: how representations are compared (recall/merge/similarity.h; `mode` is
// the config's recall.similarity) and pooled.
struct KernelConfig : SimilarityOptions {
  Pooling pooling = Pooling::MeanSkipFirst;  // token states -> one vector per sample, for the similarity
};

struct RecallConfig {
  // tau of the softmax over models: one value, or a gradient over the blocks (mergekit's
  // interpolation, recall/config/param_setting.h)
  std::vector<double> temperature = {1.0};
  NonBlockPolicy non_block = NonBlockPolicy::Uniform;  // tensors outside the blocks
  Granularity granularity = Granularity::Block;      // per-block weights, or one vector for all

  double temperature_at(int64_t block, int64_t blocks) const;  // the gradient at block / (blocks - 1)
};

struct ParallelConfig {
  int64_t stages = 1;            // pipeline stages per model
  int64_t micro_batch = 8;       // samples per micro-batch in the extraction
  // Streaming extraction: 0 = a rank keeps its stage's blocks resident; N > 0 = it loads one
  // block at a time (each once per pass), for nodes whose memory cannot hold a stage, holding the
  // hidden states of about N samples in memory (plan.h: stream_resident_bytes) and spilling the
  // rest to scratch_dir ("" = $TMPDIR, else /tmp).
  int64_t stream_samples = 0;
  std::string scratch_dir;
  Device device = Device::Cpu;
  // Bytes of one input's rows the merge reads per step (whole-tensor methods read whole tensors).
  uint64_t merge_chunk_bytes = 64ull << 20;
};

// The calibration samples of data-aware methods (RegMean, Fisher) and of AIM: the first
// `samples` lines of `data`.
struct CalibrationConfig {
  int64_t samples = 256;  // 0 = every line
};

// AIM (activation-informed merging, recall/merge/aim.h), a modifier of methods that take task
// vectors from the base: merged = base + delta x (1 - I_j (1 - omega)) per input channel j, so
// omega = 1 leaves the merge unchanged (off, the default) and the paper's 0.4 turns it on.
struct AimConfig {
  double omega = 1;
  bool enabled() const { return omega < 1; }
};

// What a merge writes: the Hugging Face directory hf/ (safetensors shards, config.json, tokenizer)
// and merged.h5 (parallel HDF5 with the merge's metadata).
enum class OutputFormat { Hf, H5 };

struct OutputConfig {
  std::string dir;                    // output directory (created; must not exist unless overwrite)
  std::vector<OutputFormat> formats = {OutputFormat::Hf, OutputFormat::H5};
  std::string tokenizer;              // model whose tokenizer files hf/ gets ("" = the reference)
  DType dtype = DType::BF16;          // BF16, F16 or F32 (spelled bfloat16, float16, float32)
  uint64_t shard_bytes = 5000000000;  // HF export shard size limit
  // Resume checkpoints: after this many merged bytes (and at the end) the outputs are synced and
  // the finished tensors recorded, so a rerun skips them; 0 = after every tensor.
  uint64_t checkpoint_bytes = 4000000000;
  bool overwrite = false;

  bool writes(OutputFormat f) const;
};

// Where each key of a decoded config came from: "<file>:<line>:<column>", or "--set 'k=v'".
class ConfigOrigin {
 public:
  void set(const std::string& key, std::string position) { positions_[key] = std::move(position); }
  // The position of `key` (a dotted path), else of its closest given parent, else the file.
  std::string of(const std::string& key) const;
  std::string file;

 private:
  std::map<std::string, std::string> positions_;
};

struct MergeConfig {
  std::vector<ModelEntry> models;
  std::vector<SliceConfig> slices;  // empty: every block of every model (mergekit's `models`)
  std::string base;              // base model name for methods that use one ("" = none)
  std::string reference;         // RECALL's M_N (default: the last model)
  const MethodSpec* method = &merge_method("recall");
  std::string data;              // JSONL samples for typical-sample selection (recall only)
  int64_t max_length = 512;      // tokens per sample (longer samples are truncated)
  uint64_t memory_budget = 0;    // bytes per rank; 0 = no limit
  TypicalConfig typical;
  KernelConfig kernel;
  RecallConfig recall;
  ParamSettings params;          // method parameters for every model (mergekit's `parameters`)
  CalibrationConfig calibration;
  AimConfig aim;
  ParallelConfig parallel;
  OutputConfig output;

  std::vector<std::string> notes;  // what the decoder noticed but accepted (unused parameters)
  ConfigOrigin origin;

  size_t model_index(const std::string& name) const;  // throws if absent
  bool uses_representations() const { return method->uses_representations; }
  // The job runs samples of `data` through the models (RECALL, data-aware methods, AIM).
  bool needs_data() const { return method->needs_data() || aim.enabled(); }
  // The statistics phase runs (data-aware methods, AIM).
  bool needs_statistics() const { return method->statistics != Statistics::None || aim.enabled(); }
};

// Decodes YAML text with overrides ("key.sub=value", applied in order). `where` names the file.
// A mergekit config (a mapping with `merge_method`) is translated first, and so is a recall config
// naming one (`mergekit: FILE`) beside recall's own keys (recall/config/mergekit_yaml.h).
MergeConfig parse_merge_config(const std::string& yaml_text, const std::string& where,
                               const std::vector<std::string>& overrides = {});
MergeConfig load_merge_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved config as YAML (every field, defaults included).
std::string to_yaml(const MergeConfig& c);

// The config reference in Markdown, generated from the field table and the method registry
// (docs/CONFIG.md is this text; a test keeps them equal).
std::string config_reference_markdown();

// The output dtype's config spelling: "bfloat16", "float16" or "float32".
std::string output_dtype_name(DType t);
// An output format's config spelling: "hf" or "h5".
std::string output_format_name(OutputFormat f);

}  // namespace recall
