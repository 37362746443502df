// The mergekit methods beyond the original baselines, on inputs whose results are known by hand:
// the sparsification masks (ties by index, Model Breadcrumbs' band, DELLA's ranked probabilities),
// Model Stock, NearSwap, passthrough, the spherical merges' limits, and the input checks of the
// registry. The comparison with mergekit itself is tests/python/test_baselines_mergekit.py.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "recall/merge/elementwise.h"
#include "recall/merge/model_stock.h"
#include "recall/merge/registry.h"
#include "recall/merge/sce.h"
#include "recall/merge/sparsify.h"
#include "recall/merge/spherical.h"
#include "recall/util/error.h"

using namespace recall;

namespace {

TensorView f32(const std::vector<float>& v) { return {DType::F32, v.data()}; }

std::vector<size_t> kept(const std::vector<char>& mask) {
  std::vector<size_t> out;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out.push_back(i);
  return out;
}

}  // namespace

TEST(MergekitMethods, RankIntervalBreaksTiesByIndex) {
  const std::vector<float> key = {1, 2, 2, 2, 3};
  EXPECT_EQ(kept(rank_interval_mask(key, 1, 3)), (std::vector<size_t>{1, 2}));
  EXPECT_EQ(kept(rank_interval_mask(key, 2, 4)), (std::vector<size_t>{2, 3}));
  EXPECT_EQ(kept(rank_interval_mask(key, 3, 5)), (std::vector<size_t>{3, 4}));
  EXPECT_EQ(kept(rank_interval_mask(key, 0, 9)), (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(kept(rank_interval_mask(key, 2, 2)).empty());
}

TEST(MergekitMethods, BreadcrumbsDropsTheSmallestAndTheOutliers) {
  // Ascending |v|: i5 .05, i0 .1, i9 .15, i3 .2, i7 .25, i2 .3, i6 .4, i8 3, i4 4, i1 5.
  const std::vector<float> v = {0.1f, -5, 0.3f, 0.2f, 4, -0.05f, 0.4f, 0.25f, 3, 0.15f};
  // density 0.5, gamma 0.2: target 5, top 2, bottom 10 - 5 - 2 = 3: ranks [3, 8).
  EXPECT_EQ(kept(magnitude_outlier_mask(v, 0.5, 0.2)), (std::vector<size_t>{2, 3, 6, 7, 8}));
  // gamma 0: the 5 largest.
  EXPECT_EQ(kept(magnitude_outlier_mask(v, 0.5, 0.0)), (std::vector<size_t>{1, 2, 4, 6, 8}));
  // density + gamma > 1: fewer outliers dropped (bottom 0), the smallest `target` kept.
  EXPECT_EQ(kept(magnitude_outlier_mask(v, 0.3, 0.9)), (std::vector<size_t>{0, 5, 9}));
  EXPECT_EQ(kept(magnitude_outlier_mask(v, 1.0, 0.2)).size(), 10u);
  EXPECT_TRUE(kept(magnitude_outlier_mask(v, 0.0, 0.2)).empty());
}

TEST(MergekitMethods, DellaKeepsByMagnitudeRank) {
  // Rows of 5 with every rank order: rank r kept with p = 0.3 + 0.4 r / 4 (density 0.5, epsilon 0.2).
  const uint64_t rows = 20000, cols = 5;
  std::mt19937 gen(7);
  std::vector<float> v(rows * cols);
  std::vector<int> rank_of(v.size());
  for (uint64_t r = 0; r < rows; ++r) {
    std::vector<int> perm(cols);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    for (uint64_t c = 0; c < cols; ++c) v[r * cols + c] = (c % 2 ? -1.0f : 1.0f) * (perm[c] + 1), rank_of[r * cols + c] = perm[c];
  }
  const std::vector<char> mask = della_mask(v, cols, 0.5, 0.2, dare_stream(dare_tensor_seed(3, "t"), 0));
  std::vector<double> keep(cols, 0);
  for (size_t i = 0; i < v.size(); ++i) keep[rank_of[i]] += mask[i];
  for (uint64_t r = 0; r < cols; ++r) EXPECT_NEAR(keep[r] / rows, 0.3 + 0.4 * r / 4.0, 0.015) << "rank " << r;
  EXPECT_EQ(mask, della_mask(v, cols, 0.5, 0.2, dare_stream(dare_tensor_seed(3, "t"), 0)));  // deterministic
  EXPECT_NE(mask, della_mask(v, cols, 0.5, 0.2, dare_stream(dare_tensor_seed(3, "t"), 1)));  // per model
  EXPECT_THROW(della_mask(v, cols, 0.9, 0.15, 1), Error);  // density + epsilon >= 1
  EXPECT_EQ(kept(della_mask(v, cols, 1.0, 0.15, 1)).size(), v.size());
}

TEST(MergekitMethods, ModelStockInterpolatesByTheAngle) {
  const std::vector<float> w0 = {0, 0}, a = {1, 0}, b_orth = {0, 1}, b_same = {1, 0};
  const std::vector<float> b60 = {0.5f, std::sqrt(3.0f) / 2};
  std::vector<float> out(2);
  merge_model_stock(f32(w0), {f32(a), f32(b_orth)}, 2, 2, false, DType::F32, out.data());
  EXPECT_EQ(out, (std::vector<float>{0, 0}));  // cos 0: t = 0, the base
  merge_model_stock(f32(w0), {f32(a), f32(b_same)}, 2, 2, false, DType::F32, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 0}));  // cos 1: t = 1, the average
  merge_model_stock(f32(w0), {f32(a), f32(b60)}, 2, 2, false, DType::F32, out.data());
  EXPECT_NEAR(out[0], 2.0 / 3 * 0.75, 1e-6);  // cos 1/2: t = 2/3
  EXPECT_NEAR(out[1], 2.0 / 3 * std::sqrt(3.0) / 4, 1e-6);
  // filter_wise: one t per row (row 0 parallel, row 1 orthogonal).
  const std::vector<float> z(4, 0), p = {1, 0, 1, 0}, q = {1, 0, 0, 1};
  std::vector<float> rows(4);
  merge_model_stock(f32(z), {f32(p), f32(q)}, 4, 2, true, DType::F32, rows.data());
  EXPECT_EQ(rows, (std::vector<float>{1, 0, 0, 0}));
  EXPECT_THROW(merge_model_stock(f32(w0), {f32(a)}, 2, 2, false, DType::F32, out.data()), Error);
}

