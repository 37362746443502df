// Sweep specs and plans: decoding a spec (with YAML line/column errors), expanding the grid and
// explicit points, resolving each point's merge config, writing and reading the sweep directory.
#include "recall/sweep/plan.h"

#include <ftw.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "recall/config/merge_config.h"
#include "recall/config/yaml_text.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

// Short names for the shared helpers of recall/config/yaml_text.h.
std::string at(const std::string& where, const YAML::Node& n) { return yaml_position(where, n); }
std::string show(const YAML::Node& n) { return yaml_describe(n); }

// A value as YAML text that `--set key=<text>` reads back as the same value.
std::string flow_yaml(const YAML::Node& n) {
  if (n.IsScalar()) {
    YAML::Emitter e;
    e << n;
    return e.c_str();
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

// Every number scalar inside n in its shortest round-trip form.
void shorten_numbers(YAML::Node n) {
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      if (n[i].IsScalar()) n[i] = shortest_number(n[i].Scalar());
      else shorten_numbers(n[i]);
    }
  } else if (n.IsMap()) {
    for (auto kv : n) {
      if (kv.second.IsScalar()) n[kv.first.Scalar()] = shortest_number(kv.second.Scalar());
      else shorten_numbers(kv.second);
    }
  }
}

// The inline `config:` mapping as text whose lines and columns are those of the spec, so that
// the merge config parser's line/column messages point into the spec file: the spec's lines from
// the mapping's first token up to the next top-level key, with everything before the token
// blanked and earlier lines left empty.
std::string inline_config_text(const std::string& text, const YAML::Node& root, const YAML::Node& config) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  const int first = config.Mark().line, col = config.Mark().column;
  int end = static_cast<int>(lines.size());
  for (const auto& kv : root) {
    const int l = kv.first.Mark().line;
    if (l > first && l < end) end = l;
  }
  std::string out(static_cast<size_t>(first), '\n');
  for (int i = first; i < end; ++i) {
    std::string l = lines[static_cast<size_t>(i)];
    if (i == first) l = std::string(static_cast<size_t>(col), ' ') + l.substr(std::min(l.size(), static_cast<size_t>(col)));
    out += l + "\n";
  }
  return out;
}

void check_key(const std::string& where, const YAML::Node& k) {
  const std::string key = k.as<std::string>();
  if (key.empty() || key.find('=') != std::string::npos || key.front() == '.' || key.back() == '.' ||
      key.find("..") != std::string::npos)
    fail(at(where, k), ": '", key, "' is not a config key path (expected e.g. recall.temperature)");
  if (key == "output" || key == "output.dir")
    fail(at(where, k), ": '", key, "' cannot be swept: the sweep sets output.dir to each point's directory");
}

std::string file_stem(const std::string& path) { return fs::path(path).stem().string(); }

bool safe_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

SweepEvalConfig parse_eval(const std::string& where, const YAML::Node& n) {
  SweepEvalConfig e;
  if (n.IsNull()) return e;
  if (!n.IsMap()) fail(at(where, n), ": 'eval' must be a mapping {data, batch, dtype, device}, got ", show(n));
  std::set<std::string> names;
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    auto scalar = [&](const char* expected) {
      if (!v.IsScalar()) fail(at(where, v), ": 'eval.", k, "' must be ", expected, ", got ", show(v));
      return v.Scalar();
    };
    if (k == "data") {
      if (!v.IsSequence()) fail(at(where, v), ": 'eval.data' must be a list of {name, path}, got ", show(v));
      for (const auto& d : v) {
        SweepEvalSet s;
        if (d.IsScalar()) {
          s.path = d.Scalar();
          s.name = file_stem(s.path);
        } else if (d.IsMap()) {
          for (const auto& f : d) {
            const std::string fk = f.first.as<std::string>();
            if (fk != "name" && fk != "path")
              fail(at(where, f.first), ": unknown key 'eval.data[].", fk, "'; allowed here: name, path");
            if (!f.second.IsScalar()) fail(at(where, f.second), ": 'eval.data[].", fk, "' must be a string");
            (fk == "name" ? s.name : s.path) = f.second.Scalar();
          }
          if (s.path.empty()) fail(at(where, d), ": an 'eval.data' entry needs 'path'");
          if (s.name.empty()) s.name = file_stem(s.path);
        } else {
          fail(at(where, d), ": 'eval.data' entries must be {name, path} or a path, got ", show(d));
        }
        if (!safe_name(s.name))
          fail(at(where, d), ": eval set name '", s.name, "' must use only letters, digits, '_', '-' and '.'");
        if (!names.insert(s.name).second) fail(at(where, d), ": duplicate eval set name '", s.name, "'");
        s.path = fs::absolute(s.path).lexically_normal().string();
        e.sets.push_back(s);
      }
    } else if (k == "batch") {
      const std::string s = scalar("a positive integer");
      try {
        e.batch = v.as<int64_t>();
      } catch (const YAML::Exception&) {
        e.batch = 0;
      }
      if (e.batch < 1) fail(at(where, v), ": 'eval.batch' must be a positive integer, got '", s, "'");
    } else if (k == "dtype") {
      e.dtype = scalar("a string");
      if (e.dtype != "float32" && e.dtype != "bfloat16" && e.dtype != "float16")
        fail(at(where, v), ": 'eval.dtype' is '", e.dtype, "'; expected one of: float32, bfloat16, float16");
    } else if (k == "device") {
      e.device = scalar("a string");
    } else {
      fail(at(where, kv.first), ": unknown key 'eval.", k, "'; allowed here: data, batch, dtype, device");
    }
  }
  return e;
}

