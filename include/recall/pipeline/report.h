// What a merge reports: report.json (weights, similarities, timings, bytes, memory), report.svg
// (a heatmap of the per-block weights and the similarity curves, readable in any browser) and the
// Hugging Face model card hf/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"

namespace recall {

struct MergeReport {
  std::string method;
  std::vector<std::string> models;         // names, config order
  std::string reference;
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
  int world = 1;
  std::string output_dtype;
};

std::string report_json(const MergeReport& r);
std::string report_svg(const MergeReport& r);
std::string model_card(const MergeReport& r, const std::string& resolved_config_yaml,
                       const std::vector<std::string>& model_paths);

// Fills tensor_params (and, for RECALL, the non-block weights) from the resolved parameters of
// every slot.
void fill_report_params(MergeReport* report, const MergeInputs& inputs, const std::vector<TensorParams>& params);


}  // namespace recall
