// Reading back what a merged.h5 records about its merge.
#include "recall/pipeline/merge_record.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "recall/config/merge_config.h"
#include "recall/io/h5_reader.h"
#include "recall/model/config.h"
#include "recall/model/tensor_names.h"
#include "recall/sweep/plan.h"
#include "recall/util/error.h"

namespace recall {

namespace {

std::string required_attribute(const H5Reader& h5, const std::string& name) {
  auto v = h5.attribute("/", name);
  if (!v) fail(h5.path(), ": no '", name, "' attribute; expected a merged.h5 written by 'recall merge'");
  return *v;
}

std::vector<double> doubles(const H5Reader& h5, const std::string& path) {
  const H5DatasetInfo info = h5.info(path);
  if (info.dtype != DType::F64) fail(h5.path(), ": ", path, " is ", dtype_name(info.dtype), ", expected F64");
  const std::vector<uint8_t> bytes = h5.read(path);
  std::vector<double> v(bytes.size() / sizeof(double));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(double));
  return v;
}

// /recall/similarity and /recall/weights ([blocks, models]), /recall/sigma2, /recall/typical_samples.
void read_recall_data(const H5Reader& h5, MergeReport* r) {
  if (!h5.exists("/recall/weights")) return;
  const H5DatasetInfo info = h5.info("/recall/weights");
  const size_t M = r->models.size();
  if (info.shape.size() != 2 || static_cast<size_t>(info.shape[1]) != M)
    fail(h5.path(), ": /recall/weights has shape ", info.shape.size(), "-d, expected [blocks, ", M, "]");
  const size_t L = static_cast<size_t>(info.shape[0]);
  const std::vector<double> w = doubles(h5, "/recall/weights"), s = doubles(h5, "/recall/similarity"),
                            sigma2 = doubles(h5, "/recall/sigma2");
  if (s.size() != L * M || sigma2.size() != L)
    fail(h5.path(), ": /recall/similarity or /recall/sigma2 does not match /recall/weights' ", L, " blocks");
  for (size_t l = 0; l < L; ++l)
    r->blocks.push_back({static_cast<int64_t>(l), sigma2[l], std::vector<double>(s.begin() + l * M, s.begin() + (l + 1) * M),
                         std::vector<double>(w.begin() + l * M, w.begin() + (l + 1) * M)});
  if (h5.exists("/recall/typical_samples")) {
    const std::vector<uint8_t> ids = h5.read("/recall/typical_samples");
    r->typical_samples.resize(ids.size() / sizeof(int64_t));
    std::memcpy(r->typical_samples.data(), ids.data(), r->typical_samples.size() * sizeof(int64_t));
  }
}

// /recall/tensor_params: tensor -> parameter -> values, and from it RECALL's non-block weights.
void read_tensor_params(const H5Reader& h5, const std::string& architecture_config, MergeRecord* rec) {
  MergeReport& r = rec->report;
  if (!h5.exists("/recall/tensor_params")) {
    rec->notes.push_back("merged.h5 has no /recall/tensor_params (an older recall wrote it); the model card lists no "
                         "parameters");
    return;
  }
  const std::vector<uint8_t> bytes = h5.read("/recall/tensor_params");
  try {
    r.tensor_params = nlohmann::json::parse(bytes.begin(), bytes.end())
                          .get<std::map<std::string, std::map<std::string, std::vector<double>>>>();
  } catch (const std::exception& e) {
    fail(h5.path(), ": /recall/tensor_params is not the JSON object {tensor: {parameter: [values]}} that recall "
                    "merge writes: ",
         e.what());
  }
  if (r.blocks.empty()) return;
  const ModelConfig arch = parse_model_config(architecture_config, h5.path() + ": attribute architecture_config");
  for (const TensorSlot& slot : expected_tensors(arch)) {
    const auto t = r.tensor_params.find(slot.name);
    if (slot.block >= 0 || t == r.tensor_params.end() || !t->second.count("weight")) continue;
    r.non_block_by_tensor[slot.name] = t->second.at("weight");
    if (slot.role == Role::Embed) r.non_block_weights = t->second.at("weight");
  }
}

}  // namespace

MergeRecord read_merge_record(const std::string& h5_path) {
  MergeRecord rec;
  H5Reader h5(h5_path);
  rec.architecture_config = required_attribute(h5, "architecture_config");
  rec.resolved_config = required_attribute(h5, "merge_config");
  rec.tensors = h5.list("/tensors");
  if (rec.tensors.empty()) fail(h5_path, ": no tensors under /tensors");
  switch (h5.info("/tensors/" + rec.tensors.front()).dtype) {
    case DType::BF16: rec.dtype = "bfloat16"; break;
    case DType::F16: rec.dtype = "float16"; break;
    default: rec.dtype = "float32";
  }
  MergeReport& r = rec.report;
  r.method = required_attribute(h5, "method");
  const std::string models_text = required_attribute(h5, "models");
  try {
    for (const auto& m : nlohmann::json::parse(models_text)) {
      r.models.push_back(m.at("name").get<std::string>());
      rec.model_paths.push_back(m.at("path").get<std::string>());
    }
  } catch (const std::exception& e) {
    fail(h5_path, ": attribute 'models' is not the JSON list of {name, path} that recall merge writes: ", e.what());
  }
  read_recall_data(h5, &r);
  // The resolved config names the reference (the merge took its tokenizer from it) and the base;
  // /recall/tensor_params holds the parameters each tensor was merged with, as the job resolved
  // them (gradients, filters, slices, RECALL's weights).
  try {
    const MergeConfig c = parse_merge_config(rec.resolved_config, h5_path + ": attribute merge_config");
    if (!c.base.empty()) r.base = c.model_index(c.base);
    r.reference = c.reference;
  } catch (const std::exception& e) {
    rec.notes.push_back(std::string("the recorded config cannot be decoded by this version (") + e.what() + ")");
    r.reference = yaml_value_at(rec.resolved_config, "reference");
  }
  read_tensor_params(h5, rec.architecture_config, &rec);
  rec.source_model = r.reference;
  for (size_t m = 0; m < r.models.size(); ++m)
    if (r.models[m] == rec.source_model) rec.source_path = rec.model_paths[m];
  if (rec.source_path.empty())
    fail(h5_path, ": the recorded reference model '", rec.source_model, "' is not among the recorded models");
  r.output_dtype = rec.dtype;
  return rec;
}

}  // namespace recall
