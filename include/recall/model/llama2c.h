// Conversion of llama.c "version 0" checkpoints (karpathy's llama2.c, e.g. stories260K) to a
// Hugging Face Llama directory. llama2.c rotates interleaved pairs (2i, 2i+1); HF rotates split
// halves (i, i + head_dim/2), so the rows of wq and wk are permuted within each head.
#pragma once

#include <cstdint>
#include <string>

namespace recall {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;  // vocab_size was positive in the file
};

// Reads and validates the 28-byte header against the file size.
Llama2cHeader read_llama2c_header(const std::string& path);

// Writes config.json and model.safetensors (float32) into out_dir (created if needed);
// copies tokenizer (a SentencePiece .model) as tokenizer.model when given.
void convert_llama2c(const std::string& in_path, const std::string& out_dir,
                     const std::string& tokenizer_path = "");

}  // namespace recall
