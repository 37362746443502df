// report.json, report.svg and the model card of a merge.
#include "recall/pipeline/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

namespace recall {

using ojson = nlohmann::ordered_json;

void fill_report_params(MergeReport* r, const MergeInputs& in, const std::vector<TensorParams>& params) {
  for (size_t t = 0; t < in.slots.size(); ++t) {
    auto& mine = r->tensor_params[in.slots[t].name];
    for (const auto& [name, v] : params[t].all_shared()) mine[name] = {v};
    for (const auto& [name, v] : params[t].all_per_model()) mine[name] = v;
    if (in.slots[t].block >= 0 || !params[t].has("weight") || r->blocks.empty()) continue;
    r->non_block_by_tensor[in.slots[t].name] = params[t].per_model("weight");
    if (in.slots[t].role == Role::Embed) r->non_block_weights = params[t].per_model("weight");
  }
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

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// White (0) to dark blue (1).
std::string color(double v) {
  v = std::clamp(v, 0.0, 1.0);
  const int r = static_cast<int>(255 - v * (255 - 8)), g = static_cast<int>(255 - v * (255 - 48)),
            b = static_cast<int>(255 - v * (255 - 107));
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
  return buf;
}

const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

}  // namespace

std::string report_svg(const MergeReport& r) {
  const size_t M = r.models.size(), L = r.blocks.size();
  const int cell_w = 70, cell_h = std::max(8, std::min(22, L ? 440 / static_cast<int>(L) : 22)), left = 60, top = 60;
  const int heat_w = static_cast<int>(M) * cell_w, heat_h = static_cast<int>(L) * cell_h;
  const int plot_x = left + heat_w + 80, plot_w = 360, plot_h = std::max(heat_h, 200);
  const int width = plot_x + plot_w + 40, height = top + std::max(heat_h, plot_h) + 80;
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
    << "' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n";
  s << "<text x='" << left << "' y='20' font-size='14' font-weight='bold'>" << esc(r.method)
    << " merge: per-block weights (reference: " << esc(r.reference) << ")</text>\n";
  if (L == 0) {
    s << "<text x='" << left << "' y='50'>method '" << esc(r.method)
      << "' has no per-block weights; see config.resolved.yaml for its parameters</text>\n</svg>\n";
    return s.str();
  }
  // Heatmap: rows = blocks, columns = models.
  for (size_t m = 0; m < M; ++m)
    s << "<text x='" << left + m * cell_w + cell_w / 2 << "' y='" << top - 8 << "' text-anchor='middle'>"
      << esc(r.models[m]) << "</text>\n";
  for (size_t l = 0; l < L; ++l) {
    s << "<text x='" << left - 6 << "' y='" << top + l * cell_h + cell_h * 0.7 << "' text-anchor='end'>block "
      << r.blocks[l].index << "</text>\n";
    for (size_t m = 0; m < M; ++m) {
      const double w = r.blocks[l].weights[m];
      s << "<rect x='" << left + m * cell_w << "' y='" << top + l * cell_h << "' width='" << cell_w
        << "' height='" << cell_h << "' fill='" << color(w) << "' stroke='#ccc'><title>block " << r.blocks[l].index
        << ", " << esc(r.models[m]) << ": weight " << w << ", similarity " << r.blocks[l].similarity[m]
        << "</title></rect>\n";
      if (cell_h >= 12) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3f", w);
        s << "<text x='" << left + m * cell_w + cell_w / 2 << "' y='" << top + l * cell_h + cell_h * 0.7
          << "' text-anchor='middle' fill='" << (w > 0.55 ? "white" : "black") << "'>" << buf << "</text>\n";
      }
    }
  }
  // Similarity curves: x = block, y = similarity in [0, 1].
  s << "<text x='" << plot_x << "' y='" << top - 8 << "'>similarity to the reference per block</text>\n";
  s << "<rect x='" << plot_x << "' y='" << top << "' width='" << plot_w << "' height='" << plot_h
    << "' fill='none' stroke='black'/>\n";
  for (double y : {0.0, 0.5, 1.0})
    s << "<text x='" << plot_x - 4 << "' y='" << top + plot_h - y * plot_h + 4 << "' text-anchor='end'>" << y
      << "</text>\n";
  auto px = [&](size_t l) { return plot_x + (L > 1 ? static_cast<double>(l) / (L - 1) * plot_w : plot_w / 2.0); };
  auto py = [&](double v) { return top + plot_h - std::clamp(v, 0.0, 1.0) * plot_h; };
  for (size_t m = 0; m < M; ++m) {
    s << "<polyline fill='none' stroke-width='2' stroke='" << kPalette[m % 8] << "' points='";
    for (size_t l = 0; l < L; ++l) s << px(l) << "," << py(r.blocks[l].similarity[m]) << " ";
    s << "'/>\n";
    s << "<text x='" << plot_x + 8 << "' y='" << top + plot_h + 20 + 14 * m << "' fill='" << kPalette[m % 8]
      << "'>" << esc(r.models[m]) << "</text>\n";
  }
  s << "<text x='" << plot_x + plot_w / 2 << "' y='" << top + plot_h + 14 << "' text-anchor='middle'>block</text>\n";
  s << "</svg>\n";
  return s.str();
}

std::string model_card(const MergeReport& r, const std::string& resolved_yaml, const std::vector<std::string>& paths) {
  std::ostringstream s;
  s << "---\ntags:\n- merge\n- recall\n- " << r.method << "\n---\n\n";
  s << "# Merged model\n\nThis model was merged with recall using the **" << r.method
    << "** method";
  if (r.method == "recall")
    s << " (RECALL: representation-aware, layer-wise merging; per-block weights from the RBF-kernel similarity "
         "of each model's hidden representations to the reference model's on typical samples)";
  s << ".\n\n## Input models\n\n";
  for (size_t m = 0; m < r.models.size(); ++m)
    s << "- `" << r.models[m] << "`: " << (m < paths.size() ? paths[m] : "") << (r.models[m] == r.reference ? " (reference)" : "")
      << "\n";
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
  }
  s << "\n## Configuration\n\n```yaml\n" << resolved_yaml << "```\n";
  return s.str();
}

}  // namespace recall
