// Byte-level BPE from tokenizer.json, step for step as Hugging Face `tokenizers` runs it:
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest);
//   2. each remaining piece is normalized (NFC or nothing), then added tokens with
//      normalized=true are cut out of it;
//   3. the pre-tokenizer splits each piece (Split regexes, then ByteLevel with its GPT-2 regex);
//   4. each word's bytes are merged by BPE rank (GPT-2 byte-to-unicode alphabet), with a cache.
// Regexes run in PCRE2 (UTF + UCP, JIT) like Oniguruma does in `tokenizers`; NFC is utf8proc's.
#include "recall/text/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>

#include "recall/io/model_files.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {
namespace {

using json = nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 upwards.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> table{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
  return table;
}

void append_utf8(std::string& out, uint32_t cp);
uint32_t decode_codepoint(std::string_view s, size_t i, size_t* len);

// What the ByteLevel decoder makes of one token: each character's byte, or the token's own
// UTF-8 bytes when a character is outside the table (HF decodes added tokens this way too).
std::string byte_level_bytes(const std::string& token, bool* mapped = nullptr) {
  static const std::unordered_map<uint32_t, int> c2b = [] {
    std::unordered_map<uint32_t, int> m;
    const auto b2c = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) m[b2c[b]] = b;
    return m;
  }();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    size_t len;
    auto it = c2b.find(decode_codepoint(token, i, &len));
    if (it == c2b.end()) {
      if (mapped) *mapped = false;
      return token;
    }
    bytes += static_cast<char>(it->second);
    i += len;
  }
  if (mapped) *mapped = true;
  return bytes;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the valid UTF-8 sequence at s[i] (1..4), or 0 when it is invalid or truncated; `good`
// gets how many bytes form the longest valid prefix (what from_utf8_lossy replaces as one unit).
size_t utf8_sequence(std::string_view s, size_t i, size_t* good = nullptr) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) need = 2;
  else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    if (good) *good = 1;
    return 0;
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < lo || b > hi) break;
    lo = 0x80;
    hi = 0xBF;
  }
  if (good) *good = k;
  return k == need ? need : 0;
}

size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_sequence(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

// Rust's String::from_utf8_lossy: each maximal invalid prefix becomes one U+FFFD.
void append_lossy_utf8(std::string& out, std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    size_t good = 0;
    const size_t n = utf8_sequence(bytes, i, &good);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<size_t>(good, 1);
    }
  }
}

uint32_t decode_codepoint(std::string_view s, size_t i, size_t* len) {
  utf8proc_int32_t cp = 0;
  const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                  static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  *len = n > 0 ? static_cast<size_t>(n) : 1;
  return n > 0 ? static_cast<uint32_t>(cp) : 0xFFFD;
}

