// The decoder forward pass in ATen, written to follow Hugging Face's modeling_llama /
// modeling_qwen3 operation by operation (same order, same dtypes), so that float32 results agree
// to rounding: RMSNorm in float32 then cast back and scaled (weight * x.to(input_dtype)), rotary
// in the split-halves layout with cos/sin cast to the compute dtype, GQA by repeating K/V heads,
// SDPA with a boolean causal + padding (+ sliding window) mask.
#include "recall/engine/model.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "recall/util/error.h"

namespace recall::engine {

at::ScalarType parse_compute_dtype(const std::string& name) {
  if (name == "float32" || name == "f32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "f16" || name == "fp16" || name == "half") return at::kHalf;
  fail("unknown compute dtype '", name, "'; expected float32, bfloat16 or float16");
}

at::Device parse_device(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!at::hasCUDA())
      fail("device '", name, "' requested, but this libtorch has no usable CUDA device");
    return at::Device(name);
  }
  fail("unknown device '", name, "'; expected cpu, cuda or cuda:N");
}

Batch make_batch(const std::vector<std::vector<int64_t>>& samples, at::Device device,
                 int64_t pad_to) {
  if (samples.empty()) fail("make_batch: no samples");
  int64_t T = pad_to;
  for (const auto& s : samples) T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
  const int64_t N = static_cast<int64_t>(samples.size());
  at::Tensor ids = at::zeros({N, T}, at::kLong), mask = at::zeros({N, T}, at::kLong);
  auto* pi = ids.data_ptr<int64_t>();
  auto* pm = mask.data_ptr<int64_t>();
  Batch b;
  for (int64_t n = 0; n < N; ++n) {
    const auto& s = samples[n];
    if (s.empty()) fail("make_batch: sample ", n, " is empty");
    std::copy(s.begin(), s.end(), pi + n * T);
    std::fill(pm + n * T, pm + n * T + static_cast<int64_t>(s.size()), 1);
    b.lengths.push_back(static_cast<int64_t>(s.size()));
  }
  b.ids = ids.to(device);
  b.mask = mask.to(device);
  b.positions = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device));
  return b;
}

at::Tensor masked_mean(const at::Tensor& hidden, const at::Tensor& mask) {
  at::Tensor m = mask.to(at::kFloat).unsqueeze(-1);
  return (hidden.to(at::kFloat) * m).sum(1) / m.sum(1);
}

at::Tensor pooling_mask(const at::Tensor& mask, Pooling pooling) {
  const at::Tensor real = mask.to(at::kLong).ne(0);
  if (pooling == Pooling::Mean) return real.to(at::kLong);
  const at::Tensor index = real.to(at::kLong).cumsum(1);  // 1..n over a row's real tokens
  const at::Tensor count = index.narrow(1, index.size(1) - 1, 1);  // n, [N, 1]
  at::Tensor keep;
  if (pooling == Pooling::Last)
    keep = real.logical_and(index.eq(count));
  else  // MeanSkipFirst; a 1-token row keeps its token
    keep = real.logical_and(index.gt(1).logical_or(count.eq(1)));
  return keep.to(at::kLong);
}

at::Tensor pool_hidden(const at::Tensor& hidden, const at::Tensor& mask, Pooling pooling) {
  return masked_mean(hidden, pooling_mask(mask, pooling));
}

at::Tensor rope_inv_freq(const ModelConfig& c) {
  const RopeConfig& r = c.rope;
  const int64_t dim = c.head_dim;
  // Same ATen ops as modeling_rope_utils (float32 throughout), so the frequencies are identical.
  at::Tensor inv_freq =
      at::reciprocal(at::pow(r.theta, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / dim));
  if (r.type == "default") return inv_freq;
  if (r.type == "linear") return inv_freq / r.factor;
  if (r.type == "llama3") {
    const double old_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
    at::Tensor smooth = (at::reciprocal(wavelen) * old_len - r.low_freq_factor) /
                        (r.high_freq_factor - r.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    at::Tensor medium = at::logical_not(wavelen < high_wavelen) * at::logical_not(wavelen > low_wavelen);
    return at::where(medium, smoothed, scaled);
  }
  fail("rope type '", r.type, "' is not supported by the engine (default, linear, llama3)");
}

namespace {

at::ScalarType torch_dtype_of(DType t, const std::string& name) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F64: return at::kDouble;
    default: break;
  }
  fail("tensor '", name, "' has dtype ", dtype_name(t), "; the engine needs a float dtype");
}

