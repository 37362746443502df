// Gathering a sweep's results: per-point status, merge time and evaluation summaries, ranked by
// one metric, written as CSV, a markdown table and an SVG plot per swept key.
#include "recall/sweep/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "recall/sweep/keep_weights.h"
#include "recall/sweep/run.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

using json = nlohmann::json;

namespace {

std::string num(double v, const char* fmt = "%.6g") {
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

std::string first_line(const std::string& s) {
  const size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string md_cell(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
  return o;
}

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  size_t used = 0;
  try {
    *out = std::stod(s, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == s.size() && std::isfinite(*out);
}

// "kept" or "dropped" for a finished point (keep_weights), "" for the others.
std::string weights_cell(const SweepPointResult& p) {
  if (p.status != "finished") return "";
  return p.weights_kept ? "kept" : "dropped";
}

// The best point and which points' weights are on disk (keep_weights), as a markdown paragraph.
std::string weights_summary(const SweepResults& r) {
  std::string s;
  if (!r.points.empty() && r.points.front().has_metric) {
    const SweepPointResult& b = r.points.front();
    s += "Best point: " + sweep_point_name(b.index) + " (metric " + num(b.metric, "%.6g") + "), its weights " +
         (b.weights_kept ? "kept in points/" + sweep_point_name(b.index) + "/out" : std::string("dropped")) + ".\n";
  }
  std::string kept;
  int finished = 0, n = 0;
  for (const auto& p : r.points) {
    finished += p.status == "finished";
    if (p.weights_kept) kept += std::string(n++ ? ", " : "") + sweep_point_name(p.index);
  }
  if (finished == 0) return s.empty() ? s : s + "\n";
  s += "Weights (keep_weights: " + std::string(keep_weights_name(r.keep_weights)) + "): ";
  if (n == finished) s += "kept for every finished point";
  else if (n == 0) s += "dropped for every finished point (evaluation results, reports and configs kept)";
  else s += "kept for point" + std::string(n > 1 ? "s " : " ") + kept + ", dropped for the " + std::to_string(finished - n) + " other finished point" + (finished - n > 1 ? "s" : "");
  return s + ".\n\n";
}

std::string metric_title(const std::string& metric) {
  if (metric == "mean_accuracy") return "mean eval accuracy (higher is better)";
  if (metric == "neg_mean_loss") return "negative mean eval loss (higher is better)";
  return "none (no evaluation results)";
}

}  // namespace

bool sweep_metric(const std::map<std::string, SweepEvalResult>& eval, bool accuracy, double* metric) {
  double sum = 0;
  int n = 0;
  for (const auto& [name, e] : eval) {
    if (accuracy && e.has_accuracy) sum += e.accuracy, ++n;
    if (!accuracy && e.has_loss) sum -= e.loss, ++n;
  }
  if (n > 0) *metric = sum / n;
  return n > 0;
}

bool sweep_ranks_before(double a, int a_index, double b, int b_index) {
  if (std::isfinite(a) != std::isfinite(b)) return std::isfinite(a);
  if (std::isfinite(a) && a != b) return a > b;
  return a_index < b_index;
}

SweepEvalResult read_eval_result(const std::string& path) {
  SweepEvalResult r;
  try {
    const json j = json::parse(read_text_file(path));
    const json& s = j.at("summary");
    if (!s.is_object()) fail(path, ": not a `recall eval` result: 'summary' is not an object");
    double nll = 0, tokens = 0;
    for (const char* kind : {"text", "completion"})
      if (s.contains(kind) && s[kind].contains("loss")) {
        const double t = s[kind].at("tokens").get<double>();
        nll += s[kind].at("loss").get<double>() * t;
        tokens += t;
      }
    if (tokens > 0) {
      r.loss = nll / tokens;
      r.has_loss = true;
    }
    if (s.contains("choices") && s["choices"].contains("accuracy")) {
      r.accuracy = s["choices"]["accuracy"].get<double>();
      r.has_accuracy = true;
    } else if (s.contains("completion") && s["completion"].contains("exact_match")) {
      r.accuracy = s["completion"]["exact_match"].get<double>();
      r.has_accuracy = true;
    }
  } catch (const json::exception& e) {
    fail(path, ": not a `recall eval` result: ", e.what());
  }
  if (!r.has_loss && !r.has_accuracy) fail(path, ": the `recall eval` result has neither a loss nor an accuracy");
  return r;
}

SweepResults gather_sweep_results(const SweepPlan& plan) {
  SweepResults r;
  r.keys = plan.keys;
  r.keep_weights = plan.keep_weights;
  for (const SweepEvalSet& s : plan.eval.sets) r.sets.push_back(s.name);
  for (const SweepPoint& p : plan.points) {
    SweepPointResult pr;
    pr.index = p.index;
    pr.values = p.values;
    const std::string err = join_path(p.dir, "error.txt");
    if (sweep_point_finished(plan, p)) {
      pr.status = "finished";
      const std::string rp = join_path(p.dir, "out/report.json");
      try {
        const json j = json::parse(read_text_file(rp));
        for (const auto& [k, v] : j.at("timings").items()) pr.merge_seconds += v.get<double>();
      } catch (const json::exception& e) {
        fail(rp, ": not a merge report: ", e.what());
      }
      for (const SweepEvalSet& s : plan.eval.sets)
        pr.eval[s.name] = read_eval_result(sweep_eval_result_path(p, s.name));
      pr.weights_kept = !sweep_weights_dropped(p);
    } else if (path_exists(err)) {
      pr.status = "failed";
      pr.error = first_line(read_text_file(err));
    } else {
      pr.status = "pending";
    }
    r.points.push_back(pr);
  }
  // The metric: accuracy when any finished point has one, else negative loss.
  bool any_acc = false, any_loss = false;
  for (const auto& p : r.points)
    for (const auto& [n, e] : p.eval) any_acc |= e.has_accuracy, any_loss |= e.has_loss;
  r.metric = any_acc ? "mean_accuracy" : any_loss ? "neg_mean_loss" : "";
  for (auto& p : r.points)
    if (!r.metric.empty() && p.status == "finished") p.has_metric = sweep_metric(p.eval, any_acc, &p.metric);
  std::stable_sort(r.points.begin(), r.points.end(), [](const SweepPointResult& a, const SweepPointResult& b) {
    if (a.has_metric != b.has_metric) return a.has_metric;
    if (a.has_metric) return sweep_ranks_before(a.metric, a.index, b.metric, b.index);
    return a.index < b.index;
  });
  return r;
}

std::string sweep_results_csv(const SweepResults& r) {
  std::string s = "point";
  for (const auto& k : r.keys) s += "," + csv_field(k);
  s += ",status,metric";
  for (const auto& n : r.sets) s += "," + csv_field(n + ".loss") + "," + csv_field(n + ".accuracy");
  s += ",merge_seconds,weights,error\n";
  for (const auto& p : r.points) {
    s += sweep_point_name(p.index);
    for (const auto& v : p.values) s += "," + csv_field(v);
    s += "," + p.status + "," + (p.has_metric ? num(p.metric, "%.10g") : "");
    for (const auto& n : r.sets) {
      auto it = p.eval.find(n);
      const bool have = it != p.eval.end();
      s += "," + (have && it->second.has_loss ? num(it->second.loss, "%.10g") : "");
      s += "," + (have && it->second.has_accuracy ? num(it->second.accuracy, "%.10g") : "");
    }
    s += "," + (p.status == "finished" ? num(p.merge_seconds, "%.3f") : "") + "," + weights_cell(p) + "," +
         csv_field(p.error) + "\n";
  }
  return s;
}

std::string sweep_results_markdown(const SweepResults& r, const std::string& title) {
  size_t finished = 0, failed = 0, pending = 0;
  for (const auto& p : r.points) (p.status == "finished" ? finished : p.status == "failed" ? failed : pending)++;
  std::string s = "# Sweep results: " + title + "\n\n";
  s += std::to_string(r.points.size()) + " points: " + std::to_string(finished) + " finished, " +
       std::to_string(failed) + " failed, " + std::to_string(pending) + " pending.\n\n";
  s += "Metric: " + metric_title(r.metric) + ". Best first.\n\n";
  s += weights_summary(r);
  s += "| rank | point |";
  std::string rule = "|---:|---:|";
  for (const auto& k : r.keys) s += " " + md_cell(k) + " |", rule += "---|";
  s += " metric |";
  rule += "---:|";
  for (const auto& n : r.sets) {
    s += " " + md_cell(n) + " loss | " + md_cell(n) + " accuracy |";
    rule += "---:|---:|";
  }
  s += " merge s | weights |\n" + rule + "---:|---|\n";
  int rank = 0;
  for (const auto& p : r.points) {
    if (p.status != "finished") continue;
    s += "| " + std::to_string(++rank) + " | " + sweep_point_name(p.index) + " |";
    for (const auto& v : p.values) s += " " + md_cell(v) + " |";
    s += " " + (p.has_metric ? num(p.metric, "%.6g") : std::string("-")) + " |";
    for (const auto& n : r.sets) {
      const SweepEvalResult& e = p.eval.at(n);
      s += " " + (e.has_loss ? num(e.loss, "%.6g") : std::string("-")) + " | " +
           (e.has_accuracy ? num(e.accuracy, "%.4g") : std::string("-")) + " |";
    }
    s += " " + num(p.merge_seconds, "%.1f") + " | " + weights_cell(p) + " |\n";
  }
  auto list = [&](const char* status, const char* heading) {
    std::string out;
    for (const auto& p : r.points) {
      if (p.status != status) continue;
      out += "- point " + sweep_point_name(p.index);
      if (!r.keys.empty()) {
        out += " (";
        for (size_t k = 0; k < r.keys.size(); ++k) out += (k ? ", " : "") + r.keys[k] + "=" + p.values[k];
        out += ")";
      }
      if (!p.error.empty()) out += ": " + p.error + " (see points/" + sweep_point_name(p.index) + "/error.txt)";
      out += "\n";
    }
    if (!out.empty()) s += std::string("\n## ") + heading + "\n\n" + out;
  };
  list("failed", "Failed points");
  list("pending", "Pending points (not run yet)");
  return s;
}

std::string sweep_results_svg(const SweepResults& r) {
  const int pw = 340, ph = 250, ml = 64, mr = 16, mt = 34, mb = 56;  // panel size and margins, px
  std::vector<std::string> keys = r.keys;
  const bool by_point = keys.empty();
  if (by_point) keys.push_back("point");
  const int cols = std::min<int>(3, static_cast<int>(keys.size()));
  const int rows = (static_cast<int>(keys.size()) + cols - 1) / cols;
  const int W = cols * pw, H = rows * ph + 30;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(W) + "\" height=\"" +
                  std::to_string(H) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"8\" y=\"18\" font-size=\"13\">metric: " + xml_escape(metric_title(r.metric)) + "</text>\n";
  std::vector<const SweepPointResult*> pts;
  for (const auto& p : r.points)
    if (p.has_metric) pts.push_back(&p);
  if (pts.empty()) {
    s += "<text x=\"8\" y=\"40\">no finished point has evaluation results yet</text>\n</svg>\n";
    return s;
  }
  double ylo = pts[0]->metric, yhi = ylo;
  for (auto* p : pts) ylo = std::min(ylo, p->metric), yhi = std::max(yhi, p->metric);
  if (yhi - ylo < 1e-12) ylo -= 0.5, yhi += 0.5;
  const double ypad = 0.06 * (yhi - ylo);
  ylo -= ypad, yhi += ypad;
  for (size_t k = 0; k < keys.size(); ++k) {
    const int ox = static_cast<int>(k % cols) * pw, oy = 30 + static_cast<int>(k / cols) * ph;
    const int x0 = ox + ml, x1 = ox + pw - mr, y0 = oy + mt, y1 = oy + ph - mb;
    std::vector<std::string> xs;
    for (auto* p : pts) xs.push_back(by_point ? std::to_string(p->index) : p->values[k]);
    bool numeric = true;
    std::vector<double> xv(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) numeric &= parse_number(xs[i], &xv[i]);
    std::vector<std::string> cats;  // categorical axis: distinct values in point order
    if (!numeric) {
      std::vector<std::pair<int, std::string>> seen;
      for (size_t i = 0; i < xs.size(); ++i)
        if (std::none_of(seen.begin(), seen.end(), [&](const auto& e) { return e.second == xs[i]; }))
          seen.push_back({pts[i]->index, xs[i]});
      std::sort(seen.begin(), seen.end());
      for (auto& e : seen) cats.push_back(e.second);
      for (size_t i = 0; i < xs.size(); ++i)
        xv[i] = static_cast<double>(std::find(cats.begin(), cats.end(), xs[i]) - cats.begin());
    }
    double xlo = *std::min_element(xv.begin(), xv.end()), xhi = *std::max_element(xv.begin(), xv.end());
    if (!numeric) xlo = -0.5, xhi = static_cast<double>(cats.size()) - 0.5;
    if (xhi - xlo < 1e-12) xlo -= 0.5, xhi += 0.5;
    if (numeric) {
      const double pad = 0.06 * (xhi - xlo);
      xlo -= pad, xhi += pad;
    }
    auto X = [&](double v) { return x0 + (v - xlo) / (xhi - xlo) * (x1 - x0); };
    auto Y = [&](double v) { return y1 - (v - ylo) / (yhi - ylo) * (y1 - y0); };
    s += "<g>\n<text x=\"" + std::to_string((x0 + x1) / 2) + "\" y=\"" + std::to_string(oy + 20) +
         "\" text-anchor=\"middle\" font-size=\"12\">" + xml_escape(keys[k]) + "</text>\n";
    s += "<rect x=\"" + std::to_string(x0) + "\" y=\"" + std::to_string(y0) + "\" width=\"" + std::to_string(x1 - x0) +
         "\" height=\"" + std::to_string(y1 - y0) + "\" fill=\"none\" stroke=\"#888\"/>\n";
    for (int t = 0; t <= 4; ++t) {
      const double v = ylo + (yhi - ylo) * t / 4;
      s += "<text x=\"" + std::to_string(x0 - 4) + "\" y=\"" + num(Y(v) + 4, "%.1f") + "\" text-anchor=\"end\">" +
           num(v, "%.4g") + "</text>\n";
    }
    if (numeric) {
      // Few distinct values (the usual grid): a tick at each; otherwise 5 even ticks.
      std::vector<double> ticks(xv);
      std::sort(ticks.begin(), ticks.end());
      ticks.erase(std::unique(ticks.begin(), ticks.end()), ticks.end());
      if (ticks.size() > 8) {
        ticks.clear();
        for (int t = 0; t <= 4; ++t) ticks.push_back(xlo + (xhi - xlo) * t / 4);
      }
      for (double v : ticks)
        s += "<text x=\"" + num(X(v), "%.1f") + "\" y=\"" + std::to_string(y1 + 14) + "\" text-anchor=\"middle\">" +
             num(v, "%.4g") + "</text>\n";
    } else {
      for (size_t c = 0; c < cats.size(); ++c)
        s += "<text x=\"" + num(X(static_cast<double>(c)), "%.1f") + "\" y=\"" + std::to_string(y1 + 14) +
             "\" text-anchor=\"middle\">" + xml_escape(cats[c].size() > 14 ? cats[c].substr(0, 13) + "~" : cats[c]) + "</text>\n";
    }
    for (size_t i = 0; i < pts.size(); ++i)
      s += "<circle cx=\"" + num(X(xv[i]), "%.1f") + "\" cy=\"" + num(Y(pts[i]->metric), "%.1f") +
           "\" r=\"4\" fill=\"#1f77b4\" fill-opacity=\"0.75\"><title>point " + sweep_point_name(pts[i]->index) +
           ": " + num(pts[i]->metric, "%.6g") + "</title></circle>\n";
    s += "</g>\n";
  }
  return s + "</svg>\n";
}

SweepResults write_sweep_report(const std::string& dir) {
  const SweepPlan plan = load_sweep_plan(dir);
  SweepResults r = gather_sweep_results(plan);
  write_file_atomic(join_path(plan.dir, "results.csv"), sweep_results_csv(r));
  write_file_atomic(join_path(plan.dir, "results.md"), sweep_results_markdown(r, plan.dir));
  write_file_atomic(join_path(plan.dir, "results.svg"), sweep_results_svg(r));
  return r;
}

}  // namespace recall
