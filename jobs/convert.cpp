// recall convert --from llama2c IN.bin --out DIR: a Hugging Face Llama directory from a
// llama2.c checkpoint, validated by opening it as a model directory afterwards.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/model/llama2c.h"
#include "recall/model/model_dir.h"
#include "recall/util/error.h"
#include "recall/util/format.h"

namespace recall::jobs {

int convert(int argc, char** argv) {
  ArgParser args("convert", "Converts a checkpoint of another format to a Hugging Face model directory.");
  args.positional("IN", "input checkpoint (llama2.c version-0 .bin)")
      .option("from", "FORMAT", "input format; supported: llama2c", "", true)
      .option("out", "DIR", "output model directory (created)", "", true)
      .option("tokenizer", "FILE", "SentencePiece tokenizer.model to copy into the output");
  if (!args.parse(argc, argv)) return 0;
  if (args.get("from") != "llama2c")
    fail("unsupported input format '", args.get("from"), "'; supported: llama2c");
  const std::string out = args.get("out");
  convert_llama2c(args.get("IN"), out, args.get("tokenizer"));
  ModelDir m = open_model_dir(out);
  std::cout << "wrote " << out << ": " << arch_name(m.config.arch) << ", "
            << m.config.num_hidden_layers << " blocks, " << m.checkpoint.entries().size()
            << " tensors, " << format_bytes(m.checkpoint.total_bytes()) << "\n";
  return 0;
}

}  // namespace recall::jobs
