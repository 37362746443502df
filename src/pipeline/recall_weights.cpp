// RECALL's weights from representations, and their state file (see recall_weights.h).
#include "recall/pipeline/recall_weights.h"

#include <nlohmann/json.hpp>

#include "recall/merge/similarity.h"
#include "recall/merge/weights.h"
#include "recall/util/error.h"

namespace recall {

std::vector<std::vector<double>> RecallWeights::block_weights() const {
  std::vector<std::vector<double>> w;
  for (const auto& b : blocks) w.push_back(b.weights);
  return w;
}

namespace {

// The representations of every model at the output of block `block`, as similarity inputs.
std::vector<RepMatrix> block_output_reps(const Representations& reps, int64_t block) {
  std::vector<RepMatrix> out;
  for (int64_t m = 0; m < reps.models; ++m) {
    RepMatrix r;
    r.rows = reps.samples;
    r.cols = reps.hidden;
    const float* p = reps.block_output(m, block);
    r.values.assign(p, p + reps.samples * reps.hidden);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

RecallWeights weights_from_representations(const Representations& reps, const MergeConfig& c, size_t reference,
                                           std::vector<int64_t> typical_samples) {
  RecallWeights out;
  out.typical_samples = std::move(typical_samples);
  std::vector<std::vector<double>> sim;
  const int64_t L = reps.hidden_states - 1;
  for (int64_t l = 0; l < L; ++l) {
    BlockSimilarity bs = with_context("block " + std::to_string(l), [&] {
      return block_similarity(block_output_reps(reps, l), static_cast<int64_t>(reference), c.kernel);
    });
    sim.push_back(bs.similarity);
    out.blocks.push_back({l, bs.sigma2, bs.similarity, {}});
  }
  std::vector<std::vector<double>> w;
  if (c.recall.granularity == Granularity::Global)
    w.assign(sim.size(), global_weights(sim, c.recall.temperature));
  else
    w = block_weights(sim, c.recall.temperature);
  for (size_t l = 0; l < w.size(); ++l) out.blocks[l].weights = w[l];
  return out;
}

std::string recall_state_json(const RecallWeights& w) {
  nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
  for (const auto& b : w.blocks)
    blocks.push_back({{"index", b.index}, {"sigma2", b.sigma2}, {"similarity", b.similarity}, {"weights", b.weights}});
  return nlohmann::ordered_json({{"typical_samples", w.typical_samples}, {"blocks", blocks}}).dump() + "\n";
}

RecallWeights parse_recall_state(const std::string& text) {
  RecallWeights w;
  try {
    const auto j = nlohmann::json::parse(text);
    w.typical_samples = j.at("typical_samples").get<std::vector<int64_t>>();
    for (const auto& b : j.at("blocks"))
      w.blocks.push_back({b.at("index").get<int64_t>(), b.at("sigma2").get<double>(),
                          b.at("similarity").get<std::vector<double>>(), b.at("weights").get<std::vector<double>>()});
  } catch (const nlohmann::json::exception& e) {
    fail("recall_state.json is malformed: ", e.what());
  }
  return w;
}

}  // namespace recall
