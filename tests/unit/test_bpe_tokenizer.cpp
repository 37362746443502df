// BpeTokenizer on hand-built tokenizer.json files whose answers are known by hand: merge order by
// rank and leftmost ties, ignore_merges, added tokens (special, lstrip/rstrip, single_word),
// the Split behaviors, the BOS template, lossy decoding of broken UTF-8, and the catalog of
// unsupported or broken files with the message each must give. Parity with Hugging Face on
// trained tokenizers is tests/python/test_tokenizer_parity.py.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "recall/text/bpe_tokenizer.h"
#include "recall/util/error.h"
#include "testing_files.h"

using namespace recall;
using json = nlohmann::json;
using recall::testing::expect_error;

namespace {

// GPT-2's byte-to-unicode character for byte b, as UTF-8.
std::string byte_char(int b) {
  int cp = b;
  if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A tokenizer.json: ids 0..255 are the bytes, then the merged tokens in merge order, then `extra`
// vocabulary entries, then the added tokens.
json make_doc(const std::vector<std::pair<std::string, std::string>>& merges,
              const std::vector<std::string>& extra = {}) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json ms = json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
    ms.push_back(json::array({a, b}));
  }
  for (const std::string& e : extra) vocab[e] = static_cast<int>(vocab.size());
  json doc;
  doc["version"] = "1.0";
  doc["added_tokens"] = json::array();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                          {"trim_offsets", true}, {"use_regex", true}};
  doc["post_processor"] = nullptr;
  doc["decoder"] = {{"type", "ByteLevel"}};
  doc["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                  {"vocab", vocab}, {"merges", ms}};
  return doc;
}

int64_t add_token(json& doc, const std::string& content, bool special, bool lstrip = false,
                  bool rstrip = false, bool single_word = false) {
  const auto id =
      static_cast<int64_t>(doc["model"]["vocab"].size() + doc["added_tokens"].size());
  doc["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", single_word},
                                 {"lstrip", lstrip}, {"rstrip", rstrip},
                                 {"normalized", !special}, {"special", special}});
  return id;
}

std::unique_ptr<BpeTokenizer> load(const json& doc) {
  return BpeTokenizer::from_json_text(doc.dump(), "test.json");
}

int64_t id_of(const BpeTokenizer& t, const std::string& token) {
  auto id = t.token_to_id(token);
  EXPECT_TRUE(id.has_value()) << token;
  return id.value_or(-1);
}

using Ids = std::vector<int64_t>;

}  // namespace

TEST(BpeTokenizer, MergesApplyByRankThenLeftmost) {
  auto t = load(make_doc({{"a", "b"}, {"b", "c"}}));
  EXPECT_EQ(t->encode("abc"), (Ids{id_of(*t, "ab"), 'c'}));
  auto u = load(make_doc({{"b", "c"}, {"a", "b"}}));
  EXPECT_EQ(u->encode("abc"), (Ids{'a', id_of(*u, "bc")}));
  auto v = load(make_doc({{"a", "a"}}));  // equal ranks: the leftmost pair first
  EXPECT_EQ(v->encode("aaa"), (Ids{id_of(*v, "aa"), 'a'}));
  EXPECT_EQ(v->encode("aaaa"), (Ids{id_of(*v, "aa"), id_of(*v, "aa")}));
  auto w = load(make_doc({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}}));
  EXPECT_EQ(w->encode("hello"), (Ids{id_of(*w, "hello")}));
  EXPECT_EQ(w->encode("hellx"), (Ids{id_of(*w, "hell"), 'x'}));
  // the GPT-2 regex makes " hello" a word; no merge joins its space byte 'Ġ' to the rest
  EXPECT_EQ(w->encode("hello hello"), (Ids{id_of(*w, "hello"), ' ', id_of(*w, "hello")}));
  EXPECT_EQ(w->decode(w->encode("hello hello")), "hello hello");
}

TEST(BpeTokenizer, IgnoreMergesUsesWholeWords) {
  json doc = make_doc({{"a", "b"}}, {"abc"});
  EXPECT_EQ(load(doc)->encode("abc"), (Ids{256, 'c'}));
  doc["model"]["ignore_merges"] = true;
  EXPECT_EQ(load(doc)->encode("abc"), (Ids{257}));
}

TEST(BpeTokenizer, MergesAsStringsEqualPairs) {
  json doc = make_doc({{"a", "b"}, {"ab", "c"}});
  json strings = doc;
  strings["model"]["merges"] = json::array({"a b", "ab c"});
  EXPECT_EQ(load(doc)->encode("abcab"), load(strings)->encode("abcab"));
  EXPECT_EQ(load(strings)->encode("abcab"), (Ids{257, 256}));
}

