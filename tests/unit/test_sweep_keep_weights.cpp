// The spec key keep_weights on hand-built sweep directories: decoding (values, line and column
// errors, eval sets required, saved in sweep.json), which files a drop removes (only the
// manifest's weight files, never a symbolic link, nothing outside a recall output), the best
// point chosen the same whatever order points finish in (ties: the lower index), and the report's
// weights column.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "recall/sweep/keep_weights.h"
#include "recall/sweep/plan.h"
#include "recall/sweep/report.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using recall::testing::expect_error;
using recall::testing::TempDir;

namespace {

void put(const std::string& path, const std::string& text) {
  recall::make_directories(path.substr(0, path.rfind('/')));
  std::ofstream(path) << text;
}

// A plan of `n` points over recall.temperature, evaluated on one set, with keep_weights `keep`.
recall::SweepPlan make_sweep(const TempDir& d, const std::string& keep, int n = 4) {
  put(d.file("base.yaml"), "models: [{name: a, path: /m/a}, {name: b, path: /m/b}]\nmethod: linear\noutput: {dir: /o}\n");
  std::string values;
  for (int i = 0; i < n; ++i) values += (i ? ", " : "") + std::to_string(i + 1);
  put(d.file("spec.yaml"), "base_config: base.yaml\ngrid: {recall.temperature: [" + values +
                               "]}\neval: {data: [{name: heldout, path: /e.jsonl}]}\nkeep_weights: " + keep + "\n");
  return recall::write_sweep_plan(recall::load_sweep_spec(d.file("spec.yaml")), d.file("sweep"));
}

// A committed point output as the merge writes it (two shards and the index) and its eval result.
void finish_point(const recall::SweepPoint& p, double loss) {
  const std::string out = p.dir + "/out";
  put(out + "/manifest.json",
      "{\"format\": \"recall-merge-1\", \"hf_shards\": [\"model-00001-of-00002.safetensors\", "
      "\"model-00002-of-00002.safetensors\"]}");
  put(out + "/report.json", "{\"timings\": {\"merge\": 1.0}}");
  put(out + "/report.svg", "<svg/>");
  put(out + "/merged.h5", std::string(1000, 'h'));
  put(out + "/hf/model-00001-of-00002.safetensors", std::string(300, 'a'));
  put(out + "/hf/model-00002-of-00002.safetensors", std::string(200, 'b'));
  put(out + "/hf/model.safetensors.index.json", std::string(10, 'i'));
  put(out + "/hf/config.json", "{}");
  char loss_text[64];
  std::snprintf(loss_text, sizeof loss_text, "%.17g", loss);
  put(p.dir + "/eval/heldout.json", std::string("{\"summary\": {\"text\": {\"samples\": 3, \"tokens\": 10, \"loss\": ") +
                                        loss_text + "}}}");
}

bool has_weights(const recall::SweepPoint& p) {
  return recall::path_exists(p.dir + "/out/merged.h5") &&
         recall::path_exists(p.dir + "/out/hf/model-00001-of-00002.safetensors");
}

int best_recorded(const recall::SweepPlan& plan) {
  const std::string t = recall::read_text_file(recall::sweep_best_path(plan));
  const size_t at = t.find("\"point\": ");
  return at == std::string::npos ? -1 : std::stoi(t.substr(at + 9));
}

}  // namespace

