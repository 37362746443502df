// recall verify: a merge output (merged.h5, hf/) checked against manifest.json.
#include "recall/pipeline/verify.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>

#include "recall/io/checkpoint.h"
#include "recall/io/h5_reader.h"
#include "recall/io/safetensors.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

using nlohmann::json;

struct ManifestTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string xxh3;  // hex
  uint64_t nbytes() const { return TensorSpec{name, dtype, shape}.nbytes(); }
};

// The problems found so far, and the checksum comparison every part uses.
struct Report {
  std::vector<std::string> problems;
  bool verbose = false;
  void add(const std::string& p) { problems.push_back(p); }
  void checksum(const std::string& what, const std::string& expected, const uint8_t* data, uint64_t n) {
    const std::string got = checksum_hex(xxh3_64(data, n));
    if (got != expected)
      add(what + ": checksum mismatch; expected " + expected + ", got " + got);
    else if (verbose)
      std::printf("ok  %s  %s\n", expected.c_str(), what.c_str());
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string without_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::vector<std::string> directory_entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string n = e->d_name; n != "." && n != "..") out.push_back(n);
    ::closedir(d);
  }
  return out;
}

// A single merged.h5: each dataset's bytes against its own xxh3_64 attribute.
std::vector<std::string> verify_h5_file(const std::string& path, bool verbose) {
  Report r;
  r.verbose = verbose;
  H5Reader h5(path);
  for (const std::string& name : h5.list("/tensors")) {
    auto expected = h5.attribute("/tensors/" + name, "xxh3_64");
    if (!expected) {
      r.add(path + ": dataset '/tensors/" + name + "' has no xxh3_64 attribute");
      continue;
    }
    const auto bytes = h5.read("/tensors/" + name);
    r.checksum(path + ":/tensors/" + name, *expected, bytes.data(), bytes.size());
  }
  if (h5.list("/tensors").empty()) r.add(path + ": no tensors under /tensors");
  return r.problems;
}

// The manifest's tensor list, validated entry by entry.
std::vector<ManifestTensor> manifest_tensors(const json& manifest, const std::string& where) {
  if (!manifest.contains("tensors") || !manifest["tensors"].is_array() || manifest["tensors"].empty())
    fail(where, ": 'tensors' is missing or empty");
  std::vector<ManifestTensor> out;
  std::set<std::string> seen;
  for (const json& t : manifest["tensors"]) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("dtype") ||
        !t["dtype"].is_string() || !t.contains("shape") || !t["shape"].is_array() || !t.contains("xxh3_64") ||
        !t["xxh3_64"].is_string())
      fail(where, ": a 'tensors' entry lacks name, dtype, shape or xxh3_64: ", t.dump().substr(0, 200));
    ManifestTensor m;
    m.name = t["name"].get<std::string>();
    const auto dtype = parse_dtype(t["dtype"].get<std::string>());
    if (!dtype) fail(where, ": tensor '", m.name, "' has unknown dtype '", t["dtype"].get<std::string>(), "'");
    m.dtype = *dtype;
    for (const json& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(where, ": tensor '", m.name, "' has a bad shape");
      m.shape.push_back(d.get<int64_t>());
    }
    m.xxh3 = t["xxh3_64"].get<std::string>();
    if (!seen.insert(m.name).second) fail(where, ": tensor '", m.name, "' is listed twice");
    out.push_back(std::move(m));
  }
  return out;
}

// The outputs the merge wrote (output.formats): "h5", "hf"; both for manifests from before the list.
std::set<std::string> manifest_outputs(const json& manifest, const std::string& where) {
  if (!manifest.contains("outputs")) return {"h5", "hf"};
  std::set<std::string> out;
  if (manifest["outputs"].is_array())
    for (const json& f : manifest["outputs"])
      if (f.is_string() && (f == "h5" || f == "hf")) out.insert(f.get<std::string>());
  if (out.empty() || out.size() != manifest["outputs"].size())
    fail(where, ": 'outputs' must list \"h5\" and/or \"hf\", got ", manifest["outputs"].dump());
  return out;
}

