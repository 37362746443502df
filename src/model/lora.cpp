// PEFT LoRA adapters applied to base weights as they are read.
#include "recall/model/lora.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "recall/io/model_files.h"
#include "recall/model/tensor_names.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

using nlohmann::json;

bool is_lora_adapter(const std::string& dir) { return path_exists(join_path(dir, "adapter_config.json")); }

std::shared_ptr<const LoraAdapter> LoraAdapter::open(const std::string& dir, const ModelConfig& base) {
  auto lora = std::shared_ptr<LoraAdapter>(new LoraAdapter());
  lora->path_ = dir;
  const std::string cfg_path = model_file(dir, "adapter_config.json");
  json cfg;
  try {
    cfg = json::parse(read_text_file(cfg_path));
  } catch (const json::exception& e) {
    fail(cfg_path, ": not valid JSON: ", parse_error_text(e));
  }
  if (!cfg.is_object()) fail(cfg_path, ": not a JSON object");
  const std::string type = cfg.value("peft_type", "LORA");
  if (type != "LORA") fail(cfg_path, ": peft_type '", type, "' is not supported; only LORA adapters are");
  if (!cfg.contains("r") || !cfg["r"].is_number_integer() || cfg["r"].get<int64_t>() <= 0)
    fail(cfg_path, ": 'r' must be a positive integer");
  lora->rank_ = cfg["r"].get<int64_t>();
  const double alpha = cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number() ? cfg["lora_alpha"].get<double>()
                                                                                   : 8.0;
  const bool rslora = cfg.value("use_rslora", false);
  lora->scale_ = rslora ? alpha / std::sqrt(static_cast<double>(lora->rank_)) : alpha / lora->rank_;
  for (const char* unsupported : {"rank_pattern", "alpha_pattern"})
    if (cfg.contains(unsupported) && cfg[unsupported].is_object() && !cfg[unsupported].empty())
      fail(cfg_path, ": '", unsupported, "' (per-module ranks/alphas) is not supported");
  if (cfg.value("fan_in_fan_out", false)) fail(cfg_path, ": fan_in_fan_out adapters are not supported");
  if (cfg.value("use_dora", false)) fail(cfg_path, ": DoRA adapters are not supported");
  if (cfg.contains("modules_to_save") && cfg["modules_to_save"].is_array() && !cfg["modules_to_save"].empty())
    fail(cfg_path, ": modules_to_save is not supported (the adapter would replace whole tensors)");

  const std::string weights = join_path(dir, "adapter_model.safetensors");
  if (!find_model_file(dir, "adapter_model.safetensors")) {
    if (path_exists(join_path(dir, "adapter_model.bin")))
      fail("'", dir, "' holds only adapter_model.bin, a pickle; recall never loads pickles. Save the adapter "
           "with safe_serialization=True");
    fail("'", dir, "' has no adapter_model.safetensors");
  }
  lora->checkpoint_ = Checkpoint::open(weights);
  std::map<std::string, TensorSlot> slots;
  for (const TensorSlot& s : expected_tensors(base)) slots.emplace(s.name, s);
  // PEFT names: base_model.model.<HF module>.lora_A.weight / .lora_B.weight
  const std::string prefix = "base_model.model.";
  for (const auto& [name, e] : lora->checkpoint_.entries()) {
    const bool is_a = name.size() > 14 && name.compare(name.size() - 14, 14, ".lora_A.weight") == 0;
    const bool is_b = name.size() > 14 && name.compare(name.size() - 14, 14, ".lora_B.weight") == 0;
    if (!is_a && !is_b) fail(weights, ": tensor '", name, "' is not a lora_A/lora_B weight; not supported");
    std::string module = name.substr(0, name.size() - 14);
    if (module.compare(0, prefix.size(), prefix) == 0) module = module.substr(prefix.size());
    const std::string target = module + ".weight";
    auto slot = slots.find(target);
    if (slot == slots.end()) fail(weights, ": tensor '", name, "' adapts '", target, "', which the base model lacks");
    Pair& p = lora->pairs_[target];
    (is_a ? p.a : p.b) = name;
  }
  for (const auto& [target, p] : lora->pairs_) {
    if (p.a.empty() || p.b.empty()) fail(weights, ": '", target, "' has only one of lora_A and lora_B");
    const auto& shape = slots.at(target).shape;
    const auto& a = lora->checkpoint_.at(p.a).info->shape;
    const auto& b = lora->checkpoint_.at(p.b).info->shape;
    const std::vector<int64_t> want_a = {lora->rank_, shape[1]}, want_b = {shape[0], lora->rank_};
    if (a != want_a || b != want_b)
      fail(weights, ": '", target, "': lora_A/lora_B shapes do not match r = ", lora->rank_, " and the base shape");
  }
  if (lora->pairs_.empty()) fail(weights, ": no lora_A/lora_B tensors");
  return lora;
}

void LoraAdapter::apply_rows(const std::string& tensor, DType dtype, uint64_t row0, uint64_t rows, uint64_t cols,
                             void* bytes) const {
  auto it = pairs_.find(tensor);
  if (it == pairs_.end() || rows == 0) return;
  const std::vector<float> A = checkpoint_.read_float(it->second.a);  // [r, cols]
  const std::vector<float> B = checkpoint_.read_float(it->second.b);  // [out, r]
  const uint64_t r = static_cast<uint64_t>(rank_);
  std::vector<float> row(cols);
  auto* p = static_cast<uint8_t*>(bytes);
  const size_t es = dtype_size(dtype);
  for (uint64_t i = 0; i < rows; ++i) {
    decode_to_float(dtype, p + i * cols * es, cols, row.data());
    const float* b = &B[(row0 + i) * r];
    for (uint64_t j = 0; j < cols; ++j) {
      float d = 0;
      for (uint64_t k = 0; k < r; ++k) d += b[k] * A[k * cols + j];
      row[j] += static_cast<float>(d * scale_);
    }
    uint8_t* out = p + i * cols * es;
    for (uint64_t j = 0; j < cols; ++j) {
      if (dtype == DType::BF16) {
        const uint16_t v = float_to_bf16(row[j]);
        std::memcpy(out + 2 * j, &v, 2);
      } else if (dtype == DType::F16) {
        const uint16_t v = float_to_f16(row[j]);
        std::memcpy(out + 2 * j, &v, 2);
      } else if (dtype == DType::F32) {
        std::memcpy(out + 4 * j, &row[j], 4);
      } else {
        fail(path_, ": cannot apply a LoRA delta to '", tensor, "' of dtype ", dtype_name(dtype));
      }
    }
  }
}

}  // namespace recall
