// Checkpoint index over one or many safetensors shards.
#include "recall/io/checkpoint.h"

#include <nlohmann/json.hpp>
#include <set>

#include "recall/io/model_files.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

using nlohmann::json;

std::map<std::string, std::string> parse_safetensors_index(std::string_view text,
                                                           const std::string& where) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", parse_error_text(e));
  }
  if (!root.is_object()) fail(where, ": not a JSON object");
  auto wm = root.find("weight_map");
  if (wm == root.end()) fail(where, ": missing 'weight_map'");
  if (!wm->is_object()) fail(where, ": 'weight_map' is not an object");
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string())
      fail(where, ": 'weight_map' entry for '", it.key(), "' is not a file name: ", it->dump());
    const std::string& file = it->get_ref<const std::string&>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      fail(where, ": 'weight_map' entry for '", it.key(), "' names '", file,
           "', which is not a plain file name in the model directory");
    out[it.key()] = file;
  }
  if (out.empty()) fail(where, ": 'weight_map' lists no tensors");
  return out;
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  c.path_ = path;
  auto add_file = [&](const std::string& file) -> const SafetensorsFile& {
    c.files_.push_back(SafetensorsFile::open(file));
    return *c.files_.back();
  };
  if (!path_exists(path)) fail("'", path, "' does not exist");
  if (!is_directory(path)) {
    const SafetensorsFile& f = add_file(path);
    for (const TensorInfo& t : f.tensors()) c.entries_.emplace(t.name, Entry{&f, &t});
    return c;
  }

  const std::string index_path = join_path(path, "model.safetensors.index.json");
  if (find_model_file(path, "model.safetensors.index.json")) {
    c.sharded_ = true;
    const auto weight_map = parse_safetensors_index(read_text_file(index_path), index_path);
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, file] : weight_map) shards.emplace(file, nullptr);
    for (auto& [file, ptr] : shards) {
      const auto shard_path = find_model_file(path, file);
      if (!shard_path) fail(index_path, ": lists shard '", file, "', which does not exist in '", path, "'");
      ptr = &add_file(*shard_path);
    }
    for (const auto& [name, file] : weight_map) {
      const SafetensorsFile* f = shards.at(file);
      const TensorInfo* t = f->find(name);
      if (!t)
        fail(index_path, ": places tensor '", name, "' in '", file, "', but that shard has no such tensor");
      c.entries_.emplace(name, Entry{f, t});
    }
    for (const auto& [file, f] : shards)
      for (const TensorInfo& t : f->tensors())
        if (!weight_map.count(t.name))
          fail(join_path(path, file), ": holds tensor '", t.name, "', which ", index_path,
               " does not list");
    return c;
  }
  if (const auto single_path = find_model_file(path, "model.safetensors")) {
    const SafetensorsFile& f = add_file(*single_path);
    for (const TensorInfo& t : f.tensors()) c.entries_.emplace(t.name, Entry{&f, &t});
    return c;
  }
  for (const char* pickled : {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt"})
    if (path_exists(join_path(path, pickled)))
      fail("'", path, "' holds only a pickled checkpoint ('", pickled,
           "'); recall never loads pickles because they can run code. Convert it to "
           "safetensors first (for example with transformers: save_pretrained(..., "
           "safe_serialization=True))");
  fail("'", path, "' has neither model.safetensors nor model.safetensors.index.json");
}

const Checkpoint::Entry* Checkpoint::find(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

const Checkpoint::Entry& Checkpoint::at(std::string_view name) const {
  const Entry* e = find(name);
  if (!e) fail("'", path_, "': missing tensor '", name, "'");
  return *e;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, e] : entries_) n += e.info->nbytes();
  return n;
}

std::map<DType, uint64_t> Checkpoint::bytes_by_dtype() const {
  std::map<DType, uint64_t> out;
  for (const auto& [name, e] : entries_) out[e.info->dtype] += e.info->nbytes();
  return out;
}

std::vector<float> Checkpoint::read_float(std::string_view name) const {
  const Entry& e = at(name);
  std::vector<float> out(e.info->numel());
  decode_to_float(e.info->dtype, e.file->data(*e.info), out.size(), out.data());
  return out;
}

}  // namespace recall