std::vector<std::string> manifest_shards(const json& manifest, const std::string& where) {
  if (!manifest.contains("hf_shards") || !manifest["hf_shards"].is_array() || manifest["hf_shards"].empty())
    fail(where, ": 'hf_shards' is missing or empty");
  std::vector<std::string> out;
  for (const json& s : manifest["hf_shards"]) {
    if (!s.is_string()) fail(where, ": an 'hf_shards' entry is not a file name");
    const std::string f = s.get<std::string>();
    if (f.find('/') != std::string::npos || !ends_with(f, ".safetensors"))
      fail(where, ": 'hf_shards' entry '", f, "' is not a .safetensors file name");
    out.push_back(f);
  }
  return out;
}

// merged.h5: the manifest's tensors (dtype, shape, bytes, attribute) and no others.
void check_merged_h5(const H5Reader& h5, const std::vector<ManifestTensor>& tensors, Report& r) {
  std::set<std::string> listed;
  for (const ManifestTensor& m : tensors) {
    listed.insert(m.name);
    const std::string where = "merged.h5:/tensors/" + m.name;
    if (!h5.exists("/tensors/" + m.name)) {
      r.add(where + ": missing");
      continue;
    }
    const H5DatasetInfo info = h5.info("/tensors/" + m.name);
    if (info.dtype != m.dtype || info.shape != m.shape) {
      r.add(where + ": " + std::string(dtype_name(info.dtype)) + " " + format_shape(info.shape) +
            "; the manifest says " + std::string(dtype_name(m.dtype)) + " " + format_shape(m.shape));
      continue;
    }
    const auto bytes = h5.read("/tensors/" + m.name);
    r.checksum(where, m.xxh3, bytes.data(), bytes.size());
    const auto attr = h5.attribute("/tensors/" + m.name, "xxh3_64");
    if (!attr || *attr != m.xxh3)
      r.add(where + ": xxh3_64 attribute " + (attr ? *attr : "missing") + " differs from the manifest's " + m.xxh3);
  }
  for (const std::string& name : h5.list("/tensors"))
    if (!listed.count(name)) r.add("merged.h5:/tensors/" + name + ": not in the manifest");
}

// RECALL's record in merged.h5: similarities and weights per block and model, sigma^2 per block,
// the typical samples; weights of every block are a distribution.
void check_recall_datasets(const H5Reader& h5, int64_t blocks, int64_t models, Report& r) {
  const std::vector<int64_t> per_block_model = {blocks, models}, per_block = {blocks};
  const std::pair<const char*, std::vector<int64_t>> expected[] = {
      {"/recall/similarity", per_block_model}, {"/recall/weights", per_block_model}, {"/recall/sigma2", per_block}};
  for (const auto& [path, shape] : expected) {
    if (!h5.exists(path)) {
      r.add(std::string("merged.h5:") + path + ": missing (the method is recall)");
      continue;
    }
    const H5DatasetInfo info = h5.info(path);
    if (info.dtype != DType::F64 || info.shape != shape)
      r.add(std::string("merged.h5:") + path + ": " + std::string(dtype_name(info.dtype)) + " " +
            format_shape(info.shape) + "; expected F64 " + format_shape(shape) + " (blocks x models)");
  }
  if (!h5.exists("/recall/typical_samples"))
    r.add("merged.h5:/recall/typical_samples: missing (the method is recall)");
  else if (const H5DatasetInfo t = h5.info("/recall/typical_samples");
           t.dtype != DType::I64 || t.shape.size() != 1 || t.shape[0] < 1)
    r.add("merged.h5:/recall/typical_samples: " + std::string(dtype_name(t.dtype)) + " " + format_shape(t.shape) +
          "; expected a non-empty I64 list");
  if (!h5.exists("/recall/weights") || h5.info("/recall/weights").shape != per_block_model) return;
  std::vector<double> w(static_cast<size_t>(blocks * models));
  h5.read("/recall/weights", w.data());
  for (int64_t l = 0; l < blocks; ++l) {
    double sum = 0;
    bool finite = true;
    for (int64_t m = 0; m < models; ++m) {
      const double v = w[static_cast<size_t>(l * models + m)];
      finite = finite && std::isfinite(v) && v >= 0;
      sum += v;
    }
    if (!finite || std::abs(sum - 1) > 1e-9 * static_cast<double>(models))
      r.add("merged.h5:/recall/weights: block " + std::to_string(l) + " has weights summing to " +
            std::to_string(sum) + "; expected non-negative weights summing to 1");
  }
}

