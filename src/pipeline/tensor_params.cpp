// Per-tensor resolution of method parameters (see recall/pipeline/tensor_params.h).
#include "recall/pipeline/tensor_params.h"

#include "recall/merge/weights.h"
#include "recall/util/error.h"

namespace recall {

namespace {

std::optional<double> lookup(const ParamSettings& settings, const ParamSpec& p, const std::string& tensor, double t) {
  const auto it = settings.find(p.name);
  if (it == settings.end()) return std::nullopt;
  return it->second.resolve(tensor, t, p.kind == ParamKind::Bool);
}

// The base model's per-model values are unused by the methods that take a base (mergekit
// resolves them only for the other models), so `unused` lets a required one stay unset there.
double resolve(const ParamSpec& p, const std::vector<const ParamSettings*>& scopes, const std::string& tensor,
               double t, const std::string& who, bool unused = false) {
  for (const ParamSettings* s : scopes)
    if (auto v = lookup(*s, p, tensor, t)) return *v;
  if (p.default_value) return *p.default_value;
  if (unused) return 0;
  fail("parameter '", p.name, "' has no value for tensor '", tensor, "'", who,
       " (no filter matched and the method has no default)");
}

}  // namespace

std::vector<TensorParams> resolve_tensor_params(const MergeConfig& c, const MergeInputs& in,
                                                const std::vector<std::vector<double>>& block_weights) {
  const MethodSpec& method = *c.method;
  const int64_t L = in.models.empty() ? 0 : in.models[in.reference].config.num_hidden_layers;
  std::vector<TensorParams> out;
  for (const TensorSlot& slot : in.slots) {
    TensorParams tp;
    const double t = gradient_position(slot.block, L);
    for (const ParamSpec& p : method.params) {
      if (p.scope == ParamScope::Shared) {
        tp.set(p.name, resolve(p, {&c.params}, slot.name, t, ""));
        continue;
      }
      std::vector<double> v;
      for (size_t m = 0; m < c.models.size(); ++m)
        v.push_back(resolve(p, {&c.models[m].params, &c.params}, slot.name, t, " of model '" + c.models[m].name + "'",
                            in.base && *in.base == m && method.base != BaseUse::None));
      tp.set(p.name, std::move(v));
    }
    if (method.uses_representations)
      tp.set("weight", tensor_weights(c.recall.non_block, slot.role, slot.block, block_weights,
                                      static_cast<int64_t>(in.reference)));
    out.push_back(std::move(tp));
  }
  return out;
}

}  // namespace recall
