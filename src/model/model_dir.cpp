// Opening and validating a Hugging Face model directory.
#include "recall/model/model_dir.h"

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "recall/io/model_files.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<std::string> validate_model_tensors(const ModelConfig& config,
                                                const Checkpoint& checkpoint,
                                                std::vector<std::string>* ignored) {
  std::vector<std::string> problems;
  std::set<std::string> expected;
  for (const TensorSlot& slot : expected_tensors(config)) {
    expected.insert(slot.name);
    const Checkpoint::Entry* e = checkpoint.find(slot.name);
    if (!e) {
      problems.push_back("missing tensor '" + slot.name + "' (expected shape " +
                         shape_str(slot.shape) + ")");
      continue;
    }
    if (e->info->shape != slot.shape)
      problems.push_back("tensor '" + slot.name + "' has wrong shape; expected " +
                         shape_str(slot.shape) + ", got " + shape_str(e->info->shape));
    if (!is_float(e->info->dtype))
      problems.push_back("tensor '" + slot.name + "' has dtype " +
                         std::string(dtype_name(e->info->dtype)) + "; weights must be floating point");
  }
  for (const auto& [name, e] : checkpoint.entries()) {
    if (expected.count(name)) continue;
    // Old checkpoints carry rotary buffers; tied models sometimes also store lm_head.
    if (ends_with(name, "rotary_emb.inv_freq") ||
        (config.tie_word_embeddings && name == "lm_head.weight")) {
      if (ignored) ignored->push_back(name);
      continue;
    }
    auto parsed = parse_tensor_name(name);
    if (parsed && parsed->second >= config.num_hidden_layers)
      problems.push_back("unexpected tensor '" + name + "': block " + std::to_string(parsed->second) +
                         " but config.json has num_hidden_layers = " +
                         std::to_string(config.num_hidden_layers));
    else
      problems.push_back("unexpected tensor '" + name + "' (not part of a " +
                         arch_name(config.arch) + " model with this config)");
  }
  return problems;
}

ModelDir open_model_dir(const std::string& path) {
  if (!is_directory(path)) fail("'", path, "' is not a model directory");
  ModelConfig config = load_model_config(path);
  Checkpoint checkpoint = Checkpoint::open(path);
  std::vector<std::string> ignored;
  auto problems = validate_model_tensors(config, checkpoint, &ignored);
  // The side files an export copies, checked now rather than at the end of a merge.
  for (const std::string& name : side_file_names()) {
    try {
      find_model_file(path, name);
    } catch (const std::exception& e) {
      problems.push_back(e.what());
    }
  }
  if (!problems.empty()) {
    std::ostringstream os;
    os << "'" << path << "' is not a valid " << arch_name(config.arch) << " model ("
       << problems.size() << " problem" << (problems.size() > 1 ? "s" : "") << "):";
    for (const auto& p : problems) os << "\n  - " << p;
    throw Error(os.str());
  }
  ModelDir m{path, std::move(config), std::move(checkpoint), {}, std::move(ignored), nullptr};
  m.slots = expected_tensors(m.config);
  return m;
}

ModelDir open_model_or_adapter(const std::string& path, const std::string& base_model) {
  if (!is_lora_adapter(path)) {
    if (!base_model.empty()) fail("'", path, "' is not a LoRA adapter (no adapter_config.json) but 'base_model' is set");
    return open_model_dir(path);
  }
  std::string base = base_model;
  if (base.empty()) {
    const std::string cfg = model_file(path, "adapter_config.json");
    auto j = nlohmann::json::parse(read_text_file(cfg), nullptr, false);
    if (j.is_object() && j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
      base = j["base_model_name_or_path"].get<std::string>();
    if (base.empty() || !is_directory(base))
      fail("'", path, "' is a LoRA adapter; set 'base_model' to the local directory of its base model (",
           cfg, " names '", base, "')");
  }
  ModelDir m = open_model_dir(base);
  m.lora = LoraAdapter::open(path, m.config);
  return m;
}

}  // namespace recall
