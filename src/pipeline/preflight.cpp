// Preflight of a merge: compatibility of the inputs, data and output checks, from headers only.
#include "recall/pipeline/preflight.h"

#include <fstream>
#include <sstream>

#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

std::string canonical(const std::string& p) { return resolved_path(p); }

// True when `inner` is `outer` or lies inside it.
bool contains(const std::string& outer, const std::string& inner) {
  const std::string o = canonical(outer), i = canonical(inner);
  return i == o || (i.size() > o.size() && i.compare(0, o.size(), o) == 0 && i[o.size()] == '/');
}

// The fields that must agree for two models to be merged tensor by tensor.
void compare_configs(const ModelEntry& a, const ModelConfig& x, const ModelEntry& b,
                     const ModelConfig& y, std::vector<std::string>* problems) {
  auto differ = [&](const char* field, const std::string& u, const std::string& v) {
    if (u != v)
      problems->push_back("model '" + b.name + "' (" + b.path + "): " + field + " is " + v +
                          ", but model '" + a.name + "' has " + u);
  };
  differ("architecture", arch_name(x.arch), arch_name(y.arch));
  differ("hidden_size", std::to_string(x.hidden_size), std::to_string(y.hidden_size));
  differ("intermediate_size", std::to_string(x.intermediate_size), std::to_string(y.intermediate_size));
  differ("num_hidden_layers", std::to_string(x.num_hidden_layers), std::to_string(y.num_hidden_layers));
  differ("num_attention_heads", std::to_string(x.num_attention_heads), std::to_string(y.num_attention_heads));
  differ("num_key_value_heads", std::to_string(x.num_key_value_heads), std::to_string(y.num_key_value_heads));
  differ("head_dim", std::to_string(x.head_dim), std::to_string(y.head_dim));
  differ("vocab_size (vocabulary)", std::to_string(x.vocab_size), std::to_string(y.vocab_size));
  differ("tie_word_embeddings", x.tie_word_embeddings ? "true" : "false", y.tie_word_embeddings ? "true" : "false");
  differ("attention_bias", x.attention_bias ? "true" : "false", y.attention_bias ? "true" : "false");
  differ("mlp_bias", x.mlp_bias ? "true" : "false", y.mlp_bias ? "true" : "false");
}

}  // namespace

int64_t count_jsonl_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open data file '", path, "'");
  int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) ++n;
  return n;
}

std::vector<std::string> preflight_problems(const MergeConfig& c, MergeInputs* in) {
  std::vector<std::string> problems;
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
    bool ok = false;
    guard("model '" + m.name + "'", [&] {
      in->models.push_back(open_model_or_adapter(m.path, m.base_model));
      ok = true;
    });
    if (!ok) in->models.push_back(ModelDir{m.path, {}, {}, {}, {}});
    opened.push_back(ok);
  }
  int first = -1;
  for (size_t i = 0; i < c.models.size(); ++i) {
    if (!opened[i]) continue;
    if (first < 0) {
      first = static_cast<int>(i);
      continue;
    }
    compare_configs(c.models[first], in->models[first].config, c.models[i], in->models[i].config, &problems);
  }
  in->reference = c.model_index(c.reference);
  if (!c.base.empty()) in->base = c.model_index(c.base);
  if (first >= 0) in->slots = expected_tensors(in->models[first].config);

  // Data: present and with at least K samples.
  if (c.method == "recall") {
    guard("data", [&] {
      if (!path_exists(c.data)) fail("'", c.data, "' does not exist");
      in->data_samples = count_jsonl_lines(c.data);
      if (in->data_samples == 0) fail("'", c.data, "' holds no samples");
      int64_t usable = in->data_samples;
      if (c.typical.max_samples > 0) usable = std::min(usable, c.typical.max_samples);
      if (c.typical.clusters > usable)
        fail("typical.clusters is ", c.typical.clusters, " but '", c.data, "' provides only ", usable,
             " sample(s)", c.typical.max_samples > 0 ? " (after typical.max_samples)" : "",
             "; lower typical.clusters or add data");
    });
    if (first >= 0) {
      const int64_t L = in->models[first].config.num_hidden_layers;
      if (c.typical.layer < -1 || c.typical.layer > L)
        problems.push_back("typical.layer is " + std::to_string(c.typical.layer) +
                           "; expected -1 (last block) or a hidden-state index in [0, " + std::to_string(L) + "]");
      if (c.parallel.stages > L)
        problems.push_back("parallel.stages is " + std::to_string(c.parallel.stages) + " but the models have only " +
                           std::to_string(L) + " blocks");
    }
  }

  // Output: not an input, not inside one, no input inside it, and not already there.
  for (const ModelEntry& m : c.models)
    if (contains(m.path, c.output.dir) || contains(c.output.dir, m.path))
      problems.push_back("output.dir '" + c.output.dir + "' overlaps input model '" + m.name + "' (" + m.path +
                         "); refusing to write over or inside an input");
  if (path_exists(c.output.dir) && !c.output.overwrite)
    problems.push_back("output.dir '" + c.output.dir + "' already exists; set output.overwrite: true "
                       "(or --set output.overwrite=true) to replace it");
  return problems;
}

MergeInputs preflight(const MergeConfig& config) {
  MergeInputs in;
  auto problems = preflight_problems(config, &in);
  if (!problems.empty()) {
    std::ostringstream os;
    os << "preflight found " << problems.size() << " problem" << (problems.size() > 1 ? "s" : "") << ":";
    for (const auto& p : problems) os << "\n  - " << p;
    throw Error(os.str());
  }
  return in;
}

}  // namespace recall
