// Decoding of the merge job's YAML config by one field table: every key is one row (its type,
// range, doc and where it lives in MergeConfig), and the table drives reading, the allowed keys,
// the checks (with the YAML line and column), to_yaml and the generated reference.
#include "recall/config/merge_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "recall/config/mergekit_yaml.h"
#include "recall/config/yaml_text.h"
#include "recall/util/byte_size.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

std::string ConfigOrigin::of(const std::string& key) const {
  for (std::string k = key;;) {
    if (auto it = positions_.find(k); it != positions_.end()) return it->second;
    const auto cut = k.find_last_of(".[");
    if (cut == std::string::npos) return file;
    k = k.substr(0, cut);
  }
}

size_t MergeConfig::model_index(const std::string& name) const {
  for (size_t i = 0; i < models.size(); ++i)
    if (models[i].name == name) return i;
  fail("no model named '", name, "' in the config");
}

namespace {

constexpr EnumName<DType> kOutputDTypes[] = {
    {"bfloat16", DType::BF16}, {"float16", DType::F16}, {"float32", DType::F32}};
constexpr EnumName<OutputFormat> kOutputFormats[] = {{"hf", OutputFormat::Hf}, {"h5", OutputFormat::H5}};

// Bounds on what a config may hold, so that a hostile file fails with a message instead of
// exhausting memory: the file itself, any string, any list.
constexpr size_t kMaxConfigBytes = 16u << 20;
constexpr size_t kMaxStringBytes = 4096;  // PATH_MAX on Linux
constexpr size_t kMaxModels = 4096;
constexpr size_t kMaxListEntries = 65536;

// Reading context: the file name and the --set assignments, so that errors point at either.
struct Reader {
  std::string where;
  std::map<std::string, std::string> overrides;  // dotted key -> "k=v" as given
  // Keys translated from a mergekit file named by `mergekit:` -> that file (else `where`).
  std::map<std::string, std::string> files;

  std::string at(const std::string& key, const YAML::Node& n) const {
    std::string file = where;
    bool file_found = false;
    for (std::string k = key;;) {
      if (auto it = overrides.find(k); it != overrides.end()) return "--set '" + it->second + "'";
      if (auto it = files.find(k); it != files.end() && !file_found) file = it->second, file_found = true;
      const auto cut = k.find_last_of(".[");
      if (cut == std::string::npos) break;
      k = k.substr(0, cut);
    }
    return yaml_position(file, n);
  }
  [[noreturn]] void bad(const std::string& key, const YAML::Node& n, const std::string& expected) const {
    fail(at(key, n), ": '", key, "' must be ", expected, ", got ", yaml_describe(n));
  }
};

template <typename T>
using Ref = std::function<T&(MergeConfig&)>;

// One key of the config.
struct Field {
  std::string key;   // dotted path: "typical.clusters"; top-level keys have no dot
  std::string type;  // for the reference: "integer in [1, 1000000]"
  std::string doc;
  std::function<void(MergeConfig&, const YAML::Node&, const Reader&)> read;  // decodes and checks
  std::function<void(const MergeConfig&, YAML::Emitter&)> emit;              // the value
};

std::string section_of(const std::string& key) {
  const auto dot = key.find('.');
  return dot == std::string::npos ? std::string() : key.substr(0, dot);
}
std::string name_in_section(const std::string& key) {
  const auto dot = key.find('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

template <typename T>
T scalar_as(const YAML::Node& n, const std::string& key, const Reader& r, const char* expected) {
  if (!n.IsScalar()) r.bad(key, n, expected);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    r.bad(key, n, expected);
  }
}

// A number as the shortest text that reads back as the same double (yaml-cpp writes 17 digits:
// 0.69999999999999996 for 0.7), and a value list as one number or a flow list of them.
void emit_number(YAML::Emitter& e, double v) { e << shortest_number(v); }

void emit_numbers(YAML::Emitter& e, const std::vector<double>& v) {
  if (v.size() == 1) return emit_number(e, v[0]);
  e << YAML::Flow << YAML::BeginSeq;
  for (double x : v) emit_number(e, x);
  e << YAML::EndSeq;
}

std::string show_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

Field integer(std::string key, Ref<int64_t> ref, int64_t lo, int64_t hi, std::string doc) {
  const std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return {key, range, std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            const auto v = scalar_as<int64_t>(n, key, r, range.c_str());
            if (v < lo || v > hi) r.bad(key, n, range);
            ref(c) = v;
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { e << ref(const_cast<MergeConfig&>(c)); }};
}

Field uinteger(std::string key, Ref<uint64_t> ref, std::string doc) {
  return {key, "a non-negative integer", std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            if (n.IsScalar() && !n.Scalar().empty() && n.Scalar()[0] == '-') r.bad(key, n, "a non-negative integer");
            ref(c) = scalar_as<uint64_t>(n, key, r, "a non-negative integer");
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { e << ref(const_cast<MergeConfig&>(c)); }};
}

// A finite number in [lo, hi] ((lo, hi] when lo_open).
Field number(std::string key, Ref<double> ref, double lo, double hi, bool lo_open, std::string doc) {
  const std::string range = std::string("a finite number in ") + (lo_open ? "(" : "[") + show_number(lo) + ", " +
                            show_number(hi) + "]";
  return {key, range, std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            const double v = scalar_as<double>(n, key, r, range.c_str());
            if (!std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo)) r.bad(key, n, range);
            ref(c) = v;
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { emit_number(e, ref(const_cast<MergeConfig&>(c))); }};
}

// A finite number in [lo, hi], or a non-empty list of them: a gradient over the blocks.
Field gradient(std::string key, Ref<std::vector<double>> ref, double lo, double hi, std::string doc) {
  const std::string range = "a finite number in [" + show_number(lo) + ", " + show_number(hi) + "]";
  const std::string expected = range + " or a list of them (a gradient over the blocks)";
  return {key, range + ", or a list of them (a gradient)", std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            if (n.IsSequence() && (n.size() == 0 || n.size() > kMaxListEntries)) r.bad(key, n, expected);
            std::vector<double> v;
            for (size_t i = 0; i < (n.IsSequence() ? n.size() : 1); ++i) {
              const YAML::Node x = n.IsSequence() ? n[i] : n;
              const std::string& what = n.IsScalar() ? range : expected;
              const double d = scalar_as<double>(x, key, r, what.c_str());
              if (!std::isfinite(d) || d < lo || d > hi) r.bad(key, x, what);
              v.push_back(d);
            }
            ref(c) = v;
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { emit_numbers(e, ref(const_cast<MergeConfig&>(c))); }};
}

Field boolean(std::string key, Ref<bool> ref, std::string doc) {
  return {key, "true or false", std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            ref(c) = scalar_as<bool>(n, key, r, "true or false");
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { e << ref(const_cast<MergeConfig&>(c)); }};
}

std::string read_string(const YAML::Node& n, const std::string& key, const Reader& r) {
  auto s = scalar_as<std::string>(n, key, r, "a string");
  if (s.size() > kMaxStringBytes)
    fail(r.at(key, n), ": '", key, "' is ", s.size(), " bytes long; at most ", kMaxStringBytes, " are allowed");
  return s;
}

Field string(std::string key, Ref<std::string> ref, std::string doc) {
  return {key, "a string", std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) { ref(c) = read_string(n, key, r); },
          [=](const MergeConfig& c, YAML::Emitter& e) { e << ref(const_cast<MergeConfig&>(c)); }};
}

