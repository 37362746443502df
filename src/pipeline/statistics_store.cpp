// The saved calibration statistics, read per tensor for the merge loop (see statistics.h).
#include <cmath>

#include "recall/engine/extraction.h"
#include "recall/merge/aim.h"
#include "recall/pipeline/statistics.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

StatisticsStore::StatisticsStore(const MergeConfig& config, const MergeInputs& inputs, std::string dir)
    : config_(config), inputs_(inputs), dir_(std::move(dir)), needs_(statistics_needs(config)) {
  if (!needs_.fisher) return;
  for (size_t m = 0; m < inputs_.models.size(); ++m) {
    const SafetensorsFile& f = file(fisher_path(dir_, m));
    const auto it = f.metadata().find("sum_squares");
    if (it == f.metadata().end()) fail(f.path(), ": no 'sum_squares' in its metadata (not a Fisher file of recall)");
    const double sum = std::strtod(it->second.c_str(), nullptr);
    if (!(sum > 0) || !std::isfinite(sum))
      fail(f.path(), ": the Fisher of model '", config_.models[m].name, "' has squared norm ", it->second,
           "; expected a positive number (do the calibration samples have at least 2 tokens?)");
    fisher_norm_.push_back(std::sqrt(sum));
  }
}

const SafetensorsFile& StatisticsStore::file(const std::string& path) const {
  auto it = files_.find(path);
  if (it == files_.end()) it = files_.emplace(path, SafetensorsFile::open(path)).first;
  return *it->second;
}

std::string StatisticsStore::block_file(size_t model, int64_t block) const {
  return engine::linear_statistics_path(dir_, static_cast<int>(model), block);
}

int64_t StatisticsStore::tokens(size_t model, int64_t block, LinearGroup g) const {
  const SafetensorsFile& f = file(block_file(model, block));
  const std::string name = std::string(linear_group_name(g)) + ".tokens";
  const TensorInfo& count = f.at(name);
  if (count.dtype != DType::I64 || count.numel() != 1) fail(f.path(), ": '", name, "' must be one I64");
  int64_t n = 0;
  f.read(count, 0, 8, &n);
  if (n <= 0) fail(f.path(), ": '", name, "' is ", n, "; expected the calibration tokens (at least 1)");
  return n;
}

std::vector<double> StatisticsStore::aim_importance(size_t model, int64_t block, LinearGroup g) const {
  const SafetensorsFile& f = file(block_file(model, block));
  const std::string name = std::string(linear_group_name(g)) + ".abs_sum";
  const TensorInfo& sums = f.at(name);
  if (sums.dtype != DType::F64 || sums.shape.size() != 1) fail(f.path(), ": '", name, "' must be F64 [in]");
  std::vector<double> a(sums.numel());
  f.read(sums, 0, sums.nbytes(), a.data());
  return aim_channel_importance(a, tokens(model, block, g));
}

const TensorInfo& StatisticsStore::gram_info(size_t model, int64_t block, LinearGroup g, uint64_t in) const {
  const SafetensorsFile& f = file(block_file(model, block));
  const TensorInfo& t = f.at(std::string(linear_group_name(g)) + ".gram");
  if (t.dtype != DType::F64 || t.shape != std::vector<int64_t>{static_cast<int64_t>(in), static_cast<int64_t>(in)})
    fail(f.path(), ": '", linear_group_name(g), ".gram' must be F64 [", in, ", ", in, "]");
  return t;
}

std::string StatisticsStore::damage() const {
  try {
    for (size_t slot = 0; slot < inputs_.slots.size(); ++slot) of(slot);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TensorStatistics StatisticsStore::of(size_t slot) const {
  TensorStatistics s;
  const std::vector<TensorSource>& sources = inputs_.layout[slot].sources;
  if (needs_.fisher) {
    for (const TensorSource& src : sources) s.fisher_norm.push_back(fisher_norm_.at(src.model));
    for (const TensorSource& src : sources) {  // checked here, so that a damaged file fails before any merge
      const SafetensorsFile& f = file(fisher_path(dir_, src.model));
      if (f.at(src.name).dtype != DType::F32) fail(f.path(), ": '", src.name, "' must be F32");
    }
    s.fisher = [this, sources](size_t j, uint64_t first, uint64_t n, float* dst) {
      const SafetensorsFile& f = file(fisher_path(dir_, sources[j].model));
      const TensorInfo& t = f.at(sources[j].name);
      if (t.dtype != DType::F32 || first + n > t.numel())
        fail(f.path(), ": '", sources[j].name, "' must be F32 with at least ", first + n, " elements");
      f.read(t, first * 4, n * 4, dst);
    };
  }
  const auto parsed = parse_tensor_name(sources.at(0).name);
  const std::optional<LinearGroup> group = parsed ? linear_group_of(parsed->first) : std::nullopt;
  if (!group) return s;
  if (needs_.gram) {
    const TensorSlot& out = inputs_.slots[slot];
    s.gram_size = out.shape.size() == 2 ? out.shape[1] : 0;
    for (const TensorSource& src : sources) {
      const int64_t block = parse_tensor_name(src.name)->second;
      s.gram_tokens.push_back(static_cast<double>(tokens(src.model, block, *group)));
      gram_info(src.model, block, *group, static_cast<uint64_t>(s.gram_size));
    }
    s.gram_rows = [this, sources, g = *group, in = static_cast<uint64_t>(s.gram_size)](size_t j, uint64_t r0,
                                                                                       uint64_t n, double* dst) {
      const int64_t block = parse_tensor_name(sources[j].name)->second;
      file(block_file(sources[j].model, block)).read(gram_info(sources[j].model, block, g, in), r0 * in * 8, n * in * 8, dst);
    };
  }
  if (needs_.abs_sum && inputs_.base) {
    if (const std::optional<size_t> b = inputs_.base_source(slot)) {
      const auto p = parse_tensor_name(sources[*b].name);
      if (p) s.aim_importance = aim_importance(sources[*b].model, p->second, *group);
    }
  }
  return s;
}

}  // namespace recall
