// hidden-states: samples -> batched forward pass -> every block's hidden states, the final norm,
// logits and mask-aware mean pools, streamed batch by batch into one safetensors file.
#include "recall/engine/hidden_states.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <memory>

#include "recall/engine/model.h"
#include "recall/engine/progress.h"
#include "recall/io/safetensors.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"

namespace recall::engine {

namespace {

// Writes rows [n0, n0 + t.size(0)) of the [N, ...] tensor `name`, as float32 (or int64) bytes.
void write_rows(SafetensorsWriter& w, const std::string& name, const at::Tensor& t, int64_t n0) {
  at::Tensor c = t.to(at::kCPU).contiguous();
  const uint64_t row_bytes = c.numel() == 0 ? 0 : c.nbytes() / c.size(0);
  w.write(name, c.data_ptr(), c.nbytes(), static_cast<uint64_t>(n0) * row_bytes);
}

}  // namespace

HiddenStatesSummary write_hidden_states(const HiddenStatesOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.tokens_path.empty() == o.text_path.empty())
    fail("give exactly one of --tokens FILE.jsonl and --text FILE.jsonl");
  if (o.batch_size <= 0) fail("--batch must be positive, got ", o.batch_size);
  const at::ScalarType dtype = parse_compute_dtype(o.dtype);
  const at::Device device = parse_device(o.device);

  ModelDir dir = open_model_dir(o.model_dir);
  const ModelConfig& c = dir.config;
  const bool text = !o.text_path.empty();
  std::unique_ptr<Tokenizer> tokenizer;
  if (text) tokenizer = Tokenizer::open_model_dir(o.model_dir);
  const TokenPolicy policy = TokenPolicy::for_model(c, tokenizer.get());
  std::vector<Sample> samples = read_samples(text ? o.text_path : o.tokens_path);
  require_kind(samples, text ? SampleKind::Text : SampleKind::Tokens);
  std::vector<std::vector<int64_t>> ids;
  ids.reserve(samples.size());
  for (const Sample& s : samples) ids.push_back(sample_token_ids(s, policy));

  const int64_t N = static_cast<int64_t>(ids.size()), L = c.num_hidden_layers;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  int64_t T = 0, tokens = 0;
  for (const auto& s : ids) {
    T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
    tokens += static_cast<int64_t>(s.size());
  }

  LoadOptions lo;
  lo.dtype = dtype;
  lo.device = device;
  const Model model = Model::load(dir, lo);

  std::vector<TensorSpec> specs;
  specs.push_back({"mask", DType::I64, {N, T}});
  for (int64_t i = 0; i <= L; ++i) specs.push_back({"hidden." + std::to_string(i), DType::F32, {N, T, H}});
  specs.push_back({"final_norm", DType::F32, {N, T, H}});
  specs.push_back({"logits", DType::F32, {N, T, V}});
  for (int64_t i = 0; i <= L; ++i) specs.push_back({"pooled." + std::to_string(i), DType::F32, {N, H}});
  SafetensorsWriter writer(o.out_path, specs,
                           {{"model", o.model_dir}, {"compute_dtype", o.dtype}, {"producer", "recall hidden-states"}});

  c10::InferenceMode inference;
  Progress progress("hidden-states", N, "samples");
  for (int64_t n0 = 0; n0 < N; n0 += o.batch_size) {
    const int64_t n1 = std::min(N, n0 + o.batch_size);
    std::vector<std::vector<int64_t>> part(ids.begin() + n0, ids.begin() + n1);
    const Batch batch = make_batch(part, device, T);
    const at::Tensor keep = batch.mask.unsqueeze(-1).to(at::kFloat);  // zeros at pad positions
    write_rows(writer, "mask", batch.mask, n0);
    at::Tensor h = model.embed(batch.ids);
    auto emit = [&](int64_t i) {
      write_rows(writer, "hidden." + std::to_string(i), h.to(at::kFloat) * keep, n0);
      write_rows(writer, "pooled." + std::to_string(i), masked_mean(h, batch.mask), n0);
    };
    emit(0);
    for (int64_t b = 0; b < L; ++b) {
      h = model.run_blocks(h, batch, b, b + 1);
      emit(b + 1);
    }
    const at::Tensor normed = model.final_norm(h);
    write_rows(writer, "final_norm", normed.to(at::kFloat) * keep, n0);
    write_rows(writer, "logits", model.logits(normed).to(at::kFloat) * keep, n0);
    progress.advance(n1 - n0);
  }
  progress.finish();
  writer.commit();

  HiddenStatesSummary s;
  s.samples = N;
  s.max_length = T;
  s.tokens = tokens;
  s.blocks = L;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace recall::engine
