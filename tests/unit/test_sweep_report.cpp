// The sweep report on a hand-built sweep directory: statuses (finished, failed with its error,
// pending), the metric (mean accuracy when any set has one, else -loss), best-first order, the
// CSV, markdown and SVG contents.
#include <gtest/gtest.h>

#include <fstream>

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

// A plan of 4 points over recall.temperature with eval sets `sets`, without running anything.
recall::SweepPlan make_sweep(const TempDir& d, const std::string& sets) {
  put(d.file("base.yaml"), "models: [{name: a, path: /m/a}, {name: b, path: /m/b}]\nmethod: linear\noutput: {dir: /o}\n");
  put(d.file("spec.yaml"), "base_config: base.yaml\ngrid: {recall.temperature: [0.5, 1, 2, 4]}\neval: {data: " + sets + "}\n");
  return recall::write_sweep_plan(recall::load_sweep_spec(d.file("spec.yaml")), d.file("sweep"));
}

void finish_merge(const recall::SweepPoint& p, double seconds) {
  put(p.dir + "/out/manifest.json", "{}");
  put(p.dir + "/out/report.json", "{\"timings\": {\"extract\": " + std::to_string(seconds / 2) +
                                      ", \"merge\": " + std::to_string(seconds / 2) + "}}");
}

std::string text_eval(double loss, int tokens) {
  return "{\"summary\": {\"text\": {\"samples\": 3, \"tokens\": " + std::to_string(tokens) +
         ", \"loss\": " + std::to_string(loss) + ", \"perplexity\": 1}}}";
}

}  // namespace

TEST(SweepReport, NegativeLossRanksFinishedPointsAndListsTheOthers) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "[{name: heldout, path: /e.jsonl}]");
  finish_merge(plan.points[0], 2.0);
  put(plan.points[0].dir + "/eval/heldout.json", text_eval(3.0, 10));
  finish_merge(plan.points[2], 4.0);
  put(plan.points[2].dir + "/eval/heldout.json", text_eval(2.5, 10));
  put(plan.points[1].dir + "/error.txt", "merge failed (exit status 1): recall merge: error: boom\n\ndetails\n");
  finish_merge(plan.points[3], 1.0);  // merged, evaluation missing: not finished
  const recall::SweepResults r = recall::write_sweep_report(d.file("sweep"));
  EXPECT_EQ(r.metric, "neg_mean_loss");
  ASSERT_EQ(r.points.size(), 4u);
  EXPECT_EQ(r.points[0].index, 2);
  EXPECT_DOUBLE_EQ(r.points[0].metric, -2.5);
  EXPECT_DOUBLE_EQ(r.points[0].merge_seconds, 4.0);
  EXPECT_EQ(r.points[1].index, 0);
  EXPECT_EQ(r.points[2].index, 1);
  EXPECT_EQ(r.points[2].status, "failed");
  EXPECT_EQ(r.points[2].error, "merge failed (exit status 1): recall merge: error: boom");
  EXPECT_EQ(r.points[3].status, "pending");

  const std::string csv = recall::read_text_file(d.file("sweep/results.csv"));
  EXPECT_EQ(csv,
            "point,recall.temperature,status,metric,heldout.loss,heldout.accuracy,merge_seconds,weights,error\n"
            "0002,2,finished,-2.5,2.5,,4.000,kept,\n"
            "0000,0.5,finished,-3,3,,2.000,kept,\n"
            "0001,1,failed,,,,,,merge failed (exit status 1): recall merge: error: boom\n"
            "0003,4,pending,,,,,,\n");
  const std::string md = recall::read_text_file(d.file("sweep/results.md"));
  EXPECT_NE(md.find("4 points: 2 finished, 1 failed, 1 pending."), std::string::npos) << md;
  EXPECT_NE(md.find("| 1 | 0002 | 2 | -2.5 | 2.5 | - | 4.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 2 | 0000 | 0.5 | -3 | 3 | - | 2.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("## Failed points\n\n- point 0001 (recall.temperature=1): merge failed (exit status 1): recall merge: "
                    "error: boom (see points/0001/error.txt)"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("## Pending points (not run yet)\n\n- point 0003 (recall.temperature=4)"), std::string::npos) << md;
  const std::string svg = recall::read_text_file(d.file("sweep/results.svg"));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  size_t circles = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) ++circles;
  EXPECT_EQ(circles, 2u);
  EXPECT_NE(svg.find(">recall.temperature</text>"), std::string::npos);
}

TEST(SweepReport, AccuracyIsTheMetricWhenAnySetHasIt) {
  TempDir d;
  const recall::SweepPlan plan = make_sweep(d, "[{name: mc, path: /mc.jsonl}, {name: lm, path: /lm.jsonl}]");
  const double acc[] = {0.5, 0.75, 0.25, 1.0};
  for (int i = 0; i < 4; ++i) {
    finish_merge(plan.points[i], 1.0);
    put(plan.points[i].dir + "/eval/mc.json",
        "{\"summary\": {\"choices\": {\"samples\": 4, \"tokens\": 20, \"accuracy\": " + std::to_string(acc[i]) + "}}}");
    put(plan.points[i].dir + "/eval/lm.json",
        "{\"summary\": {\"text\": {\"samples\": 1, \"tokens\": 10, \"loss\": 2.0}, "
        "\"completion\": {\"samples\": 1, \"tokens\": 30, \"loss\": 1.0, \"exact_match\": 0.0}}}");
  }
  const recall::SweepResults r = recall::gather_sweep_results(recall::load_sweep_plan(d.file("sweep")));
  EXPECT_EQ(r.metric, "mean_accuracy");
  std::vector<int> order;
  for (const auto& p : r.points) order.push_back(p.index);
  EXPECT_EQ(order, (std::vector<int>{3, 1, 0, 2}));
  // mean over both sets: mc accuracy and lm's completion exact match (0)
  EXPECT_DOUBLE_EQ(r.points[0].metric, 0.5);
  // lm's loss is token-weighted over text and completion: (2*10 + 1*30) / 40
  EXPECT_DOUBLE_EQ(r.points[0].eval.at("lm").loss, 1.25);
}

TEST(SweepReport, ABrokenEvalResultNamesTheFile) {
  TempDir d;
  put(d.file("bad.json"), "{\"summary\": 3}");
  expect_error([&] { recall::read_eval_result(d.file("bad.json")); }, {d.file("bad.json"), "not a `recall eval` result"});
}