// Unicode White_Space (Rust's char::is_whitespace and regex \s).
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Rust regex's \w: letters, marks, decimal digits, connector punctuation.
bool is_word_char(uint32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

uint32_t last_codepoint(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t len;
  return decode_codepoint(s, i, &len);
}

std::string nfc(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(s);  // ASCII is always in NFC
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) fail("NFC normalization failed: ", utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

// A compiled PCRE2 pattern with its match data (one encode runs at a time: see Impl::mutex).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
    if (!re_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(code, msg, sizeof msg);
      fail(where, ": regex '", pattern, "' does not compile at offset ", offset, ": ",
           reinterpret_cast<const char*>(msg));
    }
    jit_ = pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE) == 0;
    md_ = pcre2_match_data_create_from_pattern(re_, nullptr);
  }
  ~Regex() {
    pcre2_match_data_free(md_);
    pcre2_code_free(re_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Next match in s at or after `from`: true and [*b, *e), or false.
  bool find(std::string_view s, size_t from, size_t* b, size_t* e) const {
    const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    const int rc = jit_ ? pcre2_jit_match(re_, subject, s.size(), from, 0, md_, nullptr)
                        : pcre2_match(re_, subject, s.size(), from, PCRE2_NO_UTF_CHECK, md_,
                                      nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("regex match failed: ", reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md_);
    *b = ov[0];
    *e = ov[1];
    return true;
  }

 private:
  pcre2_code* re_ = nullptr;
  pcre2_match_data* md_ = nullptr;
  bool jit_ = false;
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t b, e;
  bool match;
  int32_t id = -1;  // the added token of a match in split_added
};

// One pre-tokenizer step: a Split (regex or literal) or the final ByteLevel.
struct Step {
  bool byte_level = false;
  // Split
  std::unique_ptr<Regex> regex;  // null: literal
  std::string literal;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  // ByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
};

struct AddedToken {
  std::string content;
  std::string decoded;  // bytes the ByteLevel decoder makes of `content`
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Added tokens of one kind (normalized or not), bucketed by first byte, longest first.
struct AddedMatcher {
  std::array<std::vector<const AddedToken*>, 256> by_first{};
  bool empty = true;
  std::vector<std::string> patterns;  // normalized contents, parallel to `tokens`
  std::vector<const AddedToken*> tokens;

  void build() {
    for (size_t i = 0; i < tokens.size(); ++i) {
      by_first[static_cast<unsigned char>(patterns[i][0])].push_back(tokens[i]);
      empty = false;
    }
  }
  const std::string& pattern_of(const AddedToken* t) const {
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == t) return patterns[i];
    return t->content;
  }
};

// pair (a, b) -> (rank, merged id), open addressing.
class MergeMap {
 public:
  struct Value {
    int32_t rank = -1, id = -1;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, Value{});
    mask_ = cap - 1;
  }
  void put(int32_t a, int32_t b, Value v) {
    const uint64_t k = key(a, b);
    size_t i = hash(k) & mask_;
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    keys_[i] = k;
    values_[i] = v;
  }
  const Value* get(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    size_t i = hash(k) & mask_;
    while (keys_[i] != kEmpty) {
      if (keys_[i] == k) return &values_[i];
      i = (i + 1) & mask_;
    }
    return nullptr;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t mask_ = 0;
};

std::string type_of(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

// j[key] as a bool (`def` when absent or null); `where` names j in the message.
bool flag(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean())
    fail(where, where.empty() ? "" : ": ", "'", key, "' must be true or false, got ",
         j[key].dump());
  return j[key].get<bool>();
}

}  // namespace

struct BpeTokenizer::Impl {
  std::string origin;

  // model
  std::unordered_map<std::string, int32_t> vocab;        // byte-level token string -> id
  std::unordered_map<std::string, int32_t> vocab_bytes;  // raw bytes of the token -> id
  std::vector<std::string> id_bytes;                     // id -> raw bytes (decoder)
  std::vector<bool> in_model;                            // id belongs to model.vocab
  std::array<int32_t, 256> byte_id{};                    // id of each single-byte symbol, or -1
  MergeMap merges;
  bool ignore_merges = false;
  std::optional<int32_t> unk;

  // added tokens
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, const AddedToken*> added_by_id;
  AddedMatcher raw_tokens, normalized_tokens;

  bool nfc = false;
  std::vector<Step> steps;
  std::unique_ptr<Regex> gpt2;
  std::vector<int64_t> prefix, suffix;
  int64_t size = 0;

  // encode state: one encode at a time
  mutable std::mutex mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
  mutable std::vector<std::vector<Span>> scratch;  // per pre-tokenizer depth
  struct Sym {
    int32_t id, prev, next;
  };
  struct Cand {
    int32_t rank, pos, id;
  };
  mutable std::vector<Sym> syms;
  mutable std::vector<Cand> heap;
  mutable std::vector<int32_t> word_ids;

  static constexpr size_t kCacheEntries = 1 << 17;
  static constexpr size_t kCacheWordBytes = 256;

  // ---- loading -------------------------------------------------------------------------------
  void load(const json& root);
  void load_model(const json& m);
  void load_added(const json& a);
  void load_normalizer(const json& n);
  void load_pre_tokenizer(const json& p);
  void add_step(const json& p, const std::string& where);
  void load_post_processor(const json& p);
  void load_decoder(const json& d);

  // ---- encoding ------------------------------------------------------------------------------
  void encode(std::string_view text, std::vector<int64_t>& out) const;
  void split_added(std::string_view s, const AddedMatcher& m, std::vector<Span>& spans) const;
  void normalized_piece(std::string_view s, std::vector<int64_t>& out) const;
  void pre_tokenize(std::string_view s, size_t step, std::vector<int64_t>& out) const;
  void byte_level(std::string_view s, const Step& st, std::vector<int64_t>& out) const;
  void bpe(std::string_view word, std::vector<int64_t>& out) const;
  void merge_word(std::string_view word) const;
  void find_spans(std::string_view s, const Step& st, std::vector<Span>& spans) const;
};

// ---- loading ---------------------------------------------------------------------------------

void BpeTokenizer::Impl::load(const json& root) {
  if (!root.is_object()) fail(origin, ": expected a JSON object at the top level");
  if (!root.contains("model")) fail(origin, ": has no 'model' section");
  load_model(root["model"]);
  if (root.contains("normalizer")) load_normalizer(root["normalizer"]);
  if (root.contains("added_tokens")) load_added(root["added_tokens"]);
  if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null())
    fail(origin, ": pre_tokenizer is null; recall reads byte-level BPE tokenizers, whose "
                 "pre_tokenizer has a ByteLevel step");
  load_pre_tokenizer(root["pre_tokenizer"]);
  if (root.contains("post_processor")) load_post_processor(root["post_processor"]);
  load_decoder(root.contains("decoder") ? root["decoder"] : json());
  gpt2 = std::make_unique<Regex>(kGpt2Pattern, origin + ": pre_tokenizer ByteLevel");
  scratch.resize(steps.size() + 2);
}

