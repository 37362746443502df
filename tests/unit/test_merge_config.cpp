// The merge config: defaults, overrides, method parameters in mergekit's forms, and errors that
// carry the YAML line and column (or the --set argument).
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

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

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

}  // namespace

TEST(MergeConfig, Defaults) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml");
  ASSERT_EQ(c.models.size(), 3u);
  EXPECT_EQ(c.models[1].name, "math");
  EXPECT_EQ(c.reference, "code");
  EXPECT_EQ(c.method->name, "recall");
  EXPECT_EQ(c.typical.clusters, 32);
  EXPECT_EQ(c.typical.hidden_state, -1);
  EXPECT_EQ(c.kernel.kind, SimilarityKind::Rbf);
  EXPECT_DOUBLE_EQ(c.kernel.bandwidth_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.kernel.cka_threshold, 0.5);
  EXPECT_EQ(c.recall.temperature, std::vector<double>{1.0});
  EXPECT_EQ(c.recall.non_block, NonBlockPolicy::Uniform);
  EXPECT_EQ(c.recall.granularity, Granularity::Block);
  EXPECT_EQ(c.parallel.stages, 1);
  EXPECT_EQ(c.parallel.device, Device::Cpu);
  EXPECT_EQ(c.output.dtype, DType::BF16);
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
                                      "output.overwrite=true", "kernel.kind=rbf_cka", "typical.clusters=8",
                                      "output.dtype=float32", "parallel.device=cuda", "recall.non_block=reference"});
  EXPECT_EQ(c.typical.clusters, 8);
  EXPECT_DOUBLE_EQ(c.kernel.bandwidth_factor, 2.5);
  EXPECT_EQ(c.parallel.stages, 4);
  EXPECT_TRUE(c.output.overwrite);
  EXPECT_EQ(c.kernel.kind, SimilarityKind::RbfCka);
  EXPECT_EQ(c.output.dtype, DType::F32);
  EXPECT_EQ(c.parallel.device, Device::Cuda);
  EXPECT_EQ(c.recall.non_block, NonBlockPolicy::Reference);
}

TEST(MergeConfig, ByteSizes) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml", {"output.shard_bytes=2GB", "memory_budget=1GiB"});
  EXPECT_EQ(c.output.shard_bytes, 2000000000u);
  EXPECT_EQ(c.memory_budget, 1073741824u);
  EXPECT_HAS(error_of(kMinimal, {"output.shard_bytes=lots"}), "byte count");
  EXPECT_HAS(error_of(kMinimal, {"output.shard_bytes=0"}), "at least 1");
  EXPECT_HAS(error_of(kMinimal, {"memory_budget=-5"}), "byte count");
  EXPECT_HAS(error_of(kMinimal, {"output.shard_bytes=5gb"}), "unknown unit 'gb'");  // the parser's reason
}

TEST(MergeConfig, UnknownKeyHasLineAndColumn) {
  std::string y = std::string(kMinimal) + "typical:\n  clusterz: 4\n";
  const std::string e = error_of(y);
  EXPECT_HAS(e, "cfg.yaml:12:3: unknown key 'typical.clusterz'");
  EXPECT_HAS(e, "allowed here: clusters, hidden_state, seed, iterations, max_samples");
}

TEST(MergeConfig, RenamedKeyNamesItsNewName) {
  const std::string e = error_of(std::string(kMinimal) + "typical: {layer: 2}\n");
  EXPECT_HAS(e, "cfg.yaml:11:11: unknown key 'typical.layer' (renamed to 'typical.hidden_state')");
}

TEST(MergeConfig, DuplicateKeysAreErrors) {
  EXPECT_HAS(error_of(std::string(kMinimal) + "max_length: 4\nmax_length: 8\n"),
             "cfg.yaml:12:1: key 'max_length' appears twice (first at cfg.yaml:11:1)");
  EXPECT_HAS(error_of(std::string(kMinimal) + "typical:\n  seed: 1\n  seed: 2\n"), "key 'typical.seed' appears twice");
}

TEST(MergeConfig, WrongTypeHasLineAndColumn) {
  std::string y = std::string(kMinimal) + "typical:\n  clusters: many\n";
  EXPECT_HAS(error_of(y), "cfg.yaml:12:13: 'typical.clusters' must be an integer in [1, 1048576], got 'many'");
}

TEST(MergeConfig, SetErrorsNameTheArgument) {
  EXPECT_HAS(error_of(kMinimal, {"typical.clusters=0"}),
             "--set 'typical.clusters=0': 'typical.clusters' must be an integer in [1, 1048576], got '0'");
  EXPECT_HAS(error_of(kMinimal, {"kernel.kindd=rbf"}), "--set 'kernel.kindd=rbf': unknown key 'kernel.kindd'");
}

