// Decoding of the merge job's YAML config into typed structs, with line/column errors.
#include "recall/config/merge_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <set>
#include <sstream>

#include "recall/config/yaml_text.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

const char* const kMergeMethods = "recall, linear, task_arithmetic, ties, dare_linear, dare_ties, slerp";

namespace {

// Short names for the shared helpers of recall/config/yaml_text.h.
std::string at(const std::string& where, const YAML::Node& n) { return yaml_position(where, n); }
std::string show(const YAML::Node& n) { return yaml_describe(n); }

// Parses "5GB", "512MiB", "1000" into bytes.
bool parse_byte_size(const std::string& s, uint64_t* out) {
  size_t pos = 0;
  double v;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return false;
  }
  std::string unit = s.substr(pos);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::pair<const char*, double> units[] = {
      {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto& [name, mult] : units)
    if (unit == name) {
      if (!(v >= 0) || v * mult > 1.8e19) return false;
      *out = static_cast<uint64_t>(std::llround(v * mult));
      return true;
    }
  return false;
}

// A YAML mapping being decoded: typed reads that remember which keys were used, so that any
// other key is reported as unknown.
class Section {
 public:
  Section(YAML::Node node, std::string prefix, const std::string& where)
      : node_(std::move(node)), prefix_(std::move(prefix)), where_(where) {
    if (node_ && !node_.IsNull() && !node_.IsMap())
      fail(at(where_, node_), ": '", prefix_.empty() ? "config" : prefix_, "' must be a mapping, got ", show(node_));
  }

  std::string key_path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  YAML::Node child(const std::string& key) {
    used_.insert(key);
    if (!node_ || node_.IsNull()) return YAML::Node();
    return node_[key];
  }

  template <typename T>
  void read(const std::string& key, T* out, const char* expected) {
    YAML::Node n = child(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar()) fail(at(where_, n), ": '", key_path(key), "' must be ", expected, ", got ", show(n));
    try {
      *out = n.as<T>();
    } catch (const YAML::Exception&) {
      fail(at(where_, n), ": '", key_path(key), "' must be ", expected, ", got ", show(n));
    }
  }
  void str(const std::string& key, std::string* out) { read(key, out, "a string"); }
  void integer(const std::string& key, int64_t* out) { read(key, out, "an integer"); }
  void uinteger(const std::string& key, uint64_t* out) { read(key, out, "a non-negative integer"); }
  void number(const std::string& key, double* out) { read(key, out, "a number"); }
  void boolean(const std::string& key, bool* out) { read(key, out, "true or false"); }
  void boolean(const std::string& key, std::optional<bool>* out) {
    YAML::Node n = child(key);
    if (!n || n.IsNull()) return;
    bool v = false;
    read(key, &v, "true or false");
    *out = v;
  }
  void bytes(const std::string& key, uint64_t* out) {
    YAML::Node n = child(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar() || !parse_byte_size(n.Scalar(), out))
      fail(at(where_, n), ": '", key_path(key), "' must be a byte count such as 5000000000 or 5GB, got ", show(n));
  }

  // Errors on keys that no read asked for.
  void finish(const char* allowed) const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar())
        fail(at(where_, kv.first), ": a key in '", prefix_.empty() ? "config" : prefix_, "' is ", show(kv.first),
             "; keys must be plain names");
      const std::string k = kv.first.Scalar();
      if (!used_.count(k))
        fail(at(where_, kv.first), ": unknown key '", key_path(k), "'; allowed here: ", allowed);
    }
  }

  const YAML::Node& node() const { return node_; }

 private:
  YAML::Node node_;
  std::string prefix_;
  const std::string& where_;
  std::set<std::string> used_;
};

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set '", assignment, "': expected key.sub=value");
  const std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail("--set '", assignment, "': value is not valid YAML: ", e.msg);
  }
  std::vector<std::string> keys;
  std::stringstream ss(path);
  for (std::string k; std::getline(ss, k, '.');) {
    if (k.empty()) fail("--set '", assignment, "': empty key in '", path, "'");
    keys.push_back(k);
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = cur[keys[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      fail("--set '", assignment, "': '", keys[i], "' is not a mapping");
    if (!next.IsDefined() || next.IsNull()) cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node child = cur[keys[i]];
    cur.reset(child);  // rebind (plain assignment would overwrite the value)
  }
  cur[keys.back()] = parsed;
}

void check_one_of(const std::string& where, const std::string& key, const std::string& value,
                  std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  fail(where, ": '", key, "' is '", value, "'; expected one of: ", list);
}

}  // namespace

