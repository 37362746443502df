// Translation of mergekit configs into recall's config keys (see recall/config/mergekit_yaml.h).
// mergekit 0.1.5's MergeConfiguration (mergekit/config.py) is the reference for every key.
#include "recall/config/mergekit_yaml.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "recall/config/yaml_text.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

const std::vector<std::string> kTopKeys = {"merge_method", "models",     "slices",          "base_model",
                                           "parameters",   "dtype",      "out_dtype",       "tokenizer_source",
                                           "tokenizer",    "modules",    "chat_template"};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

class Translator {
 public:
  explicit Translator(std::string where) : where_(std::move(where)) {}
  MergekitTranslation run(const YAML::Node& root);

 private:
  [[noreturn]] void refuse(const YAML::Node& n, const std::string& key, const std::string& why) const {
    fail(yaml_position(where_, n), ": mergekit key '", key, "' ", why);
  }
  void check_keys(const YAML::Node& map, const std::string& key, const std::vector<std::string>& allowed) const;
  std::string scalar(const YAML::Node& n, const std::string& key) const;
  std::string model(const YAML::Node& ref, const std::string& key, const YAML::Node& params = YAML::Node());
  void read_models(const YAML::Node& models);
  void read_slices(const YAML::Node& slices);
  std::string output_dtype(const YAML::Node& root, const std::string& donor_path);
  std::string tokenizer(const YAML::Node& root);

  std::string where_;
  YAML::Node models_{YAML::NodeType::Sequence};
  YAML::Node slices_;
  std::map<std::string, std::string> name_of_;  // model reference -> recall name
  std::map<std::string, std::string> path_of_;  // recall name -> directory
  std::set<std::string> names_;
  std::string base_;                            // recall name of base_model ("" = none)
  std::vector<std::string> notes_;
};

void Translator::check_keys(const YAML::Node& map, const std::string& key, const std::vector<std::string>& allowed) const {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
    const std::string path = key.empty() ? k : key + "." + k;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      fail(yaml_position(where_, kv.first), ": unknown mergekit key '", path, "'; recall reads: ", join(allowed));
    if (!seen.insert(k).second) fail(yaml_position(where_, kv.first), ": mergekit key '", path, "' appears twice");
  }
}

std::string Translator::scalar(const YAML::Node& n, const std::string& key) const {
  if (!n) fail(where_, ": mergekit key '", key, "' is missing");
  if (!n.IsScalar()) fail(yaml_position(where_, n), ": mergekit key '", key, "' must be a string, got ", yaml_describe(n));
  return n.Scalar();
}

// The recall name of a model reference (a local directory, or mergekit's "base+adapter" for a
// PEFT LoRA adapter on a base), adding it to `models` the first time it is seen.
std::string Translator::model(const YAML::Node& ref, const std::string& key, const YAML::Node& params) {
  if (ref && ref.IsMap())
    refuse(ref, key, "is a mapping; recall reads a model as a local directory path (or \"base+adapter\")");
  const std::string text = scalar(ref, key);
  if (text.find('@') != std::string::npos)
    refuse(ref, key, "names a Hugging Face Hub revision ('" + text + "'); recall reads local directories only: "
                     "download the model and give its path");
  if (auto it = name_of_.find(text); it != name_of_.end()) return it->second;
  const auto plus = text.find('+');
  const std::string path = plus == std::string::npos ? text : text.substr(plus + 1);
  std::string stem = path;
  while (stem.size() > 1 && stem.back() == '/') stem.pop_back();
  stem = stem.substr(stem.find_last_of('/') == std::string::npos ? 0 : stem.find_last_of('/') + 1);
  if (stem.empty() || stem == "." || stem == "..") stem = "model";
  std::string name = stem;
  for (int k = 2; names_.count(name); ++k) name = stem + "_" + std::to_string(k);
  names_.insert(name);
  name_of_[text] = name;
  path_of_[name] = path;
  YAML::Node m(YAML::NodeType::Map);
  m["name"] = name;
  m["path"] = path;
  if (plus != std::string::npos) m["base_model"] = text.substr(0, plus);
  if (params && !params.IsNull()) m["params"] = params;
  models_.push_back(m);
  return name;
}

// `models: [{model, parameters}]`: every model merged whole; a base_model not among them is added
// last, as mergekit's planner does.
void Translator::read_models(const YAML::Node& models) {
  if (!models.IsSequence() || models.size() == 0)
    fail(yaml_position(where_, models), ": mergekit key 'models' must be a non-empty list of {model, parameters}");
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string key = "models[" + std::to_string(i) + "]";
    const YAML::Node m = models[i];
    if (!m.IsMap()) fail(yaml_position(where_, m), ": mergekit key '", key, "' must be a mapping {model, parameters}");
    check_keys(m, key, {"model", "parameters"});
    if (name_of_.count(scalar(m["model"], key + ".model")))
      refuse(m["model"], key + ".model", "lists the same model twice; mergekit merges distinct models");
    model(m["model"], key + ".model", m["parameters"]);
  }
}

