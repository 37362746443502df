// report.json and the model card of a merge, and what the config says about it (report.svg is
// drawn in report_svg.cpp).
#include "recall/pipeline/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>


namespace recall {

using ojson = nlohmann::ordered_json;

void fill_report_params(MergeReport* r, const MergeInputs& in, const std::vector<TensorParams>& params) {
  r->base = in.base;
  for (size_t t = 0; t < in.slots.size(); ++t) {
    auto& mine = r->tensor_params[in.slots[t].name];
    for (const auto& [name, v] : params[t].all_shared()) mine[name] = {v};
    for (const auto& [name, v] : params[t].all_per_model()) mine[name] = v;
    if (in.slots[t].block >= 0 || !params[t].has("weight") || r->blocks.empty()) continue;
    r->non_block_by_tensor[in.slots[t].name] = params[t].per_model("weight");
    if (in.slots[t].role == Role::Embed) r->non_block_weights = params[t].per_model("weight");
  }
}

namespace {

// The base model's index when the method uses one (a config may name a base the method ignores).
std::optional<size_t> used_base(const MergeReport& r) {
  const MethodSpec* m = find_merge_method(r.method);
  if (!r.base || !m || m->base == BaseUse::None || *r.base >= r.models.size()) return std::nullopt;
  return r.base;
}

std::string base_name(const MergeReport& r) {
  const auto b = used_base(r);
  return b ? "`" + r.models[*b] + "`" : "the base model";
}

const ParamSummary* find_param(const std::vector<ParamSummary>& ps, const std::string& name) {
  for (const ParamSummary& p : ps)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace

std::string format_range(double lo, double hi) {
  char buf[64];
  if (lo == hi) std::snprintf(buf, sizeof buf, "%.4g", lo);
  else std::snprintf(buf, sizeof buf, "%.4g-%.4g", lo, hi);
  return buf;
}

std::string format_param(const MergeReport& r, const ParamSummary& p, size_t i) {
  const MethodSpec* m = find_merge_method(r.method);
  const ParamSpec* spec = m ? m->param(p.name) : nullptr;
  if (spec && spec->kind == ParamKind::Bool)
    return p.lo[i] == p.hi[i] ? (p.lo[i] != 0 ? "true" : "false") : "false or true";
  return format_range(p.lo[i], p.hi[i]);
}

std::vector<ParamSummary> summarize_params(const MergeReport& r) {
  std::vector<ParamSummary> out;
  if (r.method == "recall") return out;
  for (const auto& [tensor, params] : r.tensor_params)
    for (const auto& [name, values] : params) {
      auto it = std::find_if(out.begin(), out.end(), [&](const ParamSummary& p) { return p.name == name; });
      if (it == out.end()) {
        out.push_back({name, values.size() > 1 && values.size() == r.models.size(), values, values});
        continue;
      }
      for (size_t i = 0; i < values.size() && i < it->lo.size(); ++i)
        it->lo[i] = std::min(it->lo[i], values[i]), it->hi[i] = std::max(it->hi[i], values[i]);
    }
  return out;
}

BaselineWeights baseline_weights(const MergeReport& r) {
  BaselineWeights w;
  const std::vector<ParamSummary> ps = summarize_params(r);
  const auto base = used_base(r);
  if (r.method == "slerp") {
    const ParamSummary* t = find_param(ps, "t");
    if (!t || !base || r.models.size() != 2) return w;
    w.meaning = "share of the output";
    w.lo.assign(2, 0), w.hi.assign(2, 0);
    const size_t other = 1 - *base;
    w.lo[*base] = 1 - t->hi[0], w.hi[*base] = 1 - t->lo[0], w.lo[other] = t->lo[0], w.hi[other] = t->hi[0];
    return w;
  }
  const ParamSummary* weight = find_param(ps, "weight");
  if (!weight || !weight->per_model) return w;
  w.lo = weight->lo, w.hi = weight->hi;
  const ParamSummary* normalize = find_param(ps, "normalize");
  if (base) {
    w.meaning = "weight of its task vector";
    w.lo[*base] = w.hi[*base] = std::nan("");
  } else if (r.method == "linear" && normalize && normalize->lo[0] == 1 && normalize->hi[0] == 1 && weight->constant()) {
    // With weights that vary between tensors the shares do too; then the weights are shown as given.
    double sum = 0;
    for (double x : w.lo) sum += x;
    w.meaning = "share of the output";
    if (sum != 0)
      for (size_t m = 0; m < w.lo.size(); ++m) w.lo[m] /= sum, w.hi[m] /= sum;
  } else {
    w.meaning = "weight";
  }
  return w;
}

std::string method_summary(const MergeReport& r) {
  std::ostringstream s;
  const std::vector<ParamSummary> ps = summarize_params(r);
  const std::string base = base_name(r);
  const ParamSummary* density = find_param(ps, "density");
  std::string kept;  // the densities of the models other than the base
  if (density) {
    double lo = 1, hi = 0;
    for (size_t m = 0; m < density->lo.size(); ++m)
      if (!used_base(r) || m != *used_base(r)) lo = std::min(lo, density->lo[m]), hi = std::max(hi, density->hi[m]);
    if (lo <= hi) kept = format_range(lo * 100, hi * 100) + "%";
  }
  if (r.method == "recall") {
    s << "RECALL: representation-aware, layer-wise merging; each block's weights are a softmax over the RBF-kernel "
         "similarity of every model's hidden representations to the reference model's on typical samples";
  } else if (r.method == "linear") {
    s << "a weighted average of every tensor";
    if (const ParamSummary* n = find_param(ps, "normalize"))
      s << (n->hi[0] == 1 ? ", the weights divided by their sum" : " (weights not normalized)");
  } else if (r.method == "slerp") {
    s << "spherical interpolation of every tensor from " << base << " (t = 0) to the other model (t = 1)";
    if (const ParamSummary* t = find_param(ps, "t")) s << " at t = " << format_range(t->lo[0], t->hi[0]);
  } else if (r.method == "task_arithmetic") {
    s << "task arithmetic: " << base << " + lambda x the weighted sum of the task vectors (model - " << base << ")";
  } else if (r.method == "ties") {
    s << "TIES: task vectors (model - " << base << ") trimmed by magnitude"
      << (kept.empty() ? "" : " (keeping the top " + kept + ")")
      << ", signs elected, disagreeing entries dropped, the rest averaged and added to " << base << " (scaled by lambda)";
  } else if (r.method == "dare_linear" || r.method == "dare_ties") {
    s << "DARE: task vectors (model - " << base << ") with entries dropped at random"
      << (kept.empty() ? "" : " (keeping " + kept + ")") << " and rescaled, then "
      << (r.method == "dare_ties" ? "TIES sign election and " : "") << "a weighted sum added to " << base
      << " (scaled by lambda)";
  } else if (const MethodSpec* m = find_merge_method(r.method)) {
    s << m->summary;
  } else {
    s << r.method;
  }
  return s.str();
}

std::string report_json(const MergeReport& r) {
  ojson blocks = ojson::array();
  for (const auto& b : r.blocks)
    blocks.push_back({{"index", b.index}, {"sigma2", b.sigma2}, {"similarity", b.similarity}, {"weights", b.weights}});
  ojson memory = ojson::array();
  std::vector<uint64_t> peak_rss;
  for (size_t rank = 0; rank < r.memory.size(); ++rank) {
    const auto& m = r.memory[rank];
    memory.push_back({{"rank", rank}, {"planned_bytes", m.planned}, {"peak_anon_bytes", m.peak_anon},
                      {"peak_file_bytes", m.peak_file}, {"peak_rss_bytes", m.peak_rss}});
    peak_rss.push_back(m.peak_rss);
  }
  ojson timings = ojson::object();
  for (const auto& [k, v] : r.timings) timings[k] = v;
  ojson merge_loop = ojson::array();
  for (const auto& s : r.merge_loop_seconds)
    merge_loop.push_back({{"wait_for_reads", s[0]}, {"merge", s[1]}, {"write", s[2]}});
  ojson j = {{"method", r.method},
             {"models", r.models},
             {"reference", r.reference},
             {"base", used_base(r) ? ojson(r.models[*used_base(r)]) : ojson()},
             {"typical_samples", r.typical_samples},
             {"blocks", blocks},
             {"non_block_weights", r.non_block_weights},
             {"non_block", r.non_block_by_tensor},
             {"tensor_params", r.tensor_params},
             {"timings", timings},
             {"bytes_read", r.bytes_read},
             {"bytes_written", r.bytes_written},
             {"memory", memory},
             {"peak_rss_bytes", peak_rss},
             {"merge_loop_seconds", merge_loop},
             {"world_size", r.world},
             {"calibration_samples", r.calibration_samples},
             {"regmean_rcond", r.rcond},
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
  return j.dump(2) + "\n";
}

std::string model_card(const MergeReport& r, const std::string& resolved_yaml, const std::vector<std::string>& paths) {
  std::ostringstream s;
  s << "---\nlibrary_name: transformers\ntags:\n- merge\n- recall\n";
  if (r.method != "recall") s << "- " << r.method << "\n";
  s << "---\n\n# Merged model\n\nThis model was merged with recall using the **" << r.method << "** method ("
    << method_summary(r) << ").\n\n## Input models\n\n";
  const auto base = used_base(r);
  for (size_t m = 0; m < r.models.size(); ++m) {
    s << "- `" << r.models[m] << "`: " << (m < paths.size() ? paths[m] : "");
    if (r.method == "recall" && r.models[m] == r.reference)
      s << " (reference: the newly fine-tuned model whose task data chose the typical samples)";
    if (base && *base == m) s << (r.method == "slerp" ? " (base: t = 0)" : " (base: the task vectors are differences to it)");
    s << "\n";
  }
  if (!r.blocks.empty()) {
    s << "\n## Per-block weights\n\n| block |";
    for (const auto& n : r.models) s << " " << n << " |";
    s << "\n|---|";
    for (size_t m = 0; m < r.models.size(); ++m) s << "---|";
    s << "\n";
    for (const auto& b : r.blocks) {
      s << "| " << b.index << " |";
      for (double w : b.weights) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " %.4f |", w);
        s << buf;
      }
      s << "\n";
    }
  } else if (const std::vector<ParamSummary> ps = summarize_params(r); !ps.empty()) {
    // A column per per-model parameter, a line for the shared ones; ranges where tensors differ.
    s << "\n## Parameters\n\n| model |";
    for (const ParamSummary& p : ps)
      if (p.per_model) s << " " << p.name << " |";
    s << "\n|---|";
    for (const ParamSummary& p : ps)
      if (p.per_model) s << "---|";
    s << "\n";
    for (size_t m = 0; m < r.models.size(); ++m) {
      s << "| " << r.models[m] << " |";
      for (const ParamSummary& p : ps)
        if (p.per_model) s << " " << (base && *base == m ? std::string("(base)") : format_param(r, p, m)) << " |";
      s << "\n";
    }
    std::string shared;
    bool varies = false;
    for (const ParamSummary& p : ps) {
      varies = varies || !p.constant();
      if (!p.per_model) shared += (shared.empty() ? "" : "; ") + p.name + ": " + format_param(r, p, 0);
    }
    if (!shared.empty()) s << "\n" << shared << "\n";
    if (varies) s << "\nA range a-b: the value differs between tensors (gradients or filters); report.json's "
                     "`tensor_params` gives every tensor's.\n";
  }
  s << "\n## Configuration\n\n```yaml\n" << resolved_yaml << "```\n";
  return s.str();
}

}  // namespace recall