// One checkpoint tensor on the CPU in its stored dtype: a view of the mapped file (file-backed
// memory), or a copy where it must be (fp8 widened, unaligned offsets, a LoRA delta added).
at::Tensor source_tensor(const ModelDir& dir, const std::string& name) {
  const Checkpoint& ckpt = dir.checkpoint;
  const Checkpoint::Entry& e = ckpt.at(name);
  const TensorInfo& info = *e.info;
  at::Tensor cpu;
  if (info.dtype == DType::F8_E4M3 || info.dtype == DType::F8_E5M2) {
    std::vector<float> values = ckpt.read_float(name);
    cpu = at::from_blob(values.data(), info.shape, at::kFloat).clone();
  } else {
    const at::ScalarType st = torch_dtype_of(info.dtype, name);
    const uint8_t* p = e.file->data(info);
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(info.dtype) == 0) {
      cpu = at::from_blob(const_cast<uint8_t*>(p), info.shape, at::TensorOptions().dtype(st));
    } else {  // safetensors offsets need not be aligned: copy into an aligned buffer first
      cpu = at::empty(info.shape, at::TensorOptions().dtype(st));
      std::memcpy(cpu.data_ptr(), p, info.nbytes());
    }
  }
  if (dir.lora && dir.lora->targets(name)) {  // W + s B A in the weight's dtype, as PEFT merges
    cpu = cpu.contiguous().clone();
    const DType stored = cpu.scalar_type() == at::kFloat ? DType::F32 : info.dtype;
    dir.lora->apply_rows(name, stored, 0, static_cast<uint64_t>(info.shape[0]),
                         static_cast<uint64_t>(cpu.numel() / info.shape[0]), cpu.data_ptr());
  }
  return cpu;
}

// Reads one checkpoint tensor into a fresh tensor of the compute dtype on the device.
at::Tensor read_tensor(const ModelDir& dir, const std::string& name, at::ScalarType dtype, at::Device device) {
  return source_tensor(dir, name).to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

// Checkpoint tensors stacked along dim 0 (q, k, v; gate, up), each converted straight into its
// rows of one tensor of the compute dtype: no converted copy of each part beside the stack. (With
// at::cat of converted parts, a Llama-3-70B block's gate and up held 1.9 GB of float32 beside
// the 1.9 GB stack while loading: its peak passed the block's own size by that much.)
at::Tensor read_stacked(const ModelDir& dir, const std::vector<std::string>& names, at::ScalarType dtype,
                        at::Device device) {
  std::vector<at::Tensor> parts;
  int64_t rows = 0;
  for (const std::string& n : names) {
    parts.push_back(source_tensor(dir, n));
    rows += parts.back().size(0);
  }
  std::vector<int64_t> shape = parts.front().sizes().vec();
  shape[0] = rows;
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype).device(device));
  int64_t at_row = 0;
  for (at::Tensor& p : parts) {
    out.narrow(0, at_row, p.size(0)).copy_(p);
    at_row += p.size(0);
    p = at::Tensor();  // a LoRA-modified copy goes as soon as it is in place
  }
  return out;
}

