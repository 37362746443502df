// The merge job's pure parts, without MPI or weights: the merge chunk planner and buffer sizes,
// the memory plan, per-tensor parameter resolution, RECALL's state file, the output directory's
// resume and commit, and the manifest.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <nlohmann/json.hpp>

#include "recall/config/merge_config.h"
#include "recall/merge/typical.h"
#include "recall/pipeline/commit.h"
#include "recall/pipeline/output_dir.h"
#include "recall/pipeline/plan.h"
#include "recall/pipeline/recall_weights.h"
#include "recall/pipeline/tensor_params.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using namespace recall;
using recall::testing::TempDir;

namespace {

// Inputs of M models of a tiny Llama (hidden 16, MLP 24, L blocks) in `dtype`, from shapes alone.
MergeInputs fake_inputs(size_t M, int64_t L, DType dtype = DType::BF16) {
  ModelConfig cfg;
  cfg.hidden_size = 16;
  cfg.intermediate_size = 24;
  cfg.num_hidden_layers = L;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 4;
  cfg.vocab_size = 40;
  cfg.max_position_embeddings = 64;
  MergeInputs in;
  for (size_t m = 0; m < M; ++m) in.models.push_back(ModelDir{"/m" + std::to_string(m), cfg, {}, {}, {}, {}});
  in.described.assign(M, true);
  in.reference = M - 1;
  in.slots = expected_tensors(cfg);
  in.output_blocks = L;
  for (const TensorSlot& s : in.slots) {  // without slices: every model's tensor of the same name
    SlotLayout l;
    for (size_t m = 0; m < M; ++m) l.sources.push_back({m, s.name});
    l.t = gradient_position(s.block, L);
    in.layout.push_back(l);
  }
  in.slot_bytes.assign(M, {});
  for (size_t m = 0; m < M; ++m)
    for (const TensorSlot& s : in.slots) {
      uint64_t n = 1;
      for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
      in.slot_bytes[m].push_back(n * dtype_size(dtype));
    }
  return in;
}

MergeConfig config_for(const std::string& method, size_t M, std::vector<std::string> overrides = {}) {
  std::string y = "models:\n";
  for (size_t m = 0; m < M; ++m) y += "  - {name: m" + std::to_string(m) + ", path: /m" + std::to_string(m) + "}\n";
  y += "base: m0\ndata: /d.jsonl\noutput: {dir: /out}\nmethod: " + method + "\n";
  return parse_merge_config(y, "cfg.yaml", overrides);
}

uint64_t rows_of(const TensorSlot& s) { return s.shape.empty() ? 1 : static_cast<uint64_t>(s.shape[0]); }

}  // namespace

TEST(MergePlan, RowWiseChunksCoverEveryRowOnceWithEqualCountsPerRank) {
  const MergeInputs in = fake_inputs(3, 3);
  for (uint64_t chunk_bytes : {uint64_t(1), uint64_t(100), uint64_t(64) << 20}) {
    const MergeConfig c = config_for("linear", 3, {"parallel.merge_chunk_bytes=" + std::to_string(chunk_bytes)});
    for (int world : {1, 2, 3, 5}) {
      std::map<size_t, std::vector<int>> covered;  // tensor -> row -> times
      std::map<size_t, std::vector<size_t>> counts;  // tensor -> chunks per rank
      for (int r = 0; r < world; ++r) {
        const auto plan = plan_merge_chunks(c, in, r, world);
        std::map<size_t, size_t> mine;
        for (const MergeChunk& ch : plan) {
          auto& rows = covered[ch.tensor];
          rows.resize(rows_of(in.slots[ch.tensor]));
          for (uint64_t row = ch.first_row; row < ch.end_row; ++row) ++rows[row];
          ++mine[ch.tensor];
          EXPECT_LE(ch.rows() * widest_row_bytes(in, ch.tensor), std::max(chunk_bytes, widest_row_bytes(in, ch.tensor)));
        }
        for (auto& [t, n] : mine) counts[t].push_back(n);
      }
      for (size_t t = 0; t < in.slots.size(); ++t) {
        for (int times : covered[t]) ASSERT_EQ(times, 1) << in.slots[t].name << " world " << world;
        for (size_t n : counts[t]) EXPECT_EQ(n, counts[t][0]) << "every rank meets every collective write";
      }
    }
  }
}

