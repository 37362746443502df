// RECALL's weights phase: from the models' pooled representations on the typical samples to the
// similarity of every model to the reference per block (recall/merge/similarity.h) and the
// per-block weights (recall/merge/weights.h), by the config's kernel and recall knobs; and the
// state file (recall_state.json) that lets a resumed job skip the extraction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/report.h"

namespace recall {

struct RecallWeights {
  std::vector<int64_t> typical_samples;     // 0-based data lines
  std::vector<MergeReport::Block> blocks;   // per block: sigma2, similarity, weights
  std::vector<std::vector<double>> block_weights() const;  // [L][M]
};

// Similarities and weights of every block from the representations; the same on every rank.
RecallWeights weights_from_representations(const Representations& reps, const MergeConfig& config,
                                           size_t reference, std::vector<int64_t> typical_samples);

std::string recall_state_json(const RecallWeights& w);
RecallWeights parse_recall_state(const std::string& text);  // throws on a malformed file

}  // namespace recall
