// Preflight of a merge: compatibility of the inputs, data and output checks, from headers only.
#include "recall/pipeline/preflight.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "recall/pipeline/layout.h"
#include "recall/pipeline/output_dir.h"
#include "recall/pipeline/plan.h"
#include "recall/text/samples.h"
#include "recall/util/dtype.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

// The fields that must agree for two models to be merged tensor by tensor.
// With slices (`any_depth`) the block counts may differ: each slice names the blocks it takes.
void compare_configs(const ModelEntry& a, const ModelConfig& x, const ModelEntry& b,
                     const ModelConfig& y, bool any_depth, std::vector<std::string>* problems) {
  auto differ = [&](const char* field, const std::string& u, const std::string& v) {
    if (u != v)
      problems->push_back("model '" + b.name + "' (" + b.path + "): " + field + " is " + v +
                          ", but model '" + a.name + "' has " + u);
  };
  differ("architecture", arch_name(x.arch), arch_name(y.arch));
  differ("hidden_size", std::to_string(x.hidden_size), std::to_string(y.hidden_size));
  differ("intermediate_size", std::to_string(x.intermediate_size), std::to_string(y.intermediate_size));
  if (!any_depth)
    differ("num_hidden_layers", std::to_string(x.num_hidden_layers), std::to_string(y.num_hidden_layers));
  differ("num_attention_heads", std::to_string(x.num_attention_heads), std::to_string(y.num_attention_heads));
  differ("num_key_value_heads", std::to_string(x.num_key_value_heads), std::to_string(y.num_key_value_heads));
  differ("head_dim", std::to_string(x.head_dim), std::to_string(y.head_dim));
  differ("vocab_size (vocabulary)", std::to_string(x.vocab_size), std::to_string(y.vocab_size));
  differ("tie_word_embeddings", x.tie_word_embeddings ? "true" : "false", y.tie_word_embeddings ? "true" : "false");
  differ("attention_bias", x.attention_bias ? "true" : "false", y.attention_bias ? "true" : "false");
  differ("mlp_bias", x.mlp_bias ? "true" : "false", y.mlp_bias ? "true" : "false");
}

bool has_weights(const std::string& dir) {
  return path_exists(join_path(dir, "model.safetensors")) ||
         path_exists(join_path(dir, "model.safetensors.index.json"));
}

// The config describing a model for a shapes-only preflight, or nullopt when the model should be
// opened as usual (it has weights, or shapes-only is off).
std::optional<std::string> description_of(const ModelEntry& m, const PreflightOptions& opt) {
  if (!opt.shapes_only) return std::nullopt;
  if (is_directory(m.path)) {
    if (has_weights(m.path) || path_exists(join_path(m.path, "adapter_config.json"))) return std::nullopt;
    if (path_exists(join_path(m.path, "config.json"))) return join_path(m.path, "config.json");
    if (!opt.architecture.empty()) return opt.architecture;
    return std::nullopt;  // opened as usual: the error names what is missing
  }
  if (!path_exists(m.path)) {
    if (!opt.architecture.empty()) return opt.architecture;
    fail("'", m.path, "' does not exist; a shapes-only preflight needs a config.json there or "
         "--arch CONFIG.json describing the architecture");
  }
  return std::nullopt;
}

}  // namespace

int64_t count_jsonl_lines(const std::string& path) {
  std::ifstream in = open_sample_file(path);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) ++n;
  return n;
}