Field bytes(std::string key, Ref<uint64_t> ref, uint64_t lo, std::string doc) {
  const std::string expected = "a byte count such as 5000000000, 5GB or 512MiB" +
                               (lo > 0 ? ", at least " + std::to_string(lo) : std::string());
  return {key, "bytes (5000000000, 5GB, 512MiB)" + (lo > 0 ? std::string(", > 0") : std::string()), std::move(doc),
          [=](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            if (!n.IsScalar()) r.bad(key, n, expected);
            std::string why;
            const auto v = parse_byte_size(n.Scalar(), &why);
            if (!v) r.bad(key, n, expected + " (" + why + ")");
            if (*v < lo) r.bad(key, n, expected);
            ref(c) = *v;
          },
          [=](const MergeConfig& c, YAML::Emitter& e) { e << ref(const_cast<MergeConfig&>(c)); }};
}

template <typename T>
struct NonDeduced {
  using type = T;
};

// E comes from the table; the accessor (a lambda) converts to Ref<E>.
template <typename E, size_t N>
Field choice(std::string key, typename NonDeduced<Ref<E>>::type ref, const EnumName<E> (&table)[N], std::string doc) {
  const std::string names = names_of(table);
  return {key, "one of " + names, std::move(doc),
          [=, &table](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            const auto v = parse_name(table, scalar_as<std::string>(n, key, r, ("one of " + names).c_str()));
            if (!v) r.bad(key, n, "one of " + names);
            ref(c) = *v;
          },
          [=, &table](const MergeConfig& c, YAML::Emitter& e) {
            e << std::string(name_of(table, ref(const_cast<MergeConfig&>(c))));
          }};
}

// A non-empty list of distinct names from the table.
template <typename E, size_t N>
Field choices(std::string key, typename NonDeduced<Ref<std::vector<E>>>::type ref, const EnumName<E> (&table)[N],
              std::string doc) {
  const std::string names = names_of(table);
  const std::string expected = "a non-empty list of distinct values among " + names;
  return {key, "a list of " + names, std::move(doc),
          [=, &table](MergeConfig& c, const YAML::Node& n, const Reader& r) {
            if (!n.IsSequence() || n.size() == 0) r.bad(key, n, expected);
            std::vector<E> v;
            for (size_t i = 0; i < n.size(); ++i) {
              const auto e = n[i].IsScalar() ? parse_name(table, n[i].Scalar()) : std::nullopt;
              if (!e || std::find(v.begin(), v.end(), *e) != v.end()) r.bad(key, n[i], expected);
              v.push_back(*e);
            }
            ref(c) = v;
          },
          [=, &table](const MergeConfig& c, YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (E x : ref(const_cast<MergeConfig&>(c))) e << std::string(name_of(table, x));
            e << YAML::EndSeq;
          }};
}

