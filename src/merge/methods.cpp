// Merge kernels: weighted sum (RECALL, linear), generalized task arithmetic (task_arithmetic,
// TIES, DARE), SLERP; see methods.h and docs/ALGORITHM.md.
#include "recall/merge/methods.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>

#include "recall/util/error.h"

namespace recall {

void check_merge_output_dtype(DType out) {
  if (out != DType::BF16 && out != DType::F16 && out != DType::F32)
    fail("merge: output dtype ", dtype_name(out), " is not supported; expected BF16, F16 or F32");
}

namespace {

constexpr uint64_t kChunk = 8192;  // elements decoded at a time by the streaming kernels

void check_view(const TensorView& v, const char* what, size_t index) {
  if (!is_float(v.dtype)) fail("merge: ", what, " ", index, " has dtype ", dtype_name(v.dtype), "; expected a float dtype");
  if (!v.data) fail("merge: ", what, " ", index, " has no data");
}

// Decodes elements [begin, begin + n) of v into dst (exact: every source value fits Acc, except
// F64 into float, which rounds to nearest).
inline float bf16_bits_to_float(uint16_t bits) {  // = bf16_to_float, inlined for the hot loops
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16_bits(float value) {  // = float_to_bf16 (RNE; NaN stays quiet NaN)
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Decodes elements [begin, begin + n) of v into dst (exact: every source value fits Acc, except
// F64 into float, which rounds to nearest).
template <typename Acc>
void load(const TensorView& v, uint64_t begin, uint64_t n, Acc* dst) {
  const auto* b = static_cast<const unsigned char*>(v.data);
  switch (v.dtype) {
    case DType::BF16: {
      std::vector<uint16_t> raw(n);
      std::memcpy(raw.data(), b + begin * 2, n * 2);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(bf16_bits_to_float(raw[i]));
      return;
    }
    case DType::F16: {
      std::vector<uint16_t> raw(n);
      std::memcpy(raw.data(), b + begin * 2, n * 2);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(f16_to_float(raw[i]));
      return;
    }
    case DType::F32: {
      if constexpr (std::is_same_v<Acc, float>) {
        std::memcpy(dst, b + begin * 4, n * 4);
      } else {
        std::vector<float> raw(n);
        std::memcpy(raw.data(), b + begin * 4, n * 4);
        for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(raw[i]);
      }
      return;
    }
    case DType::F64: {
      std::vector<double> raw(n);
      std::memcpy(raw.data(), b + begin * 8, n * 8);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(raw[i]);
      return;
    }
    default: {
      std::vector<float> tmp(n);
      decode_to_float(v.dtype, b + begin * dtype_size(v.dtype), n, tmp.data());
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(tmp[i]);
    }
  }
}

template <typename Acc>
std::vector<Acc> load_all(const TensorView& v, uint64_t numel) {
  std::vector<Acc> r(numel);
  load(v, 0, numel, r.data());
  return r;
}

// Encodes n values at out + begin elements (round to nearest even).
template <typename Acc>
void store(const Acc* src, uint64_t begin, uint64_t n, DType out, void* dst) {
  auto* b = static_cast<unsigned char*>(dst);
  if (out == DType::F32) {
    std::vector<float> raw(n);
    for (uint64_t i = 0; i < n; ++i) raw[i] = static_cast<float>(src[i]);
    std::memcpy(b + begin * 4, raw.data(), n * 4);
    return;
  }
  std::vector<uint16_t> raw(n);
  if (out == DType::BF16)
    for (uint64_t i = 0; i < n; ++i) raw[i] = float_to_bf16_bits(static_cast<float>(src[i]));
  else
    for (uint64_t i = 0; i < n; ++i) raw[i] = float_to_f16(static_cast<float>(src[i]));
  std::memcpy(b + begin * 2, raw.data(), n * 2);
}

// Where every model has the same bits as model 0 at an element, copies them to out.
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

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

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
    const double density = opt.densities[i];
    if (opt.sparsification != Sparsification::None && density < 1) {
      std::vector<Acc> kept(numel, Acc(0));
      if (opt.sparsification == Sparsification::Magnitude) {
        const std::vector<char> mask = magnitude_mask(d, density);
        for (uint64_t j = 0; j < numel; ++j)
          if (mask[j]) kept[j] = d[j];
      } else {
        const uint64_t stream = dare_stream(opt.seed, static_cast<int64_t>(i));
        for (uint64_t j = 0; j < numel; ++j)
          if (dare_keep(stream, j, density)) kept[j] = d[j];
      }
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

template <typename T>
std::vector<char> magnitude_mask(const std::vector<T>& v, double density) {
  const uint64_t n = v.size();
  if (density >= 1) return std::vector<char>(n, 1);
  std::vector<char> mask(n, 0);
  if (density <= 0 || n == 0) return mask;
  const uint64_t k = std::max<uint64_t>(1, static_cast<uint64_t>(density * static_cast<double>(n)));
  // The k-th largest magnitude; everything above it is kept, then equal ones from the lowest index.
  std::vector<T> mag(n);
  for (uint64_t i = 0; i < n; ++i) mag[i] = std::fabs(v[i]);
  std::vector<T> sorted = mag;
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<T>());
  const T threshold = sorted[k - 1];
  uint64_t kept = 0;
  for (uint64_t i = 0; i < n; ++i)
    if (mag[i] > threshold) {
      mask[i] = 1;
      ++kept;
    }
  for (uint64_t i = 0; i < n && kept < k; ++i)
    if (mag[i] == threshold) {
      mask[i] = 1;
      ++kept;
    }
  return mask;
}
template std::vector<char> magnitude_mask<float>(const std::vector<float>&, double);
template std::vector<char> magnitude_mask<double>(const std::vector<double>&, double);

uint64_t dare_tensor_seed(uint64_t seed, std::string_view tensor_name) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 of the name
  for (unsigned char c : tensor_name) h = (h ^ c) * 0x100000001b3ULL;
  return splitmix64_mix(seed ^ h);
}

uint64_t dare_stream(uint64_t tensor_seed, int64_t model_index) {
  return splitmix64_mix(tensor_seed + (static_cast<uint64_t>(model_index) + 1) * kGolden);
}

bool dare_keep(uint64_t stream, uint64_t element, double density) {
  const uint64_t z = splitmix64_mix(stream + (element + 1) * kGolden);
  return static_cast<double>(z >> 11) * 0x1.0p-53 < density;
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
