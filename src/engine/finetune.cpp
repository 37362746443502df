// finetune: seeded sample order -> padded batches -> masked next-token cross-entropy -> backward ->
// global-norm clipping -> AdamW (PyTorch's update rule, written out with ATen ops so no optimizer
// library is needed) -> HF export of the trained weights.
#include "recall/engine/finetune.h"


#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "recall/engine/model.h"
#include "recall/io/model_files.h"
#include "recall/io/safetensors.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

struct Example {
  std::vector<int64_t> ids;
  int64_t first = 1;  // ids[first..] are trained on
};

double lr_at(const FinetuneOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / o.warmup;
  const int64_t decay = o.steps - o.warmup;
  if (decay <= 0) return o.lr;
  const double progress = static_cast<double>(step - o.warmup) / decay;
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

// Summed cross-entropy over the trained positions of a batch, and their count.
std::pair<at::Tensor, int64_t> batch_loss(const Model& model, const std::vector<const Example*>& exs) {
  std::vector<std::vector<int64_t>> seqs;
  for (const Example* e : exs) seqs.push_back(e->ids);
  const Batch batch = make_batch(seqs, model.device());
  const int64_t B = batch.size(), T = batch.length();
  std::vector<float> w(static_cast<size_t>(B * (T - 1)), 0.0f);  // 1 where position t predicts a trained token
  int64_t count = 0;
  for (int64_t n = 0; n < B; ++n) {
    const Example& e = *exs[n];
    for (int64_t t = e.first; t < static_cast<int64_t>(e.ids.size()); ++t) {
      w[n * (T - 1) + t - 1] = 1.0f;
      ++count;
    }
  }
  at::Tensor weight = at::from_blob(w.data(), {B, T - 1}, at::kFloat).to(model.device(), at::kFloat, false, true);
  at::Tensor logp = at::log_softmax(model.forward_logits(batch).to(at::kFloat), -1).narrow(1, 0, T - 1);
  at::Tensor picked = logp.gather(-1, batch.ids.narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);
  return {-(picked * weight).sum(), count};
}

void write_probe_logits(const Model& model, const std::string& probe_path, const TokenPolicy& policy,
                        const std::string& out) {
  std::vector<Sample> samples = read_samples(probe_path);
  std::vector<std::vector<int64_t>> seqs;
  for (const Sample& s : samples) seqs.push_back(sample_token_ids(s, policy));
  c10::NoGradGuard no_grad;
  const Batch batch = make_batch(seqs, model.device());
  at::Tensor logits = (model.forward_logits(batch).to(at::kFloat) *
                       batch.mask.unsqueeze(-1).to(at::kFloat)).cpu().contiguous();
  at::Tensor mask = batch.mask.cpu().contiguous();
  SafetensorsWriter w(out, {{"mask", DType::I64, {batch.size(), batch.length()}},
                            {"logits", DType::F32, {logits.size(0), logits.size(1), logits.size(2)}}});
  w.write("mask", mask.data_ptr(), mask.nbytes());
  w.write("logits", logits.data_ptr(), logits.nbytes());
  w.commit();
}

void save_model(const Model& model, const ModelDir& src, const std::string& out_dir, const std::string& dtype_name) {
  const at::ScalarType st = parse_compute_dtype(dtype_name);
  const DType dt = st == at::kFloat ? DType::F32 : st == at::kBFloat16 ? DType::BF16 : DType::F16;
  make_directories(out_dir);
  std::vector<TensorData> tensors;
  for (const auto& [name, t] : model.export_tensors()) {
    at::Tensor c = t.detach().to(at::kCPU).to(st).contiguous();
    TensorData d;
    d.spec = {name, dt, std::vector<int64_t>(c.sizes().begin(), c.sizes().end())};
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    d.bytes.assign(p, p + c.nbytes());
    tensors.push_back(std::move(d));
  }
  write_safetensors_model(out_dir, tensors, uint64_t{5} << 30);
  write_file_atomic(join_path(out_dir, "config.json"), src.config.raw_json);
  copy_side_files(src.path, out_dir);  // regular files of the model only, permissions not widened
}

// Training examples: text and token samples train on every next token, prompt/completion samples
// on the completion; multiple choice is refused.
std::vector<Example> make_examples(const std::vector<Sample>& samples, const TokenPolicy& policy) {
  std::vector<Example> examples;
  for (const Sample& s : samples) {
    Example e;
    if (s.kind == SampleKind::PromptCompletion) {
      e.ids = policy.encode(s.prompt, s.where());
      e.first = static_cast<int64_t>(e.ids.size());
      auto tail = policy.encode(s.completion, s.where(), /*add_bos=*/false);
      e.ids.insert(e.ids.end(), tail.begin(), tail.end());
      policy.check(e.ids, s.where());
    } else if (s.kind == SampleKind::Choices) {
      fail(s.where(), ": multiple-choice samples cannot be trained on; use text or prompt/completion");
    } else {
      e.ids = sample_token_ids(s, policy);
    }
    if (static_cast<int64_t>(e.ids.size()) <= e.first)
      fail(s.where(), ": nothing to train on (a sample needs at least one token after the first/prompt)");
    examples.push_back(std::move(e));
  }

  return examples;
}

// One AdamW update (global-norm clipping first) of every parameter from its gradient, which is
// then cleared.
void adamw_step(const FinetuneOptions& o, int64_t step, double lr, std::vector<at::Tensor>& params,
                std::vector<at::Tensor>& m1, std::vector<at::Tensor>& m2) {
  c10::NoGradGuard no_grad;
  if (o.clip > 0) {
    double sq = 0;
    for (const at::Tensor& p : params) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
    const double coef = o.clip / (std::sqrt(sq) + 1e-6);
    if (coef < 1)
      for (at::Tensor& p : params) p.mutable_grad().mul_(coef);
  }
  const double bc1 = 1 - std::pow(o.beta1, step + 1), bc2 = 1 - std::pow(o.beta2, step + 1);
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor& p = params[i];
    const at::Tensor& g = p.grad();
    if (o.weight_decay > 0) p.mul_(1 - lr * o.weight_decay);
    m1[i].mul_(o.beta1).add_(g, 1 - o.beta1);
    m2[i].mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
    at::Tensor denom = (m2[i].sqrt() / std::sqrt(bc2)).add_(o.adam_eps);
    p.addcdiv_(m1[i], denom, -lr / bc1);
    p.mutable_grad() = at::Tensor();
  }
}