std::vector<std::string> preflight_problems(const MergeConfig& c, MergeInputs* in, const PreflightOptions& opt) {
  std::vector<std::string> problems;
  auto note = [&](const std::string& text) { in->notes.push_back(text); };
  auto guard = [&](const std::string& what, auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      problems.push_back(what.empty() ? e.what() : what + ": " + e.what());
    }
  };

  // Models: every one opened and validated, then compared with the first that opened.
  std::vector<bool> opened;
  for (const ModelEntry& m : c.models) {
    bool ok = false, described = false;
    guard("model '" + m.name + "'", [&] {
      if (auto cfg_path = description_of(m, opt)) {
        ModelDir d{m.path, load_model_config(*cfg_path), {}, {}, {}, {}};
        d.slots = expected_tensors(d.config);
        in->models.push_back(std::move(d));
        described = true;
        note("model '" + m.name + "': shapes from " + *cfg_path + " (no weights read)");
      } else {
        in->models.push_back(open_model_or_adapter(m.path, m.base_model));
      }
      ok = true;
    });
    if (!ok) in->models.push_back(ModelDir{m.path, {}, {}, {}, {}, {}});
    opened.push_back(ok);
    in->described.push_back(described);
  }
  int first = -1;
  for (size_t i = 0; i < c.models.size(); ++i) {
    if (!opened[i]) continue;
    if (first < 0) {
      first = static_cast<int>(i);
      continue;
    }
    compare_configs(c.models[first], in->models[first].config, c.models[i], in->models[i].config, !c.slices.empty(),
                    &problems);
  }
  in->reference = c.model_index(c.reference);
  if (!c.base.empty()) in->base = c.model_index(c.base);
  // The output's tensors and their sources, with the bytes read from each model (headers, or
  // shape x dtype for a described model).
  if (problems.empty()) build_output_layout(c, in, opened, &problems);

  // Data: present and with at least K samples.
  if (c.needs_data()) {
    guard("data", [&] {
      if (opt.shapes_only && !path_exists(c.data)) {
        note("data '" + c.data + "' is not here; its samples were not counted (shapes only)");
        return;
      }
      if (!path_exists(c.data)) fail("'", c.data, "' does not exist");
      in->data_samples = count_jsonl_lines(c.data);
      in->data_bytes = file_size_of(c.data);
      if (in->data_samples == 0) fail("'", c.data, "' holds no samples");
      if (!c.uses_representations()) return;
      int64_t usable = in->data_samples;
      if (c.typical.max_samples > 0) usable = std::min(usable, c.typical.max_samples);
      if (c.typical.clusters > usable)
        fail("typical.clusters is ", c.typical.clusters, " but '", c.data, "' provides only ", usable,
             " sample(s)", c.typical.max_samples > 0 ? " (after typical.max_samples)" : "",
             "; lower typical.clusters or add data");
    });
    if (first >= 0) {
      const int64_t L = in->models[first].config.num_hidden_layers;
      if (c.typical.hidden_state < -1 || c.typical.hidden_state > L)
        problems.push_back(c.origin.of("typical.hidden_state") + ": typical.hidden_state is " +
                           std::to_string(c.typical.hidden_state) +
                           "; expected -1 (the last block's output) or a hidden-state index in [0, " +
                           std::to_string(L) + "]");
      if (c.parallel.stages > L)
        problems.push_back("parallel.stages is " + std::to_string(c.parallel.stages) + " but the models have only " +
                           std::to_string(L) + " blocks");
    }
  }

  // Output: not an input, not inside one, no input inside it, and nothing in the way that recall
  // did not write (recall/pipeline/output_dir.h).
  std::vector<std::string> model_dirs;
  for (const ModelEntry& m : c.models) {
    model_dirs.push_back(m.path);
    if (!m.base_model.empty()) model_dirs.push_back(m.base_model);
  }
  for (std::string& p : OutputDir(c.output.dir).problems(c.output.overwrite, merge_input_paths(c), model_dirs))
    problems.push_back(std::move(p));

  // Disk: the calibration statistics are written beside the output before anything is merged (at
  // 70B, hours in); files an earlier run of the phase left there are replaced or reused.
  if (c.needs_statistics() && !in->slots.empty()) {
    const std::string dir = OutputDir(c.output.dir).statistics();
    const uint64_t need = statistics_disk_bytes(c, *in), have = free_bytes(dir);
    if (have != UINT64_MAX && need > have + tree_bytes(dir))
      problems.push_back("the calibration statistics of method " + c.method->name + " need " + format_bytes(need) +
                         " under '" + dir + "', but its file system has " + format_bytes(have) +
                         " free\n---> HINT: free space there or choose an output.dir on a larger file system (the "
                         "statistics are deleted at the commit; RegMean's are 8 x in^2 bytes per linear input, "
                         "block and model)");
  }
  return problems;
}

MergeInputs preflight(const MergeConfig& config, const PreflightOptions& options) {
  MergeInputs in;
  auto problems = preflight_problems(config, &in, options);
  if (!problems.empty()) {
    std::ostringstream os;
    os << "preflight found " << problems.size() << " problem" << (problems.size() > 1 ? "s" : "") << ":";
    for (const auto& p : problems) os << "\n  - " << p;
    throw Error(os.str());
  }
  return in;
}

std::string preflight_summary(const MergeInputs& in, int plan_world, int world) {
  const ModelConfig& arch = in.models[in.reference].config;
  uint64_t bytes = 0;
  for (size_t m = 0; m < in.models.size(); ++m) bytes += in.model_bytes(m);
  std::ostringstream os;
  os << "preflight ok: " << in.models.size() << " " << arch_name(arch.arch) << " models, " << arch.num_hidden_layers
     << " blocks, " << in.models[in.reference].slots.size() << " tensors each, " << format_bytes(bytes) << " to read; " << plan_world
     << " rank(s)" << (plan_world != world ? " (planned)" : "");
  if (in.output_blocks != arch.num_hidden_layers)
    os << "; the merged model (slices): " << in.output_blocks << " blocks, " << in.slots.size() << " tensors";
  return os.str();
}

}  // namespace recall
