// extract_tool: runs one extraction pass of the engine (engine::pool_own_cells) the way the merge
// job does, for the tests of the linear-input statistics and of streaming (issues 15 and 20).
// Links the engine, so its block-load counter (cell_pooling.h) is this process's.
//   extract_tool CONFIG OUT [--gram] [--abs-sum] [--no-pooled] [--max-resident-bytes N]
//                [--scratch DIR] [--set KEY=VALUE]...
// CONFIG is a merge config (models, data, parallel.*, kernel.pooling). Writes, under OUT:
//   stats/<model>/block_<l>.safetensors   the statistics (with --gram / --abs-sum)
//   pooled/m<model>_h<state>.f32          the pooled [N, H] float32 values of this rank's cells
//   rank<r>.json                          {"block_loads", "spilled_bytes", "progress_samples",
//                                          "progress_tokens",
//                                          "progress_calls", "samples", "tokens"}
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "recall/dist/context.h"
#include "recall/engine/cell_pooling.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/plan.h"
#include "recall/pipeline/preflight.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace {

using namespace recall;

int run(int argc, char** argv, dist::Context& ctx) {
  if (argc < 3) {
    std::fputs("usage: extract_tool CONFIG OUT [--gram] [--abs-sum] [--no-pooled] [--max-resident-bytes N] "
               "[--scratch DIR] [--set KEY=VALUE]...\n", stderr);
    return 2;
  }
  const std::string out = argv[2];
  ExtractOptions eo;
  std::vector<std::string> sets;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(a, " needs a value");
      return argv[++i];
    };
    if (a == "--gram") eo.statistics.gram = true;
    else if (a == "--abs-sum") eo.statistics.abs_sum = true;
    else if (a == "--no-pooled") eo.pooled = false;
    else if (a == "--max-resident-bytes") eo.max_resident_bytes = std::stoull(value());
    else if (a == "--scratch") eo.scratch_dir = value();
    else if (a == "--set") sets.push_back(value());
    else fail("unknown argument '", a, "'");
  }
  const MergeConfig cfg = load_merge_config(argv[1], sets);
  const MergeInputs in = preflight(cfg);
  const SampleTokens samples = load_task_samples(cfg, in);
  dist::GridSpec spec = grid_spec(in);
  spec.stages = static_cast<int>(cfg.parallel.stages);
  const dist::Grid grid(spec, ctx.world());
  eo.device = cfg.parallel.device;
  eo.micro_batch = cfg.parallel.micro_batch;
  eo.stream_samples = cfg.parallel.stream_samples;
  eo.pooling = cfg.kernel.pooling;
  eo.statistics.dir = out + "/stats";
  int64_t progress_samples = 0, progress_tokens = 0, progress_calls = 0;
  eo.progress = [&](int, int64_t n, int64_t tokens) {
    progress_samples += n;
    progress_tokens += tokens;
    ++progress_calls;
  };
  const std::vector<engine::PooledHiddenState> mine =
      engine::pool_own_cells(grid, ctx.world_mpi(), in, samples, eo, -1);
  make_directories(out + "/pooled");
  for (const engine::PooledHiddenState& p : mine) {
    std::ofstream f(out + "/pooled/m" + std::to_string(p.model) + "_h" + std::to_string(p.hidden_state) + ".f32",
                    std::ios::binary);
    f.write(reinterpret_cast<const char*>(p.values.data()), static_cast<std::streamsize>(p.values.size() * 4));
  }
  std::ofstream j(out + "/rank" + std::to_string(ctx.rank()) + ".json");
  j << "{\"block_loads\": " << engine::block_loads() << ", \"spilled_bytes\": " << engine::spilled_bytes()
    << ", \"progress_samples\": " << progress_samples
    << ", \"progress_tokens\": " << progress_tokens << ", \"progress_calls\": " << progress_calls
    << ", \"samples\": " << samples.size() << ", \"tokens\": " << samples.tokens() << "}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    dist::Context ctx(&argc, &argv);
    return run(argc, argv, ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "extract_tool: %s\n", e.what());
    return 1;
  }
}
