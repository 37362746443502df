// eval: builds scoring requests (token ids + the index of the first scored token) from the
// samples, scores them in padded batches (log_softmax in float32), then aggregates per sample kind;
// completions are also decoded greedily for exact match.
#include "recall/engine/eval.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "recall/engine/generate.h"
#include "recall/engine/model.h"
#include "recall/engine/progress.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

struct Request {
  std::vector<int64_t> ids;
  int64_t first = 1;     // ids[first..] are scored
  double logprob = 0;    // sum of log p(ids[t] | ids[<t]) for t >= first
  int64_t count() const { return static_cast<int64_t>(ids.size()) - first; }
};

void score(const Model& model, std::vector<Request>& requests, int64_t batch_size) {
  Progress progress("eval", static_cast<int64_t>(requests.size()), "sequences");
  for (size_t r0 = 0; r0 < requests.size(); r0 += batch_size) {
    const size_t r1 = std::min(requests.size(), r0 + static_cast<size_t>(batch_size));
    std::vector<std::vector<int64_t>> seqs;
    for (size_t i = r0; i < r1; ++i) seqs.push_back(requests[i].ids);
    const Batch batch = make_batch(seqs, model.device());
    at::Tensor logp = at::log_softmax(model.forward_logits(batch).to(at::kFloat), -1);
    // Position t predicts token t + 1.
    const int64_t T = batch.length();
    at::Tensor targets = batch.ids.narrow(1, 1, T - 1).unsqueeze(-1);
    at::Tensor picked = logp.narrow(1, 0, T - 1).gather(-1, targets).squeeze(-1).to(at::kDouble).cpu();
    for (size_t i = r0; i < r1; ++i) {
      Request& q = requests[i];
      const double* row = picked.data_ptr<double>() + (i - r0) * (T - 1);
      q.logprob = 0;
      for (int64_t t = q.first; t < static_cast<int64_t>(q.ids.size()); ++t) q.logprob += row[t - 1];
    }
    progress.advance(static_cast<int64_t>(r1 - r0));
  }
  progress.finish();
}

// Requests per sample: one for text/ids/completion, one per choice; `span` gets each sample's
// [first request, end).
std::vector<Request> make_requests(const std::vector<Sample>& samples, const TokenPolicy& policy,
                                   std::vector<std::pair<size_t, size_t>>* span) {
  std::vector<Request> requests;
  for (const Sample& s : samples) {
    const size_t begin = requests.size();
    if (s.kind == SampleKind::Tokens || s.kind == SampleKind::Text) {
      Request q{sample_token_ids(s, policy), 1};
      if (q.ids.size() < 2) fail(s.where(), ": a sample needs at least 2 tokens to score next-token loss");
      requests.push_back(std::move(q));
    } else {
      const std::vector<int64_t> prompt = policy.encode(s.prompt, s.where());
      policy.check(prompt, s.where());
      std::vector<std::string> conts = s.kind == SampleKind::Choices ? s.choices
                                                                     : std::vector<std::string>{s.completion};
      for (const std::string& c : conts) {
        std::vector<int64_t> tail = policy.encode(c, s.where(), /*add_bos=*/false);
        if (tail.empty()) fail(s.where(), ": the completion/choice '", c, "' has no tokens");
        Request q{prompt, static_cast<int64_t>(prompt.size())};
        q.ids.insert(q.ids.end(), tail.begin(), tail.end());
        policy.check(q.ids, s.where());
        requests.push_back(std::move(q));
      }
    }
    span->emplace_back(begin, requests.size());
  }

  return requests;
}

struct Acc {
  int64_t samples = 0, tokens = 0, correct = 0;
  double nll = 0;
};

// The summary per kind (text, completion, choices), into the report and as JSON.
nlohmann::ordered_json summarize(const std::map<std::string, Acc>& acc, EvalReport* report) {
  nlohmann::ordered_json summary = nlohmann::ordered_json::object();
  for (const char* kind : {"text", "completion", "choices"}) {
    auto it = acc.find(kind);
    if (it == acc.end()) continue;
    const Acc& a = it->second;
    EvalKindSummary k;
    k.kind = kind;
    k.samples = a.samples;
    k.tokens = a.tokens;
    nlohmann::ordered_json js = {{"samples", a.samples}, {"tokens", a.tokens}};
    if (k.kind != "choices") {
      k.loss = a.nll / a.tokens;
      k.perplexity = std::exp(k.loss);
      js["loss"] = k.loss;
      js["perplexity"] = k.perplexity;
    }
    if (k.kind != "text") {
      k.accuracy = static_cast<double>(a.correct) / a.samples;
      js[k.kind == "choices" ? "accuracy" : "exact_match"] = k.accuracy;
    }
    summary[kind] = js;
    report->kinds.push_back(k);
  }
  return summary;
}

}  // namespace

