// fisher_tool: a test helper that exposes the engine's run_fisher (recall/engine/fisher.h) to the
// Python tests until the merge job calls it, and measures its memory against fisher_memory_bytes.
//   fisher_tool MODEL_DIR IDS_JSONL OUT_PATH
// IDS_JSONL: one JSON array of token ids per line, one sample each. Prints one JSON object:
// samples, tokens, sum_squares, progress (the callback's calls, [done, total] each), anon_before
// and anon_peak (RssAnon before the call and its sampled peak during it, bytes) and bound
// (fisher_memory_bytes for the longest sample).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "recall/engine/fisher.h"
#include "recall/util/error.h"
#include "recall/util/memory.h"

namespace {

using namespace recall;

engine::SampleTokens read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open ", path);
  engine::SampleTokens samples;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) samples.add(nlohmann::json::parse(line).get<std::vector<int64_t>>());
  return samples;
}

int run(const std::string& model_dir, const std::string& ids_path, const std::string& out_path) {
  const ModelDir dir = open_model_dir(model_dir);
  const engine::SampleTokens samples = read_ids(ids_path);
  int64_t longest = 0;
  for (int64_t i = 0; i < samples.size(); ++i) longest = std::max(longest, samples.length(i));
  nlohmann::json progress = nlohmann::json::array();
  engine::FisherOptions o;
  o.model = &dir;
  o.samples = &samples;
  o.out_path = out_path;
  o.progress = [&](int64_t done, int64_t total) { progress.push_back({done, total}); };
  const uint64_t before = current_memory_usage().rss_anon;
  MemoryPeaks peaks(2);
  const engine::FisherResult r = engine::run_fisher(o);
  peaks.stop();
  const nlohmann::json out = {{"samples", r.samples},
                              {"tokens", r.tokens},
                              {"sum_squares", r.sum_squares},
                              {"seconds", r.seconds},
                              {"progress", progress},
                              {"anon_before", before},
                              {"anon_peak", peaks.anon()},
                              {"bound", engine::fisher_memory_bytes(dir.config, longest)}};
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fputs("usage: fisher_tool MODEL_DIR IDS_JSONL OUT_PATH\n", stderr);
    return 2;
  }
  try {
    return run(argv[1], argv[2], argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fisher_tool: %s\n", e.what());
    return 1;
  }
}