// Sums the loss and token counts and every gradient over the ranks (checked collectives): in
// host memory over MPI, in the GPU's memory over NCCL (the world communicator of a cuda context).
void all_reduce_gradients(dist::Communicator& world, double sums[2], std::vector<at::Tensor>& params) {
  const bool on_device = world.backend() == dist::Backend::Nccl;
  auto reduce = [&](const at::Tensor& t, DType dtype) {
    at::Tensor buf = (on_device ? t : t.to(at::kCPU)).contiguous().clone();
    world.all_reduce(buf.data_ptr(), buf.data_ptr(), static_cast<size_t>(buf.numel()), dtype, dist::ReduceOp::Sum);
    return buf.to(t.device());
  };
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params[0].device();
  at::Tensor s = reduce(at::tensor({sums[0], sums[1]}, at::kDouble).to(device), DType::F64).to(at::kCPU);
  sums[0] = s[0].item<double>();
  sums[1] = s[1].item<double>();
  for (at::Tensor& p : params) p.mutable_grad() = reduce(p.grad(), DType::F32);
}

}  // namespace

FinetuneResult run_finetune(const FinetuneOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.steps <= 0 || o.batch_size <= 0 || o.warmup < 0 || !(o.lr > 0))
    fail("finetune needs steps > 0, batch > 0, warmup >= 0 and lr > 0; got steps ", o.steps,
         ", batch ", o.batch_size, ", warmup ", o.warmup, ", lr ", o.lr);
  ModelDir dir = open_model_dir(o.model_dir);
  std::vector<Sample> samples = read_samples(o.data_path);
  bool needs_text = false;
  for (const Sample& s : samples) needs_text |= s.kind != SampleKind::Tokens;
  std::unique_ptr<Tokenizer> tok;
  if (needs_text || path_exists(join_path(o.model_dir, "tokenizer.model")))
    tok = Tokenizer::open_model_dir(o.model_dir);
  const TokenPolicy policy = TokenPolicy::for_model(dir.config, tok.get());
  const std::vector<Example> examples = make_examples(samples, policy);

  LoadOptions lo;
  lo.dtype = at::kFloat;  // float32 master weights
  lo.device = parse_device(o.device);
  Model model = Model::load(dir, lo);
  std::vector<at::Tensor> params = model.parameters();
  std::vector<at::Tensor> m1, m2;
  for (at::Tensor& p : params) {
    p.set_requires_grad(true);
    m1.push_back(at::zeros_like(p));
    m2.push_back(at::zeros_like(p));
  }

  std::mt19937_64 rng(o.seed);
  std::vector<size_t> order;
  size_t cursor = 0;
  auto next_batch = [&] {
    std::vector<const Example*> out;
    while (static_cast<int64_t>(out.size()) < std::min<int64_t>(o.batch_size, examples.size())) {
      if (cursor == order.size()) {  // a new epoch in a seeded order
        order.resize(examples.size());
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      out.push_back(&examples[order[cursor++]]);
    }
    return out;
  };

  FinetuneResult r;
  auto last_log = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  // Data parallel: every rank draws the same global batch (same seed), trains on its contiguous
  // slice, and the summed gradients and token counts are all-reduced, so every rank applies the
  // same update. No communicator is the world of one.
  const int rank = o.world ? o.world->rank() : 0, world = o.world ? o.world->size() : 1;
  for (int64_t step = 0; step < o.steps; ++step) {
    const std::vector<const Example*> global = next_batch();
    const size_t g = global.size(), begin = g * rank / world, end = g * (rank + 1) / world;
    std::vector<const Example*> local(global.begin() + begin, global.begin() + end);
    double sums[2] = {0, 0};  // loss sum, trained tokens
    if (!local.empty()) {
      auto [loss, count] = batch_loss(model, local);
      loss.backward();
      sums[0] = loss.item<double>();
      sums[1] = static_cast<double>(count);
    }
    for (at::Tensor& p : params)
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    if (world > 1) all_reduce_gradients(*o.world, sums, params);
    const int64_t count = static_cast<int64_t>(sums[1]);
    for (at::Tensor& p : params) p.mutable_grad().div_(static_cast<double>(count));
    r.losses.push_back(sums[0] / static_cast<double>(count));
    r.tokens += count;
    tokens_since += count;
    const double lr = lr_at(o, step);
    adamw_step(o, step, lr, params, m1, m2);
    if (rank == 0 && ((step + 1) % o.log_every == 0 || step + 1 == o.steps)) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - last_log).count();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      std::fprintf(stderr, "finetune: step %lld/%lld loss %.4f lr %.3g %.0f tokens/s ETA %.0fs\n",
                   static_cast<long long>(step + 1), static_cast<long long>(o.steps), r.losses.back(), lr,
                   tokens_since / std::max(dt, 1e-9), elapsed / (step + 1) * (o.steps - step - 1));
      last_log = now;
      tokens_since = 0;
    }
  }
  for (at::Tensor& p : params) p.set_requires_grad(false);
  if (!o.probe_path.empty() && rank == 0) {
    if (o.probe_out.empty()) fail("--probe needs --probe-out");
    write_probe_logits(model, o.probe_path, policy, o.probe_out);
  }
  if (rank == 0) save_model(model, dir, o.out_dir, o.save_dtype);
  if (world > 1) o.world->barrier();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace recall::engine