TEST(MergePlan, WholeTensorMethodsGiveEachTensorToOneRank) {
  const MergeInputs in = fake_inputs(3, 2);
  const MergeConfig c = config_for("ties", 3);
  const int world = 4;
  for (int r = 0; r < world; ++r)
    for (const MergeChunk& ch : plan_merge_chunks(c, in, r, world)) {
      EXPECT_TRUE(ch.first && ch.last);
      const bool mine = static_cast<int>(ch.tensor % world) == r;
      EXPECT_EQ(ch.rows(), mine ? rows_of(in.slots[ch.tensor]) : 0u);
      EXPECT_EQ(ch.whole, mine);
    }
}

TEST(MergePlan, DoneTensorsAreSkipped) {
  const MergeInputs in = fake_inputs(2, 2);
  const MergeConfig c = config_for("linear", 2);
  const std::set<std::string> done = {in.slots[0].name, in.slots[3].name};
  for (const MergeChunk& ch : plan_merge_chunks(c, in, 0, 1, done)) EXPECT_FALSE(done.count(in.slots[ch.tensor].name));
}

TEST(MergePlan, BuffersAreTheLargestChunkOfEachModel) {
  MergeInputs in = fake_inputs(2, 2);
  // Model 1 in F32: its rows are twice as wide, so chunks are sized by it.
  for (auto& b : in.slot_bytes[1]) b *= 2;
  const MergeConfig c = config_for("linear", 2, {"parallel.merge_chunk_bytes=96"});
  const MergeBuffers b = merge_buffers(c, in, 0, 1);
  uint64_t in0 = 0, in1 = 0, out = 0;
  for (const MergeChunk& ch : plan_merge_chunks(c, in, 0, 1)) {
    const uint64_t rows = rows_of(in.slots[ch.tensor]);
    in0 = std::max(in0, ch.rows() * in.slot_bytes[0][ch.tensor] / rows);
    in1 = std::max(in1, ch.rows() * in.slot_bytes[1][ch.tensor] / rows);
    out = std::max(out, ch.rows() * in.slot_bytes[0][ch.tensor] / rows);  // bf16 output, as model 0
  }
  EXPECT_EQ(b.input_bytes, (std::vector<uint64_t>{in0, in1}));
  EXPECT_EQ(b.output_bytes, out);
  EXPECT_EQ(b.input_sets, 2);
  EXPECT_EQ(b.total(), 2 * (in0 + in1) + out + b.work_bytes);
  // Whole-tensor methods hold one set of whole tensors plus the kernel's working memory.
  const MergeBuffers w = merge_buffers(config_for("ties", 2), in, 0, 1);
  EXPECT_EQ(w.input_sets, 1);
  EXPECT_GT(w.work_bytes, 0u);
}

