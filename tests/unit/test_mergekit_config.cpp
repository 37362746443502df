// mergekit configs read by recall's config decoder: the translation of each key, the keys recall
// refuses (with the file, line and column), a recall config naming a mergekit file, recall's own
// `slices`, and output.formats.
#include <gtest/gtest.h>

#include "recall/config/merge_config.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using namespace recall;

namespace {

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {"output.dir=/out/x"}) {
  try {
    parse_merge_config(yaml, "mk.yml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

const char* kTies = R"(models:
  - model: /m/instruct
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: /m/math
    parameters:
      density: 0.5
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: /m/base
parameters:
  normalize: true
  int8_mask: true
dtype: float32
out_dtype: bfloat16
)";

}  // namespace

TEST(MergekitConfig, ModelsBaseAndParameters) {
  const MergeConfig c = parse_merge_config(kTies, "mk.yml", {"output.dir=/out/x"});
  ASSERT_EQ(c.models.size(), 3u);  // the base is added after the models, as mergekit's planner does
  EXPECT_EQ(c.models[0].name, "instruct");
  EXPECT_EQ(c.models[0].path, "/m/instruct");
  EXPECT_EQ(c.models[2].name, "base");
  EXPECT_EQ(c.base, "base");
  EXPECT_EQ(c.reference, "base");  // mergekit's config.json donor
  EXPECT_EQ(c.method->name, "ties");
  EXPECT_EQ(c.output.dtype, DType::BF16);
  EXPECT_EQ(c.models[0].params.at("density").entries[0].values, (std::vector<double>{1, 0.7, 0.1}));
  EXPECT_EQ(c.models[1].params.at("weight").entries.size(), 2u);
  EXPECT_EQ(c.models[1].params.at("weight").entries[0].filter, "mlp");
  EXPECT_TRUE(c.notes.empty()) << c.notes[0];  // dtype float32 for bfloat16 outputs: recall's arithmetic
}

TEST(MergekitConfig, ComputeDtypes) {
  std::string half = kTies;
  half.replace(half.find("dtype: float32"), 14, "dtype: bfloat16");
  const MergeConfig c = parse_merge_config(half, "mk.yml", {"output.dir=/out/x"});
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_HAS(c.notes[0], "mk.yml:18:8: mergekit computes in bfloat16; recall accumulates bfloat16 outputs in float32");
  std::string wide = kTies;
  wide.replace(wide.find("dtype: float32"), 14, "dtype: float64");
  EXPECT_HAS(error_of(wide), "mk.yml:18:8: mergekit key 'dtype' is float64 with bfloat16 outputs; recall accumulates "
                             "bfloat16 outputs in float32");
  std::string f64out = kTies;
  f64out.replace(f64out.find("out_dtype: bfloat16"), 19, "out_dtype: float64");
  EXPECT_HAS(error_of(f64out), "mk.yml:19:12: mergekit key 'out_dtype' asks for float64 tensors");
}

TEST(MergekitConfig, RefusedKeysNameTheirPlace) {
  EXPECT_HAS(error_of(std::string(kTies) + "tokenizer_source: union\n"),
             "mk.yml:20:19: mergekit key 'tokenizer_source' is 'union'");
  EXPECT_HAS(error_of(std::string(kTies) + "tokenizer:\n  source: base\n  pad_to_multiple_of: 64\n"),
             "mk.yml:22:23: mergekit key 'tokenizer.pad_to_multiple_of' changes the embedding rows");
  EXPECT_HAS(error_of(std::string(kTies) + "chat_template: chatml\n"), "mk.yml:20:16: mergekit key 'chat_template'");
  EXPECT_HAS(error_of(std::string(kTies) + "name: x\n"), "mk.yml:20:1: unknown mergekit key 'name'");
  std::string hub = kTies;
  hub.replace(hub.find("/m/math"), 7, "org/math@v2");
  EXPECT_HAS(error_of(hub), "mk.yml:6:12: mergekit key 'models[1].model' names a Hugging Face Hub revision");
  EXPECT_HAS(error_of("merge_method: ties\nmodels:\n  - parameters: {weight: 1}\n"),
             "mk.yml: mergekit key 'models[0].model' is missing");
  std::string method = kTies;
  method.replace(method.find("merge_method: ties"), 18, "merge_method: arcee_fusion");
  EXPECT_HAS(error_of(method), "mk.yml:13:15: merge method 'arcee_fusion' (mergekit) is not supported");
}

TEST(MergekitConfig, TokenizerSource) {
  const MergeConfig c = parse_merge_config(std::string(kTies) + "tokenizer_source: /m/math\n", "mk.yml",
                                           {"output.dir=/out/x"});
  EXPECT_EQ(c.output.tokenizer, "math");
  EXPECT_HAS(error_of(std::string(kTies) + "tokenizer_source: /m/other\n"), "not one of the merged models");
}

TEST(MergekitConfig, SlicesAndFrankenmerges) {
  const char* y = R"(slices:
  - sources:
      - {model: /m/a, layer_range: [0, 6]}
  - sources:
      - {model: /m/b, layer_range: [2, 8], parameters: {scale: 0.5}}
merge_method: passthrough
dtype: bfloat16
)";
  const MergeConfig c = parse_merge_config(y, "mk.yml", {"output.dir=/out/x"});
  ASSERT_EQ(c.slices.size(), 2u);
  EXPECT_EQ(c.slices[1].sources[0].model, "b");
  EXPECT_EQ(c.slices[1].sources[0].first, 2);
  EXPECT_EQ(c.slices[1].length(), 6);
  EXPECT_EQ(c.slices[1].sources[0].params.at("scale").entries[0].values[0], 0.5);
  EXPECT_EQ(c.reference, "a");
  // recall's own syntax: every source of a slice as long as the first; RECALL takes no slices.
  const std::string native = R"(models: [{name: a, path: /m/a}, {name: b, path: /m/b}]
method: linear
slices:
  - sources: [{model: a, layer_range: [0, 4]}, {model: b, layer_range: [0, 3]}]
output: {dir: /out/y}
)";
  EXPECT_HAS(error_of(native, {}), "mk.yml:4:48: layer_range [0, 3) has 3 blocks but the slice's first source has 4");
  std::string unknown = native;
  unknown.replace(unknown.find("model: b"), 8, "model: c");
  EXPECT_HAS(error_of(unknown, {}), "'slices[0].sources[1].model' is 'c', which is not among the models");
  std::string fine = native;
  fine.replace(fine.find("[0, 3]"), 6, "[4, 8]");
  EXPECT_HAS(error_of(fine, {"method=recall", "data=/d.jsonl"}), "method 'recall' merges every block of every model");
  EXPECT_HAS(error_of(fine, {"method=regmean_plusplus", "data=/d.jsonl"}),
             "mk.yml:4:3: method 'regmean_plusplus' merges every block of every model");
  EXPECT_NO_THROW(parse_merge_config(fine, "c.yaml", {"method=slerp", "base=a"}));
  EXPECT_HAS(error_of(fine, {"method=ties"}), "method 'ties' needs 'base'");
  fine.replace(fine.find("{model: b"), 9, "{model: a");
  EXPECT_HAS(error_of(fine, {}), "model 'a' is a source of slices[0] twice");
}

