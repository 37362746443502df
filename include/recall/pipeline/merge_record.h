// What a merged.h5 records about the merge that wrote it (root attributes `architecture_config`,
// `merge_config`, `method`, `models`, and /recall/*), read back so that `recall export` can
// rebuild a complete Hugging Face directory, model card included, from the file alone.
#pragma once

#include <string>
#include <vector>

#include "recall/pipeline/report.h"

namespace recall {

struct MergeRecord {
  std::string architecture_config;      // config.json of the reference model
  std::string resolved_config;          // the merge's resolved config (YAML)
  std::vector<std::string> model_paths; // input models, config order
  std::string source_model;             // name of the model the export takes its tokenizer from
  std::string source_path;              // ... and its path as the merge saw it
  std::vector<std::string> tensors;     // /tensors, in the order the merge wrote them
  std::string dtype;                    // "bfloat16", "float16" or "float32"
  MergeReport report;                   // method, models, reference/base, parameters, per-block data
  std::vector<std::string> notes;       // what could not be read (the export goes on without it)
};

// Throws naming the file when it is not a merged.h5 written by `recall merge`.
MergeRecord read_merge_record(const std::string& h5_path);

}  // namespace recall