TEST(MergePlan, BudgetCheckNamesTheRankAndTheParts) {
  std::vector<MemoryPlan> plans(3);
  plans[1].merge_buffers = 5000;
  plans[2].weights = 100;
  EXPECT_NO_THROW(check_memory_budget(plans, 5000));
  EXPECT_NO_THROW(check_memory_budget(plans, 0));
  try {
    check_memory_budget(plans, 4999);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 5.00 KB (5000 bytes) on rank 1 but memory_budget is 5.00 KB (4999 bytes; "), std::string::npos)
        << e.what();
  }
  const std::string gib = memory_plan_text(plans, 64ull << 30, false);
  EXPECT_NE(gib.find("budget 64.00 GiB (68.72 GB)"), std::string::npos) << "in the unit it was written in: " << gib;
  const std::string text = memory_plan_text(plans, 4999, false);
  EXPECT_NE(text.find("rank 2: 0 B + 100 B + 0 B + 0 B + 0 B + 0 B = 100 B"), std::string::npos) << text;
}

TEST(MergePlan, RecallDataIsTheClusteredMatrixTokensAndKMeansAtAnyN) {
  MergeInputs in = fake_inputs(3, 2);  // hidden 16, 2 blocks, max_position_embeddings 64
  in.data_samples = 1000000;
  in.data_bytes = 12000000;  // 12-byte lines: fewer tokens than max_length allows
  const MergeConfig c = config_for("recall", 3);
  const RecallDataPlan r = recall_data_plan(c, in);
  const uint64_t N = 1000000;
  EXPECT_EQ(r.pooled, N * 16 * 4);                       // the one N x H matrix, float32
  EXPECT_EQ(r.tokens, 8 * (N + 1) + 2 * 4 * (12000000 + 2 * N));  // bounded by the file's bytes
  // k-means clusters typical.kmeans_samples (50000) of them, then one pass over all N.
  EXPECT_EQ(r.kmeans, 50000u * 16 * 4 + 50000u * 8 + kmeans_work_bytes(50000, 16, 32) + N);
  EXPECT_EQ(r.representations, 4u * 3 * 3 * (32 * 16 + 2) * 4);  // K samples only, not N
  EXPECT_EQ(r.total(), r.tokens + r.pooled + r.kmeans);
  // Long lines: max_length (here min(512, 64) positions) bounds the tokens instead.
  in.data_bytes = 1ull << 40;
  EXPECT_EQ(recall_data_plan(c, in).tokens, 8 * (N + 1) + 2 * 4 * (N * 64));
  // typical.max_samples caps N.
  const MergeConfig capped = config_for("recall", 3, {"typical.max_samples=1000"});
  EXPECT_EQ(recall_data_plan(capped, in).pooled, 1000u * 16 * 4);
  // In the plan of every rank of a RECALL job, not of a baseline.
  dist::GridSpec spec = grid_spec(in);
  spec.stages = 1;
  const dist::Grid grid(spec, 2);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(memory_plan(c, in, spec, &grid, rank, 2).recall_data, recall_data_plan(c, in).total());
    EXPECT_EQ(memory_plan(config_for("linear", 3), in, spec, nullptr, rank, 2).recall_data, 0u);
  }
}

TEST(MergePlan, StreamingHoldsItsBoundAndStatisticsTheirBlocks) {
  const MergeInputs in = fake_inputs(3, 4);  // hidden 16, 4 heads x head_dim 4, intermediate 24
  // Streaming: stream_samples rounded up to whole micro-batches, at max_length tokens, float32.
  EXPECT_EQ(stream_resident_bytes(config_for("recall", 3, {"parallel.micro_batch=2", "max_length=8"}), in), 0u);
  EXPECT_EQ(stream_resident_bytes(config_for("recall", 3, {"parallel.micro_batch=2", "max_length=8",
                                                            "parallel.stream_samples=3"}), in),
            4u * 8 * 16 * 4);
  // Statistics: per block, the four groups' float64 Grams [in, in], sums [in] and token counts
  // (inputs 16, 16, 16, 24), plus one micro-batch's rows of the widest input (2 x 8 x 24) at 20 bytes.
  const uint64_t both = 3 * (16 * 16 * 8 + 16 * 8 + 8) + (24 * 24 * 8 + 24 * 8 + 8);
  const uint64_t gram = 3 * (16 * 16 * 8 + 8) + (24 * 24 * 8 + 8);
  const uint64_t rows = 2 * 8 * 24 * 20;
  engine::LinearStatisticsOptions so;
  so.gram = so.abs_sum = true;
  engine::LinearStatisticsOptions gram_only;
  gram_only.gram = true;
  dist::GridSpec spec = grid_spec(in);
  spec.stages = 2;
  const dist::Grid one(spec, 1), six(spec, 6);  // one rank: each model's 4 blocks; six: a cell of 2 each
  const MergeConfig resident = config_for("recall", 3, {"parallel.micro_batch=2", "max_length=8", "parallel.stages=2"});
  EXPECT_EQ(linear_statistics_bytes(resident, in, one, 0, so), 4 * both + rows);
  EXPECT_EQ(linear_statistics_bytes(resident, in, one, 0, gram_only), 4 * gram + rows);
  EXPECT_EQ(linear_statistics_bytes(resident, in, one, 0, {}), 0u);
  for (int r = 0; r < 6; ++r) EXPECT_EQ(linear_statistics_bytes(resident, in, six, r, so), 2 * both + rows);
  // Streaming writes each block's file before the next loads: one block whatever the cells.
  const MergeConfig streaming = config_for("recall", 3, {"parallel.micro_batch=2", "max_length=8",
                                                          "parallel.stages=2", "parallel.stream_samples=4"});
  EXPECT_EQ(linear_statistics_bytes(streaming, in, one, 0, so), both + rows);
  // On cuda, one more block: the host copy a file is written from.
  const MergeConfig cuda = config_for("recall", 3, {"parallel.micro_batch=2", "max_length=8", "parallel.stages=2",
                                                     "parallel.stream_samples=4", "parallel.device=cuda"});
  EXPECT_EQ(linear_statistics_bytes(cuda, in, one, 0, so), 2 * both + rows);
  // In the plan and its total, and only when the job accumulates statistics: RegMean's Gram
  // matrices (and the calibration tokens: none here, the fake inputs have no data lines), AIM's
  // |x| sums.
  const std::vector<std::string> o = {"parallel.micro_batch=2", "max_length=8", "parallel.stages=2"};
  const MemoryPlan with = memory_plan(config_for("regmean", 3, o), in, spec, &one, 0, 1);
  const MemoryPlan without = memory_plan(resident, in, spec, &one, 0, 1);
  EXPECT_EQ(with.statistics, 4 * gram + rows + 8);
  EXPECT_EQ(without.statistics, 0u);
  std::vector<std::string> aim = o;
  aim.push_back("aim.omega=0.4");
  const uint64_t sums = 3 * (16 * 8 + 8) + (24 * 8 + 8);
  EXPECT_EQ(memory_plan(config_for("task_arithmetic", 3, aim), in, spec, &one, 0, 1).statistics, 4 * sums + rows + 8);
  EXPECT_NE(memory_plan_text({with}, 0, false).find("+ statistics = total"), std::string::npos);
}

