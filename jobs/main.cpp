// recall: representation-aware merging of fine-tuned LLMs. Dispatches git-style subcommands;
// every error ends here, once, as one message and a non-zero exit.
#include <csignal>
#include <cstring>
#include <iostream>

#include "jobs.h"
#include "recall/config/merge_config.h"
#include "recall/util/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"merge", recall::jobs::merge, "merge models with RECALL or a baseline (under mpirun/srun for many ranks)"},
    {"preflight", recall::jobs::preflight, "check a merge config and print the plan, reading headers only"},
    {"config", recall::jobs::config, "check a merge config and print it resolved (no model opened)"},
    {"verify", recall::jobs::verify, "check every checksum of a merge output"},
    {"export", recall::jobs::export_h5, "write a Hugging Face directory from a merged.h5"},
    {"inspect", recall::jobs::inspect, "validate a model directory or .safetensors file and summarize it"},
    {"convert", recall::jobs::convert, "convert a llama2.c checkpoint to a Hugging Face directory"},
    {"hidden-states", recall::jobs::hidden_states, "run a model over samples and write every block's hidden states"},
    {"generate", recall::jobs::generate, "continue a prompt with a model (greedy or sampled)"},
    {"eval", recall::jobs::eval, "loss, perplexity and accuracy of a model on JSONL samples"},
    {"finetune", recall::jobs::finetune, "fine-tune a model on JSONL samples (AdamW) and write an HF directory"},
    {"sweep", recall::jobs::sweep, "plan, run and report sweeps of merge settings (local or Slurm arrays)"},
};

void print_usage(std::ostream& os) {
  os << "usage: recall <command> [options]\n\n"
        "recall merges fine-tuned language models layer by layer, weighted by how similar their\n"
        "hidden representations are (RECALL).\n\ncommands:\n";
  for (const Command& c : kCommands) {
    std::string name = c.name;
    os << "  " << name << std::string(name.size() < 14 ? 14 - name.size() : 1, ' ') << c.summary << "\n";
  }
  os << "\nrun 'recall <command> --help' for the options of a command, 'recall help config' for every\n"
        "key of a merge config (docs/CONFIG.md).\n";
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) must surface as a write error naming the file, not a signal.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc == 3 && !std::strcmp(argv[1], "help") && !std::strcmp(argv[2], "config")) {
    std::cout << recall::config_reference_markdown();  // docs/CONFIG.md
    return 0;
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_usage(std::cout);
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const std::exception& e) {
      std::cerr << "recall " << c.name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "recall: unknown command '" << argv[1] << "'\n\n";
  print_usage(std::cerr);
  return 2;
}
