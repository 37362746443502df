// recall eval: loss/perplexity, completion exact match and multiple-choice accuracy of a model on
// JSONL samples (see recall/engine/eval.h); prints a table, optionally writes JSON.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"

namespace recall::jobs {

int eval(int argc, char** argv) {
  ArgParser args("eval",
                 "Scores a model on JSONL samples: {\"text\"} -> loss and perplexity;\n"
                 "{\"prompt\",\"completion\"} -> completion loss and greedy exact match;\n"
                 "{\"prompt\",\"choices\",\"answer\"} -> multiple-choice accuracy by log-likelihood.");
  args.option("model", "DIR", "Hugging Face model directory", "", true)
      .option("data", "FILE.jsonl", "samples", "", true)
      .option("out", "FILE.json", "write per-sample and mean values as JSON")
      .option("dtype", "DTYPE", "compute dtype: float32, bfloat16 or float16", "float32")
      .option("device", "DEVICE", "cpu, cuda or cuda:N", "cpu")
      .option("batch", "N", "sequences per forward pass", "8");
  if (!args.parse(argc, argv)) return 0;
  engine::EvalOptions o;
  o.model_dir = args.get("model");
  o.data_path = args.get("data");
  o.out_path = args.get("out");
  o.dtype = args.get("dtype");
  o.device = args.get("device");
  const std::string batch = args.get("batch");
  if (batch.empty() || batch.find_first_not_of("0123456789") != std::string::npos || std::stoll(batch) <= 0)
    fail("--batch must be a positive integer, got '", batch, "'");
  o.batch_size = std::stoll(batch);
  const engine::EvalReport r = engine::library().run_eval(o);
  std::cout << engine::library().format_eval_table(r);
  if (!o.out_path.empty()) std::cout << "wrote " << o.out_path << "\n";
  return 0;
}

}  // namespace recall::jobs
