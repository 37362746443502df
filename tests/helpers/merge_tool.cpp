// merge_tool: merges whole Hugging Face model directories tensor by tensor with recall's merge
// kernels (no representations: weights are given), so tests can compare against mergekit.
//   merge_tool METHOD --models DIR... [--base DIR] [--weights W...] [--density D...] [--lambda L]
//              [--t T] [--seed S] [--normalize 0|1] [--rescale 0|1] --dtype bfloat16 --out DIR
// METHOD: recall | linear | task_arithmetic | ties | dare_linear | dare_ties | slerp.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "recall/merge/methods.h"
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
  const MergeMethod method = parse_merge_method(a.method);
  const DType out_dtype = output_dtype(a.dtype);
  const bool needs_base = method != MergeMethod::Linear && method != MergeMethod::Recall;
  if (needs_base && a.base.empty()) fail("merge_tool: method ", a.method, " needs --base");
  if (method == MergeMethod::Slerp && a.models.size() != 1)
    fail("merge_tool: slerp merges the base with exactly one model; got ", a.models.size());

  std::vector<ModelDir> models;
  for (const auto& p : a.models) models.push_back(open_model_dir(p));
  std::optional<ModelDir> base;
  if (!a.base.empty()) base = open_model_dir(a.base);
  const ModelDir& layout = base ? *base : models[0];
  const size_t m = models.size();
  const std::vector<double> weights = doubles(a, "weights", m, 1.0);
  const std::vector<double> density = doubles(a, "density", m, 1.0);
  const double lambda = doubles(a, "lambda", 1, 1.0)[0];
  const double t = doubles(a, "t", 1, 0.5)[0];
  const uint64_t seed = static_cast<uint64_t>(doubles(a, "seed", 1, 0.0)[0]);

  std::vector<TensorData> out;
  for (const TensorSlot& slot : layout.slots) {
    auto view = [&](const ModelDir& d) {
      const Checkpoint::Entry& e = d.checkpoint.at(slot.name);
      if (e.info->shape != slot.shape) fail("tensor '", slot.name, "' of ", d.path, " has the wrong shape");
      return TensorView{e.info->dtype, e.file->data(*e.info)};
    };
    std::vector<TensorView> views;
    for (const ModelDir& d : models) views.push_back(view(d));
    uint64_t numel = 1;
    for (int64_t s : slot.shape) numel *= static_cast<uint64_t>(s);
    TensorData td;
    td.spec = {slot.name, out_dtype, slot.shape};
    td.bytes.resize(numel * dtype_size(out_dtype));
    switch (method) {
      case MergeMethod::Recall:
      case MergeMethod::Linear: {
        const bool normalize = doubles(a, "normalize", 1, method == MergeMethod::Linear ? 1 : 0)[0] != 0;
        merge_weighted(views, weights, normalize, numel, out_dtype, td.bytes.data());
        break;
      }
      case MergeMethod::Slerp:
        merge_slerp(view(*base), views[0], t, numel, out_dtype, td.bytes.data());
        break;
      default: {
        TaskVectorOptions o = task_vector_defaults(method);
        o.weights = weights;
        o.densities = density;
        o.lambda = lambda;
        o.normalize = doubles(a, "normalize", 1, o.normalize ? 1 : 0)[0] != 0;
        o.rescale = doubles(a, "rescale", 1, o.rescale ? 1 : 0)[0] != 0;
        o.seed = dare_tensor_seed(seed, slot.name);
        merge_task_vectors(view(*base), views, numel, o, out_dtype, td.bytes.data());
      }
    }
    out.push_back(std::move(td));
  }
  make_directories(a.out);
  write_safetensors_model(a.out, out, 0);
  nlohmann::json config = nlohmann::json::parse(layout.config.raw_json);
  config["torch_dtype"] = a.dtype;
  if (config.contains("dtype")) config["dtype"] = a.dtype;
  write_file_atomic(join_path(a.out, "config.json"), config.dump(2) + "\n");
  std::printf("merge_tool: %s merged %zu tensors of %zu model(s) into %s (%s)\n", a.method.c_str(), out.size(),
              m + (base ? 1 : 0), a.out.c_str(), a.dtype.c_str());
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
