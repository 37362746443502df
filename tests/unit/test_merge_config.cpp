// The merge config: defaults, overrides, and errors that carry the YAML line and column.
#include <gtest/gtest.h>

#include "recall/config/merge_config.h"
#include "recall/util/error.h"

using namespace recall;

namespace {

const char* kMinimal = R"(models:
  - {name: base, path: /m/base}
  - {name: math, path: /m/math}
  - {name: code, path: /m/code}
base: base
reference: code
method: recall
data: /d/code.jsonl
output:
  dir: /out/merged
)";

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_merge_config(yaml, "cfg.yaml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(MergeConfig, DefaultsFromDesign) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml");
  ASSERT_EQ(c.models.size(), 3u);
  EXPECT_EQ(c.models[1].name, "math");
  EXPECT_EQ(c.reference, "code");
  EXPECT_EQ(c.typical.clusters, 32);
  EXPECT_EQ(c.typical.layer, -1);
  EXPECT_EQ(c.kernel.kind, "rbf");
  EXPECT_DOUBLE_EQ(c.kernel.bandwidth_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.recall.temperature, 1.0);
  EXPECT_EQ(c.recall.non_block, "uniform");
  EXPECT_EQ(c.parallel.stages, 1);
  EXPECT_EQ(c.output.dtype, "bfloat16");
  EXPECT_FALSE(c.output.overwrite);
  EXPECT_EQ(c.model_index("code"), 2u);
}

TEST(MergeConfig, ReferenceDefaultsToLastModel) {
  std::string y = kMinimal;
  y.replace(y.find("reference: code\n"), 16, "");
  EXPECT_EQ(parse_merge_config(y, "cfg.yaml").reference, "code");
}

TEST(MergeConfig, OverridesApplyInOrder) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml",
                                     {"typical.clusters=16", "kernel.bandwidth_factor=2.5", "parallel.stages=4",
                                      "output.overwrite=true", "params.weight=[1, 2, 3]", "typical.clusters=8"});
  EXPECT_EQ(c.typical.clusters, 8);
  EXPECT_DOUBLE_EQ(c.kernel.bandwidth_factor, 2.5);
  EXPECT_EQ(c.parallel.stages, 4);
  EXPECT_TRUE(c.output.overwrite);
  EXPECT_EQ(c.params.weight, (std::vector<double>{1, 2, 3}));
}

TEST(MergeConfig, ByteSizes) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml", {"output.shard_bytes=2GB", "memory_budget=1GiB"});
  EXPECT_EQ(c.output.shard_bytes, 2000000000u);
  EXPECT_EQ(c.memory_budget, 1073741824u);
  EXPECT_NE(error_of(kMinimal, {"output.shard_bytes=lots"}).find("byte count"), std::string::npos);
}

TEST(MergeConfig, UnknownKeyHasLineAndColumn) {
  std::string y = std::string(kMinimal) + "typical:\n  clusterz: 4\n";
  const std::string e = error_of(y);
  EXPECT_NE(e.find("cfg.yaml:12:3: unknown key 'typical.clusterz'"), std::string::npos) << e;
  EXPECT_NE(e.find("allowed here: clusters"), std::string::npos) << e;
}

TEST(MergeConfig, WrongTypeHasLineAndColumn) {
  std::string y = std::string(kMinimal) + "typical:\n  clusters: many\n";
  const std::string e = error_of(y);
  EXPECT_NE(e.find("cfg.yaml:12:13: 'typical.clusters' must be an integer, got 'many'"), std::string::npos) << e;
}

TEST(MergeConfig, InvalidYamlNamesPosition) {
  const std::string e = error_of("models: [\n");
  EXPECT_NE(e.find("cfg.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid YAML"), std::string::npos) << e;
}

TEST(MergeConfig, ValidationMessages) {
  EXPECT_NE(error_of(kMinimal, {"reference=art"}).find("'reference' is 'art', which is not among the models"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"method=magic"}).find("'method' is 'magic'; expected one of: recall, linear"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"method=slerp"}).find("exactly 2 models"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"data=''"}).find("needs 'data'"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"params.weight=[1, 2]"}).find("2 entries for 3 models"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"output.dtype=int8"}).find("'output.dtype' is 'int8'"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"params.density=0"}).find("(0, 1]"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"recall.temperature=-1"}).find("temperature"), std::string::npos);
  EXPECT_NE(error_of("models:\n  - {name: a, path: /a}\noutput: {dir: /o}\nmethod: linear\n").find("at least 2"),
            std::string::npos);
  EXPECT_NE(error_of("models:\n  - {name: a, path: /a}\n  - {name: a, path: /b}\n").find("duplicate model name 'a'"),
            std::string::npos);
  std::string y = kMinimal;
  y.replace(y.find("base: base\n"), 11, "");
  EXPECT_NE(error_of(y, {"method=ties"}).find("method 'ties' needs 'base'"), std::string::npos);
}

TEST(MergeConfig, ResolvedYamlRoundTrips) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml", {"typical.clusters=5", "params.weight=[0.2, 0.3, 0.5]"});
  MergeConfig d = parse_merge_config(to_yaml(c), "resolved.yaml");
  EXPECT_EQ(to_yaml(c), to_yaml(d));
  EXPECT_EQ(d.typical.clusters, 5);
  EXPECT_EQ(d.params.weight, c.params.weight);
}

TEST(MergeConfig, NonScalarKeysAndDeepNestingAreErrors) {
  // Found by fuzz_merge_config: a mapping used as a key escaped as a yaml-cpp exception.
  const std::string e = error_of("models:\n  - {name: a, path: /a}: /a}\n  - : b\n");
  EXPECT_NE(e.find("cfg.yaml:"), std::string::npos) << e;
  EXPECT_NE(error_of(std::string(100, '[')).find("nested more than 32 deep"), std::string::npos);
}