void BpeTokenizer::Impl::load_model(const json& m) {
  const std::string type = type_of(m);
  if (type != "BPE" && !(type.empty() && m.contains("merges")))
    fail(origin, ": model.type '", type.empty() ? m.dump().substr(0, 40) : type,
         "' is not supported; recall reads byte-level BPE tokenizer.json files (Llama 3, Qwen2, "
         "Qwen3)\n---> HINT: for SentencePiece models (Llama 2, Mistral) put tokenizer.model in "
         "the model directory");
  const std::string where = origin + ": model";
  if (flag(m, "byte_fallback", false, where))
    fail(origin, ": model.byte_fallback is true (SentencePiece-style BPE, as in Llama 2 and "
                 "Mistral), which is not supported\n---> HINT: use the model's tokenizer.model");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0)
    fail(origin, ": model.dropout is ", m["dropout"].dump(),
         "; BPE dropout makes tokenization random and is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && !m[key].get<std::string>().empty())
      fail(origin, ": model.", key, " is '", m[key].get<std::string>(),
           "'; byte-level BPE uses none and recall does not support it");
  ignore_merges = flag(m, "ignore_merges", false, where);
  if (!m.contains("vocab") || !m["vocab"].is_object())
    fail(origin, ": model.vocab must be an object {token: id}");

  const auto b2c = byte_to_codepoint();
  int64_t max_id = -1;
  for (const auto& [token, idj] : m["vocab"].items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > INT32_MAX)
      fail(origin, ": model.vocab['", token, "'] must be an id in [0, 2^31), got ", idj.dump());
    max_id = std::max<int64_t>(max_id, idj.get<int64_t>());
  }
  id_bytes.assign(static_cast<size_t>(max_id + 1), std::string());
  in_model.assign(static_cast<size_t>(max_id + 1), false);
  vocab.reserve(m["vocab"].size());
  for (const auto& [token, idj] : m["vocab"].items()) {
    const auto id = idj.get<int32_t>();
    vocab[token] = id;
    in_model[id] = true;
    bool mapped = false;
    std::string bytes = byte_level_bytes(token, &mapped);
    if (mapped) vocab_bytes[bytes] = id;
    id_bytes[id] = std::move(bytes);
  }
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    append_utf8(sym, b2c[b]);
    auto it = vocab.find(sym);
    byte_id[b] = it == vocab.end() ? -1 : it->second;
  }
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto it = vocab.find(m["unk_token"].get<std::string>());
    if (it == vocab.end())
      fail(origin, ": model.unk_token '", m["unk_token"].get<std::string>(),
           "' is not in model.vocab");
    unk = it->second;
  }

  if (!m.contains("merges") || !m["merges"].is_array())
    fail(origin, ": model.merges must be a list of \"a b\" strings or [a, b] pairs");
  const json& ms = m["merges"];
  merges.reserve(ms.size());
  for (size_t r = 0; r < ms.size(); ++r) {
    std::string a, b;
    if (ms[r].is_string()) {
      const std::string& s = ms[r].get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(origin, ": model.merges[", r, "] = '", s,
             "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (ms[r].is_array() && ms[r].size() == 2 && ms[r][0].is_string() &&
               ms[r][1].is_string()) {
      a = ms[r][0].get<std::string>();
      b = ms[r][1].get<std::string>();
    } else {
      fail(origin, ": model.merges[", r, "] must be \"a b\" or [\"a\", \"b\"], got ",
           ms[r].dump());
    }
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
      fail(origin, ": model.merges[", r, "] = ('", a, "', '", b, "'): token '",
           ia == vocab.end() ? a : ib == vocab.end() ? b : a + b, "' is not in model.vocab");
    merges.put(ia->second, ib->second, {static_cast<int32_t>(r), iab->second});
  }
  size = max_id + 1;
}