// The data-aware methods and AIM: what they need, said at decode time with the key's position.
TEST(MergeConfig, DataAwareMethodsAndAimNeedWhatTheyUse) {
  EXPECT_HAS(error_of(kMinimal, {"method=regmean", "data=''"}), "method 'regmean' needs 'data' (JSONL calibration samples)");
  EXPECT_HAS(error_of(kMinimal, {"method=fisher", "data=''"}), "method 'fisher' needs 'data'");
  EXPECT_HAS(error_of(kMinimal, {"method=regmean_plusplus", "data=''"}), "method 'regmean_plusplus' needs 'data'");
  EXPECT_HAS(error_of(kMinimal, {"method=regmean_plusplus", "params.alpha=-0.1"}), "alpha");
  EXPECT_HAS(error_of(kMinimal, {"method=ties", "aim.omega=0.4", "data=''"}), "aim needs 'data'");
  EXPECT_HAS(error_of(kMinimal, {"method=linear", "aim.omega=0.4"}),
             "aim shrinks task vectors (merged - base): it needs 'base' and a method that uses it, not 'linear'");
  EXPECT_HAS(error_of(kMinimal, {"method=ties", "base=''", "aim.omega=0.4"}), "needs 'base'");
  EXPECT_HAS(error_of(kMinimal, {"aim.omega=1.5"}), "'aim.omega' must be a finite number in [0, 1]");
  EXPECT_HAS(error_of(kMinimal, {"calibration.samples=-1"}), "'calibration.samples'");
  EXPECT_HAS(error_of(kMinimal, {"method=regmean", "params.alpha=2"}), "alpha");
  const MergeConfig ok = parse_merge_config(kMinimal, "cfg.yaml", {"method=ties", "aim.omega=0.4"});
  EXPECT_TRUE(ok.aim.enabled());
  EXPECT_TRUE(ok.needs_statistics());
  EXPECT_FALSE(parse_merge_config(kMinimal, "cfg.yaml", {"method=ties"}).needs_statistics());
  EXPECT_EQ(parse_merge_config(kMinimal, "cfg.yaml", {"method=regmean"}).calibration.samples, 256);
}

TEST(MergeConfig, InvalidYamlNamesPosition) {
  const std::string e = error_of("models: [\n");
  EXPECT_HAS(e, "cfg.yaml:");
  EXPECT_HAS(e, "not valid YAML");
}

TEST(MergeConfig, EveryValueCheckedAtDecode) {
  EXPECT_HAS(error_of(kMinimal, {"reference=art"}), "'reference' is 'art', which is not among the models");
  EXPECT_HAS(error_of(kMinimal, {"method=magic"}), "unknown merge method 'magic'; expected one of: recall, linear");
  EXPECT_HAS(error_of(kMinimal, {"method=slerp"}), "method 'slerp' merges at most 2 models, got 3");
  EXPECT_HAS(error_of(kMinimal, {"data=''"}), "needs 'data'");
  EXPECT_HAS(error_of(kMinimal, {"output.dtype=int8"}), "'output.dtype' must be one of bfloat16, float16, float32");
  EXPECT_HAS(error_of(kMinimal, {"recall.temperature=-1"}), "'recall.temperature' must be a finite number in [0,");
  EXPECT_HAS(error_of(kMinimal, {"recall.temperature=.inf"}), "'recall.temperature' must be a finite number");
  EXPECT_HAS(error_of(kMinimal, {"kernel.bandwidth_factor=.inf"}), "'kernel.bandwidth_factor' must be a finite number");
  EXPECT_HAS(error_of(kMinimal, {"kernel.gamma=.nan"}), "'kernel.gamma' must be a finite number");
  EXPECT_HAS(error_of(kMinimal, {"kernel.bandwidth_factor=0"}), "in (0, 1e+12]");
  EXPECT_HAS(error_of(kMinimal, {"typical.seed=-1"}), "'typical.seed' must be a non-negative integer");
  EXPECT_HAS(error_of("models:\n  - {name: a, path: /a}\noutput: {dir: /o}\nmethod: linear\n"), "at least 2");
  EXPECT_HAS(error_of("models:\n  - {name: a, path: /a}\n  - {name: a, path: /b}\n"), "duplicate model name 'a'");
  std::string y = kMinimal;
  y.replace(y.find("base: base\n"), 11, "");
  EXPECT_HAS(error_of(y, {"method=ties"}), "method 'ties' needs 'base'");
}

