// The table of merge methods (see recall/merge/registry.h) and the parameter lookups.
#include "recall/merge/registry.h"

#include "recall/util/error.h"

namespace recall {

bool TensorParams::has(std::string_view name) const {
  return shared_.find(name) != shared_.end() || per_model_.find(name) != per_model_.end();
}

double TensorParams::shared(std::string_view name) const {
  const auto it = shared_.find(name);
  if (it == shared_.end()) fail("merge: parameter '", name, "' was not resolved for this tensor");
  return it->second;
}

const std::vector<double>& TensorParams::per_model(std::string_view name) const {
  const auto it = per_model_.find(name);
  if (it == per_model_.end()) fail("merge: per-model parameter '", name, "' was not resolved for this tensor");
  return it->second;
}

const ParamSpec* MethodSpec::param(std::string_view n) const {
  for (const ParamSpec& p : params)
    if (p.name == n) return &p;
  return nullptr;
}

namespace {

// Bytes of the accumulator type of an output dtype: float for 16-bit outputs, double for F32.
uint64_t acc_bytes(DType out) { return out == DType::F32 ? 8 : 4; }

ParamSpec weight_param(double def) {
  return {"weight", ParamKind::Number, ParamScope::PerModel, def, -1e6, 1e6, false,
          "weight of each model (mergekit's `weight`)"};
}
ParamSpec normalize_param(bool def) {
  return {"normalize", ParamKind::Bool, ParamScope::Shared, def ? 1.0 : 0.0, 0, 1, false,
          "divide by the sum of the weights"};
}
ParamSpec bool_param(const char* name, bool def, const char* doc) {
  return {name, ParamKind::Bool, ParamScope::Shared, def ? 1.0 : 0.0, 0, 1, false, doc};
}

// Non-base models in config order, and their per-model values of `name`.
std::vector<size_t> non_base(const MergeTask& t) {
  std::vector<size_t> out;
  for (size_t m = 0; m < t.models.size(); ++m)
    if (!t.base || m != *t.base) out.push_back(m);
  return out;
}

// The generalized task arithmetic family (mergekit's GeneralizedTaskArithmeticMerge).
MethodSpec task_vector_method(std::string name, std::string summary, std::string reference, Sparsification sp,
                              bool consensus, bool default_normalize, bool default_rescale) {
  MethodSpec m;
  m.name = std::move(name);
  m.summary = std::move(summary);
  m.reference = std::move(reference);
  m.base = BaseUse::Required;
  m.whole_tensor = sp != Sparsification::None;
  m.params = {weight_param(1.0),
              {"density", ParamKind::Number, ParamScope::PerModel, 1.0, 0, 1, true,
               "fraction of each task vector kept"},
              {"lambda", ParamKind::Number, ParamScope::Shared, 1.0, -1e6, 1e6, false,
               "scale of the merged task vector"},
              normalize_param(default_normalize),
              bool_param("rescale", default_rescale, "after sparsification, rescale each task vector to its L1 norm")};
  // Without sparsification density and rescale have no effect; mergekit accepts them all the same.
  if (sp == Sparsification::Random)
    m.params.push_back({"seed", ParamKind::Integer, ParamScope::Shared, 0.0, 0, 9007199254740992.0, false,
                        "seed of the random drop masks (recall's own counter-based draws; mergekit uses torch's "
                        "global RNG)"});
  m.work_bytes = [sp](uint64_t numel, size_t models, DType out) {
    // base + result + one delta per non-base model, plus (sparsified) the kept copy, the
    // magnitudes and their sorted copy, and a byte mask.
    const uint64_t a = acc_bytes(out);
    const uint64_t arrays = 2 + (models > 0 ? models - 1 : 0) + (sp == Sparsification::None ? 1 : 4);
    return numel * (arrays * a + 1);
  };
  m.merge = [sp, consensus](const MergeTask& t) {
    if (!t.base) fail("merge: this method needs a base model");
    TaskVectorOptions o;
    o.sparsification = sp;
    o.consensus = consensus;
    o.normalize = t.params.flag("normalize");
    o.rescale = t.params.flag("rescale");
    o.lambda = t.params.shared("lambda");
    if (sp == Sparsification::Random)
      o.seed = dare_tensor_seed(static_cast<uint64_t>(t.params.shared("seed")), t.tensor);
    std::vector<TensorView> others;
    for (size_t i : non_base(t)) {
      others.push_back(t.models[i]);
      o.weights.push_back(t.params.of("weight", i));
      o.densities.push_back(t.params.of("density", i));
    }
    merge_task_vectors(t.models[*t.base], others, t.numel, o, t.out_dtype, t.out);
  };
  return m;
}

std::vector<MethodSpec> build_registry() {
  std::vector<MethodSpec> r;
  {
    MethodSpec m;
    m.name = "recall";
    m.summary = "RECALL: per-block weights from the models' representations on typical samples";
    m.reference = "Wang et al., EMNLP 2025 (arXiv 2510.20479); docs/ALGORITHM.md";
    m.uses_representations = true;
    m.work_bytes = [](uint64_t, size_t, DType) { return uint64_t(256) << 10; };  // kernel staging
    m.merge = [](const MergeTask& t) {
      merge_weighted(t.models, t.params.per_model("weight"), false, t.numel, t.out_dtype, t.out);
    };
    r.push_back(std::move(m));
  }
  {
    MethodSpec m;
    m.name = "linear";
    m.summary = "weighted average of the models";
    m.reference = "https://arxiv.org/abs/2203.05482 (mergekit merge_methods/linear.py)";
    m.params = {weight_param(1.0), normalize_param(true)};
    m.work_bytes = [](uint64_t, size_t, DType) { return uint64_t(256) << 10; };
    m.merge = [](const MergeTask& t) {
      merge_weighted(t.models, t.params.per_model("weight"), t.params.flag("normalize"), t.numel, t.out_dtype,
                     t.out);
    };
    r.push_back(std::move(m));
  }
  r.push_back(task_vector_method("task_arithmetic", "base + lambda x the weighted sum of task vectors",
                                 "https://arxiv.org/abs/2212.04089", Sparsification::None, false, false, false));
  r.push_back(task_vector_method("ties", "TIES: trim task vectors by magnitude, elect signs, disjoint mean",
                                 "https://arxiv.org/abs/2306.01708", Sparsification::Magnitude, true, true, false));
  r.push_back(task_vector_method("dare_linear", "DARE: random drop and rescale of task vectors, then a weighted sum",
                                 "https://arxiv.org/abs/2311.03099", Sparsification::Random, false, false, true));
  r.push_back(task_vector_method("dare_ties", "DARE drop and rescale, then TIES sign election",
                                 "https://arxiv.org/abs/2311.03099", Sparsification::Random, true, false, true));
  {
    MethodSpec m;
    m.name = "slerp";
    m.summary = "spherical interpolation from the base (t = 0) to the other model (t = 1)";
    m.reference = "mergekit merge_methods/slerp.py";
    m.base = BaseUse::Required;
    m.min_models = m.max_models = 2;
    m.whole_tensor = true;
    m.params = {{"t", ParamKind::Number, ParamScope::Shared, 0.5, 0, 1, false,
                 "interpolation factor: 0 = the base, 1 = the other model"}};
    m.work_bytes = [](uint64_t numel, size_t, DType out) { return numel * 3 * acc_bytes(out); };
    m.merge = [](const MergeTask& t) {
      if (!t.base) fail("merge: slerp needs a base model");
      const size_t other = *t.base == 0 ? 1 : 0;
      merge_slerp(t.models[*t.base], t.models[other], t.params.shared("t"), t.numel, t.out_dtype, t.out);
    };
    r.push_back(std::move(m));
  }
  return r;
}

}  // namespace

const std::vector<MethodSpec>& merge_methods() {
  static const std::vector<MethodSpec> registry = build_registry();
  return registry;
}

const MethodSpec* find_merge_method(std::string_view name) {
  for (const MethodSpec& m : merge_methods())
    if (m.name == name) return &m;
  return nullptr;
}

std::string merge_method_names() {
  std::string s;
  for (const MethodSpec& m : merge_methods()) s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

const MethodSpec& merge_method(std::string_view name) {
  if (const MethodSpec* m = find_merge_method(name)) return *m;
  const auto& refused = unsupported_merge_methods();
  if (const auto it = refused.find(std::string(name)); it != refused.end())
    fail("merge method '", name, "' (mergekit) is not supported: ", it->second);
  fail("unknown merge method '", name, "'; expected one of: ", merge_method_names());
}

const std::map<std::string, std::string>& unsupported_merge_methods() {
  static const std::map<std::string, std::string> refused = {};
  return refused;
}

}  // namespace recall