// Which blocks use the sliding-window mask (HF: mistral all blocks when sliding_window is set;
// qwen2/qwen3 the blocks i >= max_window_layers; an explicit layer_types list wins).
std::vector<bool> sliding_blocks(const ModelConfig& c) {
  const int64_t L = c.num_hidden_layers;
  std::vector<bool> out(L, false);
  if (!c.sliding_window) return out;
  nlohmann::json raw = nlohmann::json::parse(c.raw_json, nullptr, false);
  if (raw.is_object() && raw.contains("layer_types") && raw["layer_types"].is_array()) {
    const auto& lt = raw["layer_types"];
    if (static_cast<int64_t>(lt.size()) != L)
      fail("config.json: layer_types has ", lt.size(), " entries, expected num_hidden_layers = ", L);
    for (int64_t i = 0; i < L; ++i) out[i] = lt[i].is_string() && lt[i] == "sliding_attention";
    return out;
  }
  if (c.arch == Arch::Mistral) return std::vector<bool>(L, true);
  int64_t max_window_layers = 28;
  if (raw.is_object() && raw.contains("max_window_layers") && raw["max_window_layers"].is_number_integer())
    max_window_layers = raw["max_window_layers"].get<int64_t>();
  for (int64_t i = 0; i < L; ++i) out[i] = i >= max_window_layers;
  return out;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor maybe_cat(const std::vector<at::Tensor>& parts) {
  for (const auto& p : parts)
    if (!p.defined()) return at::Tensor();
  return at::cat(parts, 0);
}

// One block's weights from `get` (a tensor by role) and `stacked` (tensors of roles stacked along
// dim 0): q/k/v and gate/up fused, the biases and norms the config has.
BlockWeights block_weights(const ModelConfig& c, int64_t b, bool sliding,
                           const std::function<at::Tensor(Role, int64_t)>& get,
                           const std::function<at::Tensor(std::initializer_list<Role>, int64_t)>& stacked) {
  const bool qkv_bias = c.qkv_bias || c.attention_bias;
  BlockWeights w;
  w.input_norm = get(Role::InputNorm, b);
  w.post_attn_norm = get(Role::PostAttnNorm, b);
  w.qkv = stacked({Role::QProj, Role::KProj, Role::VProj}, b);
  if (qkv_bias) w.qkv_bias = maybe_cat({get(Role::QBias, b), get(Role::KBias, b), get(Role::VBias, b)});
  w.o = get(Role::OProj, b);
  if (c.attention_bias) w.o_bias = get(Role::OBias, b);
  if (c.qk_norm) {
    w.q_norm = get(Role::QNorm, b);
    w.k_norm = get(Role::KNorm, b);
  }
  w.gate_up = stacked({Role::GateProj, Role::UpProj}, b);
  w.down = get(Role::DownProj, b);
  if (c.mlp_bias) {
    w.gate_up_bias = at::cat({get(Role::GateBias, b), get(Role::UpBias, b)}, 0);
    w.down_bias = get(Role::DownBias, b);
  }
  w.sliding = sliding;
  return w;
}

}  // namespace

struct Model::Context {
  at::Tensor cos, sin;               // [T, D] in the compute dtype
  at::Tensor full_mask, slide_mask;  // [N, 1, T, T] bool; undefined = plain causal
};

Model Model::load(const ModelDir& dir, const LoadOptions& o) {
  Model m;
  m.config_ = dir.config;
  const ModelConfig& c = m.config_;
  const int64_t L = c.num_hidden_layers;
  m.begin_ = o.begin_block;
  m.end_ = o.end_block < 0 ? L : o.end_block;
  if (m.begin_ < 0 || m.begin_ > m.end_ || m.end_ > L)
    fail("model '", dir.path, "': block range [", m.begin_, ", ", m.end_,
         ") is not within the model's ", L, " blocks");
  m.dtype_ = o.dtype;
  m.device_ = o.device;
  const bool with_embedding = o.embedding.value_or(m.begin_ == 0);
  const bool with_head = o.head.value_or(m.end_ == L);
  auto get = [&](Role role, int64_t block = -1) {
    return read_tensor(dir, tensor_name(role, block), m.dtype_, m.device_);
  };
  auto stacked = [&](std::initializer_list<Role> roles, int64_t block) {
    std::vector<std::string> names;
    for (Role r : roles) names.push_back(tensor_name(r, block));
    return read_stacked(dir, names, m.dtype_, m.device_);
  };
  return with_context("loading model '" + dir.path + "'", [&]() -> Model {
    if (with_embedding) m.embedding_ = get(Role::Embed);
    if (with_head) {
      m.norm_ = get(Role::FinalNorm);
      m.tied_ = c.tie_word_embeddings;
      if (m.tied_) m.lm_head_ = m.embedding_.defined() ? m.embedding_ : get(Role::Embed);
      else m.lm_head_ = get(Role::LmHead);
    }
    const std::vector<bool> sliding = sliding_blocks(c);
    for (int64_t b = m.begin_; b < m.end_; ++b) m.blocks_.push_back(block_weights(c, b, sliding[b], get, stacked));
    m.inv_freq_ = rope_inv_freq(c).to(m.device_);
    return std::move(m);
  });
}

