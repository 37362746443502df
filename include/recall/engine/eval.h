// `recall eval`: scores a model on JSONL samples.
//   {"text"}                        next-token loss (mean negative log-likelihood per predicted
//                                   token, natural log) and perplexity = exp(loss)
//   {"input_ids"}                   the same on given ids
//   {"prompt","completion"}         loss on the completion tokens given the prompt, and exact match
//                                   of the greedy completion (same number of tokens)
//   {"prompt","choices","answer"}   multiple-choice accuracy: the choice with the highest summed
//                                   log-likelihood given the prompt
// Text is tokenized as BOS + tokens(prompt), then tokens(completion or choice) appended.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall::engine {

struct EvalOptions {
  std::string model_dir;
  std::string data_path;
  std::string out_path;  // JSON with per-sample and mean values ("" = none)
  std::string dtype = "float32";
  std::string device = "cpu";
  int64_t batch_size = 8;  // sequences per forward pass
};

struct EvalKindSummary {
  std::string kind;        // "text" (text and input_ids), "completion", "choices"
  int64_t samples = 0;
  int64_t tokens = 0;      // scored tokens
  double loss = 0;         // token-weighted mean NLL (text, completion)
  double perplexity = 0;
  double accuracy = -1;    // exact match (completion) or choice accuracy; -1 = not applicable
};

struct EvalReport {
  std::vector<EvalKindSummary> kinds;
  std::string json;        // the full report (per sample and summary), as written to out_path
  double seconds = 0;
};

EvalReport run_eval(const EvalOptions& options);

// The table printed by `recall eval`.
std::string format_eval_table(const EvalReport& report);

}  // namespace recall::engine
