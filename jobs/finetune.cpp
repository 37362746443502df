// recall finetune: causal-LM fine-tuning (AdamW, warm-up + cosine, clipping), deterministic per
// seed, writing a Hugging Face directory (see recall/engine/finetune.h).
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/dist/context.h"
#include "recall/dist/failure.h"
#include "recall/engine/library.h"
#include "recall/util/error.h"

namespace recall::jobs {

int finetune(int argc, char** argv) {
  ArgParser args("finetune",
                 "Fine-tunes a model on JSONL samples ({\"text\"}, {\"input_ids\"} or {\"prompt\",\"completion\"};\n"
                 "completion samples train on the completion tokens only) and writes a Hugging Face directory.");
  args.option("model", "DIR", "Hugging Face model directory", "", true)
      .option("data", "FILE.jsonl", "training samples", "", true)
      .option("out", "DIR", "output model directory", "", true)
      .option("steps", "N", "optimizer steps", "100")
      .option("batch", "N", "samples per step", "8")
      .option("lr", "LR", "peak learning rate", "1e-4")
      .option("warmup", "N", "linear warm-up steps, then cosine decay to 0", "10")
      .option("weight-decay", "WD", "AdamW decoupled weight decay", "0")
      .option("clip", "NORM", "max global gradient norm (0 = off)", "1")
      .option("seed", "N", "seed of the sample order", "0")
      .option("save-dtype", "DTYPE", "dtype of the written weights: float32, bfloat16, float16", "float32")
      .option("device", "DEVICE", "cpu, cuda or cuda:N", "cpu")
      .option("log-every", "N", "steps between progress lines", "10")
      .option("probe", "FILE.jsonl", "after training, write the in-memory model's logits for these samples")
      .option("probe-out", "FILE.safetensors", "where --probe writes (mask, logits)");
  if (!args.parse(argc, argv)) return 0;
  engine::FinetuneOptions o;
  o.model_dir = args.get("model");
  o.data_path = args.get("data");
  o.out_dir = args.get("out");
  o.steps = args.get_integer("steps", 1);
  o.batch_size = args.get_integer("batch", 1);
  o.lr = args.get_number("lr");
  o.warmup = args.get_integer("warmup", 0);
  o.weight_decay = args.get_number("weight-decay");
  o.clip = args.get_number("clip");
  o.seed = static_cast<uint64_t>(args.get_integer("seed", 0));
  o.save_dtype = args.get("save-dtype");
  o.device = args.get("device");
  o.log_every = args.get_integer("log-every", 1);
  o.probe_path = args.get("probe");
  o.probe_out = args.get("probe-out");
  // Under mpirun/srun: data parallel over the ranks (gradient all-reduce); alone: a world of one.
  dist::Context ctx(&argc, &argv);
  engine::FinetuneResult r;
  try {
    // The device before the model: cuda on a node without a GPU fails every rank here, and on
    // cuda the world communicator becomes NCCL's (the gradients are reduced on the GPUs).
    const bool cuda = o.device.rfind("cuda", 0) == 0;
    ctx.set_device(cuda ? Device::Cuda : Device::Cpu, "--device");
    o.world = &ctx.world_comm();
    r = dist::run_collectively(ctx.control_mpi(), ctx.where(), "finetune",
                               [&] { return engine::library().run_finetune(o); });
  } catch (const dist::CollectiveError& e) {
    return dist::report_failure(ctx.control_mpi(), e);
  }
  const int rank = ctx.rank();
  if (rank != 0) return 0;
  std::cout << "finetune: " << r.losses.size() << " steps, loss " << r.losses.front() << " -> "
            << r.losses.back() << ", " << r.tokens << " tokens in " << r.seconds << " s -> " << o.out_dir << "\n";
  std::cout << "losses:";
  for (double l : r.losses) std::cout << " " << l;
  std::cout << "\n";
  return 0;
}

}  // namespace recall::jobs
