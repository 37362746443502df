// tok_tool: exposes BpeTokenizer (tokenizer.json) to the Python parity tests.
//   tok_tool encode FILE.json [--special] < text          ids of all of stdin, one line
//   tok_tool decode FILE.json [--keep-special] < ids      text of whitespace-separated ids
//   tok_tool encode-jsonl FILE.json [--special]           stdin: one JSON string per line;
//                                                         stdout: one JSON list of ids per line
//   tok_tool decode-jsonl FILE.json [--keep-special]      stdin: one JSON list of ids per line;
//                                                         stdout: one JSON string per line
//   tok_tool info FILE.json                               {"vocab_size", "prefix", "suffix"}
//   tok_tool model-encode-jsonl MODEL_DIR                 stdin: one JSON string per line; stdout: the
//                                                         ids recall gives a model for that text (the
//                                                         directory's tokenizer, BOS from config.json)
// --special adds the post-processor's tokens (HF add_special_tokens=True); decode skips special
// tokens unless --keep-special (HF skip_special_tokens=True by default). Errors: exit 1.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "recall/model/config.h"
#include "recall/text/bpe_tokenizer.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"

namespace {

using recall::BpeTokenizer;
using json = nlohmann::json;

constexpr const char* kUsage =
    "usage: tok_tool encode|encode-jsonl FILE.json [--special]\n"
    "       tok_tool decode|decode-jsonl FILE.json [--keep-special]\n"
    "       tok_tool info FILE.json\n"
    "       tok_tool model-encode-jsonl MODEL_DIR\n";

std::string read_stdin() {
  std::ostringstream os;
  os << std::cin.rdbuf();
  return os.str();
}

void print_ids(const std::vector<int64_t>& ids) {
  std::string line = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ", ";
    line += std::to_string(ids[i]);
  }
  line += "]\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "model-encode-jsonl") {
    const auto tok = recall::Tokenizer::open_model_dir(argv[2]);
    const recall::ModelConfig config = recall::load_model_config(argv[2]);
    const auto policy = recall::TokenPolicy::for_model(config, tok.get());
    std::string line;
    for (int64_t n = 1; std::getline(std::cin, line); ++n)
      print_ids(policy.encode(json::parse(line).get<std::string>(), "stdin line " + std::to_string(n)));
    return 0;
  }
  bool special = false, keep_special = false;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--special") special = true;
    else if (a == "--keep-special") keep_special = true;
    else recall::fail("unknown option '", a, "'\n", kUsage);
  }
  const auto tok = BpeTokenizer::open(argv[2]);
  auto enc = [&](const std::string& text) {
    return special ? tok->encode_with_special_tokens(text) : tok->encode(text);
  };
  if (cmd == "encode") {
    print_ids(enc(read_stdin()));
  } else if (cmd == "decode") {
    std::istringstream in(read_stdin());
    std::vector<int64_t> ids{std::istream_iterator<int64_t>(in), std::istream_iterator<int64_t>()};
    const std::string text = tok->decode(ids, !keep_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else if (cmd == "encode-jsonl" || cmd == "decode-jsonl") {
    std::string line;
    int64_t n = 0;
    while (std::getline(std::cin, line)) {
      ++n;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        recall::fail("stdin line ", n, " is not JSON: ", e.what());
      }
      if (cmd == "encode-jsonl") {
        print_ids(enc(j.get<std::string>()));
      } else {
        const std::string text = tok->decode(j.get<std::vector<int64_t>>(), !keep_special);
        std::puts(json(text).dump(-1, ' ', false, json::error_handler_t::strict).c_str());
      }
    }
  } else if (cmd == "info") {
    json j = {{"vocab_size", tok->vocab_size()},
              {"prefix", tok->prefix_ids()},
              {"suffix", tok->suffix_ids()}};
    std::puts(j.dump().c_str());
  } else {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tok_tool: %s\n", e.what());
    return 1;
  }
}
