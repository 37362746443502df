// Samples for the engine's jobs, read from JSON lines (one object per line):
//   {"input_ids": [1, 403, ...]}                         token ids
//   {"text": "..."}                                      text, tokenized with the model's tokenizer
//   {"prompt": "...", "completion": "..."}               completion loss / exact match / finetune
//   {"prompt": "...", "choices": ["..", ..], "answer": 1} multiple choice
// Errors name the file and the line. Other fields are ignored; blank lines are skipped.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "recall/model/config.h"

namespace recall {

class Tokenizer;

enum class SampleKind { Tokens, Text, PromptCompletion, Choices };

std::string sample_kind_name(SampleKind k);  // "input_ids", "text", "prompt/completion", "choices"

struct Sample {
  std::string file;
  int64_t line = 0;  // 1-based line number in `file`
  SampleKind kind = SampleKind::Tokens;
  std::vector<int64_t> input_ids;    // Tokens
  std::string text;                  // Text
  std::string prompt, completion;    // PromptCompletion, Choices (prompt)
  std::vector<std::string> choices;  // Choices
  int64_t answer = -1;               // Choices: index into choices

  std::string where() const { return file + ":" + std::to_string(line); }
};

// Opens a JSON-lines sample file for reading: a missing path, a directory, or anything else that is
// not a regular file is an error naming the path and saying what it is.
std::ifstream open_sample_file(const std::string& path);

// Reads the samples of a JSONL file one at a time, in order, handing each to `fn` until it returns
// false (one line in memory at a time, for data files of any size); returns the samples handed.
// Errors as read_samples.
int64_t for_each_sample(const std::string& path, const std::function<bool(Sample&&)>& fn);

// Reads every sample of a JSONL file; throws "<file>:<line>: ..." on the first bad line, and when
// the file holds no sample at all.
std::vector<Sample> read_samples(const std::string& path);

// Throws "<where>: ..." unless every sample has kind `kind`.
void require_kind(const std::vector<Sample>& samples, SampleKind kind);

// How text becomes model input: the tokenizer (may be null when no text is given), the BOS id to
// prepend (config.bos_token_id), and the limits that every sequence must respect.
struct TokenPolicy {
  const Tokenizer* tokenizer = nullptr;
  std::optional<int64_t> bos;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;  // max_position_embeddings; 0 = no limit

  static TokenPolicy for_model(const ModelConfig& config, const Tokenizer* tokenizer);
  // BOS (when set) + tokens of text. Throws "<where>: ..." when there is no tokenizer.
  std::vector<int64_t> encode(const std::string& text, const std::string& where,
                              bool add_bos = true) const;
  // Throws "<where>: ..." for an empty sequence, ids outside [0, vocab) or a sequence longer than
  // max_positions.
  void check(const std::vector<int64_t>& ids, const std::string& where) const;
};

// The token ids of a Tokens or Text sample, checked against the policy.
std::vector<int64_t> sample_token_ids(const Sample& s, const TokenPolicy& policy);

}  // namespace recall
