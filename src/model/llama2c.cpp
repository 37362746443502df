// llama2.c version-0 checkpoint -> Hugging Face Llama directory.
#include "recall/model/llama2c.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "recall/io/safetensors.h"
#include "recall/model/tensor_names.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

struct Fd {
  int fd;
  ~Fd() { if (fd >= 0) ::close(fd); }
};

uint64_t expected_floats(const Llama2cHeader& h) {
  const uint64_t dim = h.dim, hid = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const uint64_t head = dim / h.n_heads, kv = head * h.n_kv_heads;
  uint64_t n = V * dim + L * dim                 // embedding, rms_att
               + L * dim * dim + 2 * L * kv * dim  // wq, wk, wv
               + L * dim * dim + L * dim           // wo, rms_ffn
               + 3 * L * hid * dim + dim           // w1, w2, w3, rms_final
               + 2 * uint64_t(h.seq_len) * (head / 2);  // freq_cis real, imag
  if (!h.shared_classifier) n += V * dim;
  return n;
}

}  // namespace

Llama2cHeader read_llama2c_header(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) fail("cannot open '", path, "': ", std::strerror(errno));
  int32_t raw[7];
  const uint64_t size = file_size_of(path);
  if (size < sizeof raw) fail(path, ": ", size, " bytes, too short for a llama2.c header (28 bytes)");
  pread_exact(f.fd, raw, sizeof raw, 0, path);
  Llama2cHeader h{raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[5] > 0};
  h.vocab_size = std::abs(h.vocab_size);
  const char* names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  const int32_t vals[] = {h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len};
  for (int i = 0; i < 7; ++i)
    if (vals[i] <= 0 || vals[i] > (1 << 24))
      fail(path, ": header field ", names[i], " = ", vals[i], " is out of range (not a llama2.c v0 checkpoint?)");
  if (h.dim % h.n_heads != 0 || (h.dim / h.n_heads) % 2 != 0 || h.n_heads % h.n_kv_heads != 0)
    fail(path, ": inconsistent header: dim ", h.dim, ", n_heads ", h.n_heads, ", n_kv_heads ", h.n_kv_heads);
  const uint64_t want = sizeof raw + 4 * expected_floats(h);
  if (size != want)
    fail(path, ": file has ", size, " bytes; a llama2.c v0 checkpoint with this header has ", want);
  return h;
}

void convert_llama2c(const std::string& in_path, const std::string& out_dir,
                     const std::string& tokenizer_path) {
  const Llama2cHeader h = read_llama2c_header(in_path);
  Fd f{::open(in_path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) fail("cannot open '", in_path, "': ", std::strerror(errno));
  const int64_t dim = h.dim, hid = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const int64_t head = dim / h.n_heads, kv = head * h.n_kv_heads;
  uint64_t cursor = 28;
  auto read_floats = [&](uint64_t n) {
    std::vector<float> v(n);
    pread_exact(f.fd, v.data(), n * 4, cursor, in_path);
    cursor += n * 4;
    return v;
  };

  std::vector<TensorData> tensors;
  auto add = [&](Role role, int64_t block, std::vector<int64_t> shape, const float* src) {
    TensorData t{{tensor_name(role, block), DType::F32, std::move(shape)}, {}};
    t.bytes.resize(t.spec.nbytes());
    std::memcpy(t.bytes.data(), src, t.bytes.size());
    tensors.push_back(std::move(t));
  };
  // Interleaved-pair rows -> split-halves rows, within each head: even rows first, then odd.
  auto permute_rows = [&](const float* w, int64_t n_heads) {
    std::vector<float> out(static_cast<size_t>(n_heads * head * dim));
    for (int64_t hh = 0; hh < n_heads; ++hh)
      for (int64_t i = 0; i < head; ++i) {
        const int64_t src = hh * head + (i < head / 2 ? 2 * i : 2 * (i - head / 2) + 1);
        std::memcpy(&out[(hh * head + i) * dim], &w[src * dim], dim * sizeof(float));
      }
    return out;
  };

  const auto emb = read_floats(V * dim);
  const auto rms_att = read_floats(L * dim);
  const auto wq = read_floats(L * dim * dim);
  const auto wk = read_floats(L * kv * dim);
  const auto wv = read_floats(L * kv * dim);
  const auto wo = read_floats(L * dim * dim);
  const auto rms_ffn = read_floats(L * dim);
  const auto w1 = read_floats(L * hid * dim);
  const auto w2 = read_floats(L * dim * hid);
  const auto w3 = read_floats(L * hid * dim);
  const auto rms_final = read_floats(dim);
  cursor += 2 * 4 * uint64_t(h.seq_len) * (head / 2);  // freq_cis: HF recomputes rotary tables
  std::vector<float> classifier;
  if (!h.shared_classifier) classifier = read_floats(V * dim);

  add(Role::Embed, -1, {V, dim}, emb.data());
  for (int64_t l = 0; l < L; ++l) {
    add(Role::InputNorm, l, {dim}, &rms_att[l * dim]);
    add(Role::QProj, l, {dim, dim}, permute_rows(&wq[l * dim * dim], h.n_heads).data());
    add(Role::KProj, l, {kv, dim}, permute_rows(&wk[l * kv * dim], h.n_kv_heads).data());
    add(Role::VProj, l, {kv, dim}, &wv[l * kv * dim]);
    add(Role::OProj, l, {dim, dim}, &wo[l * dim * dim]);
    add(Role::PostAttnNorm, l, {dim}, &rms_ffn[l * dim]);
    add(Role::GateProj, l, {hid, dim}, &w1[l * hid * dim]);
    add(Role::UpProj, l, {hid, dim}, &w3[l * hid * dim]);
    add(Role::DownProj, l, {dim, hid}, &w2[l * dim * hid]);
  }
  add(Role::FinalNorm, -1, {dim}, rms_final.data());
  if (!h.shared_classifier) add(Role::LmHead, -1, {V, dim}, classifier.data());

  nlohmann::ordered_json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", dim},
      {"intermediate_size", hid},
      {"num_hidden_layers", L},
      {"num_attention_heads", h.n_heads},
      {"num_key_value_heads", h.n_kv_heads},
      {"head_dim", head},
      {"vocab_size", V},
      {"max_position_embeddings", h.seq_len},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", h.shared_classifier},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", "float32"},
  };
  make_directories(out_dir);
  write_safetensors_model(out_dir, tensors, 0);
  write_file_atomic(join_path(out_dir, "config.json"), config.dump(2) + "\n");
  if (!tokenizer_path.empty()) {
    if (!path_exists(tokenizer_path)) fail("tokenizer '", tokenizer_path, "' does not exist");
    copy_file(tokenizer_path, join_path(out_dir, "tokenizer.model"));
    // Lets transformers' AutoTokenizer pick the SentencePiece Llama tokenizer.
    nlohmann::ordered_json tok = {{"tokenizer_class", "LlamaTokenizer"},
                                  {"bos_token", "<s>"},
                                  {"eos_token", "</s>"},
                                  {"unk_token", "<unk>"},
                                  {"add_bos_token", true},
                                  {"add_eos_token", false}};
    write_file_atomic(join_path(out_dir, "tokenizer_config.json"), tok.dump(2) + "\n");
  }
}

}  // namespace recall