// `keep_weights`: all | none | best. Dropping weights needs evaluation results to keep instead,
// and choosing the best point needs a metric, so none and best require eval sets.
KeepWeights parse_keep_weights(const std::string& where, const YAML::Node& n, const SweepEvalConfig& eval) {
  if (!n.IsDefined() || n.IsNull()) return KeepWeights::All;
  const std::string v = n.IsScalar() ? n.Scalar() : "";
  KeepWeights k = KeepWeights::All;
  if (v == "none") k = KeepWeights::None;
  else if (v == "best") k = KeepWeights::Best;
  else if (v != "all") fail(at(where, n), ": 'keep_weights' is ", show(n), "; expected one of: all, none, best");
  if (k != KeepWeights::All && eval.sets.empty())
    fail(at(where, n), ": 'keep_weights: ", v, "' keeps ", k == KeepWeights::None ? "only" : "the weights of the best point by",
         " the evaluation results, but the spec has no eval sets; add 'eval: {data: [...]}' or use 'keep_weights: all'");
  return k;
}

}  // namespace

const char* keep_weights_name(KeepWeights k) {
  return k == KeepWeights::None ? "none" : k == KeepWeights::Best ? "best" : "all";
}

std::string sweep_point_name(int index) {
  char b[32];
  std::snprintf(b, sizeof b, "%04d", index);
  return b;
}

std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n\r") == std::string::npos) return v;
  std::string o = "\"";
  for (char c : v) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string yaml_value_at(const std::string& yaml_text, const std::string& dotted_key) {
  YAML::Node cur = YAML::Load(yaml_text);
  std::stringstream ss(dotted_key);
  for (std::string k; std::getline(ss, k, '.');) {
    if (!cur.IsMap()) return "";
    YAML::Node next = cur[k];
    if (!next.IsDefined()) return "";
    cur.reset(next);
  }
  if (cur.IsNull()) return "";
  if (cur.IsScalar()) return shortest_number(cur.Scalar());
  YAML::Node copy = YAML::Clone(cur);
  shorten_numbers(copy);
  return flow_yaml(copy);
}

