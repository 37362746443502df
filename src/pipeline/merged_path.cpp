// RegMean++'s merged embedding rows and blocks during the statistics phase (see merged_path.h).
#include "recall/pipeline/merged_path.h"

#include <cstring>
#include <memory>

#include "recall/pipeline/statistics.h"
#include "recall/pipeline/tensor_params.h"
#include "recall/util/cpus.h"
#include "recall/util/error.h"

namespace recall {

namespace {

// What the callbacks share: the statistics (opened per file on first use) and the parameters.
struct MergedPathState {
  const MergeConfig& config;
  const MergeInputs& inputs;
  StatisticsStore store;
  std::vector<TensorParams> params;
  MergedPathState(const MergeConfig& c, const MergeInputs& in, const std::string& dir)
      : config(c), inputs(in), store(c, in, dir), params(resolve_tensor_params(c, in, {})) {}
};

uint64_t row_elements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (size_t i = shape.size() > 1 ? 1 : 0; i < shape.size(); ++i) n *= static_cast<uint64_t>(shape[i]);
  return n;
}

// Rows [row0, row0 + rows) of slot `t` merged by the method's kernel into `out` (float32). A
// whole-tensor kernel gets the whole tensor (row0 0, every row) except for tensors without Gram
// matrices, which it averages elementwise: the embedding's rows.
void merge_rows(const MergedPathState& st, size_t t, const TensorStatistics& stats, uint64_t row0, uint64_t rows,
                float* out) {
  const TensorSlot& slot = st.inputs.slots[t];
  const uint64_t elems = row_elements(slot.shape);
  std::vector<std::vector<uint8_t>> copies;  // LoRA-modified rows
  std::vector<TensorView> views;
  for (const TensorSource& src : st.inputs.layout[t].sources) {
    const ModelDir& model = st.inputs.models[src.model];
    const Checkpoint::Entry& e = model.checkpoint.at(src.name);
    const uint64_t esize = dtype_size(e.info->dtype);
    const uint8_t* p = e.file->data(*e.info) + row0 * elems * esize;
    if (model.lora && model.lora->targets(src.name)) {
      copies.emplace_back(p, p + rows * elems * esize);
      model.lora->apply_rows(src.name, e.info->dtype, row0, rows, elems, copies.back().data());
      p = copies.back().data();
    }
    views.push_back(TensorView{e.info->dtype, p});
  }
  st.config.method->merge(MergeTask{views, st.inputs.base_source(t), st.params[t], slot.name, slot.shape,
                                    row0 * elems, rows * elems, DType::F32, out, &stats, usable_cpus()});
}

}  // namespace

engine::MergedPath merged_path(const MergeConfig& config, const MergeInputs& inputs, const std::string& dir) {
  auto st = std::make_shared<MergedPathState>(config, inputs, dir);
  size_t embed = inputs.slots.size();
  for (size_t t = 0; t < inputs.slots.size(); ++t)
    if (inputs.slots[t].role == Role::Embed) embed = t;
  if (embed == inputs.slots.size()) fail("RegMean++: the merged model has no embedding tensor");
  engine::MergedPath p;
  p.embedding_rows = [st, embed](const std::vector<int64_t>& ids) {
    const TensorSlot& slot = st->inputs.slots[embed];
    const uint64_t H = row_elements(slot.shape);
    const TensorStatistics stats = st->store.of(embed);
    std::vector<float> out(ids.size() * H);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= slot.shape[0])
        fail("RegMean++: token id ", ids[i], " is outside the embedding's ", slot.shape[0], " rows");
      with_context("merging '" + slot.name + "' row " + std::to_string(ids[i]),
                   [&] { merge_rows(*st, embed, stats, static_cast<uint64_t>(ids[i]), 1, out.data() + i * H); });
    }
    return out;
  };
  p.block = [st](int64_t block) {
    std::map<std::string, engine::MergedTensor> out;
    for (size_t t = 0; t < st->inputs.slots.size(); ++t) {
      const TensorSlot& slot = st->inputs.slots[t];
      if (slot.block != block) continue;
      engine::MergedTensor& m = out[slot.name];
      m.shape = slot.shape;
      const uint64_t rows = slot.shape.size() > 1 ? static_cast<uint64_t>(slot.shape[0]) : 1;  // a 1-D tensor: one row
      m.values.resize(rows * row_elements(slot.shape));
      const TensorStatistics stats = st->store.of(t);
      with_context("merging '" + slot.name + "'", [&] { merge_rows(*st, t, stats, 0, rows, m.values.data()); });
    }
    return out;
  };
  return p;
}

}  // namespace recall