size_t MergeConfig::model_index(const std::string& name) const {
  for (size_t i = 0; i < models.size(); ++i)
    if (models[i].name == name) return i;
  fail("no model named '", name, "' in the config");
}

namespace {
MergeConfig decode_merge_config(const std::string& text, const std::string& where,
                                const std::vector<std::string>& overrides);
}  // namespace

MergeConfig parse_merge_config(const std::string& text, const std::string& where,
                               const std::vector<std::string>& overrides) {
  try {
    return decode_merge_config(text, where, overrides);
  } catch (const YAML::Exception& e) {
    // Every expected case has its own message; this is the net for yaml-cpp's other throws.
    fail(where, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg);
  }
}

namespace {
MergeConfig decode_merge_config(const std::string& text, const std::string& where,
                                const std::vector<std::string>& overrides) {
  // yaml-cpp parses flow collections recursively: bound their nesting before it can exhaust the
  // stack (a config needs at most 3 levels).
  int depth = 0, line = 1;
  for (char ch : text) {
    if (ch == '\n') ++line;
    if (ch == '[' || ch == '{') {
      if (++depth > 32) fail(where, ":", line, ": collections nested more than 32 deep; not a merge config");
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ":", e.mark.column + 1, ": not valid YAML: ", e.msg);
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) fail(where, ": the config must be a YAML mapping");
  for (const std::string& o : overrides) apply_override(root, o);

  MergeConfig c;
  Section top(root, "", where);
  YAML::Node models = top.child("models");
  if (!models || models.IsNull()) fail(where, ": missing key 'models' (the list of models to merge)");
  if (!models.IsSequence()) fail(at(where, models), ": 'models' must be a list of {name, path}");
  std::set<std::string> names;
  for (size_t i = 0; i < models.size(); ++i) {
    Section m(models[i], "models[" + std::to_string(i) + "]", where);
    if (!models[i].IsMap()) fail(at(where, models[i]), ": 'models[", i, "]' must be a mapping {name, path}");
    ModelEntry e;
    m.str("name", &e.name);
    m.str("path", &e.path);
    m.str("base_model", &e.base_model);
    m.finish("name, path, base_model");
    if (e.path.empty()) fail(at(where, models[i]), ": 'models[", i, "]' needs 'path'");
    if (e.name.empty()) e.name = "model" + std::to_string(i);
    if (!names.insert(e.name).second) fail(at(where, models[i]), ": duplicate model name '", e.name, "'");
    c.models.push_back(e);
  }
  top.str("base", &c.base);
  top.str("reference", &c.reference);
  top.str("method", &c.method);
  top.str("data", &c.data);
  top.integer("max_length", &c.max_length);
  top.bytes("memory_budget", &c.memory_budget);

  Section typical(top.child("typical"), "typical", where);
  typical.integer("clusters", &c.typical.clusters);
  typical.integer("layer", &c.typical.layer);
  typical.uinteger("seed", &c.typical.seed);
  typical.integer("iterations", &c.typical.iterations);
  typical.integer("max_samples", &c.typical.max_samples);
  typical.finish("clusters, layer, seed, iterations, max_samples");

  Section kernel(top.child("kernel"), "kernel", where);
  kernel.str("kind", &c.kernel.kind);
  kernel.number("bandwidth_factor", &c.kernel.bandwidth_factor);
  kernel.number("gamma", &c.kernel.gamma);
  kernel.number("cka_threshold", &c.kernel.cka_threshold);
  kernel.finish("kind, bandwidth_factor, gamma, cka_threshold");

  Section rc(top.child("recall"), "recall", where);
  rc.number("temperature", &c.recall.temperature);
  rc.str("non_block", &c.recall.non_block);
  rc.str("granularity", &c.recall.granularity);
  rc.finish("temperature, non_block, granularity");

  Section params(top.child("params"), "params", where);
  if (YAML::Node w = params.child("weight"); w && !w.IsNull()) {
    if (w.IsScalar()) {
      double v;
      try { v = w.as<double>(); } catch (const YAML::Exception&) {
        fail(at(where, w), ": 'params.weight' must be a number or a list of numbers, got ", show(w));
      }
      c.params.weight.assign(c.models.size(), v);
    } else if (w.IsSequence()) {
      for (const auto& x : w) {
        try { c.params.weight.push_back(x.as<double>()); } catch (const YAML::Exception&) {
          fail(at(where, x), ": 'params.weight' entries must be numbers, got ", show(x));
        }
      }
    } else {
      fail(at(where, w), ": 'params.weight' must be a number or a list of numbers");
    }
  }
  params.number("density", &c.params.density);
  params.number("lambda", &c.params.lambda);
  params.number("epsilon", &c.params.epsilon);
  params.number("t", &c.params.t);
  params.boolean("normalize", &c.params.normalize);
  params.uinteger("seed", &c.params.seed);
  params.finish("weight, density, lambda, epsilon, t, normalize, seed");

  Section par(top.child("parallel"), "parallel", where);
  par.integer("stages", &c.parallel.stages);
  par.integer("micro_batch", &c.parallel.micro_batch);
  par.integer("stream_samples", &c.parallel.stream_samples);
  par.str("device", &c.parallel.device);
  par.bytes("merge_chunk_bytes", &c.parallel.merge_chunk_bytes);
  par.finish("stages, micro_batch, stream_samples, device, merge_chunk_bytes");

  Section out(top.child("output"), "output", where);
  out.str("dir", &c.output.dir);
  out.str("dtype", &c.output.dtype);
  out.bytes("shard_bytes", &c.output.shard_bytes);
  out.bytes("checkpoint_bytes", &c.output.checkpoint_bytes);
  out.boolean("overwrite", &c.output.overwrite);
  out.finish("dir, dtype, shard_bytes, checkpoint_bytes, overwrite");

  top.finish("models, base, reference, method, data, max_length, memory_budget, typical, kernel, "
             "recall, params, parallel, output");

  // Validation, with every value in the message.
  const size_t M = c.models.size();
  if (M < 2) fail(where, ": 'models' lists ", M, " model(s); merging needs at least 2");
  check_one_of(where, "method", c.method,
               {"recall", "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp"});
  if (c.reference.empty()) c.reference = c.models.back().name;
  if (!names.count(c.reference))
    fail(where, ": 'reference' is '", c.reference, "', which is not among the models");
  if (!c.base.empty() && !names.count(c.base))
    fail(where, ": 'base' is '", c.base, "', which is not among the models");
  const bool task_vectors = c.method == "task_arithmetic" || c.method == "ties" ||
                            c.method == "dare_linear" || c.method == "dare_ties";
  if (task_vectors && c.base.empty())
    fail(where, ": method '", c.method, "' needs 'base' (the model the task vectors are taken from)");
  if (c.method == "slerp" && M != 2) fail(where, ": method 'slerp' merges exactly 2 models, got ", M);
  if (c.method == "recall" && c.data.empty())
    fail(where, ": method 'recall' needs 'data' (JSONL samples of the reference model's task)");
  if (!c.params.weight.empty() && c.params.weight.size() != M)
    fail(where, ": 'params.weight' has ", c.params.weight.size(), " entries for ", M, " models");
  if (!(c.params.density > 0 && c.params.density <= 1))
    fail(where, ": 'params.density' must be in (0, 1], got ", c.params.density);
  if (!(c.params.t >= 0 && c.params.t <= 1)) fail(where, ": 'params.t' must be in [0, 1], got ", c.params.t);
  if (c.typical.clusters < 1) fail(where, ": 'typical.clusters' must be at least 1, got ", c.typical.clusters);
  if (c.typical.iterations < 1) fail(where, ": 'typical.iterations' must be at least 1, got ", c.typical.iterations);
  if (c.typical.max_samples < 0) fail(where, ": 'typical.max_samples' must be >= 0");
  if (c.max_length < 1) fail(where, ": 'max_length' must be at least 1, got ", c.max_length);
  check_one_of(where, "kernel.kind", c.kernel.kind, {"rbf", "linear_cka", "rbf_cka"});
  if (!(c.kernel.bandwidth_factor > 0))
    fail(where, ": 'kernel.bandwidth_factor' must be positive, got ", c.kernel.bandwidth_factor);
  if (c.kernel.gamma < 0) fail(where, ": 'kernel.gamma' must be >= 0, got ", c.kernel.gamma);
  if (!(c.recall.temperature >= 0))
    fail(where, ": 'recall.temperature' must be >= 0, got ", c.recall.temperature);
  check_one_of(where, "recall.non_block", c.recall.non_block, {"uniform", "nearest_block", "reference"});
  check_one_of(where, "recall.granularity", c.recall.granularity, {"block", "global"});
  if (c.parallel.stages < 1) fail(where, ": 'parallel.stages' must be at least 1, got ", c.parallel.stages);
  if (c.parallel.micro_batch < 1)
    fail(where, ": 'parallel.micro_batch' must be at least 1, got ", c.parallel.micro_batch);
  if (c.parallel.stream_samples < 0)
    fail(where, ": 'parallel.stream_samples' must be 0 (off) or a number of samples, got ", c.parallel.stream_samples);
  check_one_of(where, "parallel.device", c.parallel.device, {"cpu", "cuda"});
  if (c.output.dir.empty()) fail(where, ": missing key 'output.dir'");
  check_one_of(where, "output.dtype", c.output.dtype, {"bfloat16", "float16", "float32"});
  if (c.output.shard_bytes == 0) fail(where, ": 'output.shard_bytes' must be positive");
  if (c.parallel.merge_chunk_bytes == 0) fail(where, ": 'parallel.merge_chunk_bytes' must be positive");
  return c;
}
}  // namespace