EvalReport run_eval(const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.batch_size <= 0) fail("--batch must be positive, got ", o.batch_size);
  ModelDir dir = open_model_dir(o.model_dir);
  std::vector<Sample> samples = read_samples(o.data_path);
  bool needs_text = false;
  for (const Sample& s : samples) needs_text |= s.kind != SampleKind::Tokens;
  std::unique_ptr<Tokenizer> tok;
  if (needs_text) tok = Tokenizer::open_model_dir(o.model_dir);
  const TokenPolicy policy = TokenPolicy::for_model(dir.config, tok.get());

  std::vector<std::pair<size_t, size_t>> span;  // per sample: [first request, end)
  std::vector<Request> requests = make_requests(samples, policy, &span);

  LoadOptions lo;
  lo.dtype = parse_compute_dtype(o.dtype);
  lo.device = parse_device(o.device);
  const Model model = Model::load(dir, lo);
  c10::InferenceMode inference;
  score(model, requests, o.batch_size);

  std::map<std::string, Acc> acc;
  nlohmann::ordered_json per_sample = nlohmann::ordered_json::array();
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    const auto [b, e] = span[i];
    nlohmann::ordered_json j = {{"line", s.line}, {"kind", sample_kind_name(s.kind)}};
    if (s.kind == SampleKind::Choices) {
      std::vector<double> lls;
      size_t best = 0;
      for (size_t r = b; r < e; ++r) {
        lls.push_back(requests[r].logprob);
        if (requests[r].logprob > requests[b + best].logprob) best = r - b;
      }
      const bool correct = static_cast<int64_t>(best) == s.answer;
      j["choice_logprobs"] = lls;
      j["predicted"] = best;
      j["answer"] = s.answer;
      j["correct"] = correct;
      Acc& a = acc["choices"];
      a.samples++;
      a.correct += correct;
      for (size_t r = b; r < e; ++r) a.tokens += requests[r].count();
    } else {
      const Request& q = requests[b];
      const double loss = -q.logprob / q.count();
      j["tokens"] = q.count();
      j["loss"] = loss;
      j["perplexity"] = std::exp(loss);
      const std::string kind = s.kind == SampleKind::PromptCompletion ? "completion" : "text";
      Acc& a = acc[kind];
      a.samples++;
      a.tokens += q.count();
      a.nll -= q.logprob;
      if (s.kind == SampleKind::PromptCompletion) {
        SamplingOptions greedy;
        greedy.max_new = q.count();
        const std::vector<int64_t> prompt(q.ids.begin(), q.ids.begin() + q.first);
        const std::vector<int64_t> want(q.ids.begin() + q.first, q.ids.end());
        const std::vector<int64_t> got = generate(model, prompt, greedy);
        const bool match = got == want;
        j["exact_match"] = match;
        j["generated_ids"] = got;
        if (tok) j["generated"] = tok->decode(got);
        a.correct += match;
      }
    }
    per_sample.push_back(std::move(j));
  }

  EvalReport report;
  const nlohmann::ordered_json summary = summarize(acc, &report);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::ordered_json out = {{"model", o.model_dir}, {"data", o.data_path}, {"compute_dtype", o.dtype},
                                {"summary", summary}, {"samples", per_sample}};
  report.json = out.dump(2) + "\n";
  if (!o.out_path.empty()) write_file_atomic(o.out_path, report.json);
  return report;
}

std::string format_eval_table(const EvalReport& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-12s %8s %9s %10s %12s %10s\n", "kind", "samples", "tokens", "loss",
                "perplexity", "accuracy");
  out += line;
  for (const EvalKindSummary& k : r.kinds) {
    char loss[32] = "-", ppl[32] = "-", accu[32] = "-";
    if (k.kind != "choices") {
      std::snprintf(loss, sizeof loss, "%.5f", k.loss);
      std::snprintf(ppl, sizeof ppl, "%.4f", k.perplexity);
    }
    if (k.accuracy >= 0) std::snprintf(accu, sizeof accu, "%.4f", k.accuracy);
    std::snprintf(line, sizeof line, "%-12s %8lld %9lld %10s %12s %10s\n", k.kind.c_str(),
                  static_cast<long long>(k.samples), static_cast<long long>(k.tokens), loss, ppl, accu);
    out += line;
  }
  return out;
}

}  // namespace recall::engine