void BpeTokenizer::Impl::load_added(const json& a) {
  if (a.is_null()) return;
  if (!a.is_array()) fail(origin, ": added_tokens must be a list");
  added.reserve(a.size());  // pointers into `added` stay valid
  for (size_t i = 0; i < a.size(); ++i) {
    const json& t = a[i];
    const std::string where = origin + ": added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("content") || !t["content"].is_string() ||
        !t.contains("id") || !t["id"].is_number_integer() || t["id"].get<int64_t>() < 0 ||
        t["id"].get<int64_t>() > INT32_MAX)
      fail(where, ": expected {\"id\": <id>, \"content\": <text>, ...}, got ", t.dump());
    AddedToken tok;
    tok.content = t["content"].get<std::string>();
    tok.id = t["id"].get<int32_t>();
    tok.decoded = byte_level_bytes(tok.content);
    tok.single_word = flag(t, "single_word", false, where);
    tok.lstrip = flag(t, "lstrip", false, where);
    tok.rstrip = flag(t, "rstrip", false, where);
    tok.special = flag(t, "special", false, where);
    tok.normalized = flag(t, "normalized", !tok.special, where);
    if (tok.content.empty()) continue;
    if (first_invalid_utf8(tok.content) != std::string_view::npos)
      fail(where, ": content is not valid UTF-8");
    size = std::max<int64_t>(size, tok.id + 1);
    added.push_back(std::move(tok));
  }
  for (const AddedToken& t : added) {
    added_by_id[t.id] = &t;
    AddedMatcher& m = t.normalized ? normalized_tokens : raw_tokens;
    m.tokens.push_back(&t);
    m.patterns.push_back(t.normalized && nfc ? recall::nfc(t.content) : t.content);
  }
  for (AddedMatcher* m : {&raw_tokens, &normalized_tokens}) {
    m->build();
    for (auto& bucket : m->by_first)
      std::stable_sort(bucket.begin(), bucket.end(), [m](const AddedToken* x, const AddedToken* y) {
        return m->pattern_of(x).size() > m->pattern_of(y).size();
      });
  }
}

void BpeTokenizer::Impl::load_normalizer(const json& n) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    for (const json& x : n["normalizers"]) {
      if (type_of(x) != "NFC")
        fail(origin, ": normalizer '", type_of(x), "' in the normalizer Sequence is not supported "
             "(recall supports NFC or no normalizer)");
      nfc = true;
    }
  } else {
    fail(origin, ": normalizer '", type.empty() ? n.dump().substr(0, 60) : type,
         "' is not supported (recall supports NFC or no normalizer)");
  }
}

