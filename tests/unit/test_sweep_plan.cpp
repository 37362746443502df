// Sweep specs and plans: grid order, explicit points, resolved configs, index.csv, errors with
// the spec's line and column (inline configs too), nothing written for an invalid point; the
// example configs in configs/ parse.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "recall/config/merge_config.h"
#include "recall/sweep/plan.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using recall::testing::expect_error;
using recall::testing::TempDir;

namespace {

const char* kBase =
    "models:\n"
    "  - {name: a, path: /m/a}\n"
    "  - {name: b, path: /m/b}\n"
    "method: recall\n"
    "data: /d/samples.jsonl\n"
    "output: {dir: /out/unused}\n";

std::string write(const TempDir& d, const std::string& name, const std::string& text) {
  std::ofstream(d.file(name)) << text;
  return d.file(name);
}

}  // namespace

TEST(SweepSpec, GridIsACartesianProductWithTheLastKeyFastestThenPoints) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const std::string spec = write(d, "spec.yaml",
                                 "base_config: base.yaml\n"
                                 "grid:\n"
                                 "  recall.temperature: [0.5, 2]\n"
                                 "  typical.clusters: [4, 8, 16]\n"
                                 "points:\n"
                                 "  - {method: linear, params.weight: [1, 3]}\n");
  const recall::SweepSpec s = recall::load_sweep_spec(spec);
  ASSERT_EQ(s.points.size(), 7u);
  EXPECT_EQ(s.keys, (std::vector<std::string>{"recall.temperature", "typical.clusters", "method", "params.weight"}));
  const std::vector<std::pair<std::string, std::string>> want[] = {
      {{"recall.temperature", "0.5"}, {"typical.clusters", "4"}}, {{"recall.temperature", "0.5"}, {"typical.clusters", "8"}},
      {{"recall.temperature", "0.5"}, {"typical.clusters", "16"}}, {{"recall.temperature", "2"}, {"typical.clusters", "4"}},
      {{"recall.temperature", "2"}, {"typical.clusters", "8"}},   {{"recall.temperature", "2"}, {"typical.clusters", "16"}},
      {{"method", "linear"}, {"params.weight", "[1, 3]"}}};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(s.points[i].overrides, want[i]) << "point " << i;
  EXPECT_EQ(s.points[6].label, "points[0]");
  EXPECT_EQ(s.points[6].where, spec + ":6:5");
  EXPECT_EQ(s.base_where, d.file("base.yaml"));
}

TEST(SweepSpec, NoGridMeansOnePointOfTheBaseConfig) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const recall::SweepSpec s = recall::load_sweep_spec(write(d, "spec.yaml", "base_config: base.yaml\n"));
  ASSERT_EQ(s.points.size(), 1u);
  EXPECT_TRUE(s.points[0].overrides.empty());
  EXPECT_TRUE(s.keys.empty());
}

TEST(SweepSpec, EvalSets) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const recall::SweepSpec s = recall::load_sweep_spec(write(
      d, "spec.yaml",
      "base_config: base.yaml\neval:\n  data: [{name: qa, path: /e/qa.jsonl}, /e/stories.jsonl]\n  batch: 4\n  dtype: bfloat16\n"));
  ASSERT_EQ(s.eval.sets.size(), 2u);
  EXPECT_EQ(s.eval.sets[0].name, "qa");
  EXPECT_EQ(s.eval.sets[1].name, "stories");
  EXPECT_EQ(s.eval.sets[1].path, "/e/stories.jsonl");
  EXPECT_EQ(s.eval.batch, 4);
  EXPECT_EQ(s.eval.dtype, "bfloat16");
}

TEST(SweepSpec, ErrorsNameTheSpecLineAndColumn) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const std::string where = d.file("s.yaml");
  auto parse = [&](const std::string& text) { recall::parse_sweep_spec(text, where); };
  expect_error([&] { parse("base_config: base.yaml\ngird: {a: [1]}\n"); },
               {where + ":2:1: unknown key 'gird'", "allowed here: base_config, config, grid, points, eval"});
  expect_error([&] { parse("base_config: base.yaml\ngrid:\n  recall.temperature: 0.5\n"); },
               {where + ":3:23: grid 'recall.temperature' must be a non-empty list of values, got '0.5'"});
  expect_error([&] { parse("base_config: base.yaml\ngrid:\n  output.dir: [/a, /b]\n"); },
               {where + ":3:3: 'output.dir' cannot be swept"});
  expect_error([&] { parse("base_config: nope.yaml\n"); }, {where + ":1:14: base_config '", "nope.yaml' does not exist"});
  expect_error([&] { parse("grid: {a: [1]}\n"); }, {where + ": missing 'base_config'"});
  expect_error([&] { parse("base_config: base.yaml\ngrid: {a: [1\n"); }, {where + ":", "not valid YAML"});
  expect_error([&] { parse("base_config: base.yaml\neval: {data: [{name: 'a b', path: x}]}\n"); },
               {where + ":2:15: eval set name 'a b' must use only letters"});
  expect_error([&] { parse("base_config: base.yaml\npoints:\n  - 3\n"); }, {where + ":3:5: points[0] must be a mapping"});
}