// hf/config.json: merged.h5's architecture_config (when the output has a merged.h5), with the dtype
// fields set to the output dtype.
void check_hf_config(const std::string& hf_dir, const std::optional<std::string>& architecture, DType out_dtype,
                     Report& r) {
  const std::string path = join_path(hf_dir, "config.json");
  if (!path_exists(path)) {
    r.add("hf/config.json: missing");
    return;
  }
  const json expected = architecture ? json::parse(*architecture, nullptr, false) : json::object();
  const json found = json::parse(read_text_file(path), nullptr, false);
  if (!expected.is_object()) {
    r.add("merged.h5: the architecture_config attribute is not a JSON object");
    return;
  }
  if (!found.is_object()) {
    r.add("hf/config.json: not a JSON object");
    return;
  }
  std::set<std::string> keys;
  for (auto it = expected.begin(); it != expected.end(); ++it) keys.insert(it.key());
  for (auto it = found.begin(); it != found.end(); ++it) keys.insert(it.key());
  for (const std::string& k : keys) {
    if (k == "torch_dtype" || k == "dtype") {  // set by the export to the output dtype
      const auto d = found.contains(k) && found[k].is_string() ? parse_torch_dtype(found[k].get<std::string>())
                                                               : std::nullopt;
      if (!d || *d != out_dtype)
        r.add("hf/config.json: '" + k + "' is " + (found.contains(k) ? found[k].dump() : "missing") +
              "; the tensors are " + std::string(dtype_name(out_dtype)));
      continue;
    }
    if (!architecture) continue;  // nothing to compare with
    const std::string want = expected.contains(k) ? expected[k].dump() : "absent";
    const std::string got = found.contains(k) ? found[k].dump() : "absent";
    if (want != got)
      r.add("hf/config.json: '" + k + "' is " + got.substr(0, 120) + "; merged.h5's architecture_config has " +
            want.substr(0, 120));
  }
}