Model Model::from_tensors(const ModelConfig& config, int64_t block,
                          const std::function<at::Tensor(const std::string&)>& tensor, at::ScalarType dtype,
                          at::Device device) {
  if (block < 0 || block >= config.num_hidden_layers)
    fail("a merged block ", block, " is not within the model's ", config.num_hidden_layers, " blocks");
  Model m;
  m.config_ = config;
  m.dtype_ = dtype;
  m.device_ = device;
  m.begin_ = block;
  m.end_ = block + 1;
  auto get = [&](Role role, int64_t b) {
    return tensor(tensor_name(role, b)).to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  };
  // at::cat of parts already in the compute dtype: the values Model::load's read_stacked writes.
  auto stacked = [&](std::initializer_list<Role> roles, int64_t b) {
    std::vector<at::Tensor> parts;
    for (Role r : roles) parts.push_back(get(r, b));
    return at::cat(parts, 0);
  };
  m.blocks_.push_back(block_weights(config, block, sliding_blocks(config)[block], get, stacked));
  m.inv_freq_ = rope_inv_freq(config).to(device);
  return m;
}

Model::Context Model::context(const Batch& batch) const {
  Context ctx;
  // HF: freqs = inv_freq @ positions (float32), emb = cat(freqs, freqs), cos/sin cast to dtype.
  at::Tensor freqs = batch.positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  ctx.cos = emb.cos().to(dtype_);
  ctx.sin = emb.sin().to(dtype_);
  const int64_t T = batch.length();
  bool padded = false;
  for (int64_t len : batch.lengths) padded |= len != T;
  bool any_sliding = false;
  for (const auto& w : blocks_) any_sliding |= w.sliding;
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device_);
  at::Tensor keys = batch.mask.to(at::kBool).unsqueeze(1).unsqueeze(1);  // [N, 1, 1, T]
  at::Tensor causal = at::ones({T, T}, bool_opts).tril();
  if (padded) ctx.full_mask = at::logical_and(causal, keys);
  if (any_sliding && config_.sliding_window && *config_.sliding_window < T) {
    // HF's sliding_window_overlay: kv_idx > q_idx - window.
    at::Tensor window = at::ones({T, T}, bool_opts).triu(-(*config_.sliding_window - 1));
    ctx.slide_mask = at::logical_and(at::logical_and(causal, window), keys);
  } else {
    ctx.slide_mask = ctx.full_mask;
  }
  return ctx;
}

at::Tensor Model::embed(const at::Tensor& ids) const {
  if (!embedding_.defined()) fail("this model stage was loaded without the embedding");
  return at::embedding(embedding_, ids);
}

