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
  std::vector<TensorParams> out;
  for (size_t s = 0; s < in.slots.size(); ++s) {
    const TensorSlot& slot = in.slots[s];
    const SlotLayout& layout = in.layout.at(s);
    const SliceConfig* slice = layout.slice >= 0 ? &c.slices.at(static_cast<size_t>(layout.slice)) : nullptr;
    TensorParams tp;
    for (const ParamSpec& p : method.params) {
      // Shared parameters: the slice's, then the top level's, against the output tensor's name.
      if (p.scope == ParamScope::Shared) {
        std::vector<const ParamSettings*> scopes = {&c.params};
        if (slice) scopes.insert(scopes.begin(), &slice->params);
        tp.set(p.name, resolve(p, scopes, slot.name, layout.t, ""));
        continue;
      }
      // Per-model parameters, one per source in order: the source's, the slice's, the model's, the
      // top level's, against the source tensor's name (mergekit resolves an input's parameters
      // with its own tensor name).
      std::vector<double> v;
      for (size_t i = 0; i < layout.sources.size(); ++i) {
        const TensorSource& src = layout.sources[i];
        std::vector<const ParamSettings*> scopes = {&c.models[src.model].params, &c.params};
        if (slice) scopes.insert(scopes.begin(), {&slice->sources.at(i).params, &slice->params});
        const bool unused = in.base && *in.base == src.model && method.base != BaseUse::None;
        v.push_back(resolve(p, scopes, src.name, layout.t, " of model '" + c.models[src.model].name + "'", unused));
      }
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
