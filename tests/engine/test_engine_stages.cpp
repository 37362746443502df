// Engine stage API on stories260K: a pipeline of stages that each hold only their own blocks gives
// the same hidden states and logits as the whole model; padding does not change real tokens; the
// mask-aware mean; errors for blocks a stage does not hold.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "recall/engine/model.h"
#include "recall/model/llama2c.h"
#include "recall/util/error.h"

namespace {

using namespace recall;
using namespace recall::engine;

const std::string& stories_dir() {
  static const std::string dir = [] {
    const std::string out = (std::filesystem::temp_directory_path() /
                             ("recall_engine_stages_" + std::to_string(::getpid()))).string();
    convert_llama2c(std::string(RECALL_SHARED_DIR) + "/data/stories260K/stories260K.bin", out);
    return out;
  }();
  return dir;
}

TEST(EngineStages, PipelineOfStagesEqualsWholeModel) {
  c10::InferenceMode guard;
  ModelDir dir = open_model_dir(stories_dir());
  const Model whole = Model::load(dir);
  LoadOptions first, second;
  first.end_block = 2;
  second.begin_block = 2;
  const Model s0 = Model::load(dir, first), s1 = Model::load(dir, second);
  // Each block: 2 norms, qkv, o, gate_up, down. Stage 0: embedding + 2 blocks. Stage 1: 3 blocks,
  // final norm and the lm_head (the tied embedding matrix, loaded for the head only).
  EXPECT_EQ(s0.parameters().size(), 1u + 2 * 6);
  EXPECT_EQ(s1.parameters().size(), 3 * 6 + 2u);
  EXPECT_EQ(whole.parameters().size(), 1u + 5 * 6 + 1);  // tied lm_head listed once

  const Batch batch = make_batch({{1, 403, 407, 261, 378}, {1, 403}}, at::kCPU);
  at::Tensor h = whole.run_blocks(whole.embed(batch.ids), batch, 0, 5);
  at::Tensor p = s0.run_blocks(s0.embed(batch.ids), batch, 0, 2);
  p = s1.run_blocks(p, batch, 2, 5);
  EXPECT_TRUE(at::equal(h, p));
  EXPECT_TRUE(at::equal(whole.logits(whole.final_norm(h)), s1.logits(s1.final_norm(p))));
  // Block by block is the same as a range.
  at::Tensor q = s0.embed(batch.ids);
  for (int64_t b = 0; b < 2; ++b) q = s0.run_block(q, batch, b);
  EXPECT_TRUE(at::equal(q, s0.run_blocks(s0.embed(batch.ids), batch, 0, 2)));
}

// RegMean++'s merged blocks: a block built from in-memory tensors (by HF name, here the
// checkpoint's own, read as float32) runs exactly as the loaded block, and a
// missing tensor fails naming it.
TEST(EngineStages, BlockFromTensorsEqualsLoadedBlock) {
  c10::InferenceMode guard;
  ModelDir dir = open_model_dir(stories_dir());
  LoadOptions one;
  one.begin_block = 3;
  one.end_block = 4;
  const Model loaded = Model::load(dir, one);
  auto tensor = [&](const std::string& name) {
    const std::vector<float> v = dir.checkpoint.read_float(name);
    return at::from_blob(const_cast<float*>(v.data()), dir.checkpoint.at(name).info->shape, at::kFloat).clone();
  };
  const Model built = Model::from_tensors(dir.config, 3, tensor, at::kFloat, at::kCPU);
  EXPECT_EQ(built.begin_block(), 3);
  EXPECT_EQ(built.end_block(), 4);
  const Batch batch = make_batch({{1, 403, 407, 261, 378}, {1, 403}}, at::kCPU);
  const at::Tensor h = at::randn({2, 5, dir.config.hidden_size});
  EXPECT_TRUE(at::equal(loaded.run_block(h, batch, 3), built.run_block(h, batch, 3)));
  // A block whose tensors differ gives other outputs (the tensors are used, not the checkpoint's).
  auto scaled = [&](const std::string& name) { return tensor(name) * (name.find("down_proj") != std::string::npos ? 2 : 1); };
  EXPECT_FALSE(at::equal(loaded.run_block(h, batch, 3),
                         Model::from_tensors(dir.config, 3, scaled, at::kFloat, at::kCPU).run_block(h, batch, 3)));
  auto missing = [&](const std::string& name) -> at::Tensor { fail("no tensor '", name, "'"); };
  try {
    Model::from_tensors(dir.config, 3, missing, at::kFloat, at::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.3.input_layernorm.weight"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Model::from_tensors(dir.config, 5, tensor, at::kFloat, at::kCPU), Error);
}

TEST(EngineStages, StageRefusesWhatItDoesNotHold) {
  ModelDir dir = open_model_dir(stories_dir());
  LoadOptions first;
  first.end_block = 2;
  const Model s0 = Model::load(dir, first);
  const Batch batch = make_batch({{1, 2}}, at::kCPU);
  at::Tensor h = s0.embed(batch.ids);
  try {
    s0.run_blocks(h, batch, 1, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks [1, 3) are not within this stage's blocks [0, 2)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(s0.final_norm(h), Error);
  LoadOptions bad;
  bad.begin_block = 3;
  bad.end_block = 9;
  EXPECT_THROW(Model::load(dir, bad), Error);
}

TEST(EngineStages, PaddingDoesNotChangeRealTokens) {
  c10::InferenceMode guard;
  const Model m = Model::load(open_model_dir(stories_dir()));
  const Batch alone = make_batch({{1, 403, 407}}, at::kCPU);
  const Batch padded = make_batch({{1, 403, 407}, {1, 403, 407, 261, 378, 432}}, at::kCPU);
  EXPECT_EQ(padded.length(), 6);
  at::Tensor a = m.forward_logits(alone)[0];
  at::Tensor b = m.forward_logits(padded)[0].narrow(0, 0, 3);
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-5 * a.abs().max().item<float>());
}

TEST(EngineStages, KVCacheDecodingEqualsFullForward) {
  c10::InferenceMode guard;
  const Model m = Model::load(open_model_dir(stories_dir()));
  const std::vector<int64_t> seq = {1, 403, 407, 261, 378, 432, 383};
  at::Tensor full = m.forward_logits(make_batch({seq}, at::kCPU))[0];  // [7, V]
  KVCache cache;
  at::Tensor prompt = at::tensor(std::vector<int64_t>(seq.begin(), seq.begin() + 3), at::kLong).unsqueeze(0);
  std::vector<at::Tensor> rows = {m.forward_cached(prompt, cache)[0]};
  for (size_t i = 3; i < seq.size(); ++i)
    rows.push_back(m.forward_cached(at::full({1, 1}, seq[i], at::kLong), cache)[0]);
  EXPECT_EQ(cache.length, 7);
  at::Tensor inc = at::cat(rows, 0);
  EXPECT_LT((inc - full).abs().max().item<float>(), 1e-5 * full.abs().max().item<float>());
  EXPECT_THROW(m.forward_cached(prompt, cache), Error);  // more than one token after the prompt
}

TEST(EngineStages, MaskedMeanIgnoresPadPositions) {
  at::Tensor h = at::arange(2 * 3 * 2, at::kFloat).view({2, 3, 2});
  at::Tensor mask = at::tensor(std::vector<int64_t>{1, 1, 0, 1, 0, 0}).view({2, 3});
  at::Tensor mean = masked_mean(h, mask);
  EXPECT_TRUE(at::allclose(mean, at::tensor(std::vector<float>{1, 2, 6, 7}).view({2, 2})));
}

// Rows of 3, 1 and 4 real tokens (right-padded to 4) of hidden[n][t] = (8n + 2t, 8n + 2t + 1).
TEST(EngineStages, PoolingChoicesByHand) {
  at::Tensor h = at::arange(3 * 4 * 2, at::kFloat).view({3, 4, 2});
  at::Tensor mask = at::tensor(std::vector<int64_t>{1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1}).view({3, 4});
  auto pooled = [&](Pooling p) { return pool_hidden(h, mask, p); };
  auto want = [](std::vector<float> v) { return at::tensor(v).view({3, 2}); };
  // mean: tokens 0-2 | 0 | 0-3.
  EXPECT_TRUE(at::equal(pooled(Pooling::Mean), want({2, 3, 8, 9, 19, 20})));
  // mean_skip_first: tokens 1-2 | 0 (one token: kept) | 1-3.
  EXPECT_TRUE(at::equal(pooled(Pooling::MeanSkipFirst), want({3, 4, 8, 9, 20, 21})));
  // last: token 2 | 0 | 3.
  EXPECT_TRUE(at::equal(pooled(Pooling::Last), want({4, 5, 8, 9, 22, 23})));
  // The first real token is found wherever it is (a left-padded row).
  at::Tensor left = at::tensor(std::vector<int64_t>{0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}).view({3, 4});
  EXPECT_TRUE(at::equal(pooling_mask(left, Pooling::MeanSkipFirst),
                        at::tensor(std::vector<int64_t>{0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1}).view({3, 4})));
  EXPECT_TRUE(at::equal(pooling_mask(left, Pooling::Last),
                        at::tensor(std::vector<int64_t>{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}).view({3, 4})));
  EXPECT_TRUE(at::equal(pooling_mask(left, Pooling::Mean), left));
  EXPECT_EQ(parse_name(kPoolings, "mean_skip_first"), Pooling::MeanSkipFirst);
  EXPECT_EQ(name_of(kPoolings, Pooling::Last), "last");
  try {
    parse_name_or_fail(kPoolings, "max", "pooling");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected one of: mean, mean_skip_first, last"), std::string::npos);
  }
}

// On stories260K's block outputs (a padded batch): each pooling equals the same tokens sliced
// out of each row and averaged on their own; the BOS position is what mean_skip_first drops.
TEST(EngineStages, PoolingEqualsSlicedTokenMeans) {
  c10::InferenceMode guard;
  const Model m = Model::load(open_model_dir(stories_dir()));
  const std::vector<std::vector<int64_t>> rows = {{1, 403, 407, 261, 378}, {1}, {1, 403, 407}};
  const Batch batch = make_batch(rows, at::kCPU);
  const at::Tensor h = m.run_blocks(m.embed(batch.ids), batch, 0, 3);
  for (Pooling p : {Pooling::Mean, Pooling::MeanSkipFirst, Pooling::Last}) {
    const at::Tensor got = pool_hidden(h, batch.mask, p);
    for (int64_t n = 0; n < 3; ++n) {
      const int64_t len = static_cast<int64_t>(rows[n].size());
      const int64_t begin = p == Pooling::Last ? len - 1 : p == Pooling::MeanSkipFirst && len > 1 ? 1 : 0;
      const at::Tensor want = h[n].narrow(0, begin, len - begin).mean(0);
      EXPECT_TRUE(at::allclose(got[n], want, 1e-6, 1e-6)) << name_of(kPoolings, p) << " row " << n;
      if (p == Pooling::Last) {
        EXPECT_TRUE(at::equal(got[n], h[n][len - 1])) << "row " << n;
      }
    }
  }
  // Dropping BOS changes the pooled vector of a multi-token row.
  EXPECT_FALSE(at::allclose(pool_hidden(h, batch.mask, Pooling::Mean)[0],
                            pool_hidden(h, batch.mask, Pooling::MeanSkipFirst)[0], 1e-4, 1e-4));
}

TEST(EngineStages, ParsesDtypeAndDevice) {
  EXPECT_EQ(parse_compute_dtype("bf16"), at::kBFloat16);
  EXPECT_EQ(parse_compute_dtype("float32"), at::kFloat);
  EXPECT_THROW(parse_compute_dtype("int8"), Error);
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_THROW(parse_device("tpu"), Error);
}

}  // namespace
