// Gram matrices and absolute sums of the linear layers' inputs (see linear_statistics.h).
#include "recall/engine/linear_statistics.h"

#include <string>
#include <vector>

#include "recall/io/safetensors.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

LinearStatistics::LinearStatistics(LinearStatisticsOptions options) : options_(std::move(options)) {
  if (options_.any() && options_.dir.empty()) fail("linear statistics: no directory to write them to");
}

void LinearStatistics::set_mask(const at::Tensor& mask) {
  rows_ = mask.reshape({-1}).ne(0).nonzero().reshape({-1});
}

void LinearStatistics::linear_input(int64_t block, LinearGroup group, const at::Tensor& x) {
  if (!rows_.defined()) fail("linear statistics: set_mask before the forward pass");
  const int64_t in = x.size(-1);
  // [tokens, in] rows of the real tokens, widened to float64 (exact), then one GEMM per micro-batch.
  const at::Tensor rows = x.reshape({-1, in}).index_select(0, rows_.to(x.device())).to(at::kDouble);
  Group& g = blocks_[block][static_cast<size_t>(group)];
  if (!g.seen) {
    const auto opts = at::TensorOptions().dtype(at::kDouble).device(x.device());
    if (options_.gram) g.gram = at::zeros({in, in}, opts);
    if (options_.abs_sum) g.abs_sum = at::zeros({in}, opts);
    g.seen = true;
  }
  if (options_.gram) g.gram.addmm_(rows.t(), rows);
  if (options_.abs_sum) g.abs_sum.add_(rows.abs().sum(0));
  g.tokens += rows.size(0);
}

void LinearStatistics::write(int model, int64_t block) {
  auto it = blocks_.find(block);
  if (it == blocks_.end()) fail("linear statistics: block ", block, " saw no input");
  std::vector<TensorSpec> specs;
  std::vector<std::pair<std::string, at::Tensor>> data;
  for (LinearGroup lg : kLinearGroups) {
    Group& g = it->second[static_cast<size_t>(lg)];
    if (!g.seen) fail("linear statistics: block ", block, " saw no input of ", linear_group_name(lg));
    const std::string name = linear_group_name(lg);
    if (options_.gram) data.emplace_back(name + ".gram", g.gram.to(at::kCPU).contiguous());
    if (options_.abs_sum) data.emplace_back(name + ".abs_sum", g.abs_sum.to(at::kCPU).contiguous());
    data.emplace_back(name + ".tokens", at::full({1}, g.tokens, at::kLong));
    g = Group();  // the device copy goes as soon as the host copy is taken
  }
  blocks_.erase(it);
  for (const auto& [name, t] : data)
    specs.push_back({name, t.scalar_type() == at::kLong ? DType::I64 : DType::F64, t.sizes().vec()});
  const std::string path = linear_statistics_path(options_.dir, model, block);
  make_directories(path.substr(0, path.rfind('/')));
  SafetensorsWriter writer(path, specs);
  for (const auto& [name, t] : data) writer.write(name, t.data_ptr(), t.nbytes());
  writer.commit();
}

}  // namespace recall::engine
