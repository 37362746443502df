// recall hidden-states: runs a model over samples and writes every block's hidden states, the
// final norm, logits and mean pools to one safetensors file (see recall/engine/hidden_states.h).
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"

namespace recall::jobs {

int hidden_states(int argc, char** argv) {
  ArgParser args("hidden-states",
                 "Runs the model over JSONL samples and writes mask, hidden.0..hidden.L, final_norm,\n"
                 "logits and pooled.0..pooled.L (float32, right-padded, zeros at pad positions) to\n"
                 "one safetensors file.");
  args.model_options()
      .option("tokens", "FILE.jsonl", "samples as {\"input_ids\": [...]} lines")
      .option("text", "FILE.jsonl", "samples as {\"text\": \"...\"} lines (needs tokenizer.model)")
      .option("out", "OUT.safetensors", "output file", "", true)
      .option("batch", "N", "samples per forward pass", "8");
  if (!args.parse(argc, argv)) return 0;
  engine::HiddenStatesOptions o;
  read_model_options(args, &o);
  o.tokens_path = args.get("tokens");
  o.text_path = args.get("text");
  o.out_path = args.get("out");
  o.batch_size = args.get_integer("batch", 1);
  const engine::HiddenStatesSummary s = engine::library().write_hidden_states(o);
  std::cout << "hidden-states: " << s.samples << " samples, " << s.tokens << " tokens (T = "
            << s.max_length << "), " << s.blocks << " blocks -> " << o.out_path << " in "
            << s.seconds << " s\n";
  return 0;
}

}  // namespace recall::jobs
