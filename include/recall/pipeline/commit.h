// The last step of a merge job, on rank 0: the export's config.json, tokenizer and generation
// files and model card (recall/pipeline/hf_files.h), the resolved config, report.json and report.svg, the manifest (written last: its presence
// marks a complete output) and the commit of <dir>.partial to <dir>.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/merge_inputs.h"
#include "recall/pipeline/output_dir.h"
#include "recall/pipeline/report.h"

namespace recall {

struct CommitInputs {
  const MergeConfig& config;
  const MergeInputs& inputs;
  const MergeReport& report;
  const std::string& resolved_yaml;
  const std::map<std::string, uint64_t>& checksums;  // tensor name -> XXH3-64
  const std::vector<std::string>& shard_files;       // hf/ shard file names
};

// manifest.json: format, checksums of every tensor, inputs, shards, the resolved config.
std::string manifest_json(const CommitInputs& c);

// Writes every file above into out.partial() and commits it (rank 0 only).
void write_outputs_and_commit(const CommitInputs& c, const OutputDir& out);

}  // namespace recall
