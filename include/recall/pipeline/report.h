// What a merge reports: report.json (weights, similarities, parameters, timings, bytes, memory),
// report.svg (RECALL: per-block weights and similarity curves; baselines: the weights and
// parameters; readable in any browser) and the Hugging Face model card hf/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"

namespace recall {

struct MergeReport {
  std::string method;
  std::vector<std::string> models;         // names, config order
  std::string reference;                   // RECALL's reference model (baselines ignore it)
  std::optional<size_t> base;              // the base model's index, for methods that use one
  std::vector<int64_t> typical_samples;    // 0-based line numbers of the data file
  struct Block {
    int64_t index = 0;
    double sigma2 = 0;
    std::vector<double> similarity, weights;  // per model
  };
  std::vector<Block> blocks;                // empty for baselines
  std::vector<double> non_block_weights;    // RECALL: the embedding's weights (per model)
  std::map<std::string, std::vector<double>> non_block_by_tensor;  // RECALL: every non-block tensor's
  // The method parameters each tensor was merged with, resolved (gradients, filters, RECALL's
  // weights): tensor -> parameter -> one value (shared) or one per model.
  std::map<std::string, std::map<std::string, std::vector<double>>> tensor_params;
  std::vector<std::pair<std::string, double>> timings;  // phase -> seconds, in order
  // The merge phase's loop on each rank: seconds waiting for reads, merging, writing (MergeStats).
  std::vector<std::array<double, 3>> merge_loop_seconds;  // per rank
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t merge_bytes_written = 0, export_bytes_written = 0;  // parts of bytes_written
  // Per rank: the memory plan's total, and what the rank used: peaks of resident anonymous memory
  // (what the plan bounds) and of file-backed memory (the mapped inputs' page cache, which the
  // kernel reclaims), and the kernel's peak of the whole resident set (VmHWM, both together).
  struct RankMemory {
    uint64_t planned = 0, peak_anon = 0, peak_file = 0, peak_rss = 0;
  };
  std::vector<RankMemory> memory;
  // RegMean: each solved tensor's reciprocal condition estimate of its summed Gram matrix (LAPACK
  // dpocon, 1-norm; near 0 = ill-conditioned: raise params.ridge or calibration.samples).
  std::map<std::string, double> rcond;
  int64_t calibration_samples = 0;  // data-aware methods and AIM
  int world = 1;
  std::string output_dtype;
};

// One method parameter over every tensor of a merge (from tensor_params): per model, or one value
// when the models share it; `lo` and `hi` are the lowest and highest value any tensor has (equal
// unless a gradient or a filter varies it between tensors).
struct ParamSummary {
  std::string name;
  bool per_model = false;
  std::vector<double> lo, hi;
  bool constant() const { return lo == hi; }
};
// Every parameter of a baseline, in tensor_params' order; empty for RECALL.
std::vector<ParamSummary> summarize_params(const MergeReport& r);

// The models' weights as a baseline merged them, lowest and highest over the tensors: each
// model's share of the output for linear with normalize (w / sum w) and for SLERP (the base 1 - t,
// the other t), else the `weight` parameter; NaN for the base of task-vector methods (unused).
struct BaselineWeights {
  std::vector<double> lo, hi;  // per model; empty for RECALL or without parameters
  std::string meaning;         // "share of the output", "weight" or "weight of its task vector"
};
BaselineWeights baseline_weights(const MergeReport& r);

// One sentence on what the method did ("TIES: task vectors (model - `base`) trimmed by ...").
std::string method_summary(const MergeReport& r);
// "0.5" or "0.3-0.7" (a range over the tensors).
std::string format_range(double lo, double hi);
// Value i of a parameter: a range as above, or "true"/"false" for the method's boolean parameters.
std::string format_param(const MergeReport& r, const ParamSummary& p, size_t i);

std::string report_json(const MergeReport& r);
std::string report_svg(const MergeReport& r);
std::string model_card(const MergeReport& r, const std::string& resolved_config_yaml,
                       const std::vector<std::string>& model_paths);

// Fills tensor_params (and, for RECALL, the non-block weights) from the resolved parameters of
// every slot, and the base model's index from the inputs.
void fill_report_params(MergeReport* report, const MergeInputs& inputs, const std::vector<TensorParams>& params);


}  // namespace recall