SweepSpec parse_sweep_spec(const std::string& text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ":", e.mark.column + 1, ": not valid YAML: ", e.msg);
  }
  if (!root.IsMap()) fail(where, ": a sweep spec must be a YAML mapping with base_config (or config), grid, points, eval");
  SweepSpec s;
  s.where = where;
  s.text = text;
  YAML::Node base, inline_cfg, grid, points, eval, keep;
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    if (k == "base_config") base = kv.second;
    else if (k == "config") inline_cfg = kv.second;
    else if (k == "grid") grid = kv.second;
    else if (k == "points") points = kv.second;
    else if (k == "eval") eval = kv.second;
    else if (k == "keep_weights") keep = kv.second;
    else fail(at(where, kv.first), ": unknown key '", k, "'; allowed here: base_config, config, grid, points, eval, keep_weights");
  }
  if (!base.IsNull() && !inline_cfg.IsNull()) fail(at(where, inline_cfg), ": give either 'base_config' (a file) or 'config' (inline), not both");
  if (!base.IsNull()) {
    if (!base.IsScalar()) fail(at(where, base), ": 'base_config' must be a file name, got ", show(base));
    fs::path p = base.Scalar();
    if (p.is_relative()) p = fs::path(where).parent_path() / p;
    s.base_where = p.lexically_normal().string();
    if (!path_exists(s.base_where)) fail(at(where, base), ": base_config '", s.base_where, "' does not exist");
    s.base_text = read_text_file(s.base_where);
  } else if (!inline_cfg.IsNull()) {
    if (!inline_cfg.IsMap()) fail(at(where, inline_cfg), ": 'config' must be a merge config mapping, got ", show(inline_cfg));
    s.base_text = inline_config_text(text, root, inline_cfg);
    s.base_where = where;
  } else {
    fail(where, ": missing 'base_config' (a merge config file) or 'config' (an inline merge config)");
  }

  // The grid: keys in document order, the product with the last key varying fastest.
  std::vector<std::pair<YAML::Node, std::vector<YAML::Node>>> axes;
  if (!grid.IsNull()) {
    if (!grid.IsMap()) fail(at(where, grid), ": 'grid' must map config keys to lists of values, got ", show(grid));
    for (const auto& kv : grid) {
      check_key(where, kv.first);
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        fail(at(where, kv.second), ": grid '", kv.first.as<std::string>(), "' must be a non-empty list of values, got ",
             show(kv.second));
      std::vector<YAML::Node> vals(kv.second.begin(), kv.second.end());
      axes.push_back({kv.first, vals});
      s.keys.push_back(kv.first.as<std::string>());
    }
  }
  if (!axes.empty()) {
    std::vector<size_t> idx(axes.size(), 0);
    for (int n = 1;; ++n) {
      SweepPointSpec p;
      p.label = "grid point " + std::to_string(n - 1);
      for (size_t a = 0; a < axes.size(); ++a)
        p.overrides.push_back({axes[a].first.as<std::string>(), flow_yaml(axes[a].second[idx[a]])});
      p.where = at(where, axes.back().second[idx.back()]);
      s.points.push_back(p);
      size_t a = axes.size();
      while (a > 0 && ++idx[a - 1] == axes[a - 1].second.size()) idx[--a] = 0;
      if (a == 0) break;
    }
  }
  if (!points.IsNull()) {
    if (!points.IsSequence()) fail(at(where, points), ": 'points' must be a list of {key: value} mappings, got ", show(points));
    for (size_t i = 0; i < points.size(); ++i) {
      const YAML::Node& pt = points[i];
      if (!pt.IsMap()) fail(at(where, pt), ": points[", i, "] must be a mapping {key: value, ...}, got ", show(pt));
      SweepPointSpec p;
      p.label = "points[" + std::to_string(i) + "]";
      p.where = at(where, pt);
      for (const auto& kv : pt) {
        check_key(where, kv.first);
        const std::string k = kv.first.as<std::string>();
        p.overrides.push_back({k, flow_yaml(kv.second)});
        if (std::find(s.keys.begin(), s.keys.end(), k) == s.keys.end()) s.keys.push_back(k);
      }
      s.points.push_back(p);
    }
  }
  if (s.points.empty()) s.points.push_back({{}, where, "the base config"});
  s.eval = parse_eval(where, eval);
  s.keep_weights = parse_keep_weights(where, keep, s.eval);
  return s;
}

SweepSpec load_sweep_spec(const std::string& path) {
  if (!path_exists(path)) fail("sweep spec '", path, "' does not exist");
  return parse_sweep_spec(read_text_file(path), path);
}

