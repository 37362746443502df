// JSONL sample reading and token checks for the engine's jobs.
#include "recall/text/samples.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "recall/text/tokenizer.h"
#include "recall/util/error.h"

namespace recall {

using nlohmann::json;

std::string sample_kind_name(SampleKind k) {
  switch (k) {
    case SampleKind::Tokens: return "input_ids";
    case SampleKind::Text: return "text";
    case SampleKind::PromptCompletion: return "prompt/completion";
    case SampleKind::Choices: return "choices";
  }
  return "?";
}

namespace {

std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  return "an object";
}

std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json& v = obj.at(key);
  if (!v.is_string()) fail(where, ": field '", key, "' must be a string, got ", type_of(v));
  return v.get<std::string>();
}

Sample parse_sample(const std::string& text, const std::string& file, int64_t line) {
  Sample s;
  s.file = file;
  s.line = line;
  const std::string where = s.where();
  json obj;
  try {
    obj = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(where, ": malformed JSON line: ", e.what());
  }
  if (!obj.is_object()) fail(where, ": expected a JSON object per line, got ", type_of(obj));
  if (obj.contains("input_ids")) {
    s.kind = SampleKind::Tokens;
    const json& ids = obj["input_ids"];
    if (!ids.is_array()) fail(where, ": field 'input_ids' must be a list of integers, got ", type_of(ids));
    s.input_ids.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!ids[i].is_number_integer())
        fail(where, ": input_ids[", i, "] must be an integer, got ", type_of(ids[i]), " (",
             ids[i].dump(), ")");
      s.input_ids.push_back(ids[i].get<int64_t>());
    }
  } else if (obj.contains("choices")) {
    s.kind = SampleKind::Choices;
    if (!obj.contains("prompt")) fail(where, ": a multiple-choice sample needs a 'prompt'");
    s.prompt = get_string(obj, "prompt", where);
    const json& ch = obj["choices"];
    if (!ch.is_array() || ch.empty())
      fail(where, ": field 'choices' must be a non-empty list of strings");
    for (size_t i = 0; i < ch.size(); ++i) {
      if (!ch[i].is_string()) fail(where, ": choices[", i, "] must be a string, got ", type_of(ch[i]));
      s.choices.push_back(ch[i].get<std::string>());
    }
    if (!obj.contains("answer") || !obj["answer"].is_number_integer())
      fail(where, ": a multiple-choice sample needs an integer 'answer' (index into choices)");
    s.answer = obj["answer"].get<int64_t>();
    if (s.answer < 0 || s.answer >= static_cast<int64_t>(s.choices.size()))
      fail(where, ": answer ", s.answer, " is not an index into the ", s.choices.size(), " choices");
  } else if (obj.contains("completion")) {
    s.kind = SampleKind::PromptCompletion;
    if (!obj.contains("prompt")) fail(where, ": a completion sample needs a 'prompt'");
    s.prompt = get_string(obj, "prompt", where);
    s.completion = get_string(obj, "completion", where);
    if (s.completion.empty()) fail(where, ": empty sample: 'completion' is empty");
  } else if (obj.contains("text")) {
    s.kind = SampleKind::Text;
    s.text = get_string(obj, "text", where);
    if (s.text.empty()) fail(where, ": empty sample: 'text' is empty");
  } else {
    fail(where, ": a sample needs 'input_ids', 'text', 'prompt' + 'completion', or 'prompt' + "
         "'choices' + 'answer'; found none of them");
  }
  return s;
}

}  // namespace

std::ifstream open_sample_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail("cannot open sample file '", path, "': ", std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    fail("sample file '", path, "' is a directory; expected a JSON-lines file (one sample per line)");
  if (!S_ISREG(st.st_mode)) fail("sample file '", path, "' is not a regular file; expected a JSON-lines file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open sample file '", path, "': ", std::strerror(errno));
  return in;
}

int64_t for_each_sample(const std::string& path, const std::function<bool(Sample&&)>& fn) {
  std::ifstream in = open_sample_file(path);
  std::string line;
  int64_t n = 0, samples = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ++samples;
    if (!fn(parse_sample(line, path, n))) return samples;
  }
  if (in.bad()) fail("error reading sample file '", path, "'");
  if (samples == 0) fail("sample file '", path, "' holds no sample (", n, " lines, all blank)");
  return samples;
}

std::vector<Sample> read_samples(const std::string& path) {
  std::vector<Sample> out;
  for_each_sample(path, [&](Sample&& s) {
    out.push_back(std::move(s));
    return true;
  });
  return out;
}

void require_kind(const std::vector<Sample>& samples, SampleKind kind) {
  for (const Sample& s : samples)
    if (s.kind != kind)
      fail(s.where(), ": expected a ", sample_kind_name(kind), " sample, got a ",
           sample_kind_name(s.kind), " sample");
}

TokenPolicy TokenPolicy::for_model(const ModelConfig& config, const Tokenizer* tokenizer) {
  TokenPolicy p;
  p.tokenizer = tokenizer;
  p.bos = config.bos_token_id;
  // A tokenizer.json's post-processor decides (Qwen2's config names a BOS its tokenizer never adds).
  if (tokenizer)
    if (auto prefix = tokenizer->post_processor_prefix())
      p.bos = prefix->empty() ? std::optional<int64_t>() : std::optional<int64_t>(prefix->front());
  p.vocab_size = config.vocab_size;
  p.max_positions = config.max_position_embeddings;
  return p;
}

std::vector<int64_t> TokenPolicy::encode(const std::string& text, const std::string& where,
                                         bool add_bos) const {
  if (!tokenizer) fail(where, ": text input needs a tokenizer, and the model has none");
  std::vector<int64_t> ids;
  if (add_bos && bos) ids.push_back(*bos);
  auto body = tokenizer->encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

void TokenPolicy::check(const std::vector<int64_t>& ids, const std::string& where) const {
  if (ids.empty()) fail(where, ": empty sample (no tokens)");
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_size)
      fail(where, ": token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ",
           vocab_size, ")");
  if (max_positions > 0 && static_cast<int64_t>(ids.size()) > max_positions)
    fail(where, ": sample has ", ids.size(), " tokens, more than max_position_embeddings (",
         max_positions, ")");
}

std::vector<int64_t> sample_token_ids(const Sample& s, const TokenPolicy& policy) {
  std::vector<int64_t> ids;
  if (s.kind == SampleKind::Tokens) ids = s.input_ids;
  else if (s.kind == SampleKind::Text) ids = policy.encode(s.text, s.where());
  else fail(s.where(), ": expected an input_ids or text sample, got a ", sample_kind_name(s.kind), " sample");
  policy.check(ids, s.where());
  return ids;
}

}  // namespace recall
