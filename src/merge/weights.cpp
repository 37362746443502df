// Merge weights: temperature softmax per block, global mode, non-block policy (see weights.h).
#include "recall/merge/weights.h"

#include <cmath>

#include "recall/util/error.h"

namespace recall {

std::vector<double> softmax_weights(const std::vector<double>& s, double tau) {
  if (s.empty()) fail("weights: no similarities given");
  if (!(tau >= 0) || !std::isfinite(tau)) fail("weights: temperature must be >= 0 and finite; got ", tau);
  size_t best = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!std::isfinite(s[i])) fail("weights: similarity of model ", i, " is not finite (", s[i], ")");
    if (s[i] > s[best]) best = i;  // strict: ties keep the lowest index
  }
  std::vector<double> w(s.size(), 0.0);
  if (tau == 0) {
    w[best] = 1.0;
    return w;
  }
  double total = 0;
  for (size_t i = 0; i < s.size(); ++i) total += (w[i] = std::exp((s[i] - s[best]) / tau));
  for (double& v : w) v /= total;  // total >= 1: the argmax contributes exp(0)
  return w;
}

std::vector<std::vector<double>> block_weights(const std::vector<std::vector<double>>& similarity, double tau) {
  std::vector<std::vector<double>> w;
  for (size_t l = 0; l < similarity.size(); ++l)
    w.push_back(with_context("block " + std::to_string(l), [&] { return softmax_weights(similarity[l], tau); }));
  return w;
}

std::vector<double> global_weights(const std::vector<std::vector<double>>& similarity, double tau) {
  if (similarity.empty()) fail("weights: no blocks given");
  const size_t m = similarity[0].size();
  std::vector<double> mean(m, 0.0);
  for (size_t l = 0; l < similarity.size(); ++l) {
    if (similarity[l].size() != m)
      fail("weights: block ", l, " has ", similarity[l].size(), " similarities; block 0 has ", m);
    for (size_t i = 0; i < m; ++i) mean[i] += similarity[l][i];
  }
  for (double& v : mean) v /= static_cast<double>(similarity.size());
  return softmax_weights(mean, tau);
}

std::vector<double> non_block_weights(NonBlockPolicy policy, Role role,
                                      const std::vector<std::vector<double>>& bw, int64_t reference) {
  if (is_block_role(role)) fail("weights: role '", role_name(role), "' is a block tensor, not a non-block one");
  if (bw.empty() || bw[0].empty()) fail("weights: no block weights given");
  const int64_t m = static_cast<int64_t>(bw[0].size());
  switch (policy) {
    case NonBlockPolicy::Uniform:
      return std::vector<double>(m, 1.0 / static_cast<double>(m));
    case NonBlockPolicy::NearestBlock:
      return role == Role::Embed ? bw.front() : bw.back();
    case NonBlockPolicy::Reference: {
      if (reference < 0 || reference >= m)
        fail("weights: reference model index ", reference, " is out of range [0, ", m, ")");
      std::vector<double> w(m, 0.0);
      w[reference] = 1.0;
      return w;
    }
  }
  fail("weights: unknown non-block policy");
}

std::vector<double> tensor_weights(NonBlockPolicy policy, Role role, int64_t block,
                                   const std::vector<std::vector<double>>& bw, int64_t reference) {
  if (!is_block_role(role)) return non_block_weights(policy, role, bw, reference);
  if (block < 0 || block >= static_cast<int64_t>(bw.size()))
    fail("weights: block ", block, " is out of range [0, ", bw.size(), ")");
  return bw[block];
}

}  // namespace recall