void BpeTokenizer::Impl::add_step(const json& p, const std::string& where) {
  const std::string type = type_of(p);
  Step st;
  if (type == "Split") {
    with_context(where + " Split", [&] {
      if (!p.contains("pattern") || !p["pattern"].is_object())
        fail("'pattern' must be {\"Regex\": ...} or {\"String\": ...}");
      const json& pat = p["pattern"];
      if (pat.contains("Regex") && pat["Regex"].is_string()) {
        st.regex = std::make_unique<Regex>(pat["Regex"].get<std::string>(), "pattern");
      } else if (pat.contains("String") && pat["String"].is_string()) {
        st.literal = pat["String"].get<std::string>();
        if (st.literal.empty()) fail("'pattern' String is empty");
      } else {
        fail("'pattern' must be {\"Regex\": ...} or {\"String\": ...}, got ", pat.dump());
      }
      const std::string b = p.value("behavior", std::string("Isolated"));
      if (b == "Removed") st.behavior = Behavior::Removed;
      else if (b == "Isolated") st.behavior = Behavior::Isolated;
      else if (b == "MergedWithPrevious") st.behavior = Behavior::MergedWithPrevious;
      else if (b == "MergedWithNext") st.behavior = Behavior::MergedWithNext;
      else if (b == "Contiguous") st.behavior = Behavior::Contiguous;
      else fail("behavior '", b, "' is unknown");
      st.invert = flag(p, "invert", false, "");  // with_context names the step
    });
  } else if (type == "ByteLevel") {
    st.byte_level = true;
    st.add_prefix_space = flag(p, "add_prefix_space", true, where + " ByteLevel");
    st.use_regex = flag(p, "use_regex", true, where + " ByteLevel");
  } else {
    fail(where, " '", type.empty() ? p.dump().substr(0, 60) : type,
         "' is not supported (recall supports Split and ByteLevel, as Llama 3 and Qwen use)");
  }
  if (!steps.empty() && steps.back().byte_level)
    fail(where, ": ", type, " after ByteLevel is not supported (ByteLevel must be the last step)");
  steps.push_back(std::move(st));
}

void BpeTokenizer::Impl::load_pre_tokenizer(const json& p) {
  const std::string where = origin + ": pre_tokenizer";
  if (type_of(p) == "Sequence") {
    if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array())
      fail(where, " Sequence has no 'pretokenizers' list");
    for (const json& x : p["pretokenizers"]) add_step(x, where);
  } else {
    add_step(p, where);
  }
  if (steps.empty() || !steps.back().byte_level)
    fail(where, " has no ByteLevel step; recall reads byte-level BPE tokenizers only\n"
                "---> HINT: for SentencePiece models (Llama 2, Mistral) put tokenizer.model in "
                "the model directory");
}

void BpeTokenizer::Impl::load_post_processor(const json& p) {
  if (p.is_null()) return;
  const std::string type = type_of(p);
  const std::string where = origin + ": post_processor";
  if (type == "Sequence") {
    if (!p.contains("processors") || !p["processors"].is_array())
      fail(where, " Sequence has no 'processors' list");
    for (const json& x : p["processors"]) load_post_processor(x);
  } else if (type == "ByteLevel") {
    // Only offsets change; ids do not.
  } else if (type == "TemplateProcessing") {
    if (!p.contains("single") || !p["single"].is_array())
      fail(where, " TemplateProcessing has no 'single' template");
    const json& specials = p.contains("special_tokens") ? p["special_tokens"] : json::object();
    bool seen_sequence = false;
    for (const json& piece : p["single"]) {
      if (piece.contains("Sequence")) {
        if (piece["Sequence"].value("id", std::string("A")) != "A")
          fail(where, " TemplateProcessing: the single template uses sequence '",
               piece["Sequence"].value("id", std::string()), "'; expected A");
        seen_sequence = true;
      } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id")) {
        const std::string name = piece["SpecialToken"]["id"].get<std::string>();
        if (!specials.contains(name) || !specials[name].contains("ids") ||
            !specials[name]["ids"].is_array())
          fail(where, " TemplateProcessing: special token '", name,
               "' is used in 'single' but has no entry with ids in 'special_tokens'");
        for (const json& id : specials[name]["ids"]) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
            fail(where, " TemplateProcessing: special token '", name, "' has invalid id ",
                 id.dump());
          (seen_sequence ? suffix : prefix).push_back(id.get<int64_t>());
        }
      } else {
        fail(where, " TemplateProcessing: unknown template piece ", piece.dump());
      }
    }
    if (!seen_sequence) fail(where, " TemplateProcessing: the single template has no sequence A");
  } else {
    fail(where, " '", type.empty() ? p.dump().substr(0, 60) : type,
         "' is not supported (recall supports TemplateProcessing, ByteLevel and Sequence)");
  }
}

