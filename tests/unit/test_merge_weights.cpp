// Merge weights: softmax with temperature (sum to 1, stability, tau -> 0 picks the most similar
// model, ties to the lowest index), global mode, and the non-block tensor policies.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "recall/merge/methods.h"
#include "recall/merge/similarity.h"
#include "recall/merge/weights.h"
#include "recall/util/error.h"

using namespace recall;

TEST(MergeWeights, SoftmaxByHandAndSumsToOne) {
  const std::vector<double> s = {0.2, 0.9, 0.5};
  const std::vector<double> w = softmax_weights(s, 1.0);
  const double z = std::exp(0.2) + std::exp(0.9) + std::exp(0.5);
  EXPECT_NEAR(w[0], std::exp(0.2) / z, 1e-15);
  EXPECT_NEAR(w[1], std::exp(0.9) / z, 1e-15);
  EXPECT_NEAR(w[2], std::exp(0.5) / z, 1e-15);
  for (double tau : {1e-4, 0.01, 0.3, 1.0, 7.0, 1e6}) {
    const std::vector<double> v = softmax_weights(s, tau);
    EXPECT_NEAR(std::accumulate(v.begin(), v.end(), 0.0), 1.0, 1e-15) << "tau " << tau;
  }
  // Large similarities and tiny temperatures do not overflow.
  const std::vector<double> big = softmax_weights({1000.0, 1001.0}, 1e-3);
  EXPECT_EQ(big[1], 1.0);
  EXPECT_EQ(big[0], 0.0);
}

TEST(MergeWeights, TemperatureToZeroPicksMostSimilar) {
  const std::vector<std::vector<double>> sim = {{0.1, 0.7, 0.3}, {0.8, 0.2, 0.79}, {0.5, 0.5, 0.1}};
  const auto w0 = block_weights(sim, 0.0);
  EXPECT_EQ(w0[0], (std::vector<double>{0, 1, 0}));
  EXPECT_EQ(w0[1], (std::vector<double>{1, 0, 0}));
  EXPECT_EQ(w0[2], (std::vector<double>{1, 0, 0}));  // tie: lowest model index
  const auto small = block_weights(sim, 1e-4);
  EXPECT_NEAR(small[0][1], 1.0, 1e-12);
  EXPECT_NEAR(small[1][0], 1.0, 1e-12);
  EXPECT_NEAR(small[2][0], 0.5, 1e-12);  // a tie shares the weight for tau > 0
  EXPECT_NEAR(small[2][1], 0.5, 1e-12);
  // tau -> infinity gives uniform weights.
  for (double v : softmax_weights(sim[0], 1e12)) EXPECT_NEAR(v, 1.0 / 3, 1e-12);
}

TEST(MergeWeights, GlobalMode) {
  const std::vector<std::vector<double>> sim = {{0.1, 0.7}, {0.5, 0.3}};
  const std::vector<double> g = global_weights(sim, 1.0);
  const std::vector<double> expect = softmax_weights({0.3, 0.5}, 1.0);
  EXPECT_NEAR(g[0], expect[0], 1e-15);
  EXPECT_NEAR(g[1], expect[1], 1e-15);
  EXPECT_THROW(global_weights({{0.1, 0.2}, {0.3}}, 1.0), Error);
}

TEST(MergeWeights, NonBlockPolicies) {
  const std::vector<std::vector<double>> bw = {{0.6, 0.3, 0.1}, {0.2, 0.2, 0.6}};
  EXPECT_EQ(non_block_weights(NonBlockPolicy::Uniform, Role::Embed, bw, 2), (std::vector<double>(3, 1.0 / 3)));
  EXPECT_EQ(non_block_weights(NonBlockPolicy::NearestBlock, Role::Embed, bw, 2), bw[0]);
  EXPECT_EQ(non_block_weights(NonBlockPolicy::NearestBlock, Role::FinalNorm, bw, 2), bw[1]);
  EXPECT_EQ(non_block_weights(NonBlockPolicy::NearestBlock, Role::LmHead, bw, 2), bw[1]);
  EXPECT_EQ(non_block_weights(NonBlockPolicy::Reference, Role::LmHead, bw, 1), (std::vector<double>{0, 1, 0}));
  EXPECT_EQ(tensor_weights(NonBlockPolicy::Uniform, Role::QProj, 1, bw, 0), bw[1]);
  EXPECT_THROW(tensor_weights(NonBlockPolicy::Uniform, Role::QProj, 2, bw, 0), Error);
  EXPECT_THROW(non_block_weights(NonBlockPolicy::Reference, Role::Embed, bw, 3), Error);
  EXPECT_EQ(parse_name(kNonBlockPolicies, "nearest_block"), NonBlockPolicy::NearestBlock);
  EXPECT_THROW(parse_name_or_fail(kNonBlockPolicies, "first", "non-block policy"), Error);
}

TEST(MergeWeights, Errors) {
  EXPECT_THROW(softmax_weights({}, 1.0), Error);
  EXPECT_THROW(softmax_weights({0.1}, -1.0), Error);
  EXPECT_THROW(softmax_weights({0.1}, INFINITY), Error);
  try {
    block_weights({{0.1}, {NAN}}, 1.0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block 1: weights: similarity of model 0 is not finite"), std::string::npos)
        << e.what();
  }
}

TEST(MergeWeights, RecallOfIdenticalModelsReturnsTheModel) {
  // The whole RECALL chain on identical models: equal representations -> similarity 1 each ->
  // uniform weights -> the merged tensor is the input, bit for bit.
  RepMatrix r;
  r.rows = 4;
  r.cols = 3;
  r.values = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1.5, -2, 0.25};
  const BlockSimilarity s = block_similarity({r, r, r}, 2, SimilarityOptions{});
  EXPECT_EQ(s.similarity, (std::vector<double>{1, 1, 1}));
  const std::vector<double> w = softmax_weights(s.similarity, 1.0);
  std::vector<uint16_t> tensor(1000);
  for (size_t i = 0; i < tensor.size(); ++i) tensor[i] = float_to_bf16(std::sin(static_cast<float>(i)) * 3);
  std::vector<uint16_t> out(tensor.size());
  merge_weighted({{DType::BF16, tensor.data()}, {DType::BF16, tensor.data()}, {DType::BF16, tensor.data()}}, w, false,
                 tensor.size(), DType::BF16, out.data());
  EXPECT_EQ(out, tensor);
}
