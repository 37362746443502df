// The output layout of a merge (see recall/pipeline/layout.h).
#include "recall/pipeline/layout.h"

#include <nlohmann/json.hpp>

#include "recall/config/param_setting.h"
#include "recall/util/dtype.h"
#include "recall/util/error.h"

namespace recall {

namespace {

uint64_t shape_bytes(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// The output block's slice, and the block's offset in it.
struct SlicePosition {
  size_t slice = 0;
  int64_t offset = 0;
};

std::vector<SlicePosition> slice_positions(const std::vector<SliceConfig>& slices) {
  std::vector<SlicePosition> out;
  for (size_t k = 0; k < slices.size(); ++k)
    for (int64_t i = 0; i < slices[k].length(); ++i) out.push_back({k, i});
  return out;
}

// mergekit's gradient position within a slice of n blocks (plan.py: t = i / (n - 1), 1 for n = 1).
double slice_t(int64_t offset, int64_t n) { return n > 1 ? static_cast<double>(offset) / static_cast<double>(n - 1) : 1.0; }

// Where each output tensor comes from (slots already set).
void fill_sources(const MergeConfig& c, MergeInputs* in) {
  const std::vector<SlicePosition> pos = slice_positions(c.slices);
  in->layout.assign(in->slots.size(), {});
  for (size_t s = 0; s < in->slots.size(); ++s) {
    const TensorSlot& slot = in->slots[s];
    SlotLayout& l = in->layout[s];
    if (c.slices.empty()) {
      for (size_t m = 0; m < in->models.size(); ++m) l.sources.push_back({m, slot.name});
      l.t = gradient_position(slot.block, in->output_blocks);
      continue;
    }
    // Blocks: their slice's sources at the same offset; the embedding from the first slice's
    // sources, the final norm and lm_head from the last slice's, at t = 0 (mergekit's plan.py).
    const bool in_block = slot.block >= 0;
    l.slice = in_block ? static_cast<int64_t>(pos[slot.block].slice)
                       : (slot.role == Role::Embed ? 0 : static_cast<int64_t>(c.slices.size()) - 1);
    const SliceConfig& sl = c.slices[l.slice];
    for (const SliceSource& src : sl.sources) {
      const int64_t block = in_block ? src.first + pos[slot.block].offset : -1;
      l.sources.push_back({c.model_index(src.model), tensor_name(slot.role, block)});
    }
    l.t = in_block ? slice_t(pos[slot.block].offset, sl.length()) : 0.0;
  }
}

// Bytes of every source tensor, from the headers or (a described model) shape x dtype.
void fill_bytes(const MergeConfig& c, MergeInputs* in, const std::vector<bool>& opened,
                std::vector<std::string>* problems) {
  in->slot_bytes.assign(in->models.size(), std::vector<uint64_t>(in->slots.size(), 0));
  for (size_t m = 0; m < in->models.size(); ++m) {
    if (!opened[m] || !in->described[m]) continue;
    const std::string dt = in->models[m].config.torch_dtype.empty() ? "bfloat16" : in->models[m].config.torch_dtype;
    if (!parse_torch_dtype(dt))
      problems->push_back("model '" + c.models[m].name + "': torch_dtype '" + dt +
                          "' is not one of bfloat16, float16, float32, float64, float8_e4m3fn, float8_e5m2");
  }
  if (!problems->empty()) return;
  for (size_t s = 0; s < in->slots.size(); ++s)
    for (const TensorSource& src : in->layout[s].sources) {
      const ModelDir& md = in->models[src.model];
      if (!opened[src.model]) continue;
      if (in->described[src.model]) {
        const std::string dt = md.config.torch_dtype.empty() ? "bfloat16" : md.config.torch_dtype;
        in->slot_bytes[src.model][s] = shape_bytes(in->slots[s].shape, *parse_torch_dtype(dt));
        continue;
      }
      const Checkpoint::Entry* e = md.checkpoint.find(src.name);
      if (!e) {
        problems->push_back("model '" + c.models[src.model].name + "' has no tensor '" + src.name + "' (a source of '" +
                            in->slots[s].name + "')");
        continue;
      }
      in->slot_bytes[src.model][s] = e->info->nbytes();
    }
}

}  // namespace

std::string output_config_json(const std::string& config_json, int64_t blocks,
                               const std::vector<int64_t>& source_block_of_output) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(config_json);
  j["num_hidden_layers"] = blocks;
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    const nlohmann::ordered_json in = j["layer_types"];
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (int64_t b : source_block_of_output)
      out.push_back(b >= 0 && static_cast<size_t>(b) < in.size() ? in[static_cast<size_t>(b)] : in.back());
    j["layer_types"] = out;
  }
  return j.dump(2) + "\n";
}

void build_output_layout(const MergeConfig& c, MergeInputs* in, const std::vector<bool>& opened,
                         std::vector<std::string>* problems) {
  if (!opened.at(in->reference)) return;  // its problem is already listed
  const ModelConfig& ref = in->models[in->reference].config;
  std::vector<int64_t> source_block;  // of each output block: the first source's block
  for (size_t k = 0; k < c.slices.size(); ++k)
    for (size_t j = 0; j < c.slices[k].sources.size(); ++j) {
      const SliceSource& src = c.slices[k].sources[j];
      const size_t m = c.model_index(src.model);
      const int64_t L = in->models[m].config.num_hidden_layers;
      if (opened[m] && src.end > L)
        problems->push_back(c.origin.of("slices[" + std::to_string(k) + "].sources[" + std::to_string(j) + "]") +
                            ": layer_range [" + std::to_string(src.first) + ", " + std::to_string(src.end) +
                            ") goes beyond model '" + src.model + "', which has " + std::to_string(L) + " blocks");
      if (j == 0)
        for (int64_t b = src.first; b < src.end; ++b) source_block.push_back(b);
    }
  if (!problems->empty()) return;
  ModelConfig out = ref;
  out.num_hidden_layers = c.slices.empty() ? ref.num_hidden_layers : static_cast<int64_t>(source_block.size());
  in->output_blocks = out.num_hidden_layers;
  in->output_config_json =
      c.slices.empty() ? ref.raw_json : output_config_json(ref.raw_json, out.num_hidden_layers, source_block);
  in->slots = expected_tensors(out);
  fill_sources(c, in);
  fill_bytes(c, in, opened, problems);
}

}  // namespace recall