MergeConfig load_merge_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!path_exists(path)) fail("config '", path, "' does not exist");
  return parse_merge_config(read_text_file(path), path, overrides);
}

std::string to_yaml(const MergeConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
  for (const ModelEntry& m : c.models)
  {
    e << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << m.name << YAML::Key << "path"
      << YAML::Value << m.path;
    if (!m.base_model.empty()) e << YAML::Key << "base_model" << YAML::Value << m.base_model;
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
  e << YAML::Key << "base" << YAML::Value << c.base;
  e << YAML::Key << "reference" << YAML::Value << c.reference;
  e << YAML::Key << "method" << YAML::Value << c.method;
  e << YAML::Key << "data" << YAML::Value << c.data;
  e << YAML::Key << "max_length" << YAML::Value << c.max_length;
  e << YAML::Key << "memory_budget" << YAML::Value << c.memory_budget;
  e << YAML::Key << "typical" << YAML::Value << YAML::BeginMap
    << YAML::Key << "clusters" << YAML::Value << c.typical.clusters
    << YAML::Key << "layer" << YAML::Value << c.typical.layer
    << YAML::Key << "seed" << YAML::Value << c.typical.seed
    << YAML::Key << "iterations" << YAML::Value << c.typical.iterations
    << YAML::Key << "max_samples" << YAML::Value << c.typical.max_samples << YAML::EndMap;
  e << YAML::Key << "kernel" << YAML::Value << YAML::BeginMap
    << YAML::Key << "kind" << YAML::Value << c.kernel.kind
    << YAML::Key << "bandwidth_factor" << YAML::Value << c.kernel.bandwidth_factor
    << YAML::Key << "gamma" << YAML::Value << c.kernel.gamma
    << YAML::Key << "cka_threshold" << YAML::Value << c.kernel.cka_threshold << YAML::EndMap;
  e << YAML::Key << "recall" << YAML::Value << YAML::BeginMap
    << YAML::Key << "temperature" << YAML::Value << c.recall.temperature
    << YAML::Key << "non_block" << YAML::Value << c.recall.non_block
    << YAML::Key << "granularity" << YAML::Value << c.recall.granularity << YAML::EndMap;
  e << YAML::Key << "params" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "weight" << YAML::Value << YAML::Flow << c.params.weight;
  e << YAML::Key << "density" << YAML::Value << c.params.density
    << YAML::Key << "lambda" << YAML::Value << c.params.lambda
    << YAML::Key << "epsilon" << YAML::Value << c.params.epsilon
    << YAML::Key << "t" << YAML::Value << c.params.t;
  if (c.params.normalize) e << YAML::Key << "normalize" << YAML::Value << *c.params.normalize;
  e << YAML::Key << "seed" << YAML::Value << c.params.seed << YAML::EndMap;
  e << YAML::Key << "parallel" << YAML::Value << YAML::BeginMap
    << YAML::Key << "stages" << YAML::Value << c.parallel.stages
    << YAML::Key << "micro_batch" << YAML::Value << c.parallel.micro_batch
    << YAML::Key << "stream_samples" << YAML::Value << c.parallel.stream_samples
    << YAML::Key << "device" << YAML::Value << c.parallel.device
    << YAML::Key << "merge_chunk_bytes" << YAML::Value << c.parallel.merge_chunk_bytes << YAML::EndMap;
  e << YAML::Key << "output" << YAML::Value << YAML::BeginMap
    << YAML::Key << "dir" << YAML::Value << c.output.dir
    << YAML::Key << "dtype" << YAML::Value << c.output.dtype
    << YAML::Key << "shard_bytes" << YAML::Value << c.output.shard_bytes
    << YAML::Key << "checkpoint_bytes" << YAML::Value << c.output.checkpoint_bytes
    << YAML::Key << "overwrite" << YAML::Value << c.output.overwrite << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace recall