// `slices: [{sources: [{model, layer_range, parameters}], parameters}]`.
void Translator::read_slices(const YAML::Node& slices) {
  if (!slices.IsSequence() || slices.size() == 0)
    fail(yaml_position(where_, slices), ": mergekit key 'slices' must be a non-empty list of {sources}");
  slices_ = YAML::Node(YAML::NodeType::Sequence);
  for (size_t k = 0; k < slices.size(); ++k) {
    const std::string key = "slices[" + std::to_string(k) + "]";
    const YAML::Node sl = slices[k];
    if (!sl.IsMap()) fail(yaml_position(where_, sl), ": mergekit key '", key, "' must be a mapping {sources, parameters}");
    check_keys(sl, key, {"sources", "parameters", "base_model", "residual_weight"});
    if (const YAML::Node b = sl["base_model"]; b && !b.IsNull() && model(b, key + ".base_model") != base_)
      refuse(b, key + ".base_model", "differs from the top-level base_model; recall takes one base for every slice");
    if (sl["residual_weight"])
      notes_.push_back(yaml_position(where_, sl["residual_weight"]) + ": '" + key +
                       ".residual_weight' is ignored, as mergekit 0.1.5 ignores it");
    const YAML::Node sources = sl["sources"];
    if (!sources || !sources.IsSequence())
      fail(yaml_position(where_, sources ? sources : sl), ": mergekit key '", key, ".sources' must be a list");
    YAML::Node out(YAML::NodeType::Map), out_sources(YAML::NodeType::Sequence);
    for (size_t i = 0; i < sources.size(); ++i) {
      const std::string skey = key + ".sources[" + std::to_string(i) + "]";
      const YAML::Node src = sources[i];
      if (!src.IsMap()) fail(yaml_position(where_, src), ": mergekit key '", skey, "' must be a mapping");
      check_keys(src, skey, {"model", "layer_range", "parameters"});
      YAML::Node s(YAML::NodeType::Map);
      s["model"] = model(src["model"], skey + ".model");
      if (!src["layer_range"]) fail(yaml_position(where_, src), ": mergekit key '", skey, "' needs 'layer_range'");
      s["layer_range"] = src["layer_range"];
      if (src["parameters"]) s["params"] = src["parameters"];
      out_sources.push_back(s);
    }
    out["sources"] = out_sources;
    if (sl["parameters"]) out["params"] = sl["parameters"];
    slices_.push_back(out);
  }
}

// mergekit's `dtype` is the compute dtype and `out_dtype` the written one (default: dtype, else
// the inputs'). recall computes in float32 for bfloat16/float16 outputs and in float64 for
// float32 outputs: the same as mergekit with dtype float32 / float64.
std::string Translator::output_dtype(const YAML::Node& root, const std::string& donor_path) {
  const YAML::Node dn = root["dtype"], on = root["out_dtype"];
  auto name = [&](const YAML::Node& n, const char* key) {
    std::string v = scalar(n, key);
    if (v.rfind("torch.", 0) == 0) v = v.substr(6);
    if (v != "bfloat16" && v != "float16" && v != "float32" && v != "float64")
      refuse(n, key, "is '" + v + "'; expected bfloat16, float16, float32 or float64");
    return v;
  };
  const std::string dtype = dn && !dn.IsNull() ? name(dn, "dtype") : "";
  std::string out = on && !on.IsNull() ? name(on, "out_dtype") : dtype;
  if (out.empty()) {  // mergekit keeps the inputs' dtype: the donor model's config.json says which
    const std::string cfg = join_path(donor_path, "config.json");
    try {
      const auto j = nlohmann::json::parse(read_text_file(cfg));
      out = j.value("torch_dtype", j.value("dtype", std::string()));
    } catch (const std::exception& e) {
      fail(where_, ": neither dtype nor out_dtype is set and the output dtype cannot be read from ", cfg, " (",
           e.what(), "); set out_dtype");
    }
    if (out.empty()) fail(where_, ": neither dtype nor out_dtype is set and ", cfg, " has no torch_dtype; set out_dtype");
  }
  if (out == "float64")
    refuse(on && !on.IsNull() ? on : dn, on && !on.IsNull() ? "out_dtype" : "dtype",
           "asks for float64 tensors; recall writes bfloat16, float16 or float32");
  const std::string acc = out == "float32" ? "float64" : "float32";
  if (dtype == "float64" && acc == "float32")
    refuse(dn, "dtype", "is float64 with " + out + " outputs; recall accumulates " + out +
                            " outputs in float32 and cannot compute them in float64. Set dtype: float32 (what recall "
                            "does) or out_dtype: float32");
  if (!dtype.empty() && dtype != acc)
    notes_.push_back(yaml_position(where_, dn) + ": mergekit computes in " + dtype + "; recall accumulates " + out +
                     " outputs in " + acc + " and rounds once, so its result may differ from mergekit's by " + dtype +
                     "'s rounding (mergekit with dtype: " + acc + " gives recall's result)");
  if (dtype.empty())
    notes_.push_back(where_ + ": no dtype: mergekit computes in the inputs' dtype (some methods in float32); recall "
                     "accumulates " + out + " outputs in " + acc);
  return out;
}

