// fisher: each sample alone through the float32 model -> mean next-token log-likelihood ->
// backward -> gradients squared into a float64 accumulator per (fused) parameter -> F = sum / N,
// split into HF tensors (Model::export_tensors) and written as float32 safetensors.
#include "recall/engine/fisher.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <unordered_map>

#include "recall/engine/model.h"
#include "recall/io/safetensors.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

// Elements squared at a time in float64: 2 x 32 MiB of scratch, however large the tensor
// (a 70B embedding is 1.05G elements).
constexpr int64_t kChunk = int64_t{1} << 22;

// ll_s: the mean log-likelihood of ids[1..T-1] given their prefixes, one unpadded sample (the
// negative of finetune's loss on a {"text"} sample).
at::Tensor mean_log_likelihood(const Model& model, const std::vector<int64_t>& ids) {
  const Batch batch = make_batch({ids}, model.device());
  const int64_t T = batch.length();
  const at::Tensor logp = at::log_softmax(model.forward_logits(batch).to(at::kFloat), -1).narrow(1, 0, T - 1);
  const at::Tensor picked = logp.gather(-1, batch.ids.narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);
  return picked.mean();
}

// acc += grad^2, squared in float64, a chunk at a time.
void add_square(at::Tensor& acc, const at::Tensor& grad) {
  at::Tensor a = acc.view(-1);
  const at::Tensor g = grad.contiguous().view(-1);
  for (int64_t begin = 0; begin < g.numel(); begin += kChunk) {
    const at::Tensor gd = g.narrow(0, begin, std::min(kChunk, g.numel() - begin)).to(at::kDouble);
    a.narrow(0, begin, gd.numel()).addcmul_(gd, gd);
  }
}

// Sum of the squares of a float32 tensor's elements, in float64, a chunk at a time.
double sum_of_squares(const at::Tensor& t) {
  const at::Tensor f = t.contiguous().view(-1);
  double s = 0;
  for (int64_t begin = 0; begin < f.numel(); begin += kChunk) {
    const at::Tensor d = f.narrow(0, begin, std::min(kChunk, f.numel() - begin)).to(at::kDouble);
    s += d.square().sum().item<double>();
  }
  return s;
}

void check_token_ids(const SampleTokens& samples, int64_t vocab) {
  for (int64_t i = 0; i < samples.size(); ++i)
    for (int64_t j = samples.offsets[i]; j < samples.offsets[i + 1]; ++j)
      if (samples.ids[j] < 0 || samples.ids[j] >= vocab)
        fail("fisher: sample ", i, " has token id ", samples.ids[j], " at position ", j - samples.offsets[i],
             "; expected 0 <= id < vocab_size ", vocab);
}

struct Sums {
  std::vector<at::Tensor> acc;  // per parameter of Model::parameters(), float64, sum_s g_s^2
  int64_t samples = 0, tokens = 0;
};

// One backward per sample with a next token; each gradient squared into the accumulator.
Sums accumulate(const Model& model, const FisherOptions& o) {
  c10::AutoGradMode grad_mode(true);
  std::vector<at::Tensor> params = model.parameters();
  Sums sums;
  for (at::Tensor& p : params) {
    p.set_requires_grad(true);
    sums.acc.push_back(at::zeros_like(p, at::TensorOptions().dtype(at::kDouble)));
  }
  const SampleTokens& samples = *o.samples;
  for (int64_t s = 0; s < samples.size(); ++s) {
    if (samples.length(s) >= 2) {
      mean_log_likelihood(model, samples.sample(s)).backward();
      c10::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].grad().defined()) add_square(sums.acc[i], params[i].grad());
        params[i].mutable_grad() = at::Tensor();  // freed: the next backward starts from nothing
      }
      ++sums.samples;
      sums.tokens += samples.length(s) - 1;
    }
    if (o.progress) o.progress(s + 1, samples.size());
  }
  for (at::Tensor& p : params) p.set_requires_grad(false);
  return sums;
}

// F = acc / N, per HF tensor; returns the sum of squares of the float32 values written.
double write_fisher(const Model& model, Sums& sums, const std::string& path) {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> params = model.parameters();
  std::unordered_map<const void*, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) {
    index[params[i].unsafeGetTensorImpl()] = i;
    sums.acc[i].div_(static_cast<double>(sums.samples));
  }
  const auto fisher = model.export_tensors([&](const at::Tensor& w) {
    const auto it = index.find(w.unsafeGetTensorImpl());
    if (it == index.end()) fail("fisher: a weight of the model is not among its parameters");
    return sums.acc[it->second];
  });
  auto as_f32 = [](const at::Tensor& f) { return f.to(at::kFloat).to(at::kCPU).contiguous(); };
  // The metadata goes out with the header, before any tensor: a first pass for the norm.
  double sum_squares = 0;
  std::vector<TensorSpec> specs;
  for (const auto& [name, f] : fisher) {
    sum_squares += sum_of_squares(as_f32(f));
    specs.push_back({name, DType::F32, std::vector<int64_t>(f.sizes().begin(), f.sizes().end())});
  }
  const std::map<std::string, std::string> metadata = {{"samples", std::to_string(sums.samples)},
                                                       {"tokens", std::to_string(sums.tokens)},
                                                       {"sum_squares", shortest_number(sum_squares)}};
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(path.substr(0, slash));
  SafetensorsWriter writer(path, specs, metadata);
  for (const auto& [name, f] : fisher) {
    const at::Tensor c = as_f32(f);
    writer.write(name, c.data_ptr(), c.nbytes());
  }
  writer.commit();
  return sum_squares;
}

}  // namespace

FisherResult run_fisher(const FisherOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!o.model || !o.samples || o.out_path.empty()) fail("fisher: a model, samples and an output path are required");
  check_token_ids(*o.samples, o.model->config.vocab_size);
  LoadOptions lo;
  lo.dtype = at::kFloat;
  lo.device = parse_device(std::string(name_of(kDevices, o.device)));
  const Model model = Model::load(*o.model, lo);
  Sums sums = accumulate(model, o);
  if (sums.samples == 0)
    fail("fisher: none of the ", o.samples->size(), " samples of model '", o.model->path,
         "' has two tokens or more, so there is no next token to score");
  FisherResult r;
  r.samples = sums.samples;
  r.tokens = sums.tokens;
  r.sum_squares = with_context("writing " + o.out_path, [&] { return write_fisher(model, sums, o.out_path); });
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace recall::engine