at::Tensor Model::block_forward(const at::Tensor& x, const Context& ctx, int64_t block,
                                KVCache* cache, BlockObserver* observer) const {
  if (block < begin_ || block >= end_)
    fail("block ", block, " is not loaded (this stage holds blocks [", begin_, ", ", end_, "))");
  const BlockWeights& w = blocks_[block - begin_];
  const ModelConfig& c = config_;
  const int64_t N = x.size(0), T = x.size(1), D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const double eps = c.rms_norm_eps;

  at::Tensor h = rms_norm(x, w.input_norm, eps);
  if (observer) observer->linear_input(block, LinearGroup::AttnIn, h);
  at::Tensor qkv = at::linear(h, w.qkv, w.qkv_bias);
  at::Tensor q = qkv.narrow(-1, 0, Hq * D).view({N, T, Hq, D});
  at::Tensor k = qkv.narrow(-1, Hq * D, Hkv * D).view({N, T, Hkv, D});
  at::Tensor v = qkv.narrow(-1, (Hq + Hkv) * D, Hkv * D).view({N, T, Hkv, D});
  if (w.q_norm.defined()) {
    q = rms_norm(q, w.q_norm, eps);
    k = rms_norm(k, w.k_norm, eps);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  v = v.transpose(1, 2);
  q = q * ctx.cos + rotate_half(q) * ctx.sin;
  k = k * ctx.cos + rotate_half(k) * ctx.sin;
  bool decoding = false;  // one new query over cached keys: it attends to all of them
  if (cache) {
    at::Tensor& ck = cache->k[block - begin_];
    at::Tensor& cv = cache->v[block - begin_];
    decoding = ck.defined();
    ck = decoding ? at::cat({ck, k}, 2) : k;
    cv = decoding ? at::cat({cv, v}, 2) : v;
    k = ck;
    v = cv;
    if (decoding && w.sliding && config_.sliding_window && k.size(2) > *config_.sliding_window) {
      // kv_idx > q_idx - window: the last `window` keys, the new one included.
      k = k.narrow(2, k.size(2) - *config_.sliding_window, *config_.sliding_window);
      v = v.narrow(2, v.size(2) - *config_.sliding_window, *config_.sliding_window);
    }
  }
  const int64_t S = k.size(2);
  if (Hq != Hkv) {  // HF's repeat_kv
    const int64_t rep = Hq / Hkv;
    k = k.unsqueeze(2).expand({N, Hkv, rep, S, D}).reshape({N, Hq, S, D});
    v = v.unsqueeze(2).expand({N, Hkv, rep, S, D}).reshape({N, Hq, S, D});
  }
  const at::Tensor& mask = w.sliding ? ctx.slide_mask : ctx.full_mask;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  at::Tensor attn = decoding ? at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale)
                    : mask.defined()
                        ? at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale)
                        : at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scale);
  attn = attn.transpose(1, 2).reshape({N, T, Hq * D});
  if (observer) observer->linear_input(block, LinearGroup::AttnOut, attn);
  at::Tensor out = x + at::linear(attn, w.o, w.o_bias);

  h = rms_norm(out, w.post_attn_norm, eps);
  if (observer) observer->linear_input(block, LinearGroup::MlpIn, h);
  const int64_t I = c.intermediate_size;
  at::Tensor gu = at::linear(h, w.gate_up, w.gate_up_bias);
  at::Tensor act = at::silu(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I);
  if (observer) observer->linear_input(block, LinearGroup::MlpOut, act);
  return out + at::linear(act, w.down, w.down_bias);
}

at::Tensor Model::run_block(const at::Tensor& hidden, const Batch& batch, int64_t block,
                            BlockObserver* observer) const {
  return block_forward(hidden, context(batch), block, nullptr, observer);
}

at::Tensor Model::run_blocks(at::Tensor hidden, const Batch& batch, int64_t begin, int64_t end,
                             BlockObserver* observer) const {
  if (begin < begin_ || end > end_ || begin > end)
    fail("blocks [", begin, ", ", end, ") are not within this stage's blocks [", begin_, ", ", end_, ")");
  if (begin == end) return hidden;
  const Context ctx = context(batch);
  for (int64_t b = begin; b < end; ++b) hidden = block_forward(hidden, ctx, b, nullptr, observer);
  return hidden;
}

at::Tensor Model::final_norm(const at::Tensor& hidden) const {
  if (!norm_.defined()) fail("this model stage was loaded without the final norm");
  return rms_norm(hidden, norm_, config_.rms_norm_eps);
}

at::Tensor Model::logits(const at::Tensor& normed) const {
  if (!lm_head_.defined()) fail("this model stage was loaded without the lm_head");
  return at::linear(normed, lm_head_);
}

at::Tensor Model::forward_logits(const Batch& batch) const {
  at::Tensor h = run_blocks(embed(batch.ids), batch, begin_, end_);
  return logits(final_norm(h));
}