TEST(MergekitMethods, NearswapAndPassthrough) {
  const std::vector<float> a = {0, 0, 0}, b = {0.001f, 0.5f, -2};
  std::vector<float> out(3);
  merge_nearswap(f32(a), f32(b), 0.01, 3, DType::F32, out.data());
  EXPECT_FLOAT_EQ(out[0], 0.001f);   // |a - b| < t: b
  EXPECT_FLOAT_EQ(out[1], 0.01f);    // w = 0.01 / 0.5
  EXPECT_FLOAT_EQ(out[2], -0.01f);   // w = 0.01 / 2
  merge_passthrough(f32(b), 2.0, 3, DType::F32, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.002f, 1.0f, -4.0f}));
  std::vector<uint16_t> bf(3);
  merge_passthrough(f32(b), 1.0, 3, DType::BF16, bf.data());
  EXPECT_EQ(bf[2], 0xC000);  // -2.0 in bfloat16
}

TEST(MergekitMethods, SphericalLimits) {
  const std::vector<float> x = {1, 2, 3, 4}, y = {4, -3, 2, 1};
  std::vector<float> out(4);
  // NuSLERP with all weight on the first model: that model.
  merge_nuslerp(std::nullopt, f32(x), f32(y), 1.0, 0.0, 1, 4, NuslerpVectors::Flat, DType::F32, out.data());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], x[i], 1e-6);
  // Multi-SLERP of one model: the model; the Karcher mean of identical models: the model.
  merge_multislerp(std::nullopt, {f32(y)}, {1.0}, true, 1e-8, 4, DType::F32, out.data());
  EXPECT_EQ(out, y);
  merge_karcher({f32(x), f32(x), f32(x)}, 4, 10, 1e-5, DType::F32, out.data());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], x[i], 1e-5);
  // Karcher of two orthogonal unit vectors: the midpoint on the circle, norm 1.
  const std::vector<float> e0 = {1, 0}, e1 = {0, 1};
  merge_karcher({f32(e0), f32(e1)}, 2, 10, 1e-5, DType::F32, out.data());
  EXPECT_NEAR(out[0], std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(out[1], std::sqrt(0.5), 1e-6);
}

TEST(MergekitMethods, SceWeightsByEnergyAndErasesMinoritySigns) {
  // Task vectors d1 = (1, 1), d2 = (2, -1): energies 1 and 2.5, weights 2/7 and 5/7.
  const std::vector<float> base = {0, 0}, p1 = {1, 1}, p2 = {2, -1};
  std::vector<float> out(2);
  merge_sce(f32(base), {f32(p1), f32(p2)}, 2, 1.0, DType::F32, out.data());
  EXPECT_NEAR(out[0], (2.0 / 7 * 1 + 5.0 / 7 * 2) / 1.0, 1e-6);
  // element 1: the sum 1 - 1 = 0 elects +, so only d1 takes part.
  EXPECT_NEAR(out[1], 1.0, 1e-6);
}

