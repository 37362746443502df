// The merge-method registry: every method recall runs is one entry here (name, parameters with
// defaults and ranges, how it uses the base model, whether it needs whole tensors, its working
// memory, its kernel). The config decoder, the memory plan, the merge loop, the test helper and
// the generated docs all read this table; adding a method is one entry plus its kernel and tests
// (docs/ARCHITECTURE.md walks through it).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "recall/merge/methods.h"
#include "recall/merge/statistics.h"
#include "recall/util/dtype.h"

namespace recall {

// mergekit's two kinds of method parameters: shared by every model of a tensor (slerp's t, the
// task-vector lambda) or given per model (weight, density).
enum class ParamScope { Shared, PerModel };
enum class ParamKind { Number, Integer, Bool };

struct ParamSpec {
  std::string name;                     // mergekit's name: "weight", "density", "t", ...
  ParamKind kind = ParamKind::Number;
  ParamScope scope = ParamScope::Shared;
  std::optional<double> default_value;  // nullopt: required (the config must set it)
  double min = -1e300, max = 1e300;     // allowed range, inclusive unless min_open
  bool min_open = false;                // (min, max] instead of [min, max]
  std::string doc;                      // one line for docs/CONFIG.md and errors
};

// How a method uses the model named `base` in the config.
enum class BaseUse { None, Optional, Required };

// The resolved parameter values of one tensor (gradients and filters applied, defaults filled):
// shared parameters have one value, per-model parameters one per model in config order.
class TensorParams {
 public:
  void set(const std::string& name, double value) { shared_[name] = value; }
  void set(const std::string& name, std::vector<double> values) { per_model_[name] = std::move(values); }
  bool has(std::string_view name) const;
  double shared(std::string_view name) const;                 // throws when not set
  const std::vector<double>& per_model(std::string_view name) const;  // throws when not set
  double of(std::string_view name, size_t model) const { return per_model(name).at(model); }
  bool flag(std::string_view name) const { return shared(name) != 0; }
  const std::map<std::string, double, std::less<>>& all_shared() const { return shared_; }
  const std::map<std::string, std::vector<double>, std::less<>>& all_per_model() const { return per_model_; }

 private:
  std::map<std::string, double, std::less<>> shared_;
  std::map<std::string, std::vector<double>, std::less<>> per_model_;
};

// One call of a method's kernel: a piece of one output tensor. Row-wise methods get any range of
// whole rows ([first_element, first_element + numel) of the flattened tensor); whole-tensor
// methods get the whole tensor (first_element 0). `models` holds the inputs of this output tensor
// in config order (every model, or the sources of its slice; the base included, at index `base`),
// and the per-model values of `params` follow the same order; each view points at the piece's
// first element.
struct MergeTask {
  const std::vector<TensorView>& models;
  std::optional<size_t> base;
  const TensorParams& params;
  std::string_view tensor;             // HF name (per-tensor seeds)
  const std::vector<int64_t>& shape;   // the whole tensor's shape
  uint64_t first_element = 0;
  uint64_t numel = 0;
  DType out_dtype = DType::BF16;
  void* out = nullptr;                 // numel elements of out_dtype
  // The calibration statistics of this tensor's inputs, for methods with `statistics` (nullptr
  // for the others).
  const TensorStatistics* statistics = nullptr;
  // CPU threads the kernel may use (the rank's usable CPUs); its bits must not depend on it.
  int threads = 1;
};

// What a data-aware method needs from the calibration samples (`data`); the job's statistics
// phase computes it before the merge (recall/pipeline/statistics.h).
enum class Statistics {
  None,
  Gram,            // every model's Gram matrices of its linear layers' inputs (RegMean)
  MergedPathGram,  // the same Gram matrices with block l's inputs from the merged blocks < l (RegMean++)
  Fisher,          // every model's diagonal Fisher (squared gradients of the log-likelihood)
};

struct MethodSpec {
  std::string name;        // config spelling
  std::string summary;     // one line
  std::string reference;   // paper or mergekit source it follows
  std::vector<ParamSpec> params;
  BaseUse base = BaseUse::None;
  int min_models = 2;      // inputs, the base included
  int max_models = 0;      // 0: no limit
  int min_non_base = 0;    // inputs besides the base
  int max_non_base = 0;    // 0: no limit
  // Whole tensors on one rank (top-k masks, norms, random masks over the tensor) instead of rows
  // split among ranks.
  bool whole_tensor = false;
  // The weights come from the models' representations (RECALL): the job computes the per-model
  // "weight" of every tensor before the merge; the config sets none.
  bool uses_representations = false;
  Statistics statistics = Statistics::None;
  // Working memory of one kernel call beyond its inputs and output, in bytes, for `numel`
  // elements of output tensor `slot` and `models` inputs (the memory plan adds it to the merge
  // buffers).
  std::function<uint64_t(uint64_t numel, size_t models, DType out, const TensorSlot& slot)> work_bytes;
  std::function<void(const MergeTask&)> merge;

  // The method runs calibration samples through the models (`data` required).
  bool needs_data() const { return uses_representations || statistics != Statistics::None; }
  const ParamSpec* param(std::string_view name) const;  // nullptr when the method has none
  // "" when `inputs` models (one of them the base when `has_base`) suit the method, else what is
  // wrong ("merges at most 2 models, got 3").
  std::string check_inputs(size_t inputs, bool has_base) const;
};

// Every registered method, in documentation order.
const std::vector<MethodSpec>& merge_methods();
// The method of that name; nullptr when none.
const MethodSpec* find_merge_method(std::string_view name);
// The method of that name; throws listing every method when none.
const MethodSpec& merge_method(std::string_view name);
// "recall, linear, task_arithmetic, ..." for help texts and errors.
std::string merge_method_names();

// mergekit methods recall refuses, with the reason (config errors and docs/ALGORITHM.md).
const std::map<std::string, std::string>& unsupported_merge_methods();

}  // namespace recall
