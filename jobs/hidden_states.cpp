// recall hidden-states: runs a model over samples and writes every block's hidden states, the
// final norm, logits and mean pools to one safetensors file (see recall/engine/hidden_states.h).
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"

namespace recall::jobs {

namespace {
int64_t positive_int(const ArgParser& args, const std::string& name) {
  const std::string v = args.get(name);
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || n <= 0)
    fail("--", name, " must be a positive integer, got '", v, "'");
  return n;
}
}  // namespace

int hidden_states(int argc, char** argv) {
  ArgParser args("hidden-states",
                 "Runs the model over JSONL samples and writes mask, hidden.0..hidden.L, final_norm,\n"
                 "logits and pooled.0..pooled.L (float32, right-padded, zeros at pad positions) to\n"
                 "one safetensors file.");
  args.option("model", "DIR", "Hugging Face model directory", "", true)
      .option("tokens", "FILE.jsonl", "samples as {\"input_ids\": [...]} lines")
      .option("text", "FILE.jsonl", "samples as {\"text\": \"...\"} lines (needs tokenizer.model)")
      .option("out", "OUT.safetensors", "output file", "", true)
      .option("dtype", "DTYPE", "compute dtype: float32, bfloat16 or float16", "float32")
      .option("device", "DEVICE", "cpu, cuda or cuda:N", "cpu")
      .option("batch", "N", "samples per forward pass", "8");
  if (!args.parse(argc, argv)) return 0;
  engine::HiddenStatesOptions o;
  o.model_dir = args.get("model");
  o.tokens_path = args.get("tokens");
  o.text_path = args.get("text");
  o.out_path = args.get("out");
  o.dtype = args.get("dtype");
  o.device = args.get("device");
  o.batch_size = positive_int(args, "batch");
  const engine::HiddenStatesSummary s = engine::library().write_hidden_states(o);
  std::cout << "hidden-states: " << s.samples << " samples, " << s.tokens << " tokens (T = "
            << s.max_length << "), " << s.blocks << " blocks -> " << o.out_path << " in "
            << s.seconds << " s\n";
  return 0;
}

}  // namespace recall::jobs