TEST(MergeConfig, BoundsAgainstHostileFiles) {
  EXPECT_HAS(error_of(kMinimal, {"data=" + std::string(5000, 'x')}), "'data' is 5000 bytes long; at most 4096");
  std::string big = std::string(kMinimal) + "params:\n  weight: [";
  for (int i = 0; i < 70000; ++i) big += "1,";
  big += "1]\n";
  EXPECT_HAS(error_of(big, {"method=linear"}), "'params.weight' has 70001 entries; at most 65536");
  EXPECT_HAS(error_of(std::string(17u << 20, ' ')), "a merge config is at most");
  EXPECT_HAS(error_of(std::string(100, '[')), "nested more than 32 deep");
}

TEST(MergeConfig, MethodParametersInMergekitForms) {
  MergeConfig c = parse_merge_config(std::string(kMinimal) + R"(params:
  lambda: 0.8
  density: [0.2, 0.6, 1.0]
  weight:
    - {filter: self_attn, value: 0.5}
    - {filter: mlp, value: [0, 1]}
    - {value: 2}
)", "cfg.yaml", {"method=ties", "reference=m", "models=[{name: base, path: /b}, {name: m, path: /m, params: {density: 0.9, weight: 3}}]"});
  ASSERT_EQ(c.method->name, "ties");
  EXPECT_DOUBLE_EQ(*c.params.at("lambda").resolve("x", 0, false), 0.8);
  EXPECT_DOUBLE_EQ(*c.params.at("density").resolve("x", 0.25, false), 0.4);  // 0.2 + 0.5 * (0.6 - 0.2)
  EXPECT_DOUBLE_EQ(*c.params.at("density").resolve("x", 1.0, false), 1.0);
  const ParamSetting& w = c.params.at("weight");
  EXPECT_DOUBLE_EQ(*w.resolve("model.layers.0.self_attn.q_proj.weight", 0.7, false), 0.5);
  EXPECT_DOUBLE_EQ(*w.resolve("model.layers.0.mlp.up_proj.weight", 0.25, false), 0.25);
  EXPECT_DOUBLE_EQ(*w.resolve("model.norm.weight", 0, false), 2);
  EXPECT_DOUBLE_EQ(*c.models[1].params.at("density").resolve("x", 0.5, false), 0.9);
  // The resolved YAML decodes to the same config.
  const MergeConfig d = parse_merge_config(to_yaml(c), "resolved.yaml");
  EXPECT_EQ(to_yaml(c), to_yaml(d));
}

TEST(MergeConfig, ResolvedNumbersAreWrittenAsTheUserWroteThem) {
  // yaml-cpp writes 17 significant digits (0.69999999999999996); the resolved config, the report
  // and the job log give each number as its shortest exact text, and it reads back the same.
  const MergeConfig c = parse_merge_config(R"(
models:
  - {name: base, path: /b}
  - {name: m, path: /m, params: {weight: 0.7}}
  - {name: n, path: /n, params: {weight: [0.1, 0.3]}}
method: ties
base: base
params: {density: 0.3, lambda: 1e-05}
recall: {temperature: 0.1}
output: {dir: /o}
)", "cfg.yaml");
  const std::string y = to_yaml(c);
  EXPECT_HAS(y, "{weight: 0.7}");
  EXPECT_HAS(y, "{weight: [0.1, 0.3]}");
  EXPECT_HAS(y, "density: 0.3\n");
  EXPECT_HAS(y, "lambda: 1e-05\n");
  EXPECT_HAS(y, "temperature: 0.1\n");
  EXPECT_FALSE(std::regex_search(y, std::regex("[0-9]\\.[0-9]{10}"))) << y;  // no 17-digit decimals
  EXPECT_EQ(to_yaml(parse_merge_config(y, "resolved.yaml")), y);
}

TEST(MergeConfig, GradientsFollowMergekit) {
  // mergekit/config.py evaluate_setting: scaled = t (n - 1), i0 = int(scaled), linear between
  // values[i0] and values[min(n - 1, i0 + 1)]; booleans pick values[int(t (n - 1))].
  ParamSetting g{{{"", {0.0, 0.5, 1.0, 0.25}}}};
  EXPECT_DOUBLE_EQ(*g.resolve("t", 0.0, false), 0.0);
  EXPECT_DOUBLE_EQ(*g.resolve("t", 1.0 / 3, false), 0.5);
  EXPECT_DOUBLE_EQ(*g.resolve("t", 0.5, false), 0.75);
  EXPECT_DOUBLE_EQ(*g.resolve("t", 1.0, false), 0.25);
  EXPECT_DOUBLE_EQ(*g.resolve("t", 0.5, true), 0.5);  // int(1.5) = 1
  EXPECT_DOUBLE_EQ(*g.resolve("t", 0.7, true), 1.0);  // int(2.1) = 2
  EXPECT_DOUBLE_EQ(gradient_position(0, 8), 0.0);
  EXPECT_DOUBLE_EQ(gradient_position(7, 8), 1.0);
  EXPECT_DOUBLE_EQ(gradient_position(3, 7), 0.5);
  EXPECT_DOUBLE_EQ(gradient_position(-1, 8), 0.0);  // outside the blocks
  EXPECT_DOUBLE_EQ(gradient_position(0, 1), 1.0);
  ParamSetting f{{{"mlp", {1.0}}}};
  EXPECT_FALSE(f.resolve("model.layers.0.self_attn.q_proj.weight", 0, false).has_value());
  EXPECT_TRUE(f.resolve("model.layers.0.mlp.up_proj.weight", 0, false).has_value());
  ParamSetting star{{{"*", {3.0}}}};
  EXPECT_DOUBLE_EQ(*star.resolve("anything", 0, false), 3.0);
}