// tokenizer_source / tokenizer.source: the model whose tokenizer files are copied. recall copies
// files and cannot build mergekit's union vocabulary (it would permute embedding rows).
std::string Translator::tokenizer(const YAML::Node& root) {
  YAML::Node src = root["tokenizer_source"];
  std::string key = "tokenizer_source";
  if (const YAML::Node t = root["tokenizer"]; t && !t.IsNull()) {
    if (src) refuse(t, "tokenizer", "and tokenizer_source are both set; mergekit refuses that too");
    if (!t.IsMap()) refuse(t, "tokenizer", "must be a mapping {source}");
    check_keys(t, "tokenizer", {"source", "tokens", "pad_to_multiple_of"});
    for (const char* k : {"tokens", "pad_to_multiple_of"})
      if (t[k]) refuse(t[k], std::string("tokenizer.") + k, "changes the embedding rows; recall copies a model's "
                                                            "tokenizer files and leaves the vocabulary as it is");
    src = t["source"];
    key = "tokenizer.source";
    if (!src) refuse(t, "tokenizer", "has no source; mergekit's default is 'union', which recall cannot build");
  }
  if (!src || src.IsNull()) return "";
  const std::string v = scalar(src, key);
  if (v == "union")
    refuse(src, key, "is 'union': a vocabulary merged from every model, with embedding rows permuted to it; recall "
                     "copies one model's tokenizer (use 'base' or a model's path)");
  if (v == "base") {
    if (base_.empty()) refuse(src, key, "is 'base' but there is no base_model");
    return base_;
  }
  if (!name_of_.count(v))
    refuse(src, key, "is '" + v + "', which is not one of the merged models; recall copies the tokenizer of one of them");
  return name_of_.at(v);
}

MergekitTranslation Translator::run(const YAML::Node& root) {
  check_keys(root, "", kTopKeys);
  for (const char* k : {"modules", "chat_template"})
    if (root[k])
      refuse(root[k], k, std::string(k) == "modules"
                             ? "is for multi-module architectures; recall merges single-module decoders: use "
                               "models or slices"
                             : "sets a chat template; recall copies the tokenizer files, chat template included, "
                               "as they are");
  const bool has_models = root["models"] && !root["models"].IsNull(), has_slices = root["slices"] && !root["slices"].IsNull();
  if (has_models == has_slices)
    fail(yaml_position(where_, root), ": a mergekit config needs exactly one of 'models' and 'slices'");
  if (has_models) read_models(root["models"]);
  if (const YAML::Node b = root["base_model"]; b && !b.IsNull()) base_ = model(b, "base_model");
  if (has_slices) read_slices(root["slices"]);
  if (models_.size() == 0) fail(yaml_position(where_, root), ": the mergekit config names no model");
  MergekitTranslation t;
  YAML::Node& c = t.config;
  c["models"] = models_;
  if (has_slices) c["slices"] = slices_;
  c["method"] = root["merge_method"];
  if (!base_.empty()) c["base"] = base_;
  // mergekit's config.json (and default tokenizer) donor: the base model, else the first model.
  const std::string donor = base_.empty() ? models_[0]["name"].as<std::string>() : base_;
  c["reference"] = donor;
  if (root["parameters"]) c["params"] = root["parameters"];
  c["output"]["dtype"] = output_dtype(root, path_of_.at(donor));
  if (const std::string tok = tokenizer(root); !tok.empty()) c["output"]["tokenizer"] = tok;
  t.notes = notes_;
  return t;
}

}  // namespace

bool is_mergekit_config(const YAML::Node& root) { return root && root.IsMap() && root["merge_method"]; }

MergekitTranslation translate_mergekit_config(const YAML::Node& root, const std::string& where) {
  return Translator(where).run(root);
}

}  // namespace recall
