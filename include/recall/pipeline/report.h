// What a merge reports: report.json (weights, similarities, timings, bytes, memory), report.svg
// (a heatmap of the per-block weights and the similarity curves, readable in any browser) and the
// Hugging Face model card hf/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace recall {

struct MergeConfig;

struct MergeReport {
  std::string method;
  std::vector<std::string> models;         // names, config order
  std::string reference;                   // RECALL's reference model ("" for baselines)
  std::string base;                        // task-vector methods' base model ("" = none)
  // What a baseline merged (mergekit's names; unused by RECALL): the weight of each model in config
  // order (the base's is not used by task-vector methods), whether the weights are divided by their
  // sum (the method's default when the config leaves it unset), TIES/DARE's density, the scale
  // lambda of task-vector methods, SLERP's t and DARE's seed.
  std::vector<double> weights;
  bool normalize = false;
  double density = 1.0, lambda = 1.0, t = 0.5;
  uint64_t seed = 0;
  std::vector<int64_t> typical_samples;    // 0-based line numbers of the data file
  struct Block {
    int64_t index = 0;
    double sigma2 = 0;
    std::vector<double> similarity, weights;  // per model
  };
  std::vector<Block> blocks;                // empty for baselines
  std::vector<double> non_block_weights;    // embedding's weights (per model)
  std::map<std::string, std::vector<double>> non_block_by_tensor;  // every non-block tensor
  std::vector<std::pair<std::string, double>> timings;  // phase -> seconds, in order
  // The merge phase's loop on each rank: seconds waiting for reads, merging, writing (MergeStats).
  std::vector<std::array<double, 3>> merge_loop_seconds;  // per rank
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t merge_bytes_written = 0, export_bytes_written = 0;  // parts of bytes_written
  std::vector<uint64_t> peak_rss_bytes;     // per rank
  int world = 1;
  std::string output_dtype;
};

// Sets what the config says about the merge: method, models, reference (RECALL only), base
// (task-vector methods only) and the baselines' parameters with their effective defaults.
void describe_merge(MergeReport* r, const MergeConfig& c);

// One sentence on what the method did ("TIES: task vectors (model - `base`) trimmed to ...").
std::string method_summary(const MergeReport& r);
// A baseline's weight per model as merged (config order): each model's share of the output for
// linear (w / sum w when normalized, else w) and SLERP (1 - t, t); for task-vector methods the
// weight of the model's task vector, NaN for the base. Empty for RECALL or when not recorded.
std::vector<double> baseline_weights(const MergeReport& r);
// What those numbers are: "share of the output", "weight" or "weight of its task vector".
std::string baseline_weight_meaning(const MergeReport& r);

std::string report_json(const MergeReport& r);
std::string report_svg(const MergeReport& r);
std::string model_card(const MergeReport& r, const std::string& resolved_config_yaml,
                       const std::vector<std::string>& model_paths);

// This process's peak resident set size in bytes (getrusage).
uint64_t peak_rss_bytes();

}  // namespace recall