void BpeTokenizer::Impl::load_decoder(const json& d) {
  const std::string type = type_of(d);
  if (type == "ByteLevel") return;
  if (type == "Sequence" && d.contains("decoders") && d["decoders"].is_array() &&
      d["decoders"].size() == 1 && type_of(d["decoders"][0]) == "ByteLevel")
    return;
  fail(origin, ": decoder '", d.is_null() ? "null" : type.empty() ? d.dump().substr(0, 60) : type,
       "' is not supported; byte-level BPE needs the ByteLevel decoder");
}

// ---- encoding --------------------------------------------------------------------------------

// HF's AddedVocabulary::find_matches: leftmost-longest matches, single_word/lstrip/rstrip.
void BpeTokenizer::Impl::split_added(std::string_view s, const AddedMatcher& m,
                                     std::vector<Span>& spans) const {
  spans.clear();
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    const AddedToken* hit = nullptr;
    size_t len = 0;
    for (const AddedToken* t : m.by_first[static_cast<unsigned char>(s[i])]) {
      const std::string& p = m.pattern_of(t);
      if (p.size() <= s.size() - i && std::memcmp(s.data() + i, p.data(), p.size()) == 0) {
        hit = t;
        len = p.size();
        break;  // longest first
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;  // matches do not overlap, even discarded ones
    if (hit->single_word) {
      const bool start_space = start == 0 || !is_word_char(last_codepoint(s.substr(0, start)));
      size_t l;
      const bool stop_space = stop == s.size() || !is_word_char(decode_codepoint(s, stop, &l));
      if (!start_space || !stop_space) continue;
    }
    if (hit->lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t p = ns - 1;
        while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        size_t l;
        if (!is_white_space(decode_codepoint(s, p, &l))) break;
        ns = p;
      }
      start = std::max(ns, start_offset);
    }
    if (hit->rstrip) {
      while (stop < s.size()) {
        size_t l;
        if (!is_white_space(decode_codepoint(s, stop, &l))) break;
        stop += l;
      }
      i = stop;
    }
    if (start_offset < start) spans.push_back({start_offset, start, false});
    spans.push_back({start, stop, true, hit->id});
    start_offset = stop;
  }
  if (start_offset != s.size()) spans.push_back({start_offset, s.size(), false});
}

void BpeTokenizer::Impl::encode(std::string_view text, std::vector<int64_t>& out) const {
  const size_t bad = first_invalid_utf8(text);
  if (bad != std::string_view::npos)
    fail(origin, ": cannot encode text that is not valid UTF-8 (byte ", bad, " is 0x", std::hex,
         static_cast<int>(static_cast<unsigned char>(text[bad])), ")");
  if (raw_tokens.empty) {
    normalized_piece(text, out);
    return;
  }
  std::vector<Span> spans;
  split_added(text, raw_tokens, spans);
  for (const Span& sp : spans) {
    if (sp.match) out.push_back(sp.id);
    else normalized_piece(text.substr(sp.b, sp.e - sp.b), out);
  }
}

void BpeTokenizer::Impl::normalized_piece(std::string_view s, std::vector<int64_t>& out) const {
  std::string normalized;
  if (nfc) {
    normalized = recall::nfc(s);
    s = normalized;
  }
  if (normalized_tokens.empty) {
    pre_tokenize(s, 0, out);
    return;
  }
  std::vector<Span> spans;
  split_added(s, normalized_tokens, spans);
  for (const Span& sp : spans) {
    if (sp.match) out.push_back(sp.id);
    else pre_tokenize(s.substr(sp.b, sp.e - sp.b), 0, out);
  }
}

