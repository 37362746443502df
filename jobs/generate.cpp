// recall generate: greedy or sampled continuation of a prompt (text or token ids).
#include <iostream>
#include <sstream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"
#include "recall/util/numbers.h"

namespace recall::jobs {

namespace {

std::vector<int64_t> parse_ids(const std::string& text) {
  std::string s = text;
  for (char& ch : s)
    if (ch == ',') ch = ' ';
  std::istringstream in(s);
  std::vector<int64_t> ids;
  std::string word;
  while (in >> word) {
    const auto x = parse_int64(word);
    if (!x) fail("--tokens: '", word, "' is not a token id (expected e.g. \"1,403,407\")");
    ids.push_back(*x);
  }
  if (ids.empty()) fail("--tokens: no token ids given");
  return ids;
}

}  // namespace

int generate(int argc, char** argv) {
  ArgParser args("generate", "Continues a prompt greedily (temperature 0) or by seeded nucleus sampling.");
  args.model_options()
      .option("prompt", "TEXT", "prompt text (BOS + SentencePiece tokens)")
      .option("tokens", "IDS", "prompt token ids, comma or space separated")
      .option("max-new", "N", "new tokens to generate at most", "32")
      .option("temperature", "T", "0 = greedy", "0")
      .option("top-p", "P", "nucleus sampling threshold", "1")
      .option("seed", "N", "sampling seed", "0")
      .flag("ignore-eos", "keep generating after an EOS token");
  if (!args.parse(argc, argv)) return 0;
  engine::GenerateOptions o;
  read_model_options(args, &o);
  o.prompt = args.get("prompt");
  if (args.has("tokens")) o.prompt_ids = parse_ids(args.get("tokens"));
  o.sampling.max_new = args.get_integer("max-new", 0);
  o.sampling.temperature = args.get_number("temperature");
  o.sampling.top_p = args.get_number("top-p");
  o.sampling.seed = static_cast<uint64_t>(args.get_integer("seed", 0));
  o.stop_at_eos = !args.flag_set("ignore-eos");
  const engine::GenerateResult r = engine::library().run_generate(o);
  std::cout << "prompt:";
  for (int64_t id : r.prompt_ids) std::cout << " " << id;
  std::cout << "\ntokens:";
  for (int64_t id : r.new_ids) std::cout << " " << id;
  std::cout << "\n";
  if (r.has_text) std::cout << "text: " << r.text << "\n";
  return 0;
}

}  // namespace recall::jobs