// The table. Defaults are MergeConfig's initializers; `models` and `params` have readers of
// their own (below) because their values are lists and mappings of mergekit's forms.
const std::vector<Field>& fields() {
  static const std::vector<Field> table = [] {
    std::vector<Field> f;
    f.push_back(string("base", [](MergeConfig& c) -> auto& { return c.base; },
                       "model name of the base for methods that use one (task vectors are taken from it)"));
    f.push_back(string("reference", [](MergeConfig& c) -> auto& { return c.reference; },
                       "RECALL's newly fine-tuned model, whose task data gives the typical samples (default: the "
                       "last model)"));
    f.push_back({"method", "one of " + merge_method_names(), "the merge method (the table below)",
                 [](MergeConfig& c, const YAML::Node& n, const Reader& r) {
                   const auto name = scalar_as<std::string>(n, "method", r, "a method name");
                   try {
                     c.method = &merge_method(name);
                   } catch (const Error& e) {
                     fail(r.at("method", n), ": ", e.what());
                   }
                 },
                 [](const MergeConfig& c, YAML::Emitter& e) { e << c.method->name; }});
    f.push_back(string("data", [](MergeConfig& c) -> auto& { return c.data; },
                       "JSON lines of the reference model's task: {\"input_ids\": [...]} or {\"text\": \"...\"} "
                       "(methods that use representations or calibration statistics, and aim)"));
    f.push_back(integer("max_length", [](MergeConfig& c) -> auto& { return c.max_length; }, 1, 1 << 20,
                        "tokens per sample; longer samples are truncated"));
    f.push_back(bytes("memory_budget", [](MergeConfig& c) -> auto& { return c.memory_budget; }, 0,
                      "per rank: the job refuses to start when its memory plan exceeds it (0 = no limit)"));

    f.push_back(integer("typical.clusters", [](MergeConfig& c) -> auto& { return c.typical.clusters; }, 1, 1 << 20,
                        "K, the number of typical samples (k-means clusters)"));
    f.push_back(integer("typical.hidden_state", [](MergeConfig& c) -> auto& { return c.typical.hidden_state; }, -1,
                        1 << 20,
                        "hidden state of the reference clustered: -1 = the last block's output, i = hidden.i "
                        "(0 = the embedding output, l + 1 = block l's output)"));
    f.push_back(uinteger("typical.seed", [](MergeConfig& c) -> auto& { return c.typical.seed; }, "k-means++ seed"));
    f.push_back(integer("typical.iterations", [](MergeConfig& c) -> auto& { return c.typical.iterations; }, 1,
                        1 << 20, "at most this many Lloyd iterations"));
    f.push_back(integer("typical.max_samples", [](MergeConfig& c) -> auto& { return c.typical.max_samples; }, 0,
                        std::numeric_limits<int64_t>::max(), "use at most this many lines of `data` (0 = all)"));
    f.push_back(integer("typical.kmeans_samples", [](MergeConfig& c) -> auto& { return c.typical.kmeans_samples; },
                        0, std::numeric_limits<int64_t>::max(),
                        "above this many samples, k-means runs on this many of them (a seeded uniform subset, "
                        "in file order) and each centroid then takes its nearest sample among all; 0 = always "
                        "all (k-means costs N x K x hidden_size per iteration)"));

    f.push_back(choice("typical.pooling", [](MergeConfig& c) -> auto& { return c.typical.pooling; }, kPoolings,
                       "a sample's token states -> one vector for the clustering: the mean over its tokens, the "
                       "mean without the first (BOS) token, or the last token"));
    f.push_back(choice("kernel.kind", [](MergeConfig& c) -> auto& { return c.kernel.kind; }, kSimilarityKinds,
                       "similarity of representations: RBF kernel (RECALL) or linear / RBF CKA (ablations)"));
    f.push_back(number("kernel.bandwidth_factor", [](MergeConfig& c) -> auto& { return c.kernel.bandwidth_factor; },
                       0, 1e12, true, "rbf: sigma^2 = factor x the median squared pairwise distance"));
    f.push_back(number("kernel.gamma", [](MergeConfig& c) -> auto& { return c.kernel.gamma; }, 0, 1e12, false,
                       "rbf: when > 0, exp(-gamma d^2) with this fixed gamma instead of the median heuristic"));
    f.push_back(number("kernel.cka_threshold", [](MergeConfig& c) -> auto& { return c.kernel.cka_threshold; }, 0,
                       1e6, true, "rbf_cka: sigma = threshold x the median distance (Kornblith et al.)"));
    f.push_back(boolean("kernel.cka_debiased", [](MergeConfig& c) -> auto& { return c.kernel.cka_debiased; },
                        "linear_cka, rbf_cka: the unbiased HSIC estimator"));

    f.push_back(choice("kernel.pooling", [](MergeConfig& c) -> auto& { return c.kernel.pooling; }, kPoolings,
                       "a sample's token states -> one representation per block: as typical.pooling"));
    f.push_back(choice("recall.similarity", [](MergeConfig& c) -> auto& { return c.kernel.mode; }, kSimilarityModes,
                       "each model against the reference (RECALL), or the mean of its similarities to every "
                       "other model (the pairwise reading)"));
    f.push_back(gradient("recall.temperature", [](MergeConfig& c) -> auto& { return c.recall.temperature; }, 0, 1e6,
                         "tau of the softmax over models (0 = the most similar model alone); a list is a gradient "
                         "over the blocks, interpolated as mergekit's"));
    f.push_back(choice("recall.non_block", [](MergeConfig& c) -> auto& { return c.recall.non_block; },
                       kNonBlockPolicies,
                       "weights of the tensors outside the blocks: 1/M each, the nearest block's, or the "
                       "reference alone"));
    f.push_back(choice("recall.granularity", [](MergeConfig& c) -> auto& { return c.recall.granularity; },
                       kGranularities, "per-block weights, or one weight vector for every block (ablation)"));

    f.push_back(integer("calibration.samples", [](MergeConfig& c) -> auto& { return c.calibration.samples; }, 0,
                        std::numeric_limits<int64_t>::max(),
                        "data-aware methods (regmean, regmean_plusplus, fisher) and aim: the calibration samples "
                        "are the first this many lines of `data` (0 = all)"));
    f.push_back(number("aim.omega", [](MergeConfig& c) -> auto& { return c.aim.omega; }, 0, 1, false,
                       "AIM (activation-informed merging) on top of a method with a base: merged = base + delta "
                       "x (1 - I_j (1 - omega)), I_j the base's mean |activation| of input channel j over its "
                       "largest; 1 = off, 0.4 = the paper's setting"));

    f.push_back(integer("parallel.stages", [](MergeConfig& c) -> auto& { return c.parallel.stages; }, 1, 1 << 20,
                        "pipeline stages per model (the grid's stage axis)"));
    f.push_back(integer("parallel.micro_batch", [](MergeConfig& c) -> auto& { return c.parallel.micro_batch; }, 1,
                        1 << 20, "samples per micro-batch in the extraction"));
    f.push_back(integer("parallel.stream_samples", [](MergeConfig& c) -> auto& { return c.parallel.stream_samples; },
                        0, 1 << 30,
                        "0: a rank keeps its stage's blocks resident; N > 0: one block resident at a time, each "
                        "read once per pass, with the hidden states of about N samples (N x max_length tokens) "
                        "held in memory between blocks and the rest spilled to parallel.scratch_dir"));
    f.push_back(string("parallel.scratch_dir", [](MergeConfig& c) -> auto& { return c.parallel.scratch_dir; },
                       "where streaming extraction spills the hidden states it cannot hold (a fresh directory per "
                       "pass, removed after it; default: $TMPDIR, else /tmp)"));
    f.push_back(choice("parallel.device", [](MergeConfig& c) -> auto& { return c.parallel.device; }, kDevices,
                       "where ranks compute: cuda = the GPU of the local rank, NCCL between ranks"));
    f.push_back(bytes("parallel.merge_chunk_bytes", [](MergeConfig& c) -> auto& { return c.parallel.merge_chunk_bytes; },
                      1, "bytes of one input's rows the merge reads per step (row-wise methods)"));

    f.push_back(string("output.dir", [](MergeConfig& c) -> auto& { return c.output.dir; },
                       "output directory; written as <dir>.partial and renamed when every rank succeeded"));
    f.push_back(choice("output.dtype", [](MergeConfig& c) -> auto& { return c.output.dtype; }, kOutputDTypes,
                       "dtype of the merged tensors"));
    f.push_back(choices("output.formats", [](MergeConfig& c) -> auto& { return c.output.formats; }, kOutputFormats,
                        "what the merge writes: hf = the Hugging Face directory hf/ (safetensors shards, config.json, "
                        "tokenizer), h5 = merged.h5 (parallel HDF5 with the merge's metadata)"));
    f.push_back(string("output.tokenizer", [](MergeConfig& c) -> auto& { return c.output.tokenizer; },
                       "name of the model whose tokenizer files hf/ gets (default: the reference)"));
    f.push_back(bytes("output.shard_bytes", [](MergeConfig& c) -> auto& { return c.output.shard_bytes; }, 1,
                      "largest safetensors shard of the Hugging Face export"));
    f.push_back(bytes("output.checkpoint_bytes", [](MergeConfig& c) -> auto& { return c.output.checkpoint_bytes; },
                      0, "resume checkpoint every this many merged bytes (0 = after every tensor)"));
    f.push_back(boolean("output.overwrite", [](MergeConfig& c) -> auto& { return c.output.overwrite; },
                        "replace an existing output directory"));
    return f;
  }();
  return table;
}