// HF's NormalizedString::split: the pattern's matches and the gaps between them, then the
// behavior decides which pieces stay and how matches join their neighbours.
void BpeTokenizer::Impl::find_spans(std::string_view s, const Step& st,
                                    std::vector<Span>& spans) const {
  spans.clear();
  size_t prev = 0, pos = 0, b = 0, e = 0;
  while (pos <= s.size()) {
    if (st.regex) {
      if (!st.regex->find(s, pos, &b, &e)) break;
    } else {
      b = s.find(st.literal, pos);
      if (b == std::string_view::npos) break;
      e = b + st.literal.size();
    }
    if (prev != b) spans.push_back({prev, b, st.invert});
    spans.push_back({b, e, !st.invert});
    prev = e;
    if (e > b) {
      pos = e;
    } else {
      if (e >= s.size()) break;
      size_t len;
      decode_codepoint(s, e, &len);
      pos = e + len;
    }
  }
  if (prev != s.size()) spans.push_back({prev, s.size(), st.invert});

  switch (st.behavior) {
    case Behavior::Isolated:
      break;
    case Behavior::Removed:
      spans.erase(std::remove_if(spans.begin(), spans.end(), [](const Span& x) { return x.match; }),
                  spans.end());
      break;
    case Behavior::MergedWithPrevious:
    case Behavior::Contiguous: {
      std::vector<Span> merged;
      bool previous_match = false;
      for (const Span& x : spans) {
        const bool join = st.behavior == Behavior::Contiguous ? x.match == previous_match
                                                               : x.match && !previous_match;
        if (join && !merged.empty()) merged.back().e = x.e;
        else merged.push_back({x.b, x.e, false});
        previous_match = x.match;
      }
      spans.swap(merged);
      break;
    }
    case Behavior::MergedWithNext: {
      std::vector<Span> merged;
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous_match && !merged.empty()) merged.back().b = it->b;
        else merged.push_back({it->b, it->e, false});
        previous_match = it->match;
      }
      std::reverse(merged.begin(), merged.end());
      spans.swap(merged);
      break;
    }
  }
}

void BpeTokenizer::Impl::pre_tokenize(std::string_view s, size_t step,
                                      std::vector<int64_t>& out) const {
  if (s.empty()) return;  // HF drops empty pieces
  const Step& st = steps[step];
  if (st.byte_level) {
    byte_level(s, st, out);
    return;
  }
  std::vector<Span>& spans = scratch[step];  // deeper steps use deeper slots
  find_spans(s, st, spans);
  for (const Span& sp : spans)
    if (sp.e > sp.b) pre_tokenize(s.substr(sp.b, sp.e - sp.b), step + 1, out);
}

void BpeTokenizer::Impl::byte_level(std::string_view s, const Step& st,
                                    std::vector<int64_t>& out) const {
  std::string with_space;
  if (st.add_prefix_space && s[0] != ' ') {
    with_space.reserve(s.size() + 1);
    with_space += ' ';
    with_space += s;
    s = with_space;
  }
  if (!st.use_regex) {
    bpe(s, out);
    return;
  }
  size_t prev = 0, pos = 0, b = 0, e = 0;
  while (pos < s.size() && gpt2->find(s, pos, &b, &e)) {
    if (prev < b) bpe(s.substr(prev, b - prev), out);
    if (e > b) bpe(s.substr(b, e - b), out);
    prev = e;
    size_t len = 1;
    if (e == b) decode_codepoint(s, e, &len);
    pos = e > b ? e : e + len;
  }
  if (prev < s.size()) bpe(s.substr(prev), out);
}

