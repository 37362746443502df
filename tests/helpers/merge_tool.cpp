// merge_tool: merges whole Hugging Face model directories tensor by tensor with the registry's
// kernels (recall/merge/registry.h; no representations: RECALL's weights are given), so tests can
// compare kernels against mergekit without the job.
//   merge_tool METHOD --models DIR... [--base DIR] [--<param> V...] --dtype bfloat16 --out DIR
// Every parameter of the method may be given by its name (--weight/--weights, --density, --lambda,
// --t, --seed, --normalize 0|1, --rescale 0|1, ...): one value for all models or one per model
// in --models order (the base, first when given, takes the method's default).
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "recall/merge/registry.h"
#include "recall/model/model_dir.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

using namespace recall;

namespace {

struct Args {
  std::string method, out, dtype = "bfloat16", base;
  std::vector<std::string> models;
  std::map<std::string, std::vector<std::string>> values;  // --weights, --density, ...
};

Args parse(int argc, char** argv) {
  if (argc < 2) fail("usage: merge_tool METHOD --models DIR... [--base DIR] [--weights W...] [--density D...] "
                     "[--lambda L] [--t T] [--seed S] [--normalize 0|1] [--rescale 0|1] --dtype DTYPE --out DIR");
  Args a;
  a.method = argv[1];
  std::string key;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      key = s.substr(2);
      a.values[key];
      continue;
    }
    if (key.empty()) fail("merge_tool: unexpected argument '", s, "'");
    a.values[key].push_back(s);
  }
  auto one = [&](const std::string& k, const std::string& def) {
    auto it = a.values.find(k);
    if (it == a.values.end()) return def;
    if (it->second.size() != 1) fail("merge_tool: --", k, " takes one value; got ", it->second.size());
    return it->second[0];
  };
  a.models = a.values["models"];
  a.out = one("out", "");
  a.dtype = one("dtype", "bfloat16");
  a.base = one("base", "");
  if (a.models.empty()) fail("merge_tool: --models needs at least one directory");
  if (a.out.empty()) fail("merge_tool: --out is required");
  return a;
}

DType output_dtype(const std::string& name) {
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16") return DType::F16;
  if (name == "float32") return DType::F32;
  fail("merge_tool: --dtype must be bfloat16, float16 or float32; got '", name, "'");
}

std::vector<double> doubles(const Args& a, const std::string& key, size_t n, double def) {
  auto it = a.values.find(key);
  if (it == a.values.end()) return std::vector<double>(n, def);
  std::vector<double> v;
  for (const auto& s : it->second) v.push_back(std::stod(s));
  if (v.size() == 1 && n > 1) v.assign(n, v[0]);
  if (v.size() != n) fail("merge_tool: --", key, " has ", v.size(), " values for ", n, " models");
  return v;
}

int run(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const MethodSpec& method = merge_method(a.method);
  const DType out_dtype = output_dtype(a.dtype);
  if (method.base == BaseUse::Required && a.base.empty()) fail("merge_tool: method ", a.method, " needs --base");

  // Inputs: the base first (when given), then --models.
  std::vector<ModelDir> models;
  std::optional<size_t> base;
  if (!a.base.empty()) {
    models.push_back(open_model_dir(a.base));
    base = 0;
  }
  for (const auto& p : a.models) models.push_back(open_model_dir(p));
  const size_t first = base ? 1 : 0, given = a.models.size();
  TensorParams params;
  for (const ParamSpec& p : method.params) {
    const std::string flag = p.name == "weight" && !a.values.count("weight") ? "weights" : p.name;
    const double def = p.default_value.value_or(0.0);
    if (p.scope == ParamScope::Shared) {
      params.set(p.name, doubles(a, flag, 1, def)[0]);
      continue;
    }
    std::vector<double> v(models.size(), def);
    const std::vector<double> mine = doubles(a, flag, given, def);
    for (size_t i = 0; i < given; ++i) v[first + i] = mine[i];
    params.set(p.name, std::move(v));
  }
  if (method.uses_representations) {
    std::vector<double> w(models.size(), 1.0);
    const std::vector<double> mine = doubles(a, "weights", given, 1.0);
    for (size_t i = 0; i < given; ++i) w[first + i] = mine[i];
    params.set("weight", std::move(w));
  }

  const ModelDir& layout = models[0];
  std::vector<TensorData> out;
  for (const TensorSlot& slot : layout.slots) {
    std::vector<TensorView> views;
    for (const ModelDir& d : models) {
      const Checkpoint::Entry& e = d.checkpoint.at(slot.name);
      if (e.info->shape != slot.shape) fail("tensor '", slot.name, "' of ", d.path, " has the wrong shape");
      views.push_back(TensorView{e.info->dtype, e.file->data(*e.info)});
    }
    uint64_t numel = 1;
    for (int64_t s : slot.shape) numel *= static_cast<uint64_t>(s);
    TensorData td;
    td.spec = {slot.name, out_dtype, slot.shape};
    td.bytes.resize(numel * dtype_size(out_dtype));
    method.merge(MergeTask{views, base, params, slot.name, slot.shape, 0, numel, out_dtype, td.bytes.data()});
    out.push_back(std::move(td));
  }
  make_directories(a.out);
  write_safetensors_model(a.out, out, 0);
  nlohmann::json config = nlohmann::json::parse(layout.config.raw_json);
  config["torch_dtype"] = a.dtype;
  if (config.contains("dtype")) config["dtype"] = a.dtype;
  write_file_atomic(join_path(a.out, "config.json"), config.dump(2) + "\n");
  std::printf("merge_tool: %s merged %zu tensors of %zu model(s) into %s (%s)\n", a.method.c_str(), out.size(),
              models.size(), a.out.c_str(), a.dtype.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "merge_tool: error: %s\n", e.what());
    return 1;
  }
}
