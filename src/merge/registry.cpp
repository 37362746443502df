// The table of merge methods (see recall/merge/registry.h) and the parameter lookups. Every
// mergekit 0.1.5 method recall runs is one entry with mergekit's parameter names, scopes and
// defaults (mergekit/merge_methods/registry.py); the others are in unsupported_merge_methods().
#include "recall/merge/registry.h"

#include "recall/merge/elementwise.h"
#include "recall/merge/fisher.h"
#include "recall/merge/model_stock.h"
#include "recall/merge/regmean.h"
#include "recall/merge/sce.h"
#include "recall/merge/spherical.h"
#include "recall/util/cpus.h"
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

std::string MethodSpec::check_inputs(size_t inputs, bool has_base) const {
  const auto n = static_cast<int64_t>(inputs);
  const int64_t others = n - ((has_base && base != BaseUse::None) ? 1 : 0);
  auto bound = [](const char* what, int64_t limit, const char* of, int64_t got) {
    return std::string(what) + " " + std::to_string(limit) + " model" + (limit == 1 ? "" : "s") + of + ", got " +
           std::to_string(got);
  };
  if (base == BaseUse::Required && !has_base) return "needs the base model among its inputs";
  if (n < min_models) return bound("needs at least", min_models, "", n);
  if (max_models > 0 && n > max_models) return bound("merges at most", max_models, "", n);
  if (others < min_non_base) return bound("needs at least", min_non_base, " besides the base", others);
  if (max_non_base > 0 && others > max_non_base) return bound("merges at most", max_non_base, " besides the base", others);
  return "";
}