// One shard: its tensors must be the next run of the manifest's list, in order, packed, with the
// header the merge writes; their bytes must match the checksums. Returns the tensors it holds.
std::vector<std::string> check_shard(const std::string& hf_dir, const std::string& file,
                                     const std::vector<ManifestTensor>& tensors, size_t* next, Report& r) {
  const std::string path = join_path(hf_dir, file), where = "hf/" + file;
  std::unique_ptr<SafetensorsFile> f;
  try {
    f = SafetensorsFile::open(path);
  } catch (const std::exception& e) {
    r.add(e.what());
    return {};
  }
  std::vector<std::string> names;
  std::vector<TensorSpec> specs;
  bool layout_ok = true;
  uint64_t cursor = 0;
  for (const TensorInfo& t : f->tensors()) {  // sorted by offset
    names.push_back(t.name);
    if (*next >= tensors.size()) {
      r.add(where + ": holds tensor '" + t.name + "', past the end of the manifest's list");
      layout_ok = false;
      continue;
    }
    const ManifestTensor& m = tensors[(*next)++];
    specs.push_back({m.name, m.dtype, m.shape});
    const std::string what = where + ": tensor '" + t.name + "'";
    if (t.name != m.name) {
      r.add(where + ": holds '" + t.name + "' where the manifest's order has '" + m.name + "'");
      layout_ok = false;
    } else if (t.dtype != m.dtype || t.shape != m.shape) {
      r.add(what + " is " + std::string(dtype_name(t.dtype)) + " " + format_shape(t.shape) + "; the manifest says " +
            std::string(dtype_name(m.dtype)) + " " + format_shape(m.shape));
      layout_ok = false;
    } else if (t.begin != cursor || t.end != cursor + m.nbytes()) {
      r.add(what + " has data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]; expected [" +
            std::to_string(cursor) + ", " + std::to_string(cursor + m.nbytes()) + "]");
      layout_ok = false;
    } else {
      r.checksum("hf/" + t.name, m.xxh3, f->data(t), t.nbytes());
    }
    cursor += m.nbytes();
  }
  if (layout_ok) {  // what the checks above do not see (metadata, key order, padding)
    const std::string expected = safetensors_header(specs, {}, nullptr, path);
    std::string found(expected.size(), '\0');
    bool same = f->data_start() == expected.size();
    if (same) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      same = fd >= 0 && ::pread(fd, found.data(), found.size(), 0) == static_cast<ssize_t>(found.size()) &&
             found == expected;
      if (fd >= 0) ::close(fd);
    }
    if (!same) r.add(where + ": header differs from the one the merge writes (metadata, key order or padding)");
  }
  return names;
}

// hf/: exactly the manifest's shards (and the index when there are several), each as written.
void check_hf_shards(const std::string& hf_dir, const std::vector<ManifestTensor>& tensors,
                     const std::vector<std::string>& shards, Report& r) {
  const std::set<std::string> listed(shards.begin(), shards.end());
  for (const std::string& f : directory_entries(hf_dir))
    for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt"})
      if (ends_with(f, ext) && !listed.count(f))
        r.add("hf/" + f + ": a weights file that is not one of the manifest's " + std::to_string(shards.size()) +
              " shard(s)");
  std::map<std::string, std::string> placed;  // tensor -> shard
  size_t next = 0;
  for (const std::string& s : shards) {
    if (!path_exists(join_path(hf_dir, s))) {
      r.add("hf/" + s + ": missing (listed in the manifest's hf_shards)");
      continue;
    }
    for (const std::string& name : check_shard(hf_dir, s, tensors, &next, r)) placed[name] = s;
  }
  if (next < tensors.size())
    r.add("hf/: " + std::to_string(tensors.size() - next) + " of the manifest's tensors, from '" + tensors[next].name +
          "' on, are in no shard");
  const std::string index = join_path(hf_dir, "model.safetensors.index.json");
  if (shards.size() == 1) {
    if (path_exists(index)) r.add("hf/model.safetensors.index.json: present, but the manifest lists one shard");
    return;
  }
  if (!path_exists(index)) {
    r.add("hf/model.safetensors.index.json: missing (the manifest lists " + std::to_string(shards.size()) + " shards)");
    return;
  }
  try {
    const std::string text = read_text_file(index);
    const auto weight_map = parse_safetensors_index(text, "hf/model.safetensors.index.json");
    uint64_t total = 0;
    for (const ManifestTensor& m : tensors) {
      total += m.nbytes();
      const auto it = weight_map.find(m.name);
      if (it == weight_map.end())
        r.add("hf/model.safetensors.index.json: no entry for '" + m.name + "'");
      else if (placed.count(m.name) && it->second != placed[m.name])
        r.add("hf/model.safetensors.index.json: places '" + m.name + "' in '" + it->second + "', but it is in '" +
              placed[m.name] + "'");
    }
    if (weight_map.size() != tensors.size())
      r.add("hf/model.safetensors.index.json: " + std::to_string(weight_map.size()) + " entries; the manifest lists " +
            std::to_string(tensors.size()) + " tensors");
    const json j = json::parse(text);
    if (!j.contains("metadata") || !j["metadata"].is_object() || !j["metadata"].contains("total_size") ||
        !j["metadata"]["total_size"].is_number_unsigned() || j["metadata"]["total_size"].get<uint64_t>() != total)
      r.add("hf/model.safetensors.index.json: metadata.total_size is not " + std::to_string(total));
  } catch (const std::exception& e) {
    r.add(e.what());
  }
}

}  // namespace