TEST(BpeTokenizer, AddedTokensMatchFirstLongestAndDecode) {
  json doc = make_doc({{"a", "b"}});
  const int64_t s = add_token(doc, "<s>", true);
  const int64_t ss = add_token(doc, "<s><s>", true);
  const int64_t mask = add_token(doc, "<mask>", true, /*lstrip=*/true, /*rstrip=*/true);
  const int64_t word = add_token(doc, "zz", false, false, false, /*single_word=*/true);
  auto t = load(doc);
  EXPECT_EQ(t->encode("ab<s>ab"), (Ids{256, s, 256}));
  EXPECT_EQ(t->encode("<s><s><s>"), (Ids{ss, s}));
  EXPECT_EQ(t->encode("a <mask> b"), (Ids{'a', mask, 'b'}));
  EXPECT_EQ(t->encode("zz xzz zz"), (Ids{word, ' ', 'x', 'z', 'z', ' ', word}));
  EXPECT_EQ(t->decode({256, s, 256}), "abab");
  EXPECT_EQ(t->decode({256, s, 256}, /*skip_special_tokens=*/false), "ab<s>ab");
  EXPECT_EQ(t->decode({word}), "zz");
  EXPECT_EQ(t->vocab_size(), word + 1);
}

TEST(BpeTokenizer, SplitBehaviors) {
  // merges that would join across every boundary, so the ids show where the pieces are
  json doc = make_doc({{"a", "-"}, {"b", "-"}, {"-", "b"}, {"-", "-"}, {"-", "c"}});
  doc["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"}, {"pattern", {{"String", "-"}}},
                             {"behavior", "Isolated"}, {"invert", false}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false},
                             {"use_regex", false}}}}};
  auto ids = [&](const std::string& behavior, bool invert) {
    json d = doc;
    d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = behavior;
    d["pre_tokenizer"]["pretokenizers"][0]["invert"] = invert;
    return load(d)->encode("a-b--c");
  };
  const int64_t a_ = 256, b_ = 257, _b = 258, __ = 259, _c = 260;
  EXPECT_EQ(ids("Isolated", false), (Ids{'a', '-', 'b', '-', '-', 'c'}));
  EXPECT_EQ(ids("Removed", false), (Ids{'a', 'b', 'c'}));
  EXPECT_EQ(ids("Removed", true), (Ids{'-', '-', '-'}));
  EXPECT_EQ(ids("MergedWithPrevious", false), (Ids{a_, b_, '-', 'c'}));
  EXPECT_EQ(ids("MergedWithNext", false), (Ids{'a', _b, '-', _c}));
  EXPECT_EQ(ids("Contiguous", false), (Ids{'a', '-', 'b', __, 'c'}));
}

