// The model's tokenizer behind a small interface: byte-level BPE from tokenizer.json (Llama 3,
// Qwen2/3; recall/text/bpe_tokenizer.h) or SentencePiece from tokenizer.model (Llama 2, Mistral),
// so that no other file depends on the SentencePiece headers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace recall {

class Tokenizer {
 public:
  // Loads a tokenizer.json (byte-level BPE; chosen by the .json suffix) or a SentencePiece model
  // file; throws naming the file when it is missing, invalid or unsupported.
  static std::unique_ptr<Tokenizer> open(const std::string& path);
  // <dir>/tokenizer.json when it is byte-level BPE, else <dir>/tokenizer.model, else
  // <dir>/tokenizer.json (whose error then names what is unsupported); throws with a hint when
  // the directory has neither.
  static std::unique_ptr<Tokenizer> open_model_dir(const std::string& dir);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, without BOS/EOS (SentencePiece adds none by default; for tokenizer.json
  // this is HF's add_special_tokens=False).
  std::vector<int64_t> encode(const std::string& text) const;
  // Ids tokenizer.json's post-processor puts before a sequence (Llama 3: <|begin_of_text|>;
  // Qwen2: none); nullopt for SentencePiece, where config.bos_token_id decides.
  std::optional<std::vector<int64_t>> post_processor_prefix() const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  const std::string& path() const { return path_; }

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace recall
