// Merge kernels, bound to method names by the registry (recall/merge/registry.h): one tensor at a
// time, given every model's raw bytes and dtype, written in the output dtype (BF16, F16 or F32).
// Arithmetic is wider than the output: fp32 for BF16/F16 outputs, fp64 for F32 outputs, always in
// model order. RECALL and linear are a weighted sum; the baselines follow mergekit 0.1.5
// (merge_methods/linear.py, generalized_task_arithmetic.py, sparsify.py, slerp.py);
// docs/ALGORITHM.md gives every formula.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "recall/util/dtype.h"

namespace recall {

// One model's copy of a tensor: `numel` elements of `dtype` at `data` (any float dtype).
struct TensorView {
  DType dtype = DType::BF16;
  const void* data = nullptr;
};

// Output dtypes of a merge: BF16, F16, F32; throws otherwise.
void check_merge_output_dtype(DType out);

// P = sum_m w_m P_m (RECALL, linear), divided by sum_m w_m when `normalize` (mergekit's linear
// default). Where every model holds the same bits at an element, the input dtype equals the
// output dtype and the weights sum to 1 (or `normalize`), the output is those bits: mathematically
// exact, and it keeps -0.0, infinities and NaN payloads that the arithmetic would change.
void merge_weighted(const std::vector<TensorView>& models, const std::vector<double>& weights,
                    bool normalize, uint64_t numel, DType out_dtype, void* out);

// Generalized task arithmetic (mergekit's GeneralizedTaskArithmeticMerge).
enum class Sparsification { None, Magnitude, Random };
struct TaskVectorOptions {
  Sparsification sparsification = Sparsification::None;
  bool consensus = false;         // TIES sign election by weighted sum ("sum" consensus)
  bool normalize = false;         // divide the mixed delta by the (masked) weight sum
  bool rescale = false;           // after sparsification, rescale to the delta's L1 norm
  double lambda = 1.0;            // scale of the mixed delta
  std::vector<double> weights;    // per non-base model
  std::vector<double> densities;  // per non-base model, fraction kept (1 = all)
  uint64_t seed = 0;              // Random: the tensor seed (dare_tensor_seed)
};
// base + lambda * mix_m(w_m * sparsify(P_m - base)), see docs/ALGORITHM.md. Without
// sparsification the kernel is elementwise (any element range may be passed); with it (TIES's
// top-k, DARE's element-indexed draws and L1 rescale) it needs the whole tensor.
void merge_task_vectors(TensorView base, const std::vector<TensorView>& models, uint64_t numel,
                        const TaskVectorOptions& opt, DType out_dtype, void* out);

// mergekit's slerp of base v0 and v1 at t over the whole flattened tensor: norms clamped
// (<= 1e-8 -> 1), dot of the normalized vectors clamped to [-1, 1], linear interpolation when
// |dot| > 0.9995, else sin((1-t)theta)/sin(theta) v0 + sin(t theta)/sin(theta) v1.
inline constexpr double kSlerpDotThreshold = 0.9995;
inline constexpr double kSlerpEps = 1e-8;
void merge_slerp(TensorView v0, TensorView v1, double t, uint64_t numel, DType out_dtype, void* out);

// DARE's random drop. The job derives a tensor seed from the config seed and the tensor name
// (dare_tensor_seed: SplitMix64 mix of seed XOR FNV-1a-64(name)); model i (0-based, non-base order)
// draws from stream s_i = dare_stream(tensor_seed, i) = mix(tensor_seed + (i+1) * 0x9E3779B97F4A7C15).
// Element j is kept when u_j < density, u_j = (mix(s_i + (j+1) * 0x9E3779B97F4A7C15) >> 11) * 2^-53:
// the j-th output of a SplitMix64 generator started at s_i. Counter-based, so any row range can be
// drawn without the rest and the result does not depend on how rows are split among ranks.
uint64_t dare_tensor_seed(uint64_t seed, std::string_view tensor_name);
uint64_t dare_stream(uint64_t tensor_seed, int64_t model_index);
bool dare_keep(uint64_t stream, uint64_t element, double density);

// The top-k-by-magnitude mask of TIES: k = max(1, floor(density * n)) elements with the largest
// |v|, ties broken by the lowest index; all for density >= 1, none for density <= 0.
template <typename T>
std::vector<char> magnitude_mask(const std::vector<T>& v, double density);

}  // namespace recall