TEST(BpeTokenizer, TemplateAddsBos) {
  json doc = make_doc({});
  const int64_t bos = add_token(doc, "<|begin_of_text|>", true);
  doc["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}},
        {{"type", "TemplateProcessing"},
         {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
         {"pair", json::array()},
         {"special_tokens",
          {{"<|begin_of_text|>",
            {{"id", "<|begin_of_text|>"}, {"ids", {bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}}}}};
  auto t = load(doc);
  EXPECT_EQ(t->prefix_ids(), (Ids{bos}));
  EXPECT_TRUE(t->suffix_ids().empty());
  EXPECT_EQ(t->encode("hi"), (Ids{'h', 'i'}));
  EXPECT_EQ(t->encode_with_special_tokens("hi"), (Ids{bos, 'h', 'i'}));
}

TEST(BpeTokenizer, NfcAndPrefixSpace) {
  json doc = make_doc({});
  doc["normalizer"] = {{"type", "NFC"}};
  doc["pre_tokenizer"]["add_prefix_space"] = true;
  auto t = load(doc);
  // "e" + COMBINING ACUTE composes to U+00E9 (bytes C3 A9); the prefix space comes first
  EXPECT_EQ(t->encode("e\xCC\x81"), (Ids{' ', 0xC3, 0xA9}));
  EXPECT_EQ(t->decode(t->encode("e\xCC\x81")), " \xC3\xA9");
}

TEST(BpeTokenizer, DecodeReplacesBrokenUtf8LikeRust) {
  auto t = load(make_doc({}));
  EXPECT_EQ(t->decode({0xC3}), "\xEF\xBF\xBD");
  EXPECT_EQ(t->decode({0xE2, 0x82, 'a'}), "\xEF\xBF\xBD" "a");  // one U+FFFD per maximal prefix
  EXPECT_EQ(t->decode({0xFF, 0xFE}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t->decode({0xED, 0xA0, 0x80}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(t->decode({0xE2, 0x82, 0xAC}), "\xE2\x82\xAC");
  const std::string text =
      "caf\xC3\xA9 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE4\xB8\xAD\xE6\x96\x87\n\n  x";
  EXPECT_EQ(t->decode(t->encode(text)), text);
}

TEST(BpeTokenizer, BadInputCatalog) {
  expect_error([] { load(make_doc({}))->encode("ab\xFF"); },
               {"test.json", "not valid UTF-8", "byte 2"});
  expect_error([] { load(make_doc({}))->decode({1000}); },
               {"test.json", "token id 1000 is outside the vocabulary [0, 256)"});
  json missing_byte = make_doc({});
  missing_byte["model"]["vocab"].erase(byte_char('q'));
  expect_error([&] { load(missing_byte)->encode("aqa"); },
               {"byte 0x71 has no symbol in model.vocab"});
}

TEST(BpeTokenizer, UnsupportedFileCatalog) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {"WordPiece", [](json& d) { d["model"]["type"] = "WordPiece"; },
       {"test.json", "model.type 'WordPiece' is not supported", "tokenizer.model"}},
      {"Unigram", [](json& d) { d["model"] = {{"type", "Unigram"}, {"vocab", json::array()}}; },
       {"model.type 'Unigram' is not supported"}},
      {"byte fallback", [](json& d) { d["model"]["byte_fallback"] = true; },
       {"model.byte_fallback is true", "HINT"}},
      {"dropout", [](json& d) { d["model"]["dropout"] = 0.1; }, {"model.dropout is 0.1"}},
      {"suffix", [](json& d) { d["model"]["end_of_word_suffix"] = "</w>"; },
       {"model.end_of_word_suffix is '</w>'"}},
      {"Lowercase", [](json& d) { d["normalizer"] = {{"type", "Lowercase"}}; },
       {"normalizer 'Lowercase' is not supported"}},
      {"Whitespace", [](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; },
       {"pre_tokenizer 'Whitespace' is not supported"}},
      {"null pre_tokenizer", [](json& d) { d["pre_tokenizer"] = nullptr; },
       {"pre_tokenizer is null"}},
      {"Metaspace decoder", [](json& d) { d["decoder"] = {{"type", "Metaspace"}}; },
       {"decoder 'Metaspace' is not supported"}},
      {"null decoder", [](json& d) { d["decoder"] = nullptr; }, {"decoder 'null'"}},
      {"Roberta", [](json& d) { d["post_processor"] = {{"type", "RobertaProcessing"}}; },
       {"post_processor 'RobertaProcessing' is not supported"}},
      {"merge out of vocab", [](json& d) { d["model"]["merges"].push_back({"x", "yz"}); },
       {"model.merges[0] = ('x', 'yz'): token 'yz' is not in model.vocab"}},
      {"merge of three", [](json& d) { d["model"]["merges"].push_back("a b c"); },
       {"model.merges[0] = 'a b c' is not two tokens separated by one space"}},
      {"bad vocab id", [](json& d) { d["model"]["vocab"]["a"] = -3; },
       {"model.vocab['a'] must be an id in [0, 2^31), got -3"}},
      {"bad added token", [](json& d) { d["added_tokens"].push_back({{"content", "x"}}); },
       {"added_tokens[0]: expected {\"id\""}},
      {"bad regex",
       [](json& d) {
         d["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers",
                                {{{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L"}}},
                                  {"behavior", "Isolated"}},
                                 {{"type", "ByteLevel"}}}}};
       },
       {"pre_tokenizer Split: pattern: regex '(\\p{L' does not compile"}},
      {"ByteLevel not last",
       [](json& d) {
         d["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers",
                                {{{"type", "ByteLevel"}},
                                 {{"type", "Split"}, {"pattern", {{"String", " "}}}}}}};
       },
       {"Split after ByteLevel is not supported"}},
      {"wrong JSON type", [](json& d) { d["model"]["ignore_merges"] = "yes"; },
       {"test.json': model: 'ignore_merges' must be true or false, got \"yes\""}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    json doc = make_doc({});
    c.edit(doc);
    expect_error([&] { load(doc); }, c.fragments);
  }
  expect_error([] { BpeTokenizer::from_json_text("{\"model\": ", "cut.json"); },
               {"cut.json", "is not valid JSON"});
  expect_error([] { BpeTokenizer::open("/nonexistent/tokenizer.json"); },
               {"/nonexistent/tokenizer.json", "does not exist"});
}
