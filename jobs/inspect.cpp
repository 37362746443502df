// recall inspect PATH: validates a model directory (config + every expected tensor) or a single
// .safetensors file, and summarizes it for people (default) or machines (--json).
#include <iostream>
#include <nlohmann/json.hpp>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/io/checkpoint.h"
#include "recall/model/model_dir.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall::jobs {

namespace {

nlohmann::ordered_json tensors_json(const Checkpoint& ckpt) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& [name, e] : ckpt.entries())
    list.push_back({{"name", name},
                    {"dtype", std::string(dtype_name(e.info->dtype))},
                    {"shape", e.info->shape},
                    {"bytes", e.info->nbytes()}});
  return list;
}

nlohmann::ordered_json summary_json(const Checkpoint& ckpt) {
  nlohmann::ordered_json by_dtype = nlohmann::ordered_json::object();
  for (const auto& [dt, n] : ckpt.bytes_by_dtype()) by_dtype[std::string(dtype_name(dt))] = n;
  return {{"files", ckpt.files().size()},
          {"tensor_count", ckpt.entries().size()},
          {"total_bytes", ckpt.total_bytes()},
          {"bytes_by_dtype", by_dtype}};
}

void print_checkpoint(const Checkpoint& ckpt, bool list_tensors) {
  std::cout << "tensors:      " << ckpt.entries().size() << " in " << ckpt.files().size()
            << " file(s), " << format_bytes(ckpt.total_bytes()) << "\n";
  for (const auto& [dt, n] : ckpt.bytes_by_dtype())
    std::cout << "  " << dtype_name(dt) << ": " << format_bytes(n) << " (" << n << " bytes)\n";
  if (!list_tensors) return;
  for (const auto& [name, e] : ckpt.entries())
    std::cout << "  " << name << "  " << dtype_name(e.info->dtype) << "  "
              << format_shape(e.info->shape) << "\n";
}

}  // namespace

int inspect(int argc, char** argv) {
  ArgParser args("inspect",
                 "Validates PATH (a Hugging Face model directory or one .safetensors file) and\n"
                 "prints a summary. Exits 0 only when the input is valid.");
  args.positional("PATH", "model directory or .safetensors file")
      .flag("tensors", "list every tensor with dtype and shape")
      .flag("json", "print the summary as JSON");
  if (!args.parse(argc, argv)) return 0;
  const std::string path = args.get("PATH");
  const bool as_json = args.flag_set("json"), list = args.flag_set("tensors");

  if (!is_directory(path)) {
    Checkpoint ckpt = Checkpoint::open(path);
    if (as_json) {
      auto out = summary_json(ckpt);
      out["path"] = path;
      out["metadata"] = ckpt.files().front()->metadata();
      if (list) out["tensors"] = tensors_json(ckpt);
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << "file:         " << path << "\n";
      print_checkpoint(ckpt, list);
    }
    return 0;
  }

  ModelDir m = open_model_dir(path);
  const ModelConfig& c = m.config;
  if (as_json) {
    nlohmann::ordered_json out = {
        {"path", path},
        {"architecture", arch_name(c.arch)},
        {"architecture_class", c.architecture},
        {"blocks", c.num_hidden_layers},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"attention_heads", c.num_attention_heads},
        {"kv_heads", c.num_key_value_heads},
        {"head_dim", c.head_dim},
        {"vocab_size", c.vocab_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"rope", {{"type", c.rope.type}, {"theta", c.rope.theta}, {"factor", c.rope.factor}}},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"sharded", m.checkpoint.sharded()},
    };
    out.update(summary_json(m.checkpoint));
    out["parameters"] = [&] {
      uint64_t n = 0;
      for (const auto& [name, e] : m.checkpoint.entries()) n += e.info->numel();
      return n;
    }();
    if (list) out["tensors"] = tensors_json(m.checkpoint);
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "model:        " << path << "\n"
            << "architecture: " << arch_name(c.arch) << " (" << c.architecture << ")\n"
            << "blocks:       " << c.num_hidden_layers << "\n"
            << "hidden size:  " << c.hidden_size << " (MLP " << c.intermediate_size << ")\n"
            << "heads:        " << c.num_attention_heads << " attention, " << c.num_key_value_heads
            << " KV, head_dim " << c.head_dim << "\n"
            << "vocabulary:   " << c.vocab_size << "\n"
            << "positions:    " << c.max_position_embeddings << ", rope " << c.rope.type
            << " theta " << c.rope.theta << "\n"
            << "embeddings:   " << (c.tie_word_embeddings ? "tied" : "untied") << "\n";
  print_checkpoint(m.checkpoint, list);
  for (const auto& name : m.ignored) std::cout << "ignored:      " << name << "\n";
  return 0;
}

}  // namespace recall::jobs
