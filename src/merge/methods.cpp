// Merge kernels: weighted sum (RECALL, linear), generalized task arithmetic (task_arithmetic,
// TIES, DARE), SLERP; see methods.h and docs/ALGORITHM.md.
#include "recall/merge/methods.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>

#include "kernel_io.h"
#include "recall/merge/sparsify.h"
#include "recall/util/error.h"

namespace recall {

void check_merge_output_dtype(DType out) {
  if (out != DType::BF16 && out != DType::F16 && out != DType::F32)
    fail("merge: output dtype ", dtype_name(out), " is not supported; expected BF16, F16 or F32");
}

namespace {

using namespace kernel;

// Where every model has the same bits as model 0 at an element, copies them to out (a branch-free
// select, so the loops vectorize).
template <typename Bits>
void copy_same_bits(const std::vector<TensorView>& models, uint64_t begin, uint64_t n, void* out) {
  std::vector<Bits> first(n), other(n), result(n);
  std::vector<Bits> same(n, Bits(~Bits(0)));  // all ones where every model agrees so far
  std::memcpy(first.data(), static_cast<const unsigned char*>(models[0].data) + begin * sizeof(Bits), n * sizeof(Bits));
  for (size_t i = 1; i < models.size(); ++i) {
    std::memcpy(other.data(), static_cast<const unsigned char*>(models[i].data) + begin * sizeof(Bits),
                n * sizeof(Bits));
    for (uint64_t j = 0; j < n; ++j) same[j] &= static_cast<Bits>(-static_cast<Bits>(first[j] == other[j]));
  }
  auto* o = static_cast<unsigned char*>(out) + begin * sizeof(Bits);
  std::memcpy(result.data(), o, n * sizeof(Bits));
  for (uint64_t j = 0; j < n; ++j) result[j] = static_cast<Bits>((first[j] & same[j]) | (result[j] & ~same[j]));
  std::memcpy(o, result.data(), n * sizeof(Bits));
}

// The common case fused into one pass: BF16 inputs, BF16 output, float accumulation. The same
// operations in the same order as weighted_impl<float> (0 + w0*x0 + w1*x1 ..., then / wsum, then
// round to nearest even, then the same-bits shortcut), so the bytes are identical. With the number
// of models a compile-time constant, each element's sum stays in a register and the loop over
// elements vectorizes; inputs are read once, straight from the callers' buffers.
template <size_t M, bool kNormalize, bool kShortcut>
__attribute__((always_inline)) inline void weighted_bf16_fixed(const std::vector<TensorView>& models, const std::vector<float>& w, float wsum,
                         uint64_t numel, void* out) {
  const unsigned char* in[M];
  float wi[M];
  for (size_t i = 0; i < M; ++i) {
    in[i] = static_cast<const unsigned char*>(models[i].data);
    wi[i] = w[i];
  }
  unsigned char* o = static_cast<unsigned char*>(out);
  for (uint64_t j = 0; j < numel; ++j) {
    uint16_t first;
    std::memcpy(&first, in[0] + 2 * j, 2);
    uint16_t same = 0xffff;
    float acc = 0.0f;
    for (size_t i = 0; i < M; ++i) {
      uint16_t raw;
      std::memcpy(&raw, in[i] + 2 * j, 2);
      const uint32_t u = static_cast<uint32_t>(raw) << 16;
      float x;
      std::memcpy(&x, &u, 4);
      acc += wi[i] * x;
      if (kShortcut) same &= static_cast<uint16_t>(-static_cast<uint16_t>(first == raw));
    }
    if (kNormalize) acc /= wsum;
    uint32_t u;
    std::memcpy(&u, &acc, 4);
    const uint16_t rne = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    const uint16_t nan = static_cast<uint16_t>((u >> 16) | 0x40u);
    uint16_t result = (u & 0x7fffffffu) > 0x7f800000u ? nan : rne;  // = float_to_bf16_bits, branch-free
    if (kShortcut) result = static_cast<uint16_t>((first & same) | (result & ~same));
    std::memcpy(o + 2 * j, &result, 2);
  }
}

template <size_t M>
__attribute__((always_inline)) inline void weighted_bf16_models(const std::vector<TensorView>& models, const std::vector<float>& w, bool normalize,
                          float wsum, bool shortcut, uint64_t numel, void* out) {
  if (normalize)
    shortcut ? weighted_bf16_fixed<M, true, true>(models, w, wsum, numel, out)
             : weighted_bf16_fixed<M, true, false>(models, w, wsum, numel, out);
  else
    shortcut ? weighted_bf16_fixed<M, false, true>(models, w, wsum, numel, out)
             : weighted_bf16_fixed<M, false, false>(models, w, wsum, numel, out);
}

// Up to kFusedModels models take the fused loop; more take the general path (weighted_impl).
constexpr size_t kFusedModels = 8;

__attribute__((target_clones("avx2", "default"))) bool weighted_bf16(const std::vector<TensorView>& models,
                                                                      const std::vector<float>& w, bool normalize, float wsum,
                   bool shortcut, uint64_t numel, void* out) {
  switch (models.size()) {
    case 1: weighted_bf16_models<1>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 2: weighted_bf16_models<2>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 3: weighted_bf16_models<3>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 4: weighted_bf16_models<4>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 5: weighted_bf16_models<5>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 6: weighted_bf16_models<6>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case 7: weighted_bf16_models<7>(models, w, normalize, wsum, shortcut, numel, out); return true;
    case kFusedModels: weighted_bf16_models<kFusedModels>(models, w, normalize, wsum, shortcut, numel, out); return true;
    default: return false;
  }
}

template <typename Acc>
void weighted_impl(const std::vector<TensorView>& models, const std::vector<double>& weights, bool normalize,
                   uint64_t numel, DType out_dtype, void* out) {
  const size_t m = models.size();
  std::vector<Acc> w(m);
  Acc wsum = 0;
  double wsum_d = 0;
  for (size_t i = 0; i < m; ++i) {
    w[i] = static_cast<Acc>(weights[i]);
    wsum += w[i];
    wsum_d += weights[i];
  }
  if (normalize && wsum == 0)
    fail("merge: the weights sum to 0, so they cannot be normalized (weights: ", m, " values)");
  // Same-bits shortcut (see methods.h): valid when the merge of identical values is that value.
  bool same_dtype = true;
  for (const auto& v : models) same_dtype = same_dtype && v.dtype == out_dtype;
  const bool shortcut = same_dtype && (normalize || std::fabs(wsum_d - 1.0) <= 1e-9);
  const size_t esize = dtype_size(out_dtype);
  if constexpr (std::is_same_v<Acc, float>) {
    bool all_bf16 = out_dtype == DType::BF16;
    for (const auto& v : models) all_bf16 = all_bf16 && v.dtype == DType::BF16;
    if (all_bf16 && weighted_bf16(models, w, normalize, wsum, shortcut, numel, out)) return;
  }

  std::vector<Acc> acc(kChunk), buf(kChunk);
  for (uint64_t begin = 0; begin < numel; begin += kChunk) {
    const uint64_t n = std::min<uint64_t>(kChunk, numel - begin);
    std::fill(acc.begin(), acc.begin() + n, Acc(0));
    for (size_t i = 0; i < m; ++i) {
      load(models[i], begin, n, buf.data());
      for (uint64_t j = 0; j < n; ++j) acc[j] += w[i] * buf[j];
    }
    if (normalize)
      for (uint64_t j = 0; j < n; ++j) acc[j] /= wsum;
    store(acc.data(), begin, n, out_dtype, out);
    if (!shortcut) continue;
    if (esize == 2)
      copy_same_bits<uint16_t>(models, begin, n, out);
    else
      copy_same_bits<uint32_t>(models, begin, n, out);
  }
}

// mergekit's rescaled_masked_tensor with the L1 norm: masked * (|t|_1 / |masked|_1) unless either
// norm is below 1e-7. The norms are summed in double, in index order.
template <typename Acc>
void rescale_l1(const std::vector<Acc>& original, std::vector<Acc>& masked) {
  double before = 0, after = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    before += std::fabs(static_cast<double>(original[i]));
    after += std::fabs(static_cast<double>(masked[i]));
  }
  if (before < 1e-7 || after < 1e-7) return;
  const Acc scale = static_cast<Acc>(before / after);
  for (Acc& v : masked) v *= scale;
}

// The mask of model i's delta under the options' sparsification (recall/merge/sparsify.h).
template <typename Acc>
std::vector<char> sparsify_mask(const std::vector<Acc>& d, size_t i, const TaskVectorOptions& opt) {
  const double density = opt.densities[i];
  switch (opt.sparsification) {
    case Sparsification::Magnitude: return magnitude_mask(d, density);
    case Sparsification::MagnitudeOutliers: return magnitude_outlier_mask(d, density, opt.gammas.at(i));
    case Sparsification::DellaMagprune:
      return della_mask(d, opt.row_length, density, opt.epsilons.at(i), dare_stream(opt.seed, static_cast<int64_t>(i)));
    case Sparsification::Random: {
      std::vector<char> mask(d.size());
      const uint64_t stream = dare_stream(opt.seed, static_cast<int64_t>(i));
      for (uint64_t j = 0; j < d.size(); ++j) mask[j] = dare_keep(stream, j, density);
      return mask;
    }
    case Sparsification::None: break;
  }
  return std::vector<char>(d.size(), 1);
}

template <typename Acc>
void task_vectors_impl(const TensorView& base_v, const std::vector<TensorView>& models, uint64_t numel,
                       const TaskVectorOptions& opt, DType out_dtype, void* out) {
  const size_t m = models.size();
  const std::vector<Acc> base = load_all<Acc>(base_v, numel);
  std::vector<Acc> result = base;
  if (m == 0) {  // mergekit: no non-base entries -> the base
    store(result.data(), 0, numel, out_dtype, out);
    return;
  }
  // Weighted (sparsified) deltas of every model.
  std::vector<std::vector<Acc>> deltas(m);
  for (size_t i = 0; i < m; ++i) {
    std::vector<Acc> d = load_all<Acc>(models[i], numel);
    for (uint64_t j = 0; j < numel; ++j) d[j] -= base[j];
    if (opt.sparsification != Sparsification::None && opt.densities[i] < 1) {
      const std::vector<char> mask = sparsify_mask(d, i, opt);
      std::vector<Acc> kept(numel, Acc(0));
      for (uint64_t j = 0; j < numel; ++j)
        if (mask[j]) kept[j] = d[j];
      if (opt.rescale) rescale_l1(d, kept);
      d.swap(kept);
    }
    const Acc w = static_cast<Acc>(opt.weights[i]);
    for (Acc& v : d) v *= w;
    deltas[i].swap(d);
  }
  std::vector<Acc> w(m);
  for (size_t i = 0; i < m; ++i) w[i] = static_cast<Acc>(opt.weights[i]);
  const Acc lambda = static_cast<Acc>(opt.lambda);
  Acc wsum = 0;
  for (size_t i = 0; i < m; ++i) wsum += w[i];
  for (uint64_t j = 0; j < numel; ++j) {
    Acc mixed = 0, divisor = 0;
    if (opt.consensus) {
      Acc sign_weight = 0;
      for (size_t i = 0; i < m; ++i) sign_weight += deltas[i][j];
      const int majority = sign_weight >= 0 ? 1 : -1;
      for (size_t i = 0; i < m; ++i) {
        const Acc d = deltas[i][j];
        const int sign = d > 0 ? 1 : (d < 0 ? -1 : 0);
        if (sign == majority) {
          mixed += d;
          divisor += w[i];
        }
      }
      if (divisor == 0) divisor = 1;
    } else {
      for (size_t i = 0; i < m; ++i) mixed += deltas[i][j];
      divisor = std::fabs(wsum) < Acc(1e-8) ? Acc(1) : wsum;
    }
    if (opt.normalize) mixed /= divisor;
    if (opt.lambda != 1) mixed *= lambda;
    result[j] = base[j] + mixed;
  }
  store(result.data(), 0, numel, out_dtype, out);
}

template <typename Acc>
void slerp_impl(const TensorView& v0, const TensorView& v1, double t, uint64_t numel, DType out_dtype, void* out) {
  const std::vector<Acc> a = load_all<Acc>(v0, numel), b = load_all<Acc>(v1, numel);
  double na = 0, nb = 0;
  for (uint64_t j = 0; j < numel; ++j) {
    na += static_cast<double>(a[j]) * a[j];
    nb += static_cast<double>(b[j]) * b[j];
  }
  na = std::sqrt(na);
  nb = std::sqrt(nb);
  if (!(na > kSlerpEps)) na = 1;
  if (!(nb > kSlerpEps)) nb = 1;
  double dot = 0;
  for (uint64_t j = 0; j < numel; ++j) dot += (a[j] / na) * (b[j] / nb);
  dot = std::clamp(dot, -1.0, 1.0);
  double ca, cb;
  if (std::fabs(dot) > kSlerpDotThreshold || numel == 0) {
    ca = 1 - t;
    cb = t;
  } else {
    const double theta = std::acos(dot), s = std::sin(theta);
    ca = std::sin((1 - t) * theta) / s;
    cb = std::sin(t * theta) / s;
  }
  const Acc ka = static_cast<Acc>(ca), kb = static_cast<Acc>(cb);
  std::vector<Acc> r(numel);
  for (uint64_t j = 0; j < numel; ++j) r[j] = ka * a[j] + kb * b[j];
  store(r.data(), 0, numel, out_dtype, out);
}

}  // namespace