// Keys that were renamed, with their new name (for the unknown-key error).
const std::map<std::string, std::string>& renamed_keys() {
  static const std::map<std::string, std::string> m = {{"typical.layer", "typical.hidden_state"},
                                                       {"kernel.median_factor", "kernel.bandwidth_factor"},
                                                       {"typical.max_iterations", "typical.iterations"}};
  return m;
}

// The allowed keys of a section ("" = top level), in table order.
std::vector<std::string> allowed_keys(const std::string& section) {
  std::vector<std::string> out;
  auto add = [&](const std::string& k) {
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  };
  if (section.empty()) add("models");
  if (section.empty()) add("slices");
  for (const Field& f : fields()) {
    if (section.empty()) add(section_of(f.key).empty() ? f.key : section_of(f.key));
    else if (section_of(f.key) == section) add(name_in_section(f.key));
  }
  if (section.empty()) add("params");
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Checks that a mapping has only allowed, distinct, plain keys.
void check_keys(const YAML::Node& map, const std::string& section, const std::vector<std::string>& allowed,
                const Reader& r) {
  std::map<std::string, YAML::Node> seen;
  for (const auto& kv : map) {
    const std::string where_key = section.empty() ? "config" : section;
    if (!kv.first.IsScalar())
      fail(r.at(section, kv.first), ": a key in '", where_key, "' is ", yaml_describe(kv.first),
           "; keys must be plain names");
    const std::string k = kv.first.Scalar(), path = section.empty() ? k : section + "." + k;
    if (auto it = seen.find(k); it != seen.end())
      fail(r.at(path, kv.first), ": key '", path, "' appears twice (first at ", yaml_position(r.where, it->second),
           ")");
    seen.emplace(k, kv.first);
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string hint;
    if (auto it = renamed_keys().find(path); it != renamed_keys().end()) hint = " (renamed to '" + it->second + "')";
    fail(r.at(path, kv.first), ": unknown key '", path, "'", hint, "; allowed here: ", join(allowed));
  }
}

void apply_override(YAML::Node& root, const std::string& assignment, Reader* r) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("--set '", assignment, "': expected key.sub=value");
  const std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail("--set '", assignment, "': value is not valid YAML: ", e.msg);
  }
  std::vector<std::string> keys;
  std::stringstream ss(path);
  for (std::string k; std::getline(ss, k, '.');) {
    if (k.empty()) fail("--set '", assignment, "': empty key in '", path, "'");
    keys.push_back(k);
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = cur[keys[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      fail("--set '", assignment, "': '", keys[i], "' is not a mapping");
    if (!next.IsDefined() || next.IsNull()) cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node child = cur[keys[i]];
    cur.reset(child);  // rebind (plain assignment would overwrite the value)
  }
  cur[keys.back()] = parsed;
  r->overrides[path] = assignment;
}

// A number of a parameter: booleans become 0/1 for Bool parameters.
double param_number(const YAML::Node& n, const ParamSpec& p, const std::string& key, const Reader& r) {
  if (!n.IsScalar()) r.bad(key, n, "a number, a list of numbers (a gradient) or a list of {filter, value}");
  if (p.kind == ParamKind::Bool) {
    try {
      return n.as<bool>() ? 1.0 : 0.0;
    } catch (const YAML::Exception&) {
    }
  }
  double v;
  try {
    v = n.as<double>();
  } catch (const YAML::Exception&) {
    r.bad(key, n, p.kind == ParamKind::Bool ? "true or false" : "a number");
  }
  std::string expected;
  if (p.kind == ParamKind::Bool && v != 0 && v != 1) expected = "true or false";
  if (p.kind == ParamKind::Integer && v != std::floor(v)) expected = "an integer";
  if (!std::isfinite(v) || v < p.min || v > p.max || (p.min_open && v == p.min))
    expected = std::string("a finite number in ") + (p.min_open ? "(" : "[") + show_number(p.min) + ", " +
               show_number(p.max) + "]";
  if (!expected.empty()) r.bad(key, n, expected);
  return v;
}

std::vector<double> param_values(const YAML::Node& n, const ParamSpec& p, const std::string& key, const Reader& r) {
  if (n.IsScalar()) return {param_number(n, p, key, r)};
  if (!n.IsSequence() || n.size() == 0) r.bad(key, n, "a number or a non-empty list of numbers (a gradient)");
  if (n.size() > kMaxListEntries) fail(r.at(key, n), ": '", key, "' has ", n.size(), " entries; at most ",
                                       kMaxListEntries, " are allowed");
  std::vector<double> v;
  for (size_t i = 0; i < n.size(); ++i) v.push_back(param_number(n[i], p, key + "[" + std::to_string(i) + "]", r));
  return v;
}

ParamSetting read_setting(const YAML::Node& n, const ParamSpec& p, const std::string& key, const Reader& r) {
  ParamSetting s;
  const bool conditional = n.IsMap() || (n.IsSequence() && n.size() > 0 && n[0].IsMap());
  if (!conditional) {
    s.entries.push_back({"", param_values(n, p, key, r)});
    return s;
  }
  std::vector<YAML::Node> items;
  if (n.IsMap()) items.push_back(n);
  else
    for (const auto& x : n) items.push_back(x);
  if (items.size() > kMaxListEntries) fail(r.at(key, n), ": '", key, "' has too many entries");
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string k = key + "[" + std::to_string(i) + "]";
    if (!items[i].IsMap()) r.bad(k, items[i], "a mapping {filter: NAME, value: V}");
    check_keys(items[i], k, {"filter", "value"}, r);
    ParamSetting::Entry e;
    if (YAML::Node f = items[i]["filter"]; f && !f.IsNull()) e.filter = read_string(f, k + ".filter", r);
    YAML::Node v = items[i]["value"];
    if (!v || v.IsNull()) fail(r.at(k, items[i]), ": '", k, "' needs a 'value'");
    e.values = param_values(v, p, k + ".value", r);
    s.entries.push_back(std::move(e));
  }
  return s;
}