TEST(SweepKeepWeights, SpecValuesAndErrors) {
  TempDir d;
  put(d.file("base.yaml"), "models: [{name: a, path: /m/a}, {name: b, path: /m/b}]\nmethod: linear\noutput: {dir: /o}\n");
  const std::string where = d.file("s.yaml");
  const std::string eval = "eval: {data: [{name: h, path: /e.jsonl}]}\n";
  auto parse = [&](const std::string& text) { return recall::parse_sweep_spec(text, where); };
  EXPECT_EQ(parse("base_config: base.yaml\n").keep_weights, recall::KeepWeights::All);
  EXPECT_EQ(parse("base_config: base.yaml\nkeep_weights: all\n").keep_weights, recall::KeepWeights::All);
  EXPECT_EQ(parse("base_config: base.yaml\n" + eval + "keep_weights: none\n").keep_weights, recall::KeepWeights::None);
  EXPECT_EQ(parse("base_config: base.yaml\n" + eval + "keep_weights: best\n").keep_weights, recall::KeepWeights::Best);
  expect_error([&] { parse("base_config: base.yaml\n" + eval + "keep_weights: some\n"); },
               {where + ":3:15: 'keep_weights' is 'some'; expected one of: all, none, best"});
  expect_error([&] { parse("base_config: base.yaml\n" + eval + "keep_weights: [best]\n"); },
               {where + ":3:15: 'keep_weights' is ", "expected one of: all, none, best"});
  expect_error([&] { parse("base_config: base.yaml\nkeep_weights: none\n"); },
               {where + ":2:15: 'keep_weights: none' keeps only the evaluation results, but the spec has no eval sets",
                "use 'keep_weights: all'"});
  expect_error([&] { parse("base_config: base.yaml\nkeep_weights: best\neval: {batch: 4}\n"); },
               {where + ":2:15: 'keep_weights: best' keeps the weights of the best point by the evaluation results, but "
                        "the spec has no eval sets"});
  expect_error([&] { parse("base_config: base.yaml\nkeep_weight: best\n"); },
               {where + ":2:1: unknown key 'keep_weight'", "eval, keep_weights"});
  // Saved in sweep.json and read back.
  const recall::SweepPlan plan = make_sweep(d, "best");
  EXPECT_EQ(plan.keep_weights, recall::KeepWeights::Best);
  EXPECT_EQ(recall::load_sweep_plan(plan.dir).keep_weights, recall::KeepWeights::Best);
  EXPECT_NE(recall::read_text_file(plan.dir + "/sweep.json").find("\"keep_weights\": \"best\""), std::string::npos);
}

TEST(SweepKeepWeights, NoneRemovesOnlyTheManifestsWeightFiles) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "none", 2);
  const recall::SweepPoint& p = plan.points[0];
  finish_point(p, 2.0);
  const std::string out = p.dir + "/out";
  put(out + "/hf/notes.safetensors", "not the merge's");  // not in the manifest: left alone
  put(d.file("elsewhere.safetensors"), "x");
  ASSERT_EQ(::unlink((out + "/hf/model-00002-of-00002.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink(d.file("elsewhere.safetensors").c_str(), (out + "/hf/model-00002-of-00002.safetensors").c_str()), 0);
  std::ostringstream log;
  const recall::KeepOutcome k = recall::apply_keep_weights(plan, p, {}, "point 0000", log);
  EXPECT_EQ(k.bytes, 1000u + 300u + 10u);
  EXPECT_NE(k.message.find("dropped its weights (keep_weights: none): removed merged.h5, "
                           "hf/model-00001-of-00002.safetensors, hf/model.safetensors.index.json; freed 1310 bytes"),
            std::string::npos)
      << k.message;
  EXPECT_NE(k.message.find("left alone hf/model-00002-of-00002.safetensors (not a regular file"), std::string::npos)
      << k.message;
  EXPECT_FALSE(recall::path_exists(out + "/merged.h5"));
  EXPECT_TRUE(recall::path_exists(d.file("elsewhere.safetensors")));  // the link's target
  for (const char* kept : {"/manifest.json", "/report.json", "/report.svg", "/hf/config.json", "/hf/notes.safetensors"})
    EXPECT_TRUE(recall::path_exists(out + kept)) << kept;
  EXPECT_TRUE(recall::sweep_weights_dropped(p));
  const std::string marker = recall::read_text_file(recall::sweep_weights_dropped_path(p));
  EXPECT_NE(marker.find("\"bytes\": 1310"), std::string::npos) << marker;
  EXPECT_NE(marker.find("\"reason\": \"keep_weights: none\""), std::string::npos) << marker;
  // Again: nothing left to do, nothing said.
  EXPECT_EQ(recall::apply_keep_weights(plan, p, {}, "point 0000", log).message, "");
}

TEST(SweepKeepWeights, RemovesNothingOutsideARecallOutput) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "none", 2);
  finish_point(plan.points[0], 2.0);
  put(plan.points[0].dir + "/out/manifest.json", "{\"format\": \"something-else\"}");
  std::ostringstream log;
  expect_error([&] { recall::apply_keep_weights(plan, plan.points[0], {}, "p", log); },
               {plan.points[0].dir + "/out/manifest.json' is not a recall merge manifest"});
  EXPECT_TRUE(has_weights(plan.points[0]));
  EXPECT_FALSE(recall::sweep_weights_dropped(plan.points[0]));
  // out/ a symbolic link to another directory: refused.
  finish_point(plan.points[1], 2.0);
  ASSERT_EQ(::rename((plan.points[1].dir + "/out").c_str(), d.file("real-out").c_str()), 0);
  ASSERT_EQ(::symlink(d.file("real-out").c_str(), (plan.points[1].dir + "/out").c_str()), 0);
  expect_error([&] { recall::apply_keep_weights(plan, plan.points[1], {}, "p", log); },
               {plan.points[1].dir + "/out' is not a directory (a symbolic link or missing)"});
  EXPECT_TRUE(recall::path_exists(d.file("real-out/merged.h5")));
}