uint64_t dare_tensor_seed(uint64_t seed, std::string_view tensor_name) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 of the name
  for (unsigned char c : tensor_name) h = (h ^ c) * 0x100000001b3ULL;
  return kernel::splitmix64_mix(seed ^ h);
}

uint64_t dare_stream(uint64_t tensor_seed, int64_t model_index) {
  return kernel::splitmix64_mix(tensor_seed + (static_cast<uint64_t>(model_index) + 1) * kernel::kGolden);
}

bool dare_keep(uint64_t stream, uint64_t element, double density) {
  return kernel::stream_uniform(stream, element) < density;
}

void merge_weighted(const std::vector<TensorView>& models, const std::vector<double>& weights, bool normalize,
                    uint64_t numel, DType out_dtype, void* out) {
  check_merge_output_dtype(out_dtype);
  if (models.empty()) fail("merge: no models given");
  if (weights.size() != models.size())
    fail("merge: ", weights.size(), " weights given for ", models.size(), " models");
  for (size_t i = 0; i < models.size(); ++i) {
    check_view(models[i], "model", i);
    if (!std::isfinite(weights[i])) fail("merge: weight of model ", i, " is not finite (", weights[i], ")");
  }
  if (out_dtype == DType::F32)
    weighted_impl<double>(models, weights, normalize, numel, out_dtype, out);
  else
    weighted_impl<float>(models, weights, normalize, numel, out_dtype, out);
}