// Reads a params mapping (the config's or one model's) for `method`.
ParamSettings read_params(const YAML::Node& n, const std::string& key, const MethodSpec& method, bool per_model,
                          std::vector<std::string>* notes, const Reader& r) {
  ParamSettings out;
  if (!n || n.IsNull()) return out;
  if (!n.IsMap()) r.bad(key, n, "a mapping of parameter names to values");
  std::vector<std::string> names;
  for (const auto& kv : n)
    if (kv.first.IsScalar()) names.push_back(kv.first.Scalar());
  // Parameters of other methods are accepted with a note (a sweep may vary the method); unknown
  // names are errors.
  std::vector<std::string> known = names;
  for (const auto& kv : n) {
    if (!kv.first.IsScalar()) continue;
    const std::string name = kv.first.Scalar(), path = key + "." + name;
    const ParamSpec* p = method.param(name);
    if (!p) {
      const ParamSpec* other = nullptr;
      for (const MethodSpec& m : merge_methods())
        if (!other) other = m.param(name);
      if (!other) {
        std::vector<std::string> mine;
        for (const ParamSpec& q : method.params) mine.push_back(q.name);
        fail(r.at(path, kv.first), ": unknown parameter '", path, "' of method '", method.name, "'; its parameters: ",
             mine.empty() ? std::string("none") : join(mine));
      }
      read_setting(kv.second, *other, path, r);  // still checked, so a typo in a value is found now
      notes->push_back(r.at(path, kv.first) + ": '" + path + "' is not a parameter of method '" + method.name +
                       "' and is ignored");
      continue;
    }
    if (per_model && p->scope == ParamScope::Shared)
      fail(r.at(path, kv.first), ": '", name, "' is shared by every model of method '", method.name,
           "'; set it under the top-level 'params', not per model");
    out[name] = read_setting(kv.second, *p, path, r);
  }
  check_keys(n, key, known, r);  // duplicates and non-scalar keys
  return out;
}

void read_models(const YAML::Node& models, MergeConfig* c, const Reader& r) {
  if (!models || models.IsNull()) fail(r.where, ": missing key 'models' (the list of models to merge)");
  if (!models.IsSequence()) r.bad("models", models, "a list of {name, path}");
  if (models.size() > kMaxModels) fail(r.at("models", models), ": 'models' lists ", models.size(),
                                       " entries; at most ", kMaxModels, " are supported");
  std::set<std::string> names;
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string key = "models[" + std::to_string(i) + "]";
    const YAML::Node m = models[i];
    if (!m.IsMap()) r.bad(key, m, "a mapping {name, path}");
    check_keys(m, key, {"name", "path", "base_model", "params"}, r);
    ModelEntry e;
    if (m["name"]) e.name = read_string(m["name"], key + ".name", r);
    if (m["path"]) e.path = read_string(m["path"], key + ".path", r);
    if (m["base_model"]) e.base_model = read_string(m["base_model"], key + ".base_model", r);
    if (e.path.empty()) fail(r.at(key, m), ": '", key, "' needs 'path'");
    if (e.name.empty()) e.name = "model" + std::to_string(i);
    if (!names.insert(e.name).second) fail(r.at(key, m), ": duplicate model name '", e.name, "'");
    c->models.push_back(std::move(e));
    c->origin.set(key, r.at(key, m));
  }
}

// mergekit's `layer_range: [first, end)` of a slice source.
void read_layer_range(const YAML::Node& n, const std::string& key, SliceSource* src, const Reader& r) {
  const std::string expected = "[first, end): two integers with 0 <= first < end";
  if (!n || !n.IsSequence() || n.size() != 2) r.bad(key, n ? n : YAML::Node(), expected);
  src->first = scalar_as<int64_t>(n[0], key, r, expected.c_str());
  src->end = scalar_as<int64_t>(n[1], key, r, expected.c_str());
  if (src->first < 0 || src->end <= src->first || src->end > (1 << 20)) r.bad(key, n, expected);
}

// `slices`: a list of {sources: [{model, layer_range, params}], params}.
void read_slices(const YAML::Node& slices, MergeConfig* c, std::vector<std::string>* notes, const Reader& r) {
  if (!slices || slices.IsNull()) return;
  if (!slices.IsSequence() || slices.size() == 0) r.bad("slices", slices, "a non-empty list of {sources, params}");
  if (slices.size() > kMaxListEntries) fail(r.at("slices", slices), ": 'slices' has too many entries");
  for (size_t k = 0; k < slices.size(); ++k) {
    const std::string key = "slices[" + std::to_string(k) + "]";
    const YAML::Node sl = slices[k];
    if (!sl.IsMap()) r.bad(key, sl, "a mapping {sources, params}");
    check_keys(sl, key, {"sources", "params"}, r);
    const YAML::Node sources = sl["sources"];
    if (!sources || !sources.IsSequence() || sources.size() == 0 || sources.size() > kMaxModels)
      r.bad(key + ".sources", sources ? sources : sl, "a non-empty list of {model, layer_range, params}");
    SliceConfig slice;
    for (size_t i = 0; i < sources.size(); ++i) {
      const std::string skey = key + ".sources[" + std::to_string(i) + "]";
      const YAML::Node src = sources[i];
      if (!src.IsMap()) r.bad(skey, src, "a mapping {model, layer_range, params}");
      check_keys(src, skey, {"model", "layer_range", "params"}, r);
      SliceSource s;
      if (!src["model"]) fail(r.at(skey, src), ": '", skey, "' needs 'model' (a model's name)");
      s.model = read_string(src["model"], skey + ".model", r);
      read_layer_range(src["layer_range"], skey + ".layer_range", &s, r);
      if (YAML::Node p = src["params"]; p && !p.IsNull())
        s.params = read_params(p, skey + ".params", *c->method, true, notes, r);
      c->origin.set(skey, r.at(skey, src));
      slice.sources.push_back(std::move(s));
    }
    if (YAML::Node p = sl["params"]; p && !p.IsNull()) slice.params = read_params(p, key + ".params", *c->method, false, notes, r);
    c->origin.set(key, r.at(key, sl));
    c->slices.push_back(std::move(slice));
  }
  c->origin.set("slices", r.at("slices", slices));
}

