// Tokenizer benchmark: tokens/s of recall's BpeTokenizer over a corpus (one JSON string per line),
// one thread, best of --repeat passes (the first pass, with a cold word cache, is printed too).
// bench/bench_tokenizer.py builds a Llama-3-style tokenizer.json and a corpus, times Hugging Face
// `tokenizers` on one thread over the same documents and passes its figure as --reference.
// Run: build/bin/bench_tokenizer FILE.json CORPUS.jsonl [--repeat 3] [--reference TOKENS_PER_S]
//                                [--expect-tokens N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "recall/text/bpe_tokenizer.h"
#include "recall/util/error.h"

namespace {

using recall::BpeTokenizer;

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fputs("usage: bench_tokenizer FILE.json CORPUS.jsonl [--repeat N] [--reference TOK_PER_S]"
               " [--expect-tokens N]\n", stderr);
    return 2;
  }
  int repeat = 3;
  double reference = 0;
  long long expect = -1;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--repeat") repeat = std::atoi(argv[i + 1]);
    else if (a == "--reference") reference = std::atof(argv[i + 1]);
    else if (a == "--expect-tokens") expect = std::atoll(argv[i + 1]);
    else recall::fail("unknown option '", a, "'");
  }
  std::ifstream in(argv[2]);
  if (!in) recall::fail("cannot open corpus '", argv[2], "'");
  std::vector<std::string> docs;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    docs.push_back(nlohmann::json::parse(line).get<std::string>());
    bytes += docs.back().size();
  }
  const auto t_load = std::chrono::steady_clock::now();
  const auto tok = BpeTokenizer::open(argv[1]);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

  double best = 1e300, first = 0;
  long long tokens = 0;
  for (int r = 0; r < std::max(repeat, 1); ++r) {
    tokens = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string& d : docs) tokens += static_cast<long long>(tok->encode(d).size());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r == 0) first = s;
    best = std::min(best, s);
  }
  std::printf("corpus: %zu documents, %.2f MB, %lld tokens; tokenizer loaded in %.3f s\n",
              docs.size(), bytes / 1e6, tokens, load_s);
  std::printf("recall: %.0f tokens/s (best of %d; first pass %.0f tokens/s), %.1f MB/s\n",
              tokens / best, repeat, tokens / first, bytes / 1e6 / best);
  if (reference > 0)
    std::printf("ratio recall / HF tokenizers (1 thread): %.2f (target >= 0.5)\n",
                tokens / best / reference);
  if (expect >= 0 && expect != tokens) {
    std::fprintf(stderr, "bench_tokenizer: %lld tokens, but HF made %lld\n", tokens, expect);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
}