void merge_task_vectors(TensorView base, const std::vector<TensorView>& models, uint64_t numel,
                        const TaskVectorOptions& opt, DType out_dtype, void* out) {
  check_merge_output_dtype(out_dtype);
  check_view(base, "base model", 0);
  for (size_t i = 0; i < models.size(); ++i) check_view(models[i], "model", i);
  if (opt.weights.size() != models.size())
    fail("merge: ", opt.weights.size(), " weights given for ", models.size(), " non-base models");
  if (opt.densities.size() != models.size())
    fail("merge: ", opt.densities.size(), " densities given for ", models.size(), " non-base models");
  if (opt.sparsification == Sparsification::MagnitudeOutliers && opt.gammas.size() != models.size())
    fail("merge: ", opt.gammas.size(), " gammas given for ", models.size(), " non-base models");
  if (opt.sparsification == Sparsification::DellaMagprune && opt.epsilons.size() != models.size())
    fail("merge: ", opt.epsilons.size(), " epsilons given for ", models.size(), " non-base models");
  for (size_t i = 0; i < models.size(); ++i) {
    if (!std::isfinite(opt.weights[i])) fail("merge: weight of model ", i, " is not finite (", opt.weights[i], ")");
    if (!(opt.densities[i] >= 0 && opt.densities[i] <= 1))
      fail("merge: density of model ", i, " must be in [0, 1]; got ", opt.densities[i]);
  }
  if (!std::isfinite(opt.lambda)) fail("merge: lambda must be finite; got ", opt.lambda);
  if (out_dtype == DType::F32)
    task_vectors_impl<double>(base, models, numel, opt, out_dtype, out);
  else
    task_vectors_impl<float>(base, models, numel, opt, out_dtype, out);
}

void merge_slerp(TensorView v0, TensorView v1, double t, uint64_t numel, DType out_dtype, void* out) {
  check_merge_output_dtype(out_dtype);
  check_view(v0, "model", 0);
  check_view(v1, "model", 1);
  if (!std::isfinite(t)) fail("merge: slerp t must be finite; got ", t);
  if (out_dtype == DType::F32)
    slerp_impl<double>(v0, v1, t, numel, out_dtype, out);
  else
    slerp_impl<float>(v0, v1, t, numel, out_dtype, out);
}

}  // namespace recall