TEST(MergeConfig, ParameterErrors) {
  const std::string y = kMinimal;
  auto ties_error = [&](const std::string& text, std::vector<std::string> overrides = {}) {
    overrides.insert(overrides.begin(), "method=ties");
    return error_of(text, overrides);
  };
  EXPECT_HAS(ties_error(y + "params: {densty: 0.5}\n"),
             "cfg.yaml:11:10: unknown parameter 'params.densty' of method 'ties'; its parameters: weight, density, "
             "lambda, normalize, rescale");
  EXPECT_HAS(ties_error(y + "params: {density: 0}\n"), "'params.density' must be a finite number in (0, 1]");
  EXPECT_HAS(ties_error(y + "params: {density: [0.5, 2]}\n"), "'params.density[1]' must be a finite number in (0, 1]");
  EXPECT_HAS(ties_error(y + "params: {normalize: maybe}\n"), "'params.normalize' must be true or false");
  EXPECT_HAS(ties_error(y + "params: {weight: [{filter: mlp}]}\n"), "'params.weight[0]' needs a 'value'");
  EXPECT_HAS(ties_error(y + "params: {weight: [{filter: mlp, value: 1, extra: 2}]}\n"),
             "unknown key 'params.weight[0].extra'");
  EXPECT_HAS(ties_error(y, {"models=[{name: b, path: /b}, {name: m, path: /m, params: {lambda: 2}}]", "base=b"}),
             "'lambda' is shared by every model of method 'ties'; set it under the top-level 'params'");
  // A parameter of another method is accepted with a note (sweeps vary the method), and checked.
  const MergeConfig c = parse_merge_config(y + "params: {t: 0.3}\n", "cfg.yaml", {"method=ties"});
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_HAS(c.notes[0], "'params.t' is not a parameter of method 'ties' and is ignored");
  EXPECT_HAS(ties_error(y + "params: {t: 3}\n"), "'params.t' must be a finite number in [0, 1]");
}

TEST(MergeConfig, ResolvedYamlRoundTrips) {
  MergeConfig c = parse_merge_config(kMinimal, "cfg.yaml", {"typical.clusters=5", "kernel.kind=linear_cka"});
  MergeConfig d = parse_merge_config(to_yaml(c), "resolved.yaml");
  EXPECT_EQ(to_yaml(c), to_yaml(d));
  EXPECT_EQ(d.typical.clusters, 5);
  EXPECT_EQ(d.kernel.kind, SimilarityKind::LinearCka);
}

TEST(MergeConfig, OriginNamesWhereEachKeyWasSet) {
  MergeConfig c = parse_merge_config(std::string(kMinimal) + "typical: {clusters: 4}\n", "cfg.yaml",
                                     {"max_length=64"});
  EXPECT_EQ(c.origin.of("typical.clusters"), "cfg.yaml:11:21");
  EXPECT_EQ(c.origin.of("max_length"), "--set 'max_length=64'");
  EXPECT_EQ(c.origin.of("kernel.gamma"), "cfg.yaml");  // not given: the file
}

TEST(MergeConfig, NonScalarKeysAndDeepNestingAreErrors) {
  // Found by fuzz_merge_config: a mapping used as a key escaped as a yaml-cpp exception.
  const std::string e = error_of("models:\n  - {name: a, path: /a}: /a}\n  - : b\n");
  EXPECT_HAS(e, "cfg.yaml:");
}

TEST(MergeConfig, ReferenceListsEveryKeyAndMethod) {
  const std::string md = config_reference_markdown();
  for (const char* key : {"`typical.hidden_state`", "`kernel.cka_debiased`", "`parallel.merge_chunk_bytes`",
                          "`output.checkpoint_bytes`", "`memory_budget`"})
    EXPECT_HAS(md, key);
  for (const MethodSpec& m : merge_methods()) EXPECT_HAS(md, "### `" + m.name + "`");
}
