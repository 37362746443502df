// The files of a finished merge and its commit (see commit.h).
#include "recall/pipeline/commit.h"

#include <nlohmann/json.hpp>

#include "recall/pipeline/hf_files.h"
#include "recall/util/checksum.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

std::string manifest_json(const CommitInputs& c) {
  using ojson = nlohmann::ordered_json;
  const MergeConfig& cfg = c.config;
  ojson tensors = ojson::array();
  for (const TensorSlot& s : c.inputs.slots)
    tensors.push_back({{"name", s.name}, {"dtype", std::string(dtype_name(cfg.output.dtype))}, {"shape", s.shape},
                       {"xxh3_64", checksum_hex(c.checksums.at(s.name))}});
  ojson inputs = ojson::array();
  for (size_t m = 0; m < c.inputs.models.size(); ++m)
    inputs.push_back({{"name", cfg.models[m].name}, {"path", cfg.models[m].path},
                      {"tensor_bytes", c.inputs.models[m].checkpoint.total_bytes()}});
  ojson formats = ojson::array();
  for (OutputFormat f : cfg.output.formats) formats.push_back(output_format_name(f));
  ojson manifest = {{"format", "recall-merge-1"}, {"checksum", "xxh3_64"}, {"method", cfg.method->name},
                    {"outputs", formats}, {"tensors", tensors}, {"inputs", inputs}, {"hf_shards", c.shard_files},
                    {"config", c.resolved_yaml}, {"created_utc", utc_now()}};
  return manifest.dump(2) + "\n";
}

void write_outputs_and_commit(const CommitInputs& c, const OutputDir& out) {
  const MergeConfig& cfg = c.config;
  const std::string hf = out.hf();
  if (cfg.output.writes(OutputFormat::Hf)) {
    std::vector<std::string> paths;
    for (const auto& m : cfg.models) paths.push_back(m.path);
    // The tokenizer (and generation files) of output.tokenizer's model, else the reference's.
    const size_t tokenizer = cfg.output.tokenizer.empty() ? c.inputs.reference : cfg.model_index(cfg.output.tokenizer);
    write_hf_files(hf, c.inputs.models[tokenizer].path, c.inputs.output_config_json,
                   output_dtype_name(cfg.output.dtype), model_card(c.report, c.resolved_yaml, paths));
  } else {
    remove_tree(hf);  // output.formats has no hf: no empty directory either
  }
  write_file_atomic(out.file("config.resolved.yaml"), c.resolved_yaml);
  write_file_atomic(out.file("report.json"), report_json(c.report));
  write_file_atomic(out.file("report.svg"), report_svg(c.report));
  write_file_atomic(out.file("manifest.json"), manifest_json(c));
  // The calibration statistics are scratch: Gram matrices can outweigh the merged model.
  if (path_exists(out.statistics())) remove_tree(out.statistics());
  out.commit(cfg.output.overwrite);
}

}  // namespace recall