SweepPlan write_sweep_plan(const SweepSpec& spec, const std::string& out_dir) {
  SweepPlan plan;
  plan.dir = fs::absolute(out_dir).lexically_normal().string();
  while (plan.dir.size() > 1 && plan.dir.back() == '/') plan.dir.pop_back();
  if (path_exists(plan.dir))
    fail("sweep directory '", plan.dir, "' already exists; plan into a new directory (or remove it)");
  plan.keys = spec.keys;
  plan.eval = spec.eval;
  plan.keep_weights = spec.keep_weights;

  // Resolve every point first, so that an invalid point leaves nothing behind.
  std::vector<std::string> yamls;
  ojson points = ojson::array();
  for (size_t i = 0; i < spec.points.size(); ++i) {
    const SweepPointSpec& p = spec.points[i];
    SweepPoint pt;
    pt.index = static_cast<int>(i);
    pt.dir = join_path(join_path(plan.dir, "points"), sweep_point_name(pt.index));
    std::vector<std::string> overrides;
    std::string shown;
    ojson ov = ojson::object();
    for (const auto& [k, v] : p.overrides) {
      overrides.push_back(k + "=" + v);
      shown += (shown.empty() ? "" : ", ") + k + "=" + v;
      ov[k] = v;
    }
    overrides.push_back("output.dir=" + join_path(pt.dir, "out"));
    overrides.push_back("output.overwrite=true");  // the point's out/ belongs to the sweep
    MergeConfig c;
    try {
      c = parse_merge_config(spec.base_text, spec.base_where, overrides);
    } catch (const std::exception& e) {
      fail(p.where, ": ", p.label, shown.empty() ? "" : " (" + shown + ")", ": ", e.what());
    }
    // Relative paths are taken from the directory `recall sweep plan` ran in (as `recall merge`
    // would), then frozen, so that points run from anywhere (a Slurm job's working directory).
    for (ModelEntry& m : c.models) m.path = fs::absolute(m.path).lexically_normal().string();
    if (!c.data.empty()) c.data = fs::absolute(c.data).lexically_normal().string();
    yamls.push_back(to_yaml(c));
    for (const std::string& k : plan.keys) pt.values.push_back(yaml_value_at(yamls.back(), k));
    points.push_back({{"index", pt.index}, {"name", sweep_point_name(pt.index)}, {"where", p.where},
                      {"overrides", ov}, {"values", pt.values}});
    plan.points.push_back(pt);
  }

  const std::string tmp = plan.dir + ".partial";
  remove_tree(tmp);
  std::error_code ec;
  for (size_t i = 0; i < plan.points.size(); ++i) {
    const std::string d = join_path(join_path(tmp, "points"), sweep_point_name(static_cast<int>(i)));
    make_directories(d);
    write_file_atomic(join_path(d, "config.yaml"), yamls[i]);
  }
  std::string csv = "point";
  for (const std::string& k : plan.keys) csv += "," + csv_field(k);
  csv += "\n";
  for (const SweepPoint& p : plan.points) {
    csv += sweep_point_name(p.index);
    for (const std::string& v : p.values) csv += "," + csv_field(v);
    csv += "\n";
  }
  write_file_atomic(join_path(tmp, "index.csv"), csv);
  write_file_atomic(join_path(tmp, "spec.yaml"), spec.text);
  ojson sets = ojson::array();
  for (const SweepEvalSet& s : plan.eval.sets) sets.push_back({{"name", s.name}, {"path", s.path}});
  ojson j = {{"format", "recall-sweep-1"},
             {"spec", fs::absolute(spec.where).lexically_normal().string()},
             {"base_config", spec.base_where},
             {"keys", plan.keys},
             {"eval", {{"data", sets}, {"batch", plan.eval.batch}, {"dtype", plan.eval.dtype}, {"device", plan.eval.device}}},
             {"keep_weights", keep_weights_name(plan.keep_weights)},
             {"points", points}};
  write_file_atomic(join_path(tmp, "sweep.json"), j.dump(2) + "\n");
  fs::rename(tmp, plan.dir, ec);
  if (ec) fail("cannot commit '", tmp, "' as '", plan.dir, "': ", ec.message());
  return plan;
}

SweepPlan load_sweep_plan(const std::string& dir) {
  SweepPlan plan;
  plan.dir = fs::absolute(dir).lexically_normal().string();
  while (plan.dir.size() > 1 && plan.dir.back() == '/') plan.dir.pop_back();
  const std::string path = join_path(plan.dir, "sweep.json");
  if (!path_exists(path))
    fail("'", plan.dir, "' is not a sweep directory: ", path, " is missing (make one with `recall sweep plan`)");
  ojson j;
  try {
    j = ojson::parse(read_text_file(path));
    if (j.at("format") != "recall-sweep-1")
      fail("format is '", j.at("format").get<std::string>(), "', expected 'recall-sweep-1'");
    plan.keys = j.at("keys").get<std::vector<std::string>>();
    const ojson& e = j.at("eval");
    for (const ojson& s : e.at("data")) plan.eval.sets.push_back({s.at("name"), s.at("path")});
    plan.eval.batch = e.at("batch");
    plan.eval.dtype = e.at("dtype");
    plan.eval.device = e.at("device");
    const std::string keep = j.value("keep_weights", std::string("all"));  // absent in older plans
    if (keep == "none") plan.keep_weights = KeepWeights::None;
    else if (keep == "best") plan.keep_weights = KeepWeights::Best;
    else if (keep != "all") fail("keep_weights is '", keep, "', expected all, none or best");
    for (const ojson& p : j.at("points")) {
      SweepPoint pt;
      pt.index = p.at("index");
      pt.dir = join_path(join_path(plan.dir, "points"), p.at("name").get<std::string>());
      pt.values = p.at("values").get<std::vector<std::string>>();
      if (pt.index != static_cast<int>(plan.points.size()) || pt.values.size() != plan.keys.size())
        fail("point ", plan.points.size(), " is inconsistent (index ", pt.index, ", ", pt.values.size(),
             " values for ", plan.keys.size(), " keys)");
      plan.points.push_back(pt);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not a valid sweep plan: ", e.what());
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  return plan;
}

}  // namespace recall