// Losses 3, 2, 1, 1 (metric -loss): point 2 and 3 tie, so point 2 is the best whatever the order.
TEST(SweepKeepWeights, BestIsTheSameWhateverTheOrder) {
  const double loss[] = {3.0, 2.0, 1.0, 1.0};
  const std::vector<std::vector<int>> orders = {{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {3, 0, 2, 1}};
  for (const auto& order : orders) {
    TempDir d;
    const recall::SweepPlan plan = make_sweep(d, "best");
    std::ostringstream log;
    std::string said;
    for (int i : order) {
      finish_point(plan.points[static_cast<size_t>(i)], loss[i]);
      said += recall::apply_keep_weights(plan, plan.points[static_cast<size_t>(i)], {}, "p", log).message + "\n";
    }
    std::string o;
    for (int i : order) o += std::to_string(i);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(has_weights(plan.points[static_cast<size_t>(i)]), i == 2) << "order " << o << ", point " << i << "\n" << said;
    EXPECT_EQ(best_recorded(plan), 2) << o;
    const recall::SweepResults r = recall::gather_sweep_results(recall::load_sweep_plan(plan.dir));
    EXPECT_EQ(r.points.front().index, 2) << o;
    EXPECT_TRUE(r.points.front().weights_kept) << o;
    if (o == "3210") {  // 2 ties with 3 and replaces it; 1 and 0 rank below
      EXPECT_NE(said.find("keeps its weights: ties with point 0003 and has the lower index (neg_mean_loss -1 vs "
                          "neg_mean_loss -1); dropped point 0003's weights: removed merged.h5"),
                std::string::npos)
          << said;
      EXPECT_NE(said.find("dropped its weights: point 0002 ranks above it (neg_mean_loss -1 vs neg_mean_loss -2)"),
                std::string::npos)
          << said;
    }
    if (o == "0123") {
      EXPECT_NE(said.find("keeps its weights: ranks above point 0000 (neg_mean_loss -2 vs neg_mean_loss -3)"),
                std::string::npos)
          << said;
    }
  }
}

// Points finishing at the same time (array tasks on several nodes; threads here, each taking the
// O_EXCL lock file as a process would): still exactly one keeps its weights, the best.
TEST(SweepKeepWeights, ConcurrentPointsAgreeOnTheBest) {
  const std::vector<std::vector<double>> rounds = {{3, 2, 5, 1, 4, 1, 6, 2}, {1, 1, 1, 1, 1, 1, 1, 1}, {8, 7, 6, 5, 4, 3, 2, 0.5}};
  for (const auto& loss : rounds) {
    TempDir d;
    const recall::SweepPlan plan = make_sweep(d, "best", 8);
    for (size_t i = 0; i < 8; ++i) finish_point(plan.points[i], loss[i]);
    std::vector<std::thread> threads;
    std::vector<std::string> errors(8);
    for (size_t i = 0; i < 8; ++i)
      threads.emplace_back([&, i] {
        std::ostringstream log;
        try {
          recall::apply_keep_weights(plan, plan.points[i], {}, "p", log);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    const size_t want = static_cast<size_t>(std::min_element(loss.begin(), loss.end()) - loss.begin());
    for (size_t i = 0; i < 8; ++i) {
      EXPECT_EQ(errors[i], "") << i;
      EXPECT_EQ(has_weights(plan.points[i]), i == want) << "point " << i << " (best " << want << ")";
    }
    EXPECT_EQ(best_recorded(plan), static_cast<int>(want));
    EXPECT_FALSE(recall::path_exists(plan.dir + "/.best.lock"));
  }
}

TEST(SweepKeepWeights, AnInterruptedReplacementIsFinishedByARerun) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "best", 2);
  std::ostringstream log;
  finish_point(plan.points[1], 2.0);
  recall::apply_keep_weights(plan, plan.points[1], {}, "p", log);
  finish_point(plan.points[0], 1.0);
  // Point 0 began replacing point 1 and stopped after the record, before removing anything.
  put(recall::sweep_weights_dropped_path(plan.points[1]), "{}");
  EXPECT_EQ(recall::apply_keep_weights(plan, plan.points[1], {}, "p", log).bytes, 1510u);  // a rerun of point 1
  EXPECT_FALSE(has_weights(plan.points[1]));
  recall::apply_keep_weights(plan, plan.points[0], {}, "p", log);  // and of point 0
  EXPECT_TRUE(has_weights(plan.points[0]));
  EXPECT_EQ(best_recorded(plan), 0);
}

TEST(SweepKeepWeights, RanksBeforeTiesByIndexAndPutsNonFiniteLast) {
  EXPECT_TRUE(recall::sweep_ranks_before(0.5, 3, 0.25, 1));
  EXPECT_FALSE(recall::sweep_ranks_before(0.25, 1, 0.5, 3));
  EXPECT_TRUE(recall::sweep_ranks_before(0.5, 1, 0.5, 3));
  EXPECT_FALSE(recall::sweep_ranks_before(0.5, 3, 0.5, 1));
  EXPECT_TRUE(recall::sweep_ranks_before(-100.0, 5, std::nan(""), 0));
  EXPECT_FALSE(recall::sweep_ranks_before(std::nan(""), 0, -100.0, 5));
}

TEST(SweepKeepWeights, ReportShowsWhichPointsKeptWeights) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "best", 3);
  std::ostringstream log;
  for (int i : {0, 1}) {
    finish_point(plan.points[static_cast<size_t>(i)], 2.0 - i);
    recall::apply_keep_weights(plan, plan.points[static_cast<size_t>(i)], {}, "p", log);
  }
  recall::write_sweep_report(plan.dir);
  const std::string csv = recall::read_text_file(plan.dir + "/results.csv");
  EXPECT_EQ(csv,
            "point,recall.temperature,status,metric,heldout.loss,heldout.accuracy,merge_seconds,weights,error\n"
            "0001,2,finished,-1,1,,1.000,kept,\n"
            "0000,1,finished,-2,2,,1.000,dropped,\n"
            "0002,3,pending,,,,,,\n");
  const std::string md = recall::read_text_file(plan.dir + "/results.md");
  EXPECT_NE(md.find("Best point: 0001 (metric -1), its weights kept in points/0001/out.\n"
                    "Weights (keep_weights: best): kept for point 0001, dropped for the 1 other finished point.\n"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| merge s | weights |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1 | 0001 | 2 | -1 | 1 | - | 1.0 | kept |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 2 | 0000 | 1 | -2 | 2 | - | 1.0 | dropped |"), std::string::npos) << md;
}