namespace {

// Bytes of the accumulator type of an output dtype: float for 16-bit outputs, double for F32.
uint64_t acc_bytes(DType out) { return out == DType::F32 ? 8 : 4; }

// Staging buffers of the streaming kernels and the small per-call vectors of every kernel: a few
// chunks of 8192 elements decoded and encoded at a time (recall/merge/kernel_io.h), with room to
// spare (MergekitMethods.WorkBytesBoundEachKernelsMemory measures them).
constexpr uint64_t kStagingBytes = uint64_t(512) << 10;
using WorkBytes = std::function<uint64_t(uint64_t, size_t, DType, const TensorSlot&)>;
uint64_t staging_bytes(uint64_t, size_t, DType, const TensorSlot&) { return kStagingBytes; }

// Working memory of a kernel holding `arrays(models)` whole-tensor arrays of the accumulator type
// and `mask_bytes` bytes per element, plus the staging buffers.
WorkBytes whole_arrays(std::function<uint64_t(size_t)> arrays, uint64_t mask_bytes = 0) {
  return [arrays = std::move(arrays), mask_bytes](uint64_t numel, size_t models, DType out, const TensorSlot&) {
    return numel * (arrays(models) * acc_bytes(out) + mask_bytes) + kStagingBytes;
  };
}

ParamSpec number(const char* name, ParamScope scope, std::optional<double> def, double lo, double hi,
                 const char* doc, bool lo_open = false) {
  return {name, ParamKind::Number, scope, def, lo, hi, lo_open, doc};
}
ParamSpec bool_param(const char* name, bool def, const char* doc) {
  return {name, ParamKind::Bool, ParamScope::Shared, def ? 1.0 : 0.0, 0, 1, false, doc};
}
ParamSpec weight_param(std::optional<double> def) {
  return number("weight", ParamScope::PerModel, def, -1e6, 1e6, "weight of each model (mergekit's `weight`)");
}
ParamSpec seed_param() {
  return {"seed", ParamKind::Integer, ParamScope::Shared, 0.0, 0, 9007199254740992.0, false,
          "seed of the random drop masks (recall's own counter-based draws; mergekit uses torch's global RNG)"};
}
const ParamSpec kInt8Mask =
    bool_param("int8_mask", false, "accepted for mergekit configs: it only changes the dtype of mergekit's masks");

// Elements per row of a tensor (a 1-D tensor is one row).
uint64_t row_length(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (size_t i = shape.size() > 1 ? 1 : 0; i < shape.size(); ++i) n *= static_cast<uint64_t>(shape[i]);
  return n;
}
uint64_t rows_of(const std::vector<int64_t>& shape) { return shape.size() > 1 ? static_cast<uint64_t>(shape[0]) : 1; }

// The base's view and the others' views (config order) of a task.
struct Split {
  std::optional<TensorView> base;
  std::vector<TensorView> others;
  std::vector<size_t> index;  // of each other in t.models
};
Split split_base(const MergeTask& t) {
  Split s;
  for (size_t m = 0; m < t.models.size(); ++m) {
    if (t.base && m == *t.base) {
      s.base = t.models[m];
      continue;
    }
    s.others.push_back(t.models[m]);
    s.index.push_back(m);
  }
  return s;
}
TensorView required_base(const Split& s, const char* method) {
  if (!s.base) fail("merge: method ", method, " needs the base model among this tensor's inputs");
  return *s.base;
}
std::vector<double> per_other(const MergeTask& t, const Split& s, const char* name) {
  std::vector<double> v;
  for (size_t i : s.index) v.push_back(t.params.of(name, i));
  return v;
}

// The common fields of a whole-tensor method.
MethodSpec whole_method(const char* name, const char* summary, const char* reference, BaseUse base) {
  MethodSpec m;
  m.name = name, m.summary = summary, m.reference = reference;
  m.base = base;
  m.whole_tensor = true;
  return m;
}

// A method of the base and one other model with a shared `t` (slerp, nearswap); whole tensors.
MethodSpec base_pair_method(const char* name, const char* summary, const char* reference, ParamSpec t_param,
                            WorkBytes work,
                            void (*kernel)(TensorView, TensorView, double, uint64_t, DType, void*)) {
  MethodSpec m = whole_method(name, summary, reference, BaseUse::Required);
  m.min_models = m.max_models = 2;
  m.params = {std::move(t_param)};
  m.work_bytes = std::move(work);
  m.merge = [kernel, name](const MergeTask& t) {
    const Split s = split_base(t);
    kernel(required_base(s, name), s.others.at(0), t.params.shared("t"), t.numel, t.out_dtype, t.out);
  };
  return m;
}

// The generalized task arithmetic family (mergekit's GeneralizedTaskArithmeticMerge).
struct TaskVectorFamily {
  const char* name;
  const char* summary;
  const char* reference;
  Sparsification sparsification;
  bool consensus, normalize, rescale;
};

MethodSpec task_vector_method(const TaskVectorFamily& f) {
  MethodSpec m;
  m.name = f.name;
  m.summary = f.summary;
  m.reference = f.reference;
  m.base = BaseUse::Required;
  const Sparsification sp = f.sparsification;
  m.whole_tensor = sp != Sparsification::None;
  m.params = {weight_param(1.0),
              number("density", ParamScope::PerModel, 1.0, 0, 1, "fraction of each task vector kept", true),
              number("lambda", ParamScope::Shared, 1.0, -1e6, 1e6, "scale of the merged task vector"),
              bool_param("normalize", f.normalize, "divide by the sum of the weights (of the models that take part)"),
              bool_param("rescale", f.rescale, "after sparsification, rescale each task vector to its L1 norm"),
              kInt8Mask};
  // Without sparsification density and rescale have no effect; mergekit accepts them all the same.
  if (sp == Sparsification::MagnitudeOutliers)
    m.params.push_back(number("gamma", ParamScope::PerModel, 0.01, 0, 1,
                              "fraction of the largest-magnitude elements dropped as outliers"));
  if (sp == Sparsification::DellaMagprune)
    m.params.push_back(number("epsilon", ParamScope::PerModel, 0.15, 0, 1,
                              "keep probabilities range over density -/+ epsilon by magnitude rank"));
  if (sp == Sparsification::Random || sp == Sparsification::DellaMagprune) m.params.push_back(seed_param());
  // base + result + one delta per non-base model, plus (sparsified) the kept copy, the magnitudes
  // and their sorted copy (float32 keys, at most one accumulator each), and a byte mask.
  m.work_bytes = whole_arrays([sp](size_t models) { return 2 + (models > 0 ? models - 1 : 0) + (sp == Sparsification::None ? 1 : 4); },
                              1);
  m.merge = [sp, consensus = f.consensus, name = f.name](const MergeTask& t) {
    const Split s = split_base(t);
    TaskVectorOptions o;
    o.sparsification = sp;
    o.consensus = consensus;
    o.normalize = t.params.flag("normalize");
    o.rescale = t.params.flag("rescale");
    o.lambda = t.params.shared("lambda");
    if (sp == Sparsification::Random || sp == Sparsification::DellaMagprune)
      o.seed = dare_tensor_seed(static_cast<uint64_t>(t.params.shared("seed")), t.tensor);
    o.weights = per_other(t, s, "weight");
    o.densities = per_other(t, s, "density");
    if (sp == Sparsification::MagnitudeOutliers) o.gammas = per_other(t, s, "gamma");
    if (sp == Sparsification::DellaMagprune) o.epsilons = per_other(t, s, "epsilon");
    o.row_length = row_length(t.shape);
    merge_task_vectors(required_base(s, name), s.others, t.numel, o, t.out_dtype, t.out);
  };
  return m;
}

void add_weighted_methods(std::vector<MethodSpec>& r) {
  MethodSpec recall;
  recall.name = "recall";
  recall.summary = "RECALL: per-block weights from the models' representations on typical samples";
  recall.reference = "Wang et al., EMNLP 2025 (arXiv 2510.20479); docs/ALGORITHM.md";
  recall.uses_representations = true;
  recall.work_bytes = staging_bytes;
  recall.merge = [](const MergeTask& t) {
    merge_weighted(t.models, t.params.per_model("weight"), false, t.numel, t.out_dtype, t.out);
  };
  r.push_back(std::move(recall));

  MethodSpec linear;
  linear.name = "linear";
  linear.summary = "weighted average of the models";
  linear.reference = "https://arxiv.org/abs/2203.05482 (mergekit merge_methods/linear.py)";
  linear.params = {weight_param(1.0), bool_param("normalize", true, "divide by the sum of the weights")};
  linear.work_bytes = staging_bytes;
  linear.merge = [](const MergeTask& t) {
    merge_weighted(t.models, t.params.per_model("weight"), t.params.flag("normalize"), t.numel, t.out_dtype, t.out);
  };
  r.push_back(std::move(linear));

  const TaskVectorFamily families[] = {
      {"task_arithmetic", "base + lambda x the weighted sum of task vectors", "https://arxiv.org/abs/2212.04089",
       Sparsification::None, false, false, false},
      {"ties", "TIES: trim task vectors by magnitude, elect signs, disjoint mean", "https://arxiv.org/abs/2306.01708",
       Sparsification::Magnitude, true, true, false},
      {"dare_linear", "DARE: random drop and rescale of task vectors, then a weighted sum",
       "https://arxiv.org/abs/2311.03099", Sparsification::Random, false, false, true},
      {"dare_ties", "DARE drop and rescale, then TIES sign election", "https://arxiv.org/abs/2311.03099",
       Sparsification::Random, true, false, true},
      {"breadcrumbs", "Model Breadcrumbs: drop the smallest and the largest (outlier) task-vector elements",
       "https://arxiv.org/abs/2312.06795", Sparsification::MagnitudeOutliers, false, false, false},
      {"breadcrumbs_ties", "Model Breadcrumbs sparsification, then TIES sign election",
       "https://arxiv.org/abs/2312.06795", Sparsification::MagnitudeOutliers, true, false, false},
      {"della", "DELLA: drop task-vector elements with probabilities ranked by magnitude, then TIES sign election",
       "https://arxiv.org/abs/2406.11617", Sparsification::DellaMagprune, true, true, true},
      {"della_linear", "DELLA's magnitude-ranked drop, then a weighted sum", "https://arxiv.org/abs/2406.11617",
       Sparsification::DellaMagprune, false, false, true},
  };
  for (const TaskVectorFamily& f : families) r.push_back(task_vector_method(f));
}

void add_interpolation_methods(std::vector<MethodSpec>& r) {
  r.push_back(base_pair_method("slerp", "spherical interpolation from the base (t = 0) to the other model (t = 1)",
                               "mergekit merge_methods/slerp.py",
                               number("t", ParamScope::Shared, 0.5, 0, 1, "interpolation factor: 0 = the base, 1 = the other model"),
                               whole_arrays([](size_t) { return 3; }), merge_slerp));

  MethodSpec nu = whole_method("nuslerp",
                               "SLERP with weights (t = w_1 / (w_0 + w_1)), of task vectors when a base is given, per tensor, row or column",
                               "mergekit merge_methods/nuslerp.py", BaseUse::Optional);
  nu.min_models = 2;
  nu.max_models = 3;
  nu.min_non_base = nu.max_non_base = 2;
  nu.params = {weight_param(std::nullopt),
               bool_param("nuslerp_row_wise", false, "with nuslerp_flatten false: interpolate each column (mergekit's dim 0)"),
               bool_param("nuslerp_flatten", true, "interpolate the flattened tensor (false: each row)")};
  nu.work_bytes = whole_arrays([](size_t) { return 6; });
  nu.merge = [](const MergeTask& t) {
    const Split s = split_base(t);
    const std::vector<double> w = per_other(t, s, "weight");
    const NuslerpVectors how = t.params.flag("nuslerp_flatten") ? NuslerpVectors::Flat
                               : t.params.flag("nuslerp_row_wise") ? NuslerpVectors::Columns
                                                                   : NuslerpVectors::Rows;
    merge_nuslerp(s.base, s.others.at(0), s.others.at(1), w.at(0), w.at(1), rows_of(t.shape), row_length(t.shape),
                  how, t.out_dtype, t.out);
  };
  r.push_back(std::move(nu));

  MethodSpec multi = whole_method("multislerp",
                               "barycentric interpolation of any number of models on the hypersphere (around the base when given)",
                               "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea (mergekit merge_methods/multislerp.py)", BaseUse::Optional);
  multi.min_non_base = 1;
  multi.params = {weight_param(std::nullopt), bool_param("normalize_weights", true, "divide the weights by their sum"),
                  number("eps", ParamScope::Shared, 1e-8, 0, 1, "added to norms before dividing by them")};
  multi.work_bytes = whole_arrays([](size_t models) { return models + 3; });
  multi.merge = [](const MergeTask& t) {
    const Split s = split_base(t);
    merge_multislerp(s.base, s.others, per_other(t, s, "weight"), t.params.flag("normalize_weights"),
                     t.params.shared("eps"), t.numel, t.out_dtype, t.out);
  };
  r.push_back(std::move(multi));

  MethodSpec karcher = whole_method("karcher",
                               "Karcher (Riemannian) mean of the models on the hypersphere, scaled by their mean norm",
                               "https://arxiv.org/abs/2603.04972 (mergekit merge_methods/karcher.py)", BaseUse::None);
  karcher.params = {{"max_iter", ParamKind::Integer, ParamScope::Shared, 10.0, 0, 1e6, false, "at most this many iterations"},
                    number("tol", ParamScope::Shared, 1e-5, 0, 1, "convergence tolerance (and the smallest norm used)")};
  karcher.work_bytes = whole_arrays([](size_t models) { return models + 3; });
  karcher.merge = [](const MergeTask& t) {
    merge_karcher(t.models, t.numel, static_cast<int64_t>(t.params.shared("max_iter")), t.params.shared("tol"),
                  t.out_dtype, t.out);
  };
  r.push_back(std::move(karcher));
}

void add_other_methods(std::vector<MethodSpec>& r) {
  MethodSpec stock = whole_method("model_stock",
                               "Model Stock: the average of the fine-tuned models pulled toward the base by their task vectors' angle",
                               "https://arxiv.org/abs/2403.19522 (mergekit merge_methods/model_stock.py)", BaseUse::Required);
  stock.min_models = 3;
  stock.params = {bool_param("filter_wise", false, "one interpolation factor per row instead of per tensor")};
  stock.work_bytes = whole_arrays([](size_t models) { return models + 1; });
  stock.merge = [](const MergeTask& t) {
    const Split s = split_base(t);
    merge_model_stock(required_base(s, "model_stock"), s.others, t.numel, row_length(t.shape),
                      t.params.flag("filter_wise"), t.out_dtype, t.out);
  };
  r.push_back(std::move(stock));

  MethodSpec sce = whole_method("sce",
                               "SCE: select high-variance elements, weight task vectors by their energy, erase minority signs",
                               "https://arxiv.org/abs/2408.07990 (mergekit merge_methods/sce.py)", BaseUse::Required);
  sce.params = {number("select_topk", ParamScope::Shared, 1.0, 0, 1, "fraction of the highest-variance elements kept"),
                kInt8Mask};
  sce.work_bytes = whole_arrays([](size_t models) { return models + 2; }, 2);
  sce.merge = [](const MergeTask& t) {
    const Split s = split_base(t);
    merge_sce(required_base(s, "sce"), s.others, t.numel, t.params.shared("select_topk"), t.out_dtype, t.out);
  };
  r.push_back(std::move(sce));

  MethodSpec near = base_pair_method(
      "nearswap", "NearSwap: take the other model's value where it is within t of the base's",
      "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001 (mergekit merge_methods/nearswap.py)",
      number("t", ParamScope::Shared, std::nullopt, 0, 1e6, "distance below which the other model's value is taken"),
      staging_bytes, merge_nearswap);
  near.whole_tensor = false;  // elementwise: rows split among ranks
  r.push_back(std::move(near));

  MethodSpec pass;
  pass.name = "passthrough";
  pass.summary = "one model's tensors copied (optionally scaled): with `slices`, frankenmerges that stack blocks";
  pass.reference = "mergekit merge_methods/passthrough.py";
  pass.min_models = 1;
  pass.max_models = 1;
  pass.params = {number("scale", ParamScope::PerModel, 1.0, -1e6, 1e6, "factor applied to the copied tensor")};
  pass.work_bytes = staging_bytes;
  pass.merge = [](const MergeTask& t) {
    merge_passthrough(t.models.at(0), t.params.of("scale", 0), t.numel, t.out_dtype, t.out);
  };
  r.push_back(std::move(pass));
}

// The statistics of a data-aware method's tensor, or a clear failure (the job always gives them).
const TensorStatistics& statistics_of(const MergeTask& t, const char* method) {
  if (!t.statistics) fail("merge: method ", method, " needs the calibration statistics of '", t.tensor, "'");
  return *t.statistics;
}

// RegMean solves each block linear weight from every model's Gram matrices; the other tensors
// (norms, embedding, lm_head) are the mean of the models. RegMean++ is the same entry with other
// Gram matrices (block l's inputs taken on the merged model's path, pipeline/statistics.h): its
// statistics phase solves each block with this kernel as it goes, and the merge loop solves them
// again from the saved Grams (the same inputs, the same bits).
MethodSpec regmean_method(const char* name, const char* summary, const char* reference, Statistics statistics) {
  MethodSpec m = whole_method(name, summary, reference, BaseUse::None);
  m.statistics = statistics;
  m.params = {number("alpha", ParamScope::Shared, 0.9, 0, 1,
                     "scale of the Gram matrices' off-diagonal elements (1 = plain least squares; fusion-bench's "
                     "reduce_non_diagonal_ratio)"),
              number("ridge", ParamScope::Shared, 0.0, 0, 1e6,
                     "added to the summed Gram matrix's diagonal, times its mean diagonal (0 = none)")};
  // A 2-D tensor may be a linear weight (solved); the others are averaged in the staging buffers.
  m.work_bytes = [](uint64_t, size_t models, DType, const TensorSlot& slot) {
    if (slot.shape.size() != 2 || !linear_group_of(slot.role)) return kStagingBytes;
    // The merge solves on the rank's usable CPUs; the plan assumes every rank has as many as this one.
    return kStagingBytes + regmean_work_bytes(static_cast<uint64_t>(slot.shape[0]),
                                              static_cast<uint64_t>(slot.shape[1]), models, 0, usable_cpus());
  };
  m.merge = [name](const MergeTask& t) {
    const TensorStatistics& s = statistics_of(t, name);
    const size_t M = t.models.size();
    if (!s.gram_rows) {
      merge_weighted(t.models, std::vector<double>(M, 1.0), true, t.numel, t.out_dtype, t.out);
      return;
    }
    RegMeanInputs in;
    in.weights = t.models;
    in.gram_rows = s.gram_rows;
    for (double tokens : s.gram_tokens) in.gram_scale.push_back(1.0 / tokens);
    in.out = rows_of(t.shape);
    in.in = row_length(t.shape);
    in.alpha = t.params.shared("alpha");
    in.ridge = t.params.shared("ridge");
    in.threads = t.threads;
    s.rcond = merge_regmean(in, t.out_dtype, t.out).rcond;
  };
  return m;
}

// Fisher merging: an elementwise average weighted by each model's diagonal Fisher.
MethodSpec fisher_method() {
  MethodSpec m;
  m.name = "fisher";
  m.summary = "Fisher merging: each element averaged with weights from the models' diagonal Fisher on calibration samples";
  m.reference = "Matena & Raffel, NeurIPS 2022 (arXiv 2111.09832); fusion-bench method/fisher_merging";
  m.statistics = Statistics::Fisher;
  m.params = {number("weight", ParamScope::PerModel, 1.0, 0, 1e6,
                     "lambda of each model (fusion-bench's fisher_scaling_coefficients; only ratios matter)"),
              bool_param("normalize", true, "divide each model's Fisher by its L2 norm over every tensor"),
              number("epsilon", ParamScope::Shared, kFisherMinimalWeight, 0, 1e6,
                     "added to every Fisher value (fusion-bench's minimal_fisher_weight)")};
  // The Fisher values of each input beside it, as floats.
  m.work_bytes = [](uint64_t numel, size_t models, DType, const TensorSlot&) {
    return kStagingBytes + numel * models * 4;
  };
  m.merge = [](const MergeTask& t) {
    const TensorStatistics& s = statistics_of(t, "fisher");
    const size_t M = t.models.size();
    std::vector<std::vector<float>> f(M, std::vector<float>(t.numel));
    std::vector<const float*> ptrs;
    for (size_t j = 0; j < M; ++j) {
      s.fisher(j, t.first_element, t.numel, f[j].data());
      ptrs.push_back(f[j].data());
    }
    const double eps = t.params.shared("epsilon");
    const std::vector<double> scales = fisher_model_scales(
        M, t.params.per_model("weight"), t.params.flag("normalize") ? s.fisher_norm : std::vector<double>{}, eps);
    merge_fisher(t.models, ptrs, scales, eps, t.numel, t.out_dtype, t.out);
  };
  return m;
}

std::vector<MethodSpec> build_registry() {
  std::vector<MethodSpec> r;
  add_weighted_methods(r);
  add_interpolation_methods(r);
  add_other_methods(r);
  r.push_back(regmean_method("regmean",
                             "RegMean: each linear weight solved from the models' Gram matrices of its inputs on "
                             "calibration samples; other tensors averaged",
                             "Jin et al., ICLR 2023 (arXiv 2212.09849); fusion-bench method/regmean", Statistics::Gram));
  r.push_back(regmean_method("regmean_plusplus",
                             "RegMean++: RegMean with each block's inputs computed by the merged blocks before it "
                             "(every model's block on the merged model's hidden states)",
                             "Nguyen et al. 2025, arXiv 2508.03121; fusion-bench method/regmean_plusplus",
                             Statistics::MergedPathGram));
  r.push_back(fisher_method());
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
  static const std::map<std::string, std::string> refused = {
      {"arcee_fusion",
       "its threshold is a quantile of a random sample (torch.randint over tensors above 1M elements), so a "
       "merge cannot be reproduced or compared, and it has no published description beyond mergekit's code"},
      {"ram",
       "Reinforced Agent Merging (arXiv 2601.13572) is not among the methods issue 16 asked for; it is "
       "deterministic and would be one more registry entry"},
      {"ramplus_tl",
       "RAM+ (tensor-local, arXiv 2601.13572) is not among the methods issue 16 asked for; it is deterministic "
       "and would be one more registry entry"},
  };
  return refused;
}

}  // namespace recall
