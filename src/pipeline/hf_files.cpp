// The files of a Hugging Face export beside its shards.
#include "recall/pipeline/hf_files.h"

#include <nlohmann/json.hpp>

#include "recall/io/model_files.h"
#include "recall/pipeline/export.h"
#include "recall/util/fs.h"

namespace recall {

std::string derived_generation_config(const std::string& config_json) {
  const nlohmann::json cfg = nlohmann::json::parse(config_json);
  nlohmann::ordered_json gen = {{"_from_model_config", true}};
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"})
    if (cfg.contains(key) && !cfg[key].is_null()) gen[key] = cfg[key];
  return gen.dump(2) + "\n";
}

HfFiles write_hf_files(const std::string& hf_dir, const std::string& source_model_dir,
                       const std::string& architecture_config_json, const std::string& dtype_name,
                       const std::string& model_card) {
  HfFiles r;
  write_file_atomic(join_path(hf_dir, "config.json"), export_config_json(architecture_config_json, dtype_name));
  r.source_missing = !is_directory(source_model_dir);
  if (!r.source_missing) r.copied = copy_side_files(source_model_dir, hf_dir);
  const std::string gen = join_path(hf_dir, "generation_config.json");
  if (!path_exists(gen)) {
    write_file_atomic(gen, derived_generation_config(architecture_config_json));
    r.generation_config_derived = true;
  }
  r.has_tokenizer = path_exists(join_path(hf_dir, "tokenizer.json")) || path_exists(join_path(hf_dir, "tokenizer.model"));
  write_file_atomic(join_path(hf_dir, "README.md"), model_card);
  return r;
}

}  // namespace recall