// The inputs of every output tensor suit the method: every model (with the base), or each
// slice's sources; slice sources name models and agree on their length.
void check_inputs(const MergeConfig& c) {
  const MethodSpec& method = *c.method;
  auto at = [&](const std::string& key) { return c.origin.of(key); };
  if (c.slices.empty()) {
    const std::string problem = method.check_inputs(c.models.size(), !c.base.empty());
    if (!problem.empty()) fail(at("models"), ": method '", method.name, "' ", problem);
    return;
  }
  if (method.needs_data())
    fail(at("slices"), ": method '", method.name, "' merges every block of every model; 'slices' are for the "
         "baselines (e.g. passthrough frankenmerges)");
  for (size_t k = 0; k < c.slices.size(); ++k) {
    const std::string key = "slices[" + std::to_string(k) + "]";
    const SliceConfig& sl = c.slices[k];
    bool has_base = false;
    std::set<std::string> seen;
    for (size_t i = 0; i < sl.sources.size(); ++i) {
      const SliceSource& src = sl.sources[i];
      const std::string skey = key + ".sources[" + std::to_string(i) + "]";
      bool known = false;
      for (const auto& m : c.models) known = known || m.name == src.model;
      if (!known) fail(at(skey), ": '", skey, ".model' is '", src.model, "', which is not among the models");
      if (!seen.insert(src.model).second)
        fail(at(skey), ": model '", src.model, "' is a source of ", key, " twice; a slice merges distinct models");
      if (src.end - src.first != sl.length())
        fail(at(skey), ": layer_range [", src.first, ", ", src.end, ") has ", src.end - src.first, " blocks but the "
             "slice's first source has ", sl.length(), "; every source of a slice must have as many");
      has_base = has_base || (!c.base.empty() && src.model == c.base);
    }
    const std::string problem = method.check_inputs(sl.sources.size(), has_base);
    if (!problem.empty()) fail(at(key), ": method '", method.name, "' ", problem, " in ", key);
  }
}

// Cross-field checks, each naming where the key was set.
void check(MergeConfig& c, const Reader& r) {
  const MethodSpec& method = *c.method;
  auto at = [&](const std::string& key) { return c.origin.of(key); };
  std::set<std::string> names;
  for (const auto& m : c.models) names.insert(m.name);
  if (c.models.empty()) fail(at("models"), ": 'models' is empty; list the models to merge");
  if (c.reference.empty()) c.reference = c.models.back().name;
  if (!names.count(c.reference)) fail(at("reference"), ": 'reference' is '", c.reference, "', which is not among the models");
  if (!c.base.empty() && !names.count(c.base)) fail(at("base"), ": 'base' is '", c.base, "', which is not among the models");
  if (method.base == BaseUse::Required && c.base.empty())
    fail(at("method"), ": method '", method.name, "' needs 'base' (the model the others are taken relative to)");
  check_inputs(c);
  if (!c.output.tokenizer.empty() && !names.count(c.output.tokenizer))
    fail(at("output.tokenizer"), ": 'output.tokenizer' is '", c.output.tokenizer, "', which is not among the models");
  if (method.uses_representations && c.data.empty())
    fail(at("method"), ": method '", method.name, "' needs 'data' (JSONL samples of the reference model's task)");
  if (method.statistics != Statistics::None && c.data.empty())
    fail(at("method"), ": method '", method.name, "' needs 'data' (JSONL calibration samples)");
  if (c.aim.enabled()) {
    if (c.data.empty()) fail(at("aim.omega"), ": aim needs 'data' (JSONL calibration samples for the base's activations)");
    if (method.base == BaseUse::None || c.base.empty())
      fail(at("aim.omega"), ": aim shrinks task vectors (merged - base): it needs 'base' and a method that uses it, "
           "not '", method.name, "'");
  }
  if (c.output.dir.empty()) fail(r.where, ": missing key 'output.dir'");
  if (c.recall.granularity == Granularity::Global && c.recall.temperature.size() > 1)
    fail(at("recall.temperature"), ": 'recall.temperature' is a gradient but recall.granularity is global (one weight "
         "vector for every block); give one temperature");
  // Required parameters must be set somewhere (per tensor, a filter may still leave one unset:
  // the merge names that tensor).
  for (const ParamSpec& p : method.params) {
    if (p.default_value) continue;
    bool given = c.params.count(p.name) > 0;
    for (const auto& m : c.models) given = given || m.params.count(p.name) > 0;
    for (const auto& sl : c.slices) {
      given = given || sl.params.count(p.name) > 0;
      for (const auto& src : sl.sources) given = given || src.params.count(p.name) > 0;
    }
    if (!given) fail(at("params"), ": method '", method.name, "' needs parameter '", p.name, "' (", p.doc, ")");
  }
}

// YAML text parsed, with bounds on its size and nesting so that a hostile file fails with a message.
YAML::Node load_yaml(const std::string& text, const std::string& where) {
  if (text.size() > kMaxConfigBytes)
    fail(where, ": ", text.size(), " bytes; a merge config is at most ", kMaxConfigBytes, " bytes");
  // yaml-cpp parses flow collections recursively: bound their nesting before it can exhaust the
  // stack (a config needs at most 5 levels).
  int depth = 0, line = 1;
  for (char ch : text) {
    if (ch == '\n') ++line;
    if (ch == '[' || ch == '{') {
      if (++depth > 32) fail(where, ":", line, ": collections nested more than 32 deep; not a merge config");
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ":", e.mark.column + 1, ": not valid YAML: ", e.msg);
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) fail(where, ": the config must be a YAML mapping");
  return root;
}