TEST(SweepSpec, InlineConfigErrorsPointIntoTheSpec) {
  TempDir d;
  const std::string where = d.file("s.yaml");
  // The bad value sits on line 6, column 17 of the spec.
  const std::string text =
      "grid:\n"
      "  recall.temperature: [1]\n"
      "config:\n"
      "  models: [{name: a, path: /m/a}, {name: b, path: /m/b}]\n"
      "  data: /d.jsonl\n"
      "  typical: {seed: minus-one}\n"
      "  output: {dir: /o}\n";
  const recall::SweepSpec s = recall::parse_sweep_spec(text, where);
  expect_error([&] { recall::write_sweep_plan(s, d.file("sweep")); },
               {where + ":2:24: grid point 0 (recall.temperature=1): ", where + ":6:19: 'typical.seed' must be"});
  EXPECT_FALSE(recall::path_exists(d.file("sweep")));
  EXPECT_FALSE(recall::path_exists(d.file("sweep.partial")));
}

TEST(SweepPlan, WritesResolvedConfigsIndexAndPlan) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const recall::SweepSpec s = recall::load_sweep_spec(write(d, "spec.yaml",
                                                            "base_config: base.yaml\n"
                                                            "grid: {recall.temperature: [0.5, 2], kernel.kind: [rbf, linear_cka]}\n"
                                                            "points: [{method: linear, params.weight: [1, 3]}]\n"
                                                            "eval: {data: [{name: qa, path: /e/qa.jsonl}]}\n"));
  const recall::SweepPlan p = recall::write_sweep_plan(s, d.file("sweep"));
  ASSERT_EQ(p.points.size(), 5u);
  EXPECT_EQ(p.points[4].dir, d.file("sweep/points/0004"));
  // Each point's config is complete: it parses alone, with its values and its own output.dir.
  for (const recall::SweepPoint& pt : p.points) {
    const recall::MergeConfig c = recall::load_merge_config(pt.dir + "/config.yaml");
    EXPECT_EQ(c.output.dir, pt.dir + "/out");
    EXPECT_EQ(c.models[1].path, "/m/b");
  }
  const recall::MergeConfig c1 = recall::load_merge_config(p.points[1].dir + "/config.yaml");
  EXPECT_EQ(c1.recall.temperature, std::vector<double>{0.5});
  EXPECT_EQ(c1.kernel.kind, recall::SimilarityKind::LinearCka);
  const recall::MergeConfig c4 = recall::load_merge_config(p.points[4].dir + "/config.yaml");
  EXPECT_EQ(c4.method->name, "linear");
  EXPECT_EQ(c4.params.at("weight").entries.at(0).values, (std::vector<double>{1, 3}));  // a gradient
  EXPECT_EQ(c4.recall.temperature, std::vector<double>{1.0});
  EXPECT_EQ(recall::read_text_file(d.file("sweep/index.csv")),
            "point,recall.temperature,kernel.kind,method,params.weight\n"
            "0000,0.5,rbf,recall,\n"
            "0001,0.5,linear_cka,recall,\n"
            "0002,2,rbf,recall,\n"
            "0003,2,linear_cka,recall,\n"
            "0004,1,rbf,linear,\"[1, 3]\"\n");
  const recall::SweepPlan back = recall::load_sweep_plan(d.file("sweep"));
  EXPECT_EQ(back.keys, p.keys);
  ASSERT_EQ(back.points.size(), 5u);
  EXPECT_EQ(back.points[4].values, p.points[4].values);
  ASSERT_EQ(back.eval.sets.size(), 1u);
  EXPECT_EQ(back.eval.sets[0].path, "/e/qa.jsonl");
  EXPECT_TRUE(recall::path_exists(d.file("sweep/spec.yaml")));
  expect_error([&] { recall::write_sweep_plan(s, d.file("sweep")); }, {"sweep directory '", "already exists"});
}

TEST(SweepPlan, AnInvalidPointFailsNamingItAndWritesNothing) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const std::string spec = write(d, "spec.yaml",
                                 "base_config: base.yaml\n"
                                 "grid:\n"
                                 "  recall.temperature: [1, -1]\n");
  const recall::SweepSpec s = recall::load_sweep_spec(spec);
  expect_error([&] { recall::write_sweep_plan(s, d.file("sweep")); },
               {spec + ":3:27: grid point 1 (recall.temperature=-1): ", "'recall.temperature' must be a finite number in [0, 1e+06], got '-1'"});
  EXPECT_FALSE(recall::path_exists(d.file("sweep")));
  const recall::SweepSpec bad = recall::parse_sweep_spec("base_config: base.yaml\npoints: [{typical.clustrs: 3}]\n",
                                                         d.file("spec.yaml"));
  expect_error([&] { recall::write_sweep_plan(bad, d.file("sweep")); },
               {"points[0] (typical.clustrs=3): ", "unknown key 'typical.clustrs'"});
}