at::Tensor Model::forward_cached(const at::Tensor& ids, KVCache& cache) const {
  if (begin_ != 0 || end_ != config_.num_hidden_layers)
    fail("forward_cached needs the whole model; this stage holds blocks [", begin_, ", ", end_, ")");
  const int64_t n = ids.size(1);
  if (ids.size(0) != 1) fail("forward_cached decodes one sequence, got a batch of ", ids.size(0));
  if (cache.length > 0 && n != 1)
    fail("forward_cached: after the prompt, tokens come one at a time (got ", n, ")");
  if (cache.k.empty()) {
    cache.k.resize(blocks_.size());
    cache.v.resize(blocks_.size());
  }
  Batch batch;
  batch.ids = ids.to(device_);
  batch.mask = at::ones({1, n}, at::TensorOptions().dtype(at::kLong).device(device_));
  batch.positions = at::arange(cache.length, cache.length + n, at::TensorOptions().dtype(at::kLong).device(device_));
  batch.lengths = {n};
  const Context ctx = context(batch);
  at::Tensor h = embed(batch.ids);
  for (int64_t b = begin_; b < end_; ++b) h = block_forward(h, ctx, b, &cache);
  cache.length += n;
  return logits(final_norm(h));
}

std::vector<at::Tensor> Model::parameters() const {
  std::vector<at::Tensor> out;
  if (embedding_.defined()) out.push_back(embedding_);
  for (const auto& w : blocks_)
    for (const at::Tensor* t : {&w.input_norm, &w.post_attn_norm, &w.qkv, &w.qkv_bias, &w.o, &w.o_bias,
                                &w.q_norm, &w.k_norm, &w.gate_up, &w.gate_up_bias, &w.down, &w.down_bias})
      if (t->defined()) out.push_back(*t);
  if (norm_.defined()) out.push_back(norm_);
  if (lm_head_.defined() && !(tied_ && embedding_.defined())) out.push_back(lm_head_);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Model::export_tensors() const {
  return export_tensors([](const at::Tensor& weight) { return weight; });
}

std::vector<std::pair<std::string, at::Tensor>> Model::export_tensors(
    const std::function<at::Tensor(const at::Tensor&)>& of) const {
  const ModelConfig& c = config_;
  const int64_t D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const int64_t I = c.intermediate_size;
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add = [&](Role r, int64_t b, const at::Tensor& t) { out.emplace_back(tensor_name(r, b), t); };
  if (embedding_.defined()) add(Role::Embed, -1, of(embedding_));
  for (int64_t b = begin_; b < end_; ++b) {
    const BlockWeights& w = blocks_[b - begin_];
    add(Role::InputNorm, b, of(w.input_norm));
    const at::Tensor qkv = of(w.qkv);
    add(Role::QProj, b, qkv.narrow(0, 0, Hq * D));
    add(Role::KProj, b, qkv.narrow(0, Hq * D, Hkv * D));
    add(Role::VProj, b, qkv.narrow(0, (Hq + Hkv) * D, Hkv * D));
    if (w.qkv_bias.defined()) {
      const at::Tensor qkv_bias = of(w.qkv_bias);
      add(Role::QBias, b, qkv_bias.narrow(0, 0, Hq * D));
      add(Role::KBias, b, qkv_bias.narrow(0, Hq * D, Hkv * D));
      add(Role::VBias, b, qkv_bias.narrow(0, (Hq + Hkv) * D, Hkv * D));
    }
    add(Role::OProj, b, of(w.o));
    if (w.o_bias.defined()) add(Role::OBias, b, of(w.o_bias));
    if (w.q_norm.defined()) {
      add(Role::QNorm, b, of(w.q_norm));
      add(Role::KNorm, b, of(w.k_norm));
    }
    add(Role::PostAttnNorm, b, of(w.post_attn_norm));
    const at::Tensor gate_up = of(w.gate_up);
    add(Role::GateProj, b, gate_up.narrow(0, 0, I));
    add(Role::UpProj, b, gate_up.narrow(0, I, I));
    add(Role::DownProj, b, of(w.down));
    if (w.gate_up_bias.defined()) {
      const at::Tensor gate_up_bias = of(w.gate_up_bias);
      add(Role::GateBias, b, gate_up_bias.narrow(0, 0, I));
      add(Role::UpBias, b, gate_up_bias.narrow(0, I, I));
      add(Role::DownBias, b, of(w.down_bias));
    }
  }
  if (norm_.defined()) add(Role::FinalNorm, -1, of(norm_));
  if (lm_head_.defined() && !tied_) add(Role::LmHead, -1, of(lm_head_));
  return out;
}

}  // namespace recall::engine