// A mergekit config becomes recall keys (recall/config/mergekit_yaml.h): the whole file, or the
// file a recall config names with `mergekit: FILE` (relative to the recall config), whose keys
// join the recall config's (a key set in both is an error; errors point into the file each key
// came from).
YAML::Node expand_mergekit(YAML::Node root, const std::string& where, Reader* r, std::vector<std::string>* notes) {
  if (is_mergekit_config(root)) {
    MergekitTranslation t = translate_mergekit_config(root, where);
    *notes = t.notes;
    return t.config;
  }
  const YAML::Node& given = root;
  const YAML::Node ref = given["mergekit"];
  if (!ref) return root;
  std::string path = read_string(ref, "mergekit", *r);
  if (!path.empty() && path[0] != '/' && where.find('/') != std::string::npos)
    path = join_path(where.substr(0, where.rfind('/')), path);
  if (!path_exists(path) || is_directory(path))
    fail(r->at("mergekit", ref), ": 'mergekit' names '", path, "', which is not a file");
  // Read at most one byte more than a config may hold (the name may be any file, /dev/zero too).
  std::ifstream file(path, std::ios::binary);
  std::string text(kMaxConfigBytes + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (file.bad()) fail(r->at("mergekit", ref), ": cannot read '", path, "'");
  text.resize(static_cast<size_t>(file.gcount()));
  const YAML::Node mk = load_yaml(text, path);
  if (!is_mergekit_config(mk)) fail(path, ": not a mergekit config (it has no 'merge_method')");
  MergekitTranslation t = translate_mergekit_config(mk, path);
  *notes = t.notes;
  root.remove("mergekit");
  for (const auto& kv : t.config) {
    const std::string k = kv.first.Scalar();
    const bool section = kv.second.IsMap() && k == "output";
    for (const auto& sub : section ? kv.second : YAML::Node(YAML::NodeType::Map)) {
      const std::string key = k + "." + sub.first.Scalar();
      if (const YAML::Node mine = given[k]; mine && mine.IsMap() && mine[sub.first.Scalar()])
        fail(r->at(key, mine[sub.first.Scalar()]), ": '", key, "' is also set by the mergekit config ", path,
             "; set it in one place");
      root[k][sub.first.Scalar()] = sub.second;
      r->files[key] = path;
    }
    if (section) continue;
    if (const YAML::Node mine = given[k]; mine)
      fail(r->at(k, mine), ": '", k, "' comes from the mergekit config ", path, "; remove it here");
    root[k] = kv.second;
    r->files[k] = path;
  }
  return root;
}

MergeConfig decode(const std::string& text, const std::string& where, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml(text, where);
  Reader r{where, {}, {}};
  std::vector<std::string> translation_notes;
  root = expand_mergekit(root, where, &r, &translation_notes);
  for (const std::string& o : overrides) apply_override(root, o, &r);

  MergeConfig c;
  c.origin.file = where;
  c.notes = translation_notes;
  check_keys(root, "", allowed_keys(""), r);
  for (const std::string& section : allowed_keys("")) {
    if (section == "models" || section == "slices" || section == "params") continue;
    const YAML::Node n = root[section];
    const bool is_section = std::any_of(fields().begin(), fields().end(),
                                        [&](const Field& f) { return section_of(f.key) == section; });
    if (!is_section || !n || n.IsNull()) continue;
    if (!n.IsMap()) r.bad(section, n, "a mapping");
    check_keys(n, section, allowed_keys(section), r);
  }
  read_models(root["models"], &c, r);
  for (const Field& f : fields()) {
    const std::string sec = section_of(f.key);
    const YAML::Node n = sec.empty() ? root[f.key] : root[sec][name_in_section(f.key)];
    if (!n || n.IsNull()) continue;
    f.read(c, n, r);
    c.origin.set(f.key, r.at(f.key, n));
  }
  if (YAML::Node p = root["params"]; p && !p.IsNull()) {
    c.params = read_params(p, "params", *c.method, false, &c.notes, r);
    c.origin.set("params", r.at("params", p));
  }
  for (size_t i = 0; i < c.models.size(); ++i) {
    const std::string key = "models[" + std::to_string(i) + "].params";
    if (YAML::Node p = root["models"][i]["params"]; p && !p.IsNull())
      c.models[i].params = read_params(p, key, *c.method, true, &c.notes, r);
  }
  read_slices(root["slices"], &c, &c.notes, r);
  check(c, r);
  return c;
}

void emit_setting(YAML::Emitter& e, const ParamSetting& s) {
  if (s.entries.size() == 1 && s.entries[0].filter.empty()) {
    emit_numbers(e, s.entries[0].values);
    return;
  }
  e << YAML::BeginSeq;
  for (const auto& en : s.entries) {
    e << YAML::Flow << YAML::BeginMap;
    if (!en.filter.empty()) e << YAML::Key << "filter" << YAML::Value << en.filter;
    e << YAML::Key << "value" << YAML::Value;
    emit_numbers(e, en.values);
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
}

void emit_params(YAML::Emitter& e, const ParamSettings& p) {
  e << YAML::BeginMap;
  for (const auto& [name, setting] : p) {
    e << YAML::Key << name << YAML::Value;
    emit_setting(e, setting);
  }
  e << YAML::EndMap;
}

// `params: {...}` inside an open mapping, when there are any.
void emit_params_key(YAML::Emitter& e, const ParamSettings& p) {
  if (p.empty()) return;
  e << YAML::Key << "params" << YAML::Value;
  emit_params(e, p);
}

}  // namespace

MergeConfig parse_merge_config(const std::string& text, const std::string& where,
                               const std::vector<std::string>& overrides) {
  try {
    return decode(text, where, overrides);
  } catch (const YAML::Exception& e) {
    // Every expected case has its own message; this is the net for yaml-cpp's other throws.
    fail(where, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg);
  }
}

MergeConfig load_merge_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!path_exists(path)) fail("config '", path, "' does not exist");
  if (is_directory(path)) fail("config '", path, "' is a directory; expected a YAML file");
  return parse_merge_config(read_text_file(path), path, overrides);
}

std::string output_dtype_name(DType t) { return std::string(name_of(kOutputDTypes, t)); }