TEST(SweepPlan, LoadRejectsWhatIsNotASweep) {
  TempDir d;
  expect_error([&] { recall::load_sweep_plan(d.path()); }, {"is not a sweep directory", "sweep.json is missing"});
  write(d, "sweep.json", "{\"format\": \"other\"}");
  expect_error([&] { recall::load_sweep_plan(d.path()); }, {"sweep.json: format is 'other', expected 'recall-sweep-1'"});
}

TEST(SweepPlan, CsvFieldsAndYamlValues) {
  EXPECT_EQ(recall::csv_field("plain"), "plain");
  EXPECT_EQ(recall::csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(recall::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(recall::yaml_value_at("a: {b: [1, 2], c: x}\n", "a.b"), "[1, 2]");
  EXPECT_EQ(recall::yaml_value_at("a: {b: [1, 2], c: x}\n", "a.c"), "x");
  EXPECT_EQ(recall::yaml_value_at("a: {b: [1, 2], c: x}\n", "a.d"), "");
  EXPECT_EQ(recall::sweep_point_name(12), "0012");
  // Numbers as written, not as yaml-cpp's 17 significant digits.
  EXPECT_EQ(recall::yaml_value_at("a: 0.10000000000000001\n", "a"), "0.1");
  EXPECT_EQ(recall::yaml_value_at("a: 1.0000000000000001e-05\n", "a"), "1e-05");
  EXPECT_EQ(recall::yaml_value_at("a: [0.10000000000000001, 3, x]\n", "a"), "[0.1, 3, x]");
  EXPECT_EQ(recall::yaml_value_at("a: 12345678901234567890\n", "a"), "12345678901234567890");
  EXPECT_EQ(recall::yaml_value_at("a: 1.2.3\n", "a"), "1.2.3");
  EXPECT_EQ(recall::shortest_number("0.30000000000000004"), "0.30000000000000004");  // that is 0.1 + 0.2
}

TEST(SweepPlan, IndexCsvPrintsShortNumbers) {
  TempDir d;
  write(d, "base.yaml", kBase);
  const recall::SweepSpec s = recall::load_sweep_spec(
      write(d, "spec.yaml",
            "base_config: base.yaml\ngrid: {recall.temperature: [0.1, 0.7, 1e-5]}\n"
            "points: [{method: linear, params.weight: [0.1, 0.9]}]\n"));
  recall::write_sweep_plan(s, d.file("sweep"));
  EXPECT_EQ(recall::read_text_file(d.file("sweep/index.csv")),
            "point,recall.temperature,method,params.weight\n"
            "0000,0.1,recall,\n"
            "0001,0.7,recall,\n"
            "0002,1e-05,recall,\n"
            "0003,1,linear,\"[0.1, 0.9]\"\n");
}

// Every example under configs/ parses: merge configs with the merge config parser, sweep specs
// (sweep-*.yaml) with the sweep parser and their points with the merge config parser.
TEST(SweepConfigs, ExampleConfigsParse) {
  // RECALL_SOURCE_DIR comes from CMake: __FILE__ is relative to the build directory when ccache
  // rewrites paths (CCACHE_BASEDIR), so it cannot locate configs/.
  const std::string dir = std::string(RECALL_SOURCE_DIR) + "/configs";
  DIR* dp = ::opendir(dir.c_str());
  ASSERT_NE(dp, nullptr) << dir;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(dp)) {
    const std::string n = e->d_name;
    if (n.size() > 5 && n.substr(n.size() - 5) == ".yaml") names.push_back(n);
  }
  ::closedir(dp);
  int merge = 0, sweeps = 0;
  for (const std::string& n : names) {
    SCOPED_TRACE(n);
    const std::string path = dir + "/" + n;
    if (n.rfind("sweep-", 0) == 0) {
      const recall::SweepSpec s = recall::load_sweep_spec(path);
      EXPECT_GT(s.points.size(), 1u);
      for (const auto& p : s.points) {
        std::vector<std::string> ov;
        for (const auto& [k, v] : p.overrides) ov.push_back(k + "=" + v);
        EXPECT_NO_THROW(recall::parse_merge_config(s.base_text, s.base_where, ov)) << p.label;
      }
      ++sweeps;
    } else {
      const recall::MergeConfig c = recall::load_merge_config(path);
      // The cluster examples use every rank: models x stages cells, one per GPU.
      EXPECT_EQ(c.parallel.device, recall::Device::Cuda);
      const int64_t cells = static_cast<int64_t>(c.models.size()) * c.parallel.stages;
      if (n.find("1node-8gpu") != std::string::npos) {
        EXPECT_EQ(cells, 8);
      }
      if (n.find("4node-8gpu") != std::string::npos) {
        EXPECT_EQ(cells, 32);
      }
      ++merge;
    }
  }
  EXPECT_GE(merge, 3);
  EXPECT_GE(sweeps, 1);
}
