// Decoding loop: the prompt runs once, then one token per step over a KV cache; the next token is
// picked from the last position's logits, greedily or by seeded nucleus sampling in double.
#include "recall/engine/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "recall/engine/model.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

int64_t sample_token(const at::Tensor& last_logits, const SamplingOptions& o, std::mt19937_64& rng) {
  at::Tensor l = last_logits.to(at::kCPU).to(at::kDouble).contiguous();
  const double* x = l.data_ptr<double>();
  const int64_t V = l.numel();
  if (o.temperature <= 0) return static_cast<int64_t>(std::max_element(x, x + V) - x);
  const double mx = *std::max_element(x, x + V);
  std::vector<double> p(V);
  for (int64_t i = 0; i < V; ++i) p[i] = std::exp((x[i] - mx) / o.temperature);
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  double kept = 0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < o.top_p * total)) kept += p[order[n++]];
  const double u = std::uniform_real_distribution<double>(0.0, kept)(rng);
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += p[order[i]];
    if (u < acc) return order[i];
  }
  return order[n - 1];
}

}  // namespace

std::vector<int64_t> generate(const Model& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o) {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  if (o.temperature < 0) fail("--temperature must be >= 0, got ", o.temperature);
  if (!(o.top_p > 0 && o.top_p <= 1)) fail("--top-p must be in (0, 1], got ", o.top_p);
  const int64_t max_pos = model.config().max_position_embeddings;
  c10::InferenceMode inference;
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> seq = prompt, out;
  KVCache cache;
  at::Tensor input = at::tensor(prompt, at::kLong).unsqueeze(0);
  for (int64_t step = 0; step < o.max_new; ++step) {
    if (max_pos > 0 && static_cast<int64_t>(seq.size()) >= max_pos) break;
    at::Tensor logits = model.forward_cached(input, cache);
    const int64_t next = sample_token(logits[0][logits.size(1) - 1].to(at::kFloat), o, rng);
    input = at::full({1, 1}, next, at::kLong);
    seq.push_back(next);
    out.push_back(next);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
  }
  return out;
}

GenerateResult run_generate(const GenerateOptions& o) {
  ModelDir dir = open_model_dir(o.model_dir);
  std::unique_ptr<Tokenizer> tok;
  if (path_exists(join_path(o.model_dir, "tokenizer.model")) || !o.prompt.empty())
    tok = Tokenizer::open_model_dir(o.model_dir);
  const TokenPolicy policy = TokenPolicy::for_model(dir.config, tok.get());
  GenerateResult r;
  if (o.prompt.empty() == o.prompt_ids.empty()) fail("give exactly one of --prompt and --tokens");
  r.prompt_ids = o.prompt.empty() ? o.prompt_ids : policy.encode(o.prompt, "--prompt");
  policy.check(r.prompt_ids, "prompt");
  LoadOptions lo;
  lo.dtype = parse_compute_dtype(o.dtype);
  lo.device = parse_device(o.device);
  const Model model = Model::load(dir, lo);
  SamplingOptions s = o.sampling;
  if (o.stop_at_eos) s.stop_ids.insert(s.stop_ids.end(), dir.config.eos_token_ids.begin(), dir.config.eos_token_ids.end());
  r.new_ids = generate(model, r.prompt_ids, s);
  if (tok) {
    r.text = tok->decode(r.new_ids);
    r.has_text = true;
  }
  return r;
}

}  // namespace recall::engine
