// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Llama 3, Qwen2, Qwen3, GPT-2),
// with the same ids and decoded text as the `tokenizers` library: added tokens matched first,
// NFC normalization, the Split/ByteLevel pre-tokenizer regexes (PCRE2, Unicode mode), BPE merges
// by rank, the post-processor's BOS/EOS template and the ByteLevel decoder.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace recall {

class BpeTokenizer {
 public:
  // Reads tokenizer.json; throws naming the file and the component (model.type, normalizer,
  // pre_tokenizer, post_processor, decoder) when it is malformed or not byte-level BPE.
  static std::unique_ptr<BpeTokenizer> open(const std::string& path);
  // Same, from the JSON text; `origin` names it in messages.
  static std::unique_ptr<BpeTokenizer> from_json_text(const std::string& json_text,
                                                      const std::string& origin);
  // True when `path` is a tokenizer.json whose model is BPE without byte fallback and whose
  // pre-tokenizer has a ByteLevel step (what open() accepts, before the detailed checks).
  // False for SentencePiece-style tokenizer.json files (Llama 2, Mistral) and unreadable files.
  static bool is_byte_level_bpe(const std::string& path);

  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Token ids of `text` (valid UTF-8, else an error naming the byte offset), without the
  // post-processor's special tokens: HF's encode(text, add_special_tokens=False).
  std::vector<int64_t> encode(const std::string& text) const;
  // prefix_ids() + encode(text) + suffix_ids(): HF's encode(text, add_special_tokens=True).
  std::vector<int64_t> encode_with_special_tokens(const std::string& text) const;
  // What the post-processor (TemplateProcessing, single sequence) puts around a sequence:
  // Llama 3 prefixes <|begin_of_text|>; Qwen2 adds nothing.
  const std::vector<int64_t>& prefix_ids() const;
  const std::vector<int64_t>& suffix_ids() const;

  // Text of `ids` as HF's decode(ids, skip_special_tokens): bytes that are not valid UTF-8
  // become U+FFFD as in Rust's from_utf8_lossy. Ids outside the vocabulary are an error.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const;

  // One past the largest id of the model vocabulary and the added tokens.
  int64_t vocab_size() const;
  std::optional<int64_t> token_to_id(const std::string& token) const;
  const std::string& path() const { return path_; }

 private:
  BpeTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace recall
