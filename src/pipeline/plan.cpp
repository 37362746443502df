// The merge job's plan: grid shape, merge chunks and buffers, memory per rank (see plan.h).
#include "recall/pipeline/plan.h"

#include <algorithm>
#include <sstream>

#include "recall/engine/fisher.h"
#include "recall/merge/typical.h"
#include "recall/pipeline/statistics.h"
#include "recall/util/error.h"
#include "recall/util/format.h"

namespace recall {

dist::GridSpec grid_spec(const MergeInputs& in) {
  const ModelConfig& cfg = in.models[in.reference].config;
  dist::GridSpec spec;
  spec.models = static_cast<int>(in.models.size());
  spec.block_bytes.assign(cfg.num_hidden_layers, 0);
  for (size_t i = 0; i < in.slots.size(); ++i) {
    const TensorSlot& s = in.slots[i];
    const uint64_t n = in.slot_bytes[in.reference][i];
    if (s.block >= 0) spec.block_bytes[s.block] += n;
    else if (s.role == Role::Embed) spec.first_stage_extra_bytes += n;
    else spec.last_stage_extra_bytes += n;
  }
  return spec;
}

namespace {

uint64_t rows_of(const std::vector<int64_t>& shape) { return shape.empty() ? 1 : static_cast<uint64_t>(shape[0]); }

uint64_t numel_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// Bytes per row of slot `slot` in model m's dtype (from the header bytes: works for models
// described by config.json alone, whose tensors are not opened).
uint64_t row_bytes(const MergeInputs& in, size_t m, size_t slot) {
  return in.slot_bytes[m][slot] / std::max<uint64_t>(1, rows_of(in.slots[slot].shape));
}

}  // namespace

uint64_t widest_row_bytes(const MergeInputs& in, size_t slot) {
  uint64_t widest = 0;
  for (size_t m = 0; m < in.models.size(); ++m) widest = std::max(widest, row_bytes(in, m, slot));
  return widest;
}

std::vector<MergeChunk> plan_merge_chunks(const MergeConfig& c, const MergeInputs& in, int rank, int world,
                                          const std::set<std::string>& done) {
  if (world < 1 || rank < 0 || rank >= world) fail("plan_merge_chunks: rank ", rank, " of ", world);
  const bool whole = c.method->whole_tensor;
  std::vector<MergeChunk> plan;
  for (size_t t = 0; t < in.slots.size(); ++t) {
    const TensorSlot& slot = in.slots[t];
    if (done.count(slot.name)) continue;
    const uint64_t rows = rows_of(slot.shape);
    uint64_t begin = 0, end = 0, max_rows = rows;
    if (whole) {
      end = static_cast<int>(t % static_cast<size_t>(world)) == rank ? rows : 0;
    } else {
      const dist::RowRange r = dist::row_range(static_cast<int64_t>(rows), world, rank);
      begin = static_cast<uint64_t>(r.first);
      end = static_cast<uint64_t>(r.end);
      max_rows = (rows + static_cast<uint64_t>(world) - 1) / static_cast<uint64_t>(world);
    }
    const uint64_t per_chunk =
        whole ? std::max<uint64_t>(rows, 1)
              : std::max<uint64_t>(1, c.parallel.merge_chunk_bytes / std::max<uint64_t>(widest_row_bytes(in, t), 1));
    const uint64_t chunks = std::max<uint64_t>(1, (max_rows + per_chunk - 1) / per_chunk);
    for (uint64_t k = 0; k < chunks; ++k) {
      MergeChunk ch;
      ch.tensor = t;
      ch.first_row = std::min(end, begin + k * per_chunk);
      ch.end_row = std::min(end, ch.first_row + per_chunk);
      ch.first = k == 0;
      ch.last = k + 1 == chunks;
      ch.whole = begin == 0 && end == rows;
      plan.push_back(ch);
    }
  }
  return plan;
}

uint64_t MergeBuffers::total() const {
  uint64_t in = 0;
  for (uint64_t b : input_bytes) in += b;
  return static_cast<uint64_t>(input_sets) * in + output_bytes + work_bytes;
}

MergeBuffers merge_buffers(const MergeConfig& c, const MergeInputs& in, int rank, int world) {
  MergeBuffers b;
  const size_t M = in.models.size();
  b.input_bytes.assign(M, 0);
  b.input_sets = c.method->whole_tensor ? 1 : 2;
  const uint64_t out_size = dtype_size(c.output.dtype);
  for (const MergeChunk& ch : plan_merge_chunks(c, in, rank, world)) {
    if (ch.rows() == 0) continue;
    const TensorSlot& slot = in.slots[ch.tensor];
    const uint64_t row_elems = numel_of(slot.shape) / std::max<uint64_t>(1, rows_of(slot.shape));
    for (size_t m = 0; m < M; ++m) b.input_bytes[m] = std::max(b.input_bytes[m], ch.rows() * row_bytes(in, m, ch.tensor));
    b.output_bytes = std::max(b.output_bytes, ch.rows() * row_elems * out_size);
    if (c.method->work_bytes)
      b.work_bytes = std::max(b.work_bytes, c.method->work_bytes(ch.rows() * row_elems, M, c.output.dtype, slot));
  }
  return b;
}

namespace {

// The token table of `samples` lines of the data file (load_samples): at most `limit` tokens a
// sample, and at most one per byte of the file plus BOS and a leading-space piece a line (a token
// id in input_ids takes >= 2 bytes of JSON; a tokenizer's token >= 1 byte of text). 8 bytes a
// sample; the id vector grows by doubling: up to twice its 4 bytes a token.
uint64_t token_table_bytes(const MergeInputs& in, uint64_t samples, uint64_t limit) {
  return 8 * (samples + 1) + 2 * 4 * std::min(samples * limit, in.data_bytes + 2 * samples);
}

}  // namespace

RecallDataPlan recall_data_plan(const MergeConfig& c, const MergeInputs& in) {
  RecallDataPlan p;
  const ModelConfig& cfg = in.models[in.reference].config;
  auto N = static_cast<uint64_t>(in.data_samples);
  if (c.typical.max_samples > 0) N = std::min(N, static_cast<uint64_t>(c.typical.max_samples));
  const uint64_t H = static_cast<uint64_t>(cfg.hidden_size), L = static_cast<uint64_t>(cfg.num_hidden_layers);
  const uint64_t K = static_cast<uint64_t>(c.typical.clusters), M = in.models.size();
  const uint64_t limit = static_cast<uint64_t>(std::min(c.max_length, cfg.max_position_embeddings));
  p.tokens = token_table_bytes(in, N, limit);
  p.pooled = N * H * 4;
  p.kmeans = kmeans_subsampled_work_bytes(static_cast<int64_t>(N), static_cast<int64_t>(H), static_cast<int64_t>(K),
                                          c.typical.kmeans_samples);
  p.representations = 4 * (M * (L + 1) * (K * H + 2) * 4);
  return p;
}

// The program's own anonymous memory, measured here with a 10 ms RssAnon sampler
// (recall/util/memory.h) on tiny models, then doubled: a linear merge peaked at 6.3 MB, a RECALL
// merge (libtorch loaded, its thread pools and allocator) at 187 MB.
constexpr uint64_t kProcessBytes = 64ull << 20;
constexpr uint64_t kEngineBytes = 384ull << 20;

uint64_t stream_resident_bytes(const MergeConfig& c, const MergeInputs& in) {
  if (c.parallel.stream_samples <= 0) return 0;
  const auto mb = static_cast<uint64_t>(c.parallel.micro_batch);
  const uint64_t samples = (static_cast<uint64_t>(c.parallel.stream_samples) + mb - 1) / mb * mb;
  return samples * static_cast<uint64_t>(c.max_length) * in.models[in.reference].config.hidden_size * 4;
}

namespace {

// Whether the extraction runs model m's cells: every model's, but AIM alone (no representations, no
// Gram matrices) runs the base's only (pipeline/statistics.cpp).
bool extracts_model(const MergeConfig& c, const MergeInputs& in, int m) {
  if (c.uses_representations() || !in.base) return true;
  const StatisticsNeeds needs = statistics_needs(c);
  return needs.gram || !needs.abs_sum || m == static_cast<int>(*in.base);
}

}  // namespace

uint64_t linear_statistics_bytes(const MergeConfig& c, const MergeInputs& in, const dist::Grid& grid, int rank,
                                 const engine::LinearStatisticsOptions& statistics) {
  if (!statistics.any()) return 0;
  const ModelConfig& cfg = in.models[in.reference].config;
  const uint64_t H = cfg.hidden_size, A = static_cast<uint64_t>(cfg.num_attention_heads) * cfg.head_dim,
                 I = cfg.intermediate_size;
  uint64_t per_block = 0;
  for (uint64_t width : {H, A, H, I})
    per_block += (statistics.gram ? width * width * 8 : 0) + (statistics.abs_sum ? width * 8 : 0) + 8;
  // Blocks held at once: a run of one model's consecutive cells on this rank (CellRun) holds all
  // its blocks when resident, one when streaming.
  uint64_t blocks = 0;
  for (int m = 0; m < grid.models(); ++m) {
    if (!extracts_model(c, in, m)) continue;
    uint64_t run = 0;
    for (int s = 0; s < grid.stages(); ++s)
      if (grid.owner({m, s}) == rank) run += static_cast<uint64_t>(grid.stage(s).num_blocks());
    blocks = std::max(blocks, run);
  }
  if (blocks == 0) return 0;
  if (c.parallel.stream_samples > 0) blocks = 1;
  if (c.parallel.device == Device::Cuda) blocks += 1;
  const uint64_t rows = static_cast<uint64_t>(c.parallel.micro_batch) * c.max_length * std::max({H, A, I}) * 20;
  return blocks * per_block + rows;
}

uint64_t statistics_disk_bytes(const MergeConfig& c, const MergeInputs& in) {
  if (!c.needs_statistics()) return 0;
  const StatisticsNeeds needs = statistics_needs(c);
  const ModelConfig& cfg = in.models[in.reference].config;
  const uint64_t H = cfg.hidden_size, A = static_cast<uint64_t>(cfg.num_attention_heads) * cfg.head_dim,
                 I = cfg.intermediate_size, L = static_cast<uint64_t>(cfg.num_hidden_layers);
  constexpr uint64_t kHeader = 4096;  // a safetensors header, generously
  uint64_t per_block = kHeader;
  for (uint64_t width : {H, A, H, I})
    per_block += (needs.gram ? width * width * 8 : 0) + (needs.abs_sum ? width * 8 : 0) + 8;
  uint64_t fisher = kHeader;
  for (const TensorSlot& slot : in.slots) {
    uint64_t n = 1;
    for (int64_t d : slot.shape) n *= static_cast<uint64_t>(d);
    fisher += n * 4 + 256;  // float32, and its header entry
  }
  uint64_t bytes = 0;
  for (size_t m = 0; m < in.models.size(); ++m) {
    if ((needs.gram || needs.abs_sum) && extracts_model(c, in, static_cast<int>(m))) bytes += L * per_block;
    if (needs.fisher) bytes += fisher;
  }
  return bytes;
}

uint64_t merged_path_bytes(const MergeConfig& c, const MergeInputs& in, const dist::Grid& grid, int rank) {
  if (c.method->statistics != Statistics::MergedPathGram) return 0;
  const ModelConfig& cfg = in.models[in.reference].config;
  const uint64_t H = cfg.hidden_size, M = in.models.size(), mb = static_cast<uint64_t>(c.parallel.micro_batch);
  const auto limit = static_cast<uint64_t>(std::min(c.max_length, cfg.max_position_embeddings));
  uint64_t streams = 0, largest_block = 0, work = 0;
  for (int m = 0; m < grid.models(); ++m) {
    bool here = false;
    for (int s = 0; s < grid.stages(); ++s) {
      if (grid.owner({m, s}) != rank) continue;
      here = true;
      for (int b = grid.stage(s).first_block; b < grid.stage(s).end_block; ++b) {
        uint64_t elements = 0;
        for (const TensorSlot& slot : in.slots) {
          if (slot.block != b) continue;
          elements += numel_of(slot.shape);
          if (c.method->work_bytes)
            work = std::max(work, c.method->work_bytes(numel_of(slot.shape), M, DType::F32, slot));
        }
        largest_block = std::max(largest_block, elements * 4);
      }
    }
    streams += here ? 1 : 0;
  }
  if (streams == 0) return 0;
  uint64_t n = static_cast<uint64_t>(in.data_samples);
  if (c.calibration.samples > 0) n = std::min(n, static_cast<uint64_t>(c.calibration.samples));
  const uint64_t micro_batch_states = mb * limit * H * 4;
  const uint64_t held = c.parallel.stream_samples > 0 ? 0 : streams * ((n + mb - 1) / mb) * micro_batch_states;
  return held + micro_batch_states + 3 * largest_block + work + 2 * micro_batch_states;
}

uint64_t statistics_plan(const MergeConfig& c, const MergeInputs& in, int rank, int world) {
  const ModelConfig& ref = in.models[in.reference].config;
  const auto limit = static_cast<uint64_t>(std::min(c.max_length, ref.max_position_embeddings));
  uint64_t n = static_cast<uint64_t>(in.data_samples);
  if (c.calibration.samples > 0) n = std::min(n, static_cast<uint64_t>(c.calibration.samples));
  const uint64_t tokens = token_table_bytes(in, n, limit);  // the calibration samples
  uint64_t pass = 0;
  if (c.method->statistics == Statistics::Fisher)
    for (size_t m = 0; m < in.models.size(); ++m)
      if (static_cast<int>(m % static_cast<size_t>(world)) == rank)
        pass = std::max(pass, engine::fisher_memory_bytes(in.models[m].config, static_cast<int64_t>(limit)));
  return tokens + pass;
}

MemoryPlan memory_plan(const MergeConfig& c, const MergeInputs& in, const dist::GridSpec& spec, const dist::Grid* grid,
                       int rank, int world) {
  MemoryPlan p;
  p.process = kProcessBytes + (grid || c.needs_statistics() ? kEngineBytes : 0);
  const ModelConfig& cfg = in.models[in.reference].config;
  std::vector<dist::Cell> cells;  // the cells this rank runs
  if (grid)
    for (const dist::Cell& cell : grid->cells_of(rank))
      if (extracts_model(c, in, cell.model)) cells.push_back(cell);
  if (!cells.empty()) {
    // Extraction holds one model's cells at a time, converted to float32 compute.
    uint64_t widest = 0;
    for (const dist::Cell& cell : cells) widest = std::max(widest, grid->stage(cell.stage).bytes);
    p.weights = widest * 2;  // bf16 on disk -> f32 in memory (f32 inputs: an upper bound)
    const uint64_t tokens = static_cast<uint64_t>(c.parallel.micro_batch) * c.max_length;
    uint64_t held = 0;  // streaming: the hidden states held in memory between blocks (the rest spill)
    if (c.parallel.stream_samples > 0) {
      // One block (or the embedding, at stage 0) resident at a time.
      uint64_t largest = 0;
      for (const dist::Cell& cell : cells) {
        const auto& st = grid->stage(cell.stage);
        for (int b = st.first_block; b < st.end_block; ++b) largest = std::max(largest, spec.block_bytes[b]);
        if (cell.stage == 0) largest = std::max(largest, spec.first_stage_extra_bytes);
      }
      p.weights = largest * 2;
      held = stream_resident_bytes(c, in);
    }
    // Hidden states, attention scores (SDPA fused on CPU is smaller) and the MLP's activations.
    p.activations = held + tokens * 4 * (6 * cfg.hidden_size + 3 * cfg.intermediate_size) +
                    static_cast<uint64_t>(c.parallel.micro_batch) * cfg.num_attention_heads * c.max_length *
                        c.max_length * 4;
  }
  if (grid && c.uses_representations()) p.recall_data = recall_data_plan(c, in).total();
  if (c.needs_statistics()) p.statistics = statistics_plan(c, in, rank, world);
  if (grid && c.needs_statistics()) {
    const StatisticsNeeds needs = statistics_needs(c);
    engine::LinearStatisticsOptions so;
    so.gram = needs.gram;
    so.abs_sum = needs.abs_sum;
    p.statistics += linear_statistics_bytes(c, in, *grid, rank, so);
    p.statistics += merged_path_bytes(c, in, *grid, rank);
  }
  p.merge_buffers = merge_buffers(c, in, rank, world).total();
  return p;
}

namespace {

size_t largest_plan(const std::vector<MemoryPlan>& plans) {
  size_t worst = 0;
  for (size_t r = 0; r < plans.size(); ++r)
    if (plans[r].total() > plans[worst].total()) worst = r;
  return worst;
}

}  // namespace

std::string memory_plan_text(const std::vector<MemoryPlan>& plans, uint64_t budget, bool verbose) {
  std::ostringstream os;
  os << "memory plan per rank (program + weights + activations + RECALL data + merge buffers + statistics = total"
     << (budget ? "; budget " + format_size_setting(budget) : std::string()) << "):";
  auto line = [&](const std::string& who, const MemoryPlan& p) {
    os << "\n  " << who << ": " << format_bytes(p.process) << " + " << format_bytes(p.weights) << " + "
       << format_bytes(p.activations) << " + " << format_bytes(p.recall_data) << " + "
       << format_bytes(p.merge_buffers) << " + " << format_bytes(p.statistics) << " = " << format_bytes(p.total());
  };
  if (plans.size() <= 64 || verbose) {
    for (size_t r = 0; r < plans.size(); ++r) line("rank " + std::to_string(r), plans[r]);
  } else {
    const size_t w = largest_plan(plans);
    line("largest (rank " + std::to_string(w) + " of " + std::to_string(plans.size()) + ")", plans[w]);
  }
  return os.str();
}

void check_memory_budget(const std::vector<MemoryPlan>& plans, uint64_t budget) {
  if (plans.empty() || budget == 0) return;
  const size_t w = largest_plan(plans);
  const MemoryPlan& p = plans[w];
  if (p.total() <= budget) return;
  fail("the memory plan needs ", format_bytes(p.total()), " (", p.total(), " bytes) on rank ", w,
       " but memory_budget is ", format_size_setting(budget), " (", budget, " bytes; program ", format_bytes(p.process),
       ", weights ", format_bytes(p.weights), ", activations ", format_bytes(p.activations), ", RECALL data ", format_bytes(p.recall_data),
       ", merge buffers ", format_bytes(p.merge_buffers), ", statistics ", format_bytes(p.statistics),
       ")\n---> HINT: more parallel.stages or more ranks lower the weights, and parallel.stream_samples "
       "(e.g. 32) keeps one block resident at a time; a smaller parallel.micro_batch or max_length "
       "lowers the activations, typical.max_samples the RECALL data (N x hidden_size x 4 bytes for the "
       "typical samples' clustering), and a smaller parallel.merge_chunk_bytes the merge buffers");
}

}  // namespace recall
