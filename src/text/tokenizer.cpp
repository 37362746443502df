// Tokenizer: a SentencePiece model or a byte-level BPE tokenizer.json behind one interface.
#include "recall/text/tokenizer.h"

#include <sentencepiece_processor.h>

#include "recall/io/model_files.h"
#include "recall/text/bpe_tokenizer.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<BpeTokenizer> bpe;  // set for tokenizer.json; then `sp` is unused
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::open(const std::string& path) {
  if (!path_exists(path)) fail("tokenizer '", path, "' does not exist");
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->path_ = path;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    t->impl_->bpe = BpeTokenizer::open(path);
    return t;
  }
  auto status = t->impl_->sp.Load(path);
  if (!status.ok())
    fail("tokenizer '", path, "' is not a valid SentencePiece model: ", status.ToString());
  return t;
}

std::unique_ptr<Tokenizer> Tokenizer::open_model_dir(const std::string& dir) {
  const auto json = find_model_file(dir, "tokenizer.json");
  const auto path = find_model_file(dir, "tokenizer.model");
  // Llama 2 / Mistral ship a SentencePiece-style tokenizer.json beside tokenizer.model.
  if (json && (!path || BpeTokenizer::is_byte_level_bpe(*json))) return open(*json);
  if (!path)
    fail("model directory '", dir, "' has neither tokenizer.json nor tokenizer.model, so text "
         "cannot be tokenized\n"
         "---> HINT: give token ids instead ({\"input_ids\": [...]} lines), or copy the model's "
         "tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece) into the directory");
  return open(*path);
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  if (impl_->bpe) return impl_->bpe->encode(text);
  std::vector<int> ids;
  auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) fail("tokenizer '", path_, "': cannot encode text: ", status.ToString());
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  if (impl_->bpe) return impl_->bpe->decode(ids);  // skips special tokens, as SentencePiece does
  std::vector<int> in;
  in.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= impl_->sp.GetPieceSize())
      fail("tokenizer '", path_, "': token id ", id, " is outside the vocabulary [0, ",
           impl_->sp.GetPieceSize(), ")");
    in.push_back(static_cast<int>(id));
  }
  std::string out;
  auto status = impl_->sp.Decode(in, &out);
  if (!status.ok()) fail("tokenizer '", path_, "': cannot decode: ", status.ToString());
  return out;
}

int64_t Tokenizer::vocab_size() const {
  return impl_->bpe ? impl_->bpe->vocab_size() : impl_->sp.GetPieceSize();
}

std::optional<std::vector<int64_t>> Tokenizer::post_processor_prefix() const {
  if (!impl_->bpe) return std::nullopt;
  return impl_->bpe->prefix_ids();
}

}  // namespace recall
