// The files of a Hugging Face export beside its weight shards, the same for `recall merge` (hf/)
// and `recall export`: config.json in the output dtype, the tokenizer files of the source model,
// a generation_config.json (the source's, else one derived from config.json as transformers does)
// and the model card README.md. Without them `recall generate` and transformers cannot use it.
#pragma once

#include <string>
#include <vector>

namespace recall {

struct HfFiles {
  std::vector<std::string> copied;        // file names taken from the source model
  bool generation_config_derived = false; // the source had none: derived from config.json
  bool source_missing = false;            // the source model directory does not exist
  bool has_tokenizer = false;             // tokenizer.json or tokenizer.model is in the export
};

// Writes the files into hf_dir (which exists). `source_model_dir` is the model whose tokenizer
// and generation files are copied (the merge's reference model); `architecture_config_json` is its
// config.json text.
HfFiles write_hf_files(const std::string& hf_dir, const std::string& source_model_dir,
                       const std::string& architecture_config_json, const std::string& dtype_name,
                       const std::string& model_card);

// generation_config.json as transformers derives it from a config.json it loads without one
// (GenerationConfig.from_model_config): the bos/eos/pad token ids that config.json sets.
std::string derived_generation_config(const std::string& config_json);

}  // namespace recall