TEST(MergekitMethods, RegistryChecksEachTensorsInputs) {
  EXPECT_EQ(merge_method("slerp").check_inputs(3, true), "merges at most 2 models, got 3");
  EXPECT_EQ(merge_method("model_stock").check_inputs(2, true), "needs at least 3 models, got 2");
  EXPECT_EQ(merge_method("nuslerp").check_inputs(3, true), "");
  EXPECT_EQ(merge_method("nuslerp").check_inputs(3, false), "merges at most 2 models besides the base, got 3");
  EXPECT_EQ(merge_method("passthrough").check_inputs(2, false), "merges at most 1 model, got 2");
  EXPECT_EQ(merge_method("ties").check_inputs(3, false), "needs the base model among its inputs");
  for (const char* m : {"model_stock", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "sce", "nuslerp",
                        "multislerp", "karcher", "nearswap", "passthrough"})
    EXPECT_NE(find_merge_method(m), nullptr) << m;
  EXPECT_THROW(merge_method("arcee_fusion"), Error);
  EXPECT_EQ(find_merge_method("ties")->param("int8_mask")->default_value, 0.0);
}

// ---- The memory plan counts each kernel's working memory (MethodSpec::work_bytes) --------------
// Every heap allocation of this test binary is counted (malloc_usable_size, so frees need no
// header); a kernel call's peak above what was allocated before it must not exceed the bytes its
// registry entry declares.
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<int64_t> g_heap{0}, g_heap_peak{0};
void* counted_alloc(size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  const int64_t now = g_heap += static_cast<int64_t>(malloc_usable_size(p));
  for (int64_t peak = g_heap_peak; now > peak && !g_heap_peak.compare_exchange_weak(peak, now);) {
  }
  return p;
}
void counted_free(void* p) {
  if (!p) return;
  g_heap -= static_cast<int64_t>(malloc_usable_size(p));
  std::free(p);
}
}  // namespace

void* operator new(size_t n) { return counted_alloc(n); }
void* operator new[](size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, size_t) noexcept { counted_free(p); }
void operator delete[](void* p, size_t) noexcept { counted_free(p); }

TEST(MergekitMethods, WorkBytesBoundEachKernelsMemory) {
  std::mt19937 gen(11);
  std::normal_distribution<float> noise(0.0f, 0.02f);
  for (const MethodSpec& m : merge_methods()) {
    if (m.uses_representations) continue;
    // Inputs as the merge loop gives them: whole tensors, or (row-wise methods) pieces of 256 KB.
    const uint64_t numel = m.whole_tensor ? (uint64_t(1) << 19) : 65536;  // an array: 2 MB, above the staging
    const std::vector<int64_t> shape = {static_cast<int64_t>(numel / 1024), 1024};
    const size_t inputs = m.max_models > 0 ? static_cast<size_t>(m.max_models) : 4;
    std::vector<std::vector<float>> data(inputs, std::vector<float>(numel));
    for (size_t i = 0; i < inputs; ++i)
      for (float& x : data[i]) x = (i ? data[0][&x - data[i].data()] : 0.05f) + noise(gen);
    std::vector<TensorView> views;
    for (const auto& d : data) views.push_back(f32(d));
    const std::optional<size_t> base = m.base == BaseUse::None ? std::nullopt : std::optional<size_t>(0);
    TensorParams params;
    for (const ParamSpec& p : m.params) {
      const double v = p.name == "density" ? 0.5 : p.name == "t" ? 0.3 : p.default_value.value_or(1.0);
      if (p.scope == ParamScope::Shared)
        params.set(p.name, v);
      else
        params.set(p.name, std::vector<double>(inputs, v));
    }
    // Data-aware methods read statistics: a diagonal Gram matrix per input and Fisher values of 1.
    TensorStatistics stats;
    if (m.statistics == Statistics::Gram) {
      stats.gram_size = shape[1];
      stats.gram_tokens.assign(inputs, 1.0);
      stats.gram_rows = [n = static_cast<uint64_t>(shape[1])](size_t j, uint64_t r0, uint64_t rows, double* dst) {
        std::fill(dst, dst + rows * n, 0.0);
        for (uint64_t r = 0; r < rows; ++r) dst[r * n + r0 + r] = 1.0 + static_cast<double>(j);
      };
    }
    if (m.statistics == Statistics::Fisher) {
      stats.fisher_norm.assign(inputs, 1.0);
      stats.fisher = [](size_t, uint64_t, uint64_t n, float* dst) { std::fill(dst, dst + n, 1.0f); };
    }
    for (DType out_dtype : {DType::BF16, DType::F32}) {
      std::vector<uint8_t> out(numel * dtype_size(out_dtype));
      const int64_t before = g_heap.load();
      g_heap_peak = before;
      m.merge(MergeTask{views, base, params, "model.layers.0.mlp.up_proj.weight", shape, 0, numel, out_dtype, out.data(),
                        &stats});
      const int64_t used = g_heap_peak.load() - before;
      const uint64_t declared = m.work_bytes(numel, inputs, out_dtype, TensorSlot{Role::UpProj, 0, "model.layers.0.mlp.up_proj.weight", shape});
      EXPECT_LE(used, static_cast<int64_t>(declared)) << m.name << " " << dtype_name(out_dtype) << ": " << used
                                                      << " bytes used, " << declared << " declared";
    }
  }
}