std::vector<std::string> verify_output(const std::string& given, bool verbose) {
  const std::string path = without_trailing_slashes(given);
  if (!is_directory(path)) return verify_h5_file(path, verbose);
  if (ends_with(path, ".partial"))
    return {"'" + path + "' is the working directory of a merge that never committed (interrupted or failed); "
            "rerun the merge to resume it. verify checks the committed output directory (without .partial)"};
  const std::string manifest_path = join_path(path, "manifest.json");
  if (!path_exists(manifest_path)) {
    const std::string parent = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    if (path_exists(join_path(parent.empty() ? "/" : parent, "manifest.json")))
      return {"'" + path + "' is part of a merge output; point verify at the output directory '" + parent +
              "' (the one with manifest.json)"};
    return {"'" + path + "' has no manifest.json; point verify at a merge's output directory (the one with "
            "manifest.json) or at a merged.h5"};
  }
  // A sweep point whose weight files keep_weights removed after its evaluation
  // (recall/sweep/keep_weights.h): its manifest is still there, its weights are not.
  if (path_exists(join_path(path, "weights_dropped.json")))
    return {"'" + path + "' is a sweep point whose weight files were removed after its evaluation (the sweep's "
            "keep_weights; see weights_dropped.json): there are no weights to verify. Its manifest, reports and "
            "evaluation results are kept; for its weights, merge the point's config.yaml again, or plan the sweep "
            "with keep_weights: all"};
  Report r;
  r.verbose = verbose;
  try {
    json manifest;
    try {
      manifest = json::parse(read_text_file(manifest_path));
    } catch (const json::exception& e) {
      fail(manifest_path, ": not valid JSON: ", e.what());
    }
    if (!manifest.is_object()) fail(manifest_path, ": not a JSON object");
    const std::vector<ManifestTensor> tensors = manifest_tensors(manifest, manifest_path);
    const std::set<std::string> outputs = manifest_outputs(manifest, manifest_path);
    const std::string method = manifest.value("method", std::string());
    const int64_t models = manifest.contains("inputs") && manifest["inputs"].is_array()
                               ? static_cast<int64_t>(manifest["inputs"].size())
                               : 0;
    // What the merge did not write must not be there either (a loader would take it).
    for (const auto& [format, file] : {std::pair<std::string, std::string>{"h5", "merged.h5"}, {"hf", "hf"}})
      if (!outputs.count(format) && path_exists(join_path(path, file)))
        r.add(file + ": present, but the manifest's outputs do not include '" + format + "'");
    std::optional<std::string> architecture;  // merged.h5's, when there is a merged.h5
    if (outputs.count("h5")) {
      H5Reader h5(join_path(path, "merged.h5"));
      check_merged_h5(h5, tensors, r);
      architecture = h5.attribute("/", "architecture_config");
      if (!architecture) {
        r.add("merged.h5: no architecture_config attribute");
      } else if (method == "recall") {
        const json arch = json::parse(*architecture, nullptr, false);
        const int64_t blocks = arch.is_object() ? arch.value("num_hidden_layers", int64_t{0}) : 0;
        check_recall_datasets(h5, blocks, models, r);
      }
    }
    if (outputs.count("hf")) {
      check_hf_config(join_path(path, "hf"), architecture, tensors.front().dtype, r);
      check_hf_shards(join_path(path, "hf"), tensors, manifest_shards(manifest, manifest_path), r);
    }
  } catch (const std::exception& e) {
    r.add(e.what());
  }
  return r.problems;
}

}  // namespace recall