void BpeTokenizer::Impl::bpe(std::string_view word, std::vector<int64_t>& out) const {
  if (word.size() == 1 && byte_id[static_cast<unsigned char>(word[0])] >= 0) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  std::string key(word);
  if (ignore_merges) {
    auto v = vocab_bytes.find(key);
    if (v != vocab_bytes.end()) {
      out.push_back(v->second);
      return;
    }
  }
  auto hit = cache.find(key);
  if (hit != cache.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  merge_word(word);
  out.insert(out.end(), word_ids.begin(), word_ids.end());
  if (word.size() <= kCacheWordBytes && cache.size() < kCacheEntries)
    cache.emplace(std::move(key), word_ids);
}

// HF's Word::merge_all: repeatedly merge the adjacent pair of lowest rank, leftmost first.
void BpeTokenizer::Impl::merge_word(std::string_view word) const {
  syms.clear();
  heap.clear();
  for (size_t i = 0; i < word.size(); ++i) {
    const auto byte = static_cast<unsigned char>(word[i]);
    int32_t id = byte_id[byte];
    if (id < 0) {
      if (!unk) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", byte);
        fail(origin, ": byte ", hex, " has no symbol in model.vocab and there is no unk_token");
      }
      id = *unk;
    }
    const auto n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, i + 1 < word.size() ? n + 1 : -1});
  }
  auto later = [](const Cand& x, const Cand& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto push = [&](int32_t pos) {
    const int32_t nx = syms[pos].next;
    if (nx < 0) return;
    if (const MergeMap::Value* v = merges.get(syms[pos].id, syms[nx].id)) {
      heap.push_back({v->rank, pos, v->id});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand top = heap.back();
    heap.pop_back();
    Sym& s = syms[top.pos];
    if (s.id < 0 || s.next < 0) continue;
    const MergeMap::Value* v = merges.get(s.id, syms[s.next].id);
    if (!v || v->id != top.id) continue;  // stale: a neighbour changed since it was queued
    const int32_t gone = s.next;
    s.id = top.id;
    s.next = syms[gone].next;
    if (s.next >= 0) syms[s.next].prev = top.pos;
    syms[gone].id = -1;
    if (s.prev >= 0) push(s.prev);
    push(top.pos);
  }
  word_ids.clear();
  for (int32_t i = 0; i >= 0; i = syms[i].next) word_ids.push_back(syms[i].id);
}

// ---- public interface ------------------------------------------------------------------------

BpeTokenizer::BpeTokenizer() : impl_(std::make_unique<Impl>()) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json_text(const std::string& json_text,
                                                           const std::string& origin) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(origin, ": is not valid JSON: ", parse_error_text(e));
  }
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->path_ = origin;
  t->impl_->origin = "tokenizer '" + origin + "'";
  try {
    t->impl_->load(root);
  } catch (const json::exception& e) {  // a field of the wrong JSON type
    fail(t->impl_->origin, ": malformed: ", e.what());
  }
  return t;
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::open(const std::string& path) {
  if (!path_exists(path)) fail("tokenizer '", path, "' does not exist");
  return from_json_text(read_text_file(path), path);
}

bool BpeTokenizer::is_byte_level_bpe(const std::string& path) {
  try {
    const json root = json::parse(read_text_file(path));
    const json& m = root.at("model");
    if (m.value("type", std::string()) != "BPE") return false;
    if (m.contains("byte_fallback") && m["byte_fallback"].is_boolean() &&
        m["byte_fallback"].get<bool>())
      return false;
    const json& p = root.at("pre_tokenizer");
    if (type_of(p) == "ByteLevel") return true;
    if (type_of(p) == "Sequence" && p.contains("pretokenizers"))
      for (const json& x : p["pretokenizers"])
        if (type_of(x) == "ByteLevel") return true;
    return false;
  } catch (const std::exception&) {
    return false;
  }
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<int64_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode(text, out);
  return out;
}

std::vector<int64_t> BpeTokenizer::encode_with_special_tokens(const std::string& text) const {
  std::vector<int64_t> out = impl_->prefix;
  const std::vector<int64_t> body = encode(text);
  out.insert(out.end(), body.begin(), body.end());
  out.insert(out.end(), impl_->suffix.begin(), impl_->suffix.end());
  return out;
}

const std::vector<int64_t>& BpeTokenizer::prefix_ids() const { return impl_->prefix; }
const std::vector<int64_t>& BpeTokenizer::suffix_ids() const { return impl_->suffix; }

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::string out, chunk;
  for (const int64_t id : ids) {
    if (id < 0 || id >= m.size)
      fail(m.origin, ": token id ", id, " is outside the vocabulary [0, ", m.size, ")");
    auto added = m.added_by_id.find(static_cast<int32_t>(id));
    if (added != m.added_by_id.end()) {
      if (skip_special_tokens && added->second->special) continue;
      chunk += added->second->decoded;  // tokenizers 0.23 runs added tokens through the decoder
    } else if (static_cast<size_t>(id) < m.in_model.size() && m.in_model[id]) {
      chunk += m.id_bytes[id];
    } else {
      fail(m.origin, ": token id ", id, " is neither in model.vocab nor an added token");
    }
  }
  append_lossy_utf8(out, chunk);  // one lossy conversion of all bytes, as HF does
  return out;
}

int64_t BpeTokenizer::vocab_size() const { return impl_->size; }

std::optional<int64_t> BpeTokenizer::token_to_id(const std::string& token) const {
  for (const AddedToken& t : impl_->added)
    if (t.content == token) return t.id;
  auto it = impl_->vocab.find(token);
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

}  // namespace recall