TEST(MergekitConfig, RecallConfigNamingAMergekitFile) {
  recall::testing::TempDir dir;
  write_file_atomic(join_path(dir.path(), "mk.yml"), kTies);
  const std::string wrapper = join_path(dir.path(), "job.yaml");
  write_file_atomic(wrapper, "mergekit: mk.yml\noutput: {dir: /out/z, formats: [hf], shard_bytes: 1GB}\n"
                             "parallel: {merge_chunk_bytes: 16MiB}\n");
  const MergeConfig c = load_merge_config(wrapper);
  EXPECT_EQ(c.method->name, "ties");
  EXPECT_EQ(c.output.dir, "/out/z");
  EXPECT_EQ(c.output.dtype, DType::BF16);
  EXPECT_EQ(c.output.formats, std::vector<OutputFormat>{OutputFormat::Hf});
  EXPECT_EQ(c.parallel.merge_chunk_bytes, 16u << 20);
  // A key in both files, and an error inside the mergekit file: each points at its own file.
  write_file_atomic(wrapper, "mergekit: mk.yml\nbase: x\noutput: {dir: /out/z}\n");
  try {
    load_merge_config(wrapper);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), wrapper + ":2:7: 'base' comes from the mergekit config");
  }
  write_file_atomic(wrapper, "mergekit: mk.yml\noutput: {dir: /out/z, dtype: float32}\n");
  EXPECT_THROW(load_merge_config(wrapper), Error);
  std::string bad = kTies;
  bad.replace(bad.find("density: 0.5"), 12, "density: 1.5");
  write_file_atomic(join_path(dir.path(), "mk.yml"), bad);
  write_file_atomic(wrapper, "mergekit: mk.yml\noutput: {dir: /out/z}\n");
  try {
    load_merge_config(wrapper);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), join_path(dir.path(), "mk.yml") + ":8:16: 'models[1].params.density' must be");
  }
}

TEST(MergekitConfig, OutputFormats) {
  const std::string y = "models: [{name: a, path: /m/a}, {name: b, path: /m/b}]\nmethod: linear\noutput: {dir: /o}\n";
  EXPECT_EQ(parse_merge_config(y, "c.yaml").output.formats, (std::vector<OutputFormat>{OutputFormat::Hf, OutputFormat::H5}));
  EXPECT_EQ(parse_merge_config(y, "c.yaml", {"output.formats=[h5]"}).output.formats,
            std::vector<OutputFormat>{OutputFormat::H5});
  EXPECT_HAS(error_of(y, {"output.formats=[]"}), "'output.formats' must be a non-empty list of distinct values among hf, h5");
  EXPECT_HAS(error_of(y, {"output.formats=[hf, hf]"}), "'output.formats' must be");
  EXPECT_HAS(error_of(y, {"output.formats=[safetensors]"}), "'output.formats' must be");
  EXPECT_HAS(to_yaml(parse_merge_config(y, "c.yaml", {"output.formats=[hf]"})), "formats: [hf]");
}