double RecallConfig::temperature_at(int64_t block, int64_t blocks) const {
  return ParamSetting{{{"", temperature}}}.resolve("", gradient_position(block, blocks), false).value();
}

std::string output_format_name(OutputFormat f) { return std::string(name_of(kOutputFormats, f)); }

bool OutputConfig::writes(OutputFormat f) const { return std::find(formats.begin(), formats.end(), f) != formats.end(); }

std::string to_yaml(const MergeConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
  for (const ModelEntry& m : c.models) {
    e << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << m.name << YAML::Key << "path"
      << YAML::Value << m.path;
    if (!m.base_model.empty()) e << YAML::Key << "base_model" << YAML::Value << m.base_model;
    emit_params_key(e, m.params);
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
  if (!c.slices.empty()) {
    e << YAML::Key << "slices" << YAML::Value << YAML::BeginSeq;
    for (const SliceConfig& sl : c.slices) {
      e << YAML::BeginMap << YAML::Key << "sources" << YAML::Value << YAML::BeginSeq;
      for (const SliceSource& src : sl.sources) {
        e << YAML::Flow << YAML::BeginMap << YAML::Key << "model" << YAML::Value << src.model << YAML::Key
          << "layer_range" << YAML::Value << YAML::Flow << YAML::BeginSeq << src.first << src.end << YAML::EndSeq;
        emit_params_key(e, src.params);
        e << YAML::EndMap;
      }
      e << YAML::EndSeq;
      emit_params_key(e, sl.params);
      e << YAML::EndMap;
    }
    e << YAML::EndSeq;
  }
  std::string open;  // the section whose mapping is open
  for (const Field& f : fields()) {
    const std::string sec = section_of(f.key);
    if (sec != open && !open.empty()) e << YAML::EndMap;
    if (sec != open && !sec.empty()) e << YAML::Key << sec << YAML::Value << YAML::BeginMap;
    open = sec;
    e << YAML::Key << name_in_section(f.key) << YAML::Value;
    f.emit(c, e);
  }
  if (!open.empty()) e << YAML::EndMap;
  e << YAML::Key << "params" << YAML::Value;
  emit_params(e, c.params);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::string config_reference_markdown() {
  std::ostringstream os;
  const MergeConfig defaults;
  os << "# The merge config\n\n"
     << "Generated by `recall help config` from the config's field table (src/config/merge_config.cpp)\n"
     << "and the method registry (src/merge/registry.cpp); a test keeps this file equal to that output.\n"
     << "Unknown keys, wrong types and values out of range are errors with the YAML line and column.\n\n"
     << "## models\n\n"
     << "A list of `{name, path, base_model, params}`: `path` is a Hugging Face model directory or a PEFT LoRA\n"
     << "adapter directory (then `base_model` is the directory it was trained on); `name` (default `model<i>`)\n"
     << "is used by `base`, `reference` and the reports; `params` sets this model's method parameters.\n\n"
     << "## slices\n\n"
     << "Optional (baselines only): a list of `{sources: [{model, layer_range: [first, end], params}], params}`,\n"
     << "mergekit's `slices`. Each slice merges blocks [first, end) of each source (a model's name; every source of\n"
     << "a slice has as many blocks) with the method; the output stacks the slices, so its block count (config.json's\n"
     << "`num_hidden_layers`) is the sum of their lengths. The embedding comes from the first slice's sources, the\n"
     << "final norm and lm_head from the last slice's. Parameters resolve from the source's `params`, the slice's,\n"
     << "the model's (`models[i].params`), then the top-level `params`; a gradient spans each slice's blocks.\n\n"
     << "## Keys\n\n| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const Field& f : fields()) {
    YAML::Emitter e;
    f.emit(defaults, e);
    std::string def = e.c_str();
    if (def.empty() || def == "~" || def == "\"\"") def = "(none)";
    os << "| `" << f.key << "` | " << f.type << " | `" << def << "` | " << f.doc << " |\n";
  }
  os << "\n## Method parameters (`params`, and per model `models[i].params`)\n\n"
     << "Each value is a number (or true/false), a gradient (a list of numbers interpolated over the blocks:\n"
     << "block l of L at t = l / (L - 1); tensors outside the blocks at t = 0), or a list of\n"
     << "`{filter: SUBSTRING, value: V}` entries, the first whose filter is part of the tensor name winning.\n"
     << "Per-model parameters may be set per model; shared ones only at the top level. A parameter of\n"
     << "another method is ignored with a note (sweeps vary the method); any other name is an error.\n\n";
  for (const MethodSpec& m : merge_methods()) {
    os << "### `" << m.name << "`\n\n" << m.summary << " (" << m.reference << ").";
    os << " Base model: " << (m.base == BaseUse::Required ? "required" : m.base == BaseUse::Optional ? "optional" : "not used")
       << "; models: " << m.min_models << (m.max_models ? " to " + std::to_string(m.max_models) : std::string(" or more"))
       << "; " << (m.whole_tensor ? "whole tensors on one rank" : "rows split among ranks") << ".\n\n";
    if (m.params.empty()) {
      os << (m.uses_representations ? "No parameters: the weights come from the models' representations.\n\n"
                                    : "No parameters.\n\n");
      continue;
    }
    os << "| parameter | scope | type | default | meaning |\n|---|---|---|---|---|\n";
    for (const ParamSpec& p : m.params) {
      std::string def = "required";
      if (p.default_value)
        def = p.kind == ParamKind::Bool ? (*p.default_value != 0 ? "true" : "false") : show_number(*p.default_value);
      std::string type = p.kind == ParamKind::Bool ? "true or false" : p.kind == ParamKind::Integer ? "integer" : "number";
      if (p.kind != ParamKind::Bool)
        type += std::string(" in ") + (p.min_open ? "(" : "[") + show_number(p.min) + ", " + show_number(p.max) + "]";
      os << "| `" << p.name << "` | " << (p.scope == ParamScope::PerModel ? "per model" : "shared") << " | " << type
         << " | `" << def << "` | " << p.doc << " |\n";
    }
    os << "\n";
  }
  if (!unsupported_merge_methods().empty()) {
    os << "## mergekit methods recall refuses\n\n";
    for (const auto& [name, why] : unsupported_merge_methods()) os << "- `" << name << "`: " << why << "\n";
  }
  return os.str();
}

}  // namespace recall