TEST(TensorParams, GradientsFiltersAndPerModelValuesPerTensor) {
  const MergeInputs in = fake_inputs(3, 5);
  const MergeConfig c = parse_merge_config(R"(models:
  - {name: base, path: /m0}
  - {name: a, path: /m1, params: {weight: 2, density: [0.2, 1]}}
  - {name: b, path: /m2}
base: base
method: ties
params:
  weight: [{filter: mlp, value: [1, 3]}, {value: 0.5}]
  density: 0.7
  lambda: 0.25
output: {dir: /o}
)", "cfg.yaml");
  const auto params = resolve_tensor_params(c, in, {});
  for (size_t t = 0; t < in.slots.size(); ++t) {
    const TensorSlot& s = in.slots[t];
    const double pos = gradient_position(s.block, 5);  // 0 outside the blocks
    EXPECT_DOUBLE_EQ(params[t].shared("lambda"), 0.25);
    EXPECT_EQ(params[t].shared("normalize"), 1.0);  // ties' default
    EXPECT_DOUBLE_EQ(params[t].of("weight", 1), 2.0) << "the model's own value wins";
    const bool mlp = s.name.find("mlp") != std::string::npos;
    EXPECT_DOUBLE_EQ(params[t].of("weight", 2), mlp ? 1 + 2 * pos : 0.5) << s.name;
    EXPECT_DOUBLE_EQ(params[t].of("density", 1), 0.2 + 0.8 * pos) << s.name;
    EXPECT_DOUBLE_EQ(params[t].of("density", 2), 0.7);
  }
}

TEST(TensorParams, RecallWeightsFollowTheBlockAndTheNonBlockPolicy) {
  const MergeInputs in = fake_inputs(2, 2);
  const std::vector<std::vector<double>> bw = {{0.25, 0.75}, {0.6, 0.4}};
  for (auto [policy, embed] : {std::pair{"uniform", std::vector<double>{0.5, 0.5}},
                               std::pair{"nearest_block", std::vector<double>{0.25, 0.75}},
                               std::pair{"reference", std::vector<double>{0, 1}}}) {
    const MergeConfig c = config_for("recall", 2, {std::string("recall.non_block=") + policy});
    const auto params = resolve_tensor_params(c, in, bw);
    for (size_t t = 0; t < in.slots.size(); ++t) {
      const TensorSlot& s = in.slots[t];
      if (s.block >= 0) {
        EXPECT_EQ(params[t].per_model("weight"), bw[s.block]);
      }
      if (s.role == Role::Embed) {
        EXPECT_EQ(params[t].per_model("weight"), embed) << policy;
      }
    }
  }
}

