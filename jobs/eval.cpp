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
  args.model_options()
      .option("data", "FILE.jsonl", "samples", "", true)
      .option("out", "FILE.json", "write per-sample and mean values as JSON")
      .option("batch", "N", "sequences per forward pass", "8");
  if (!args.parse(argc, argv)) return 0;
  engine::EvalOptions o;
  read_model_options(args, &o);
  o.data_path = args.get("data");
  o.out_path = args.get("out");
  o.batch_size = args.get_integer("batch", 1);
  const engine::EvalReport r = engine::library().run_eval(o);
  std::cout << engine::library().format_eval_table(r);
  if (!o.out_path.empty()) std::cout << "wrote " << o.out_path << "\n";
  return 0;
}

}  // namespace recall::jobs
