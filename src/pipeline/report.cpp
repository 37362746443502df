// report.json and the model card of a merge, and what the config says about it (report.svg is
// drawn in report_svg.cpp).
#include "recall/pipeline/report.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "recall/config/merge_config.h"
#include "recall/merge/methods.h"

namespace recall {

using ojson = nlohmann::ordered_json;

uint64_t peak_rss_bytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

void describe_merge(MergeReport* r, const MergeConfig& c) {
  r->method = c.method;
  r->models.clear();
  for (const ModelEntry& m : c.models) r->models.push_back(m.name);
  const MergeMethod method = parse_merge_method(c.method);
  const bool task_vectors = method != MergeMethod::Recall && method != MergeMethod::Linear && method != MergeMethod::Slerp;
  r->reference = method == MergeMethod::Recall ? c.reference : "";
  r->base = task_vectors ? c.base : "";
  if (method == MergeMethod::Recall) return;
  r->weights = c.params.weight.empty() ? std::vector<double>(c.models.size(), 1.0) : c.params.weight;
  r->normalize = c.params.normalize.value_or(method == MergeMethod::Linear ||
                                             (task_vectors && task_vector_defaults(method).normalize));
  r->density = c.params.density;
  r->lambda = c.params.lambda;
  r->t = c.params.t;
  r->seed = c.params.seed;
}

std::string method_summary(const MergeReport& r) {
  std::ostringstream s;
  // The parameters are known when the job recorded them (describe_merge); otherwise the sentence
  // names none rather than print defaults that may not be what ran.
  const bool known = !r.weights.empty();
  const std::string base = known && !r.base.empty() ? "`" + r.base + "`" : "the base model";
  auto percent = [&](const char* what) {
    if (known) s << " (" << what << r.density * 100 << "%)";
  };
  if (r.method == "recall") {
    s << "RECALL: representation-aware, layer-wise merging; each block's weights are a softmax over the RBF-kernel "
         "similarity of every model's hidden representations to the reference model's on typical samples";
  } else if (r.method == "linear") {
    s << "a weighted average of every tensor";
    if (known) s << (r.normalize ? ", the weights divided by their sum" : " (weights not normalized)");
  } else if (r.method == "slerp") {
    s << "spherical interpolation of every tensor from the first model (t = 0) to the second (t = 1)";
    if (known) s << " at t = " << r.t;
  } else if (r.method == "task_arithmetic") {
    s << "task arithmetic: " << base << " + lambda x the weighted sum of the task vectors (model - " << base << ")";
  } else if (r.method == "ties") {
    s << "TIES: task vectors (model - " << base << ") trimmed by magnitude";
    percent("keeping the top ");
    s << ", signs elected, disagreeing entries dropped, the rest averaged and added to " << base << " (scaled by lambda)";
  } else if (r.method == "dare_linear" || r.method == "dare_ties") {
    s << "DARE: task vectors (model - " << base << ") with entries dropped at random";
    percent("keeping ");
    s << " and rescaled, then " << (r.method == "dare_ties" ? "TIES sign election and " : "")
      << "a weighted sum added to " << base << " (scaled by lambda)";
  } else {
    s << r.method;
  }
  return s.str();
}

std::vector<double> baseline_weights(const MergeReport& r) {
  if (r.method == "recall" || r.weights.size() != r.models.size()) return {};
  if (r.method == "slerp") return {1 - r.t, r.t};
  std::vector<double> w = r.weights;
  double sum = 0;
  for (double x : w) sum += x;
  for (size_t m = 0; m < w.size(); ++m) {
    if (!r.base.empty() && r.models[m] == r.base) w[m] = std::nan("");
    else if (r.method == "linear" && r.normalize && sum != 0) w[m] /= sum;
  }
  return w;
}

std::string baseline_weight_meaning(const MergeReport& r) {
  if (!r.base.empty()) return "weight of its task vector";
  return r.method == "linear" && !r.normalize ? "weight" : "share of the output";
}

std::string report_json(const MergeReport& r) {
  ojson blocks = ojson::array();
  for (const auto& b : r.blocks)
    blocks.push_back({{"index", b.index}, {"sigma2", b.sigma2}, {"similarity", b.similarity}, {"weights", b.weights}});
  ojson timings = ojson::object();
  for (const auto& [k, v] : r.timings) timings[k] = v;
  ojson merge_loop = ojson::array();
  for (const auto& s : r.merge_loop_seconds)
    merge_loop.push_back({{"wait_for_reads", s[0]}, {"merge", s[1]}, {"write", s[2]}});
  ojson j = {{"method", r.method},
             {"models", r.models},
             {"reference", r.reference},
             {"typical_samples", r.typical_samples},
             {"blocks", blocks},
             {"non_block_weights", r.non_block_weights},
             {"non_block", r.non_block_by_tensor},
             {"timings", timings},
             {"bytes_read", r.bytes_read},
             {"bytes_written", r.bytes_written},
             {"peak_rss_bytes", r.peak_rss_bytes},
             {"merge_loop_seconds", merge_loop},
             {"world_size", r.world},
             {"output_dtype", r.output_dtype}};
  double merge_s = 0;
  for (const auto& [k, v] : r.timings)
    if (k == "merge") merge_s = v;
  // Throughput per phase: bytes this phase moved over its seconds.
  double export_s = 0;
  for (const auto& [k, v] : r.timings)
    if (k == "export") export_s = v;
  ojson rates = ojson::object();
  if (merge_s > 0) {
    j["merge_read_gb_per_s"] = static_cast<double>(r.bytes_read) / 1e9 / merge_s;
    rates["merge_read_gb_per_s"] = static_cast<double>(r.bytes_read) / 1e9 / merge_s;
    rates["merge_write_gb_per_s"] = static_cast<double>(r.merge_bytes_written) / 1e9 / merge_s;
  }
  if (export_s > 0) rates["export_write_gb_per_s"] = static_cast<double>(r.export_bytes_written) / 1e9 / export_s;
  j["gb_per_s"] = rates;
  if (r.method == "slerp") {
    j["params"] = {{"t", r.t}};
  } else if (r.method != "recall" && !r.weights.empty()) {
    ojson params = {{"weight", r.weights}, {"normalize", r.normalize}};
    if (!r.base.empty()) params["base"] = r.base, params["lambda"] = r.lambda;
    if (r.method == "ties" || r.method.rfind("dare_", 0) == 0) params["density"] = r.density;
    if (r.method.rfind("dare_", 0) == 0) params["seed"] = r.seed;
    if (r.method == "slerp") params["t"] = r.t;
    j["params"] = params;
  }
  return j.dump(2) + "\n";
}

std::string model_card(const MergeReport& r, const std::string& resolved_yaml, const std::vector<std::string>& paths) {
  std::ostringstream s;
  s << "---\nlibrary_name: transformers\ntags:\n- merge\n- recall\n";
  if (r.method != "recall") s << "- " << r.method << "\n";
  s << "---\n\n# Merged model\n\nThis model was merged with recall using the **" << r.method << "** method ("
    << method_summary(r) << ").\n\n## Input models\n\n";
  for (size_t m = 0; m < r.models.size(); ++m) {
    s << "- `" << r.models[m] << "`: " << (m < paths.size() ? paths[m] : "");
    if (r.method == "recall" && r.models[m] == r.reference)
      s << " (reference: the newly fine-tuned model whose task data chose the typical samples)";
    if (!r.base.empty() && r.models[m] == r.base) s << " (base: the task vectors are differences to it)";
    if (r.method == "slerp" && m < 2) s << (m == 0 ? " (t = 0)" : " (t = 1)");
    s << "\n";
  }
  char buf[64];
  if (!r.blocks.empty()) {
    s << "\n## Per-block weights\n\n| block |";
    for (const auto& n : r.models) s << " " << n << " |";
    s << "\n|---|";
    for (size_t m = 0; m < r.models.size(); ++m) s << "---|";
    s << "\n";
    for (const auto& b : r.blocks) {
      s << "| " << b.index << " |";
      for (double w : b.weights) {
        std::snprintf(buf, sizeof buf, " %.4f |", w);
        s << buf;
      }
      s << "\n";
    }
  } else if (const std::vector<double> w = baseline_weights(r); !w.empty()) {
    s << "\n## Parameters\n\n| model | " << baseline_weight_meaning(r) << " |\n|---|---|\n";
    for (size_t m = 0; m < w.size(); ++m) {
      std::snprintf(buf, sizeof buf, "%.4g", w[m]);
      s << "| " << r.models[m] << " | " << (std::isnan(w[m]) ? std::string("(base)") : std::string(buf)) << " |\n";
    }
    s << "\n";
    if (r.method != "slerp") s << "normalize: " << (r.normalize ? "true" : "false");
    if (!r.base.empty()) s << "; lambda: " << r.lambda;
    if (r.method == "ties" || r.method.rfind("dare_", 0) == 0) s << "; density: " << r.density;
    if (r.method.rfind("dare_", 0) == 0) s << "; seed: " << r.seed;
    if (r.method == "slerp") s << "t: " << r.t;
    s << "\n";
  }
  s << "\n## Configuration\n\n```yaml\n" << resolved_yaml << "```\n";
  return s.str();
}

}  // namespace recall