TEST(RecallState, RoundTripsAndRefusesMalformedFiles) {
  RecallWeights w;
  w.typical_samples = {4, 0, 9};
  w.blocks = {{0, 2.5, {0.5, 1}, {0.4, 0.6}}, {1, 0.125, {1, 0.25}, {0.7, 0.3}}};
  const RecallWeights r = parse_recall_state(recall_state_json(w));
  EXPECT_EQ(r.typical_samples, w.typical_samples);
  ASSERT_EQ(r.blocks.size(), 2u);
  EXPECT_EQ(r.blocks[1].sigma2, 0.125);
  EXPECT_EQ(r.block_weights(), w.block_weights());
  EXPECT_THROW(parse_recall_state("{\"typical_samples\": [1]}"), Error);
  EXPECT_THROW(parse_recall_state("not json"), Error);
}

TEST(OutputDir, PrepareResumesOnlyTheSameKeyAndCommitRenames) {
  TempDir tmp;
  const OutputDir out(tmp.file("merged"));
  std::string log;
  EXPECT_FALSE(out.prepare("key-1\n", false, &log));
  EXPECT_TRUE(is_directory(out.hf()));
  EXPECT_TRUE(log.empty()) << "nothing was removed";
  write_file_atomic(out.h5(), "x");
  out.start_progress();
  out.record_merged({"a", "b"});
  out.record_merged({"c"});
  EXPECT_EQ(out.merged_tensors(), (std::set<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(out.prepare("key-1\n", false, &log)) << "same key: resume";
  EXPECT_EQ(out.merged_tensors().size(), 3u);
  EXPECT_FALSE(out.prepare("key-1\n", true, &log)) << "--fresh";
  EXPECT_NE(log.find("removed the unfinished"), std::string::npos) << log;
  EXPECT_TRUE(out.merged_tensors().empty());
  EXPECT_FALSE(out.prepare("key-2\n", false, &log)) << "another key starts over";
  write_file_atomic(out.file("manifest.json"), R"({"format": "recall-merge-1"})");
  write_file_atomic(out.file("report.json.tmp.12345"), "left by a killed process");
  write_file_atomic(out.file("hf/config.json.tmp.777"), "left by a killed process");
  write_file_atomic(out.file("notes.tmp.txt"), "not a temporary of recall's");
  out.commit(false);
  EXPECT_TRUE(path_exists(tmp.file("merged/manifest.json")));
  EXPECT_FALSE(path_exists(tmp.file("merged/report.json.tmp.12345")));
  EXPECT_FALSE(path_exists(tmp.file("merged/hf/config.json.tmp.777")));
  EXPECT_TRUE(path_exists(tmp.file("merged/notes.tmp.txt")));
  EXPECT_FALSE(path_exists(out.partial()));
}

TEST(OutputDir, RecallRemovesOnlyWhatItWrote) {
  TempDir tmp;
  const std::string dir = tmp.file("out");
  const OutputDir out(dir);
  auto problems = [&](bool overwrite, std::vector<std::string> inputs = {}, std::vector<std::string> models = {}) {
    std::string all;
    for (const auto& p : out.problems(overwrite, inputs, models)) all += p + "\n";
    return all;
  };
  EXPECT_EQ(problems(false), "");
  // An unrelated directory: refused with and without overwrite, and left alone.
  make_directories(dir);
  write_file_atomic(dir + "/thesis.tex", "precious");
  EXPECT_NE(problems(false).find("already exists"), std::string::npos);
  EXPECT_NE(problems(true).find("is not a recall output"), std::string::npos) << problems(true);
  // A committed recall output may be replaced with overwrite.
  remove_tree(dir);
  make_directories(dir);
  write_file_atomic(dir + "/manifest.json", R"({"format": "recall-merge-1", "tensors": []})");
  EXPECT_EQ(problems(true), "");
  write_file_atomic(dir + "/manifest.json", "not json");
  EXPECT_NE(problems(true).find("is not a recall output"), std::string::npos);
  // Inputs: the output may not be, or hold, an input; nor lie inside a model directory.
  remove_tree(dir);
  EXPECT_NE(problems(false, {dir + "/data.jsonl"}).find("is or holds the input"), std::string::npos);
  EXPECT_NE(problems(false, {dir}).find("is or holds the input"), std::string::npos);
  EXPECT_NE(problems(false, {}, {tmp.path()}).find("lies inside the model directory"), std::string::npos);
  EXPECT_NE(OutputDir("/").problems(true, {}, {})[0].find("is the root directory"), std::string::npos);
  // A user's own <dir>.partial and <dir>.old are in the way, never deleted.
  make_directories(dir + ".partial");
  write_file_atomic(dir + ".partial/mine.txt", "mine");
  make_directories(dir + ".old");
  EXPECT_EQ(problems(false).find(".old'"), std::string::npos) << "an empty .old holds nothing to lose";
  write_file_atomic(dir + ".old/notes.txt", "mine");
  EXPECT_NE(problems(false).find("'" + dir + ".partial' exists and was not written by recall"), std::string::npos);
  EXPECT_NE(problems(false).find("'" + dir + ".old' exists and is not a recall output"), std::string::npos);
  std::string log;
  EXPECT_THROW(out.prepare("k\n", false, &log), Error);
  EXPECT_TRUE(path_exists(dir + ".partial/mine.txt"));
}

// Another job's preflight looks without the lock while a job creates <dir>.partial, commits it
// and replaces the old output: it must never take what recall is writing for a user's directory
// (CI saw "'<dir>.partial' exists and was not written by recall" from a job started beside
// another).
TEST(OutputDir, APreflightBesideARunningJobNeverSeesItsWorkAsAUsers) {
  TempDir tmp;
  const OutputDir out(tmp.file("out"));
  std::atomic<bool> done{false};
  std::thread job([&] {
    std::string log;
    for (int i = 0; i < 400; ++i) {
      out.prepare("key-" + std::to_string(i) + "\n", false, &log);
      write_file_atomic(out.file("manifest.json"), R"({"format": "recall-merge-1"})");
      out.commit(true);
    }
    done = true;
  });
  std::set<std::string> seen;
  int looks = 0;
  while (!done) {
    for (const std::string& p : out.problems(true, {}, {})) seen.insert(p);
    ++looks;
  }
  job.join();
  EXPECT_TRUE(seen.empty()) << *seen.begin() << " (" << seen.size() << " kinds in " << looks << " looks)";
  EXPECT_GT(looks, 400);
}

// output.dir a link to a committed output elsewhere (a scratch file system): overwrite replaces the
// link with the new output and leaves the directory it pointed to as it was; recall never follows
// a link to delete.
TEST(OutputDir, OverwritingALinkedOutputRemovesTheLinkNotItsTarget) {
  TempDir tmp;
  const std::string target = tmp.file("scratch-out");
  make_directories(target);
  write_file_atomic(target + "/manifest.json", R"({"format": "recall-merge-1"})");
  write_file_atomic(target + "/merged.h5", "old result");
  ASSERT_EQ(::symlink(target.c_str(), tmp.file("out").c_str()), 0);
  const OutputDir out(tmp.file("out"));
  EXPECT_TRUE(out.problems(true, {}, {}).empty());
  std::string log;
  out.prepare("k\n", false, &log);
  write_file_atomic(out.file("manifest.json"), R"({"format": "recall-merge-1"})");
  out.commit(true);
  EXPECT_TRUE(is_directory(tmp.file("out")));
  EXPECT_EQ(read_text_file(target + "/merged.h5"), "old result");
  EXPECT_TRUE(path_exists(target + "/manifest.json"));
  EXPECT_FALSE(path_exists(tmp.file("out.old")));
}

TEST(OutputDir, AStagedPartialLeftByACrashIsClearedAUsersIsNot) {
  TempDir tmp;
  const OutputDir out(tmp.file("out"));
  std::string log;
  const std::string staging = out.partial() + ".new";
  make_directories(staging + "/hf");
  write_file_atomic(staging + "/job.key", "key-0\n");  // killed before its rename
  EXPECT_FALSE(out.prepare("key-1\n", false, &log));
  EXPECT_FALSE(path_exists(staging));
  EXPECT_EQ(read_text_file(out.file("job.key")), "key-1\n");
  remove_tree(out.partial());
  make_directories(staging);
  write_file_atomic(staging + "/mine.txt", "mine");
  EXPECT_THROW(out.prepare("key-1\n", false, &log), Error);
  EXPECT_TRUE(path_exists(staging + "/mine.txt"));
  EXPECT_FALSE(path_exists(out.partial()));
}

TEST(OutputLock, OneHolderAtATimeAndStaleLocksOfDeadProcesses) {
  TempDir tmp;
  const std::string dir = tmp.file("out");
  {
    OutputLock first(dir);
    EXPECT_TRUE(path_exists(dir + ".lock"));
    try {
      OutputLock second(dir);
      FAIL() << "a second lock was granted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("is being written by another recall job ("), std::string::npos) << m;
      EXPECT_NE(m.find("pid " + std::to_string(::getpid())), std::string::npos) << m;
      EXPECT_NE(m.find("lock file '" + dir + ".lock'"), std::string::npos) << m;
    }
  }
  EXPECT_FALSE(path_exists(dir + ".lock")) << "released";
  {
    OutputLock nested(tmp.file("runs/new/out"));  // a parent that does not exist yet
    EXPECT_TRUE(path_exists(tmp.file("runs/new/out.lock")));
  }
  // A lock of a process that no longer exists on this host is taken over.
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  write_file_atomic(dir + ".lock", std::string("job=- restart=0 host=") + host + " pid=2147483646 since=x nonce=1\n");
  OutputLock third(dir);
  EXPECT_NE(third.takeover().find("took over the stale lock"), std::string::npos);
  // Another host's lock cannot be checked: refused.
  ::unlink((dir + ".lock").c_str());
  write_file_atomic(dir + ".lock", "job=999 restart=0 host=elsewhere-node17 pid=12 since=x nonce=2\n");
  EXPECT_THROW(OutputLock fourth(dir), Error);
}

TEST(JobKey, CoversConfigJsonDataTokenizerAndVersion) {
  TempDir tmp;
  MergeInputs in = fake_inputs(2, 1);
  for (size_t m = 0; m < 2; ++m) {
    in.models[m].path = tmp.file("m" + std::to_string(m));
    make_directories(in.models[m].path);
    write_file_atomic(in.models[m].path + "/config.json", "{\"a\": 1}");
  }
  MergeConfig c = config_for("recall", 2, {"data=" + tmp.file("data.jsonl")});
  write_file_atomic(tmp.file("data.jsonl"), "{\"input_ids\": [1, 2]}\n");
  const std::string k0 = job_key(c, in);
  EXPECT_EQ(job_key(c, in), k0);
  write_file_atomic(in.models[1].path + "/config.json", "{\"a\": 2}");
  const std::string k1 = job_key(c, in);
  EXPECT_NE(k1, k0) << "a model's config.json";
  write_file_atomic(tmp.file("data.jsonl"), "{\"input_ids\": [1, 3]}\n");
  const std::string k2 = job_key(c, in);
  EXPECT_NE(k2, k1) << "the data file";
  write_file_atomic(in.models[1].path + "/tokenizer.json", "{}");
  EXPECT_NE(job_key(c, in), k2) << "the reference's tokenizer";
  MergeConfig d = c;
  d.output.checkpoint_bytes = 1;
  d.output.overwrite = true;
  EXPECT_EQ(job_key(d, in), job_key(c, in)) << "how often progress is saved does not change the result";
}

TEST(Commit, ManifestListsEveryTensorWithItsChecksum) {
  const MergeInputs in = fake_inputs(2, 1);
  const MergeConfig c = config_for("linear", 2, {"output.dtype=float16"});
  MergeReport report;
  std::map<std::string, uint64_t> sums;
  for (size_t t = 0; t < in.slots.size(); ++t) sums[in.slots[t].name] = 0x1234 + t;
  const std::string yaml = to_yaml(c);
  const std::vector<std::string> shards = {"model.safetensors"};
  const auto j = nlohmann::json::parse(manifest_json({c, in, report, yaml, sums, shards}));
  EXPECT_EQ(j.at("method"), "linear");
  ASSERT_EQ(j.at("tensors").size(), in.slots.size());
  EXPECT_EQ(j.at("tensors")[0].at("dtype"), "F16");
  EXPECT_EQ(j.at("tensors")[1].at("xxh3_64"), "0000000000001235");
  EXPECT_EQ(j.at("hf_shards"), shards);
  EXPECT_EQ(j.at("config"), yaml);
}
