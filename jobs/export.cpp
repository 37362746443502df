// recall export merged.h5 --out DIR: a complete Hugging Face directory from a merged.h5 (shards +
// index, config.json, the reference model's tokenizer and generation files, a model card), its
// tensors checked against the checksums stored in the file. Under mpirun/srun the shards are
// written one rank per shard.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/dist/context.h"
#include "recall/dist/failure.h"
#include "recall/io/h5_reader.h"
#include "recall/pipeline/export.h"
#include "recall/pipeline/hf_files.h"
#include "recall/pipeline/merge_record.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::jobs {

namespace {

// Rank 0's part after the shards: their checksums against merged.h5's, the side files and the
// model card, then the commit (rename) and the summary line.
void finish_export(const std::string& h5_path, const MergeRecord& rec, const ExportResult& ex,
                   const std::string& source, const std::string& tmp, const std::string& out, uint64_t shard_bytes) {
  {
    H5Reader h5(h5_path);
    for (const std::string& name : rec.tensors)
      if (!ex.checksums.count(name)) fail("internal error: no rank reported the checksum of tensor '", name, "'");
    for (const auto& [name, h] : ex.checksums) {
      auto expected = h5.attribute("/tensors/" + name, "xxh3_64");
      if (expected && *expected != checksum_hex(h))
        fail(h5_path, ": tensor '", name, "' does not match its stored checksum (", *expected, " vs ", checksum_hex(h),
             "); the file is corrupt");
    }
  }
  const HfFiles files = write_hf_files(tmp, source, rec.architecture_config, rec.dtype,
                                       model_card(rec.report, rec.resolved_config, rec.model_paths));
  if (files.source_missing)
    std::cerr << "recall export: warning: the reference model '" << rec.source_model << "' is gone ('" << source
              << "' does not exist), so the export has no tokenizer files; it has the weights, config.json, a "
                 "generation_config.json derived from it and the model card. Copy the tokenizer files from the "
                 "original model, or export again with --source DIR\n";
  else if (!files.has_tokenizer)
    std::cerr << "recall export: warning: '" << source << "' has no tokenizer.json or tokenizer.model, so the "
              << "export has no tokenizer; --source DIR takes the tokenizer from another directory\n";
  rename_path(tmp, out);
  std::cout << "wrote " << out << ": " << rec.tensors.size() << " tensors in " << ex.shard_files.size()
            << " shard(s) (limit " << shard_bytes << " bytes)";
  if (!files.copied.empty()) {
    std::cout << "; from " << source << ":";
    for (const std::string& f : files.copied) std::cout << " " << f;
  }
  std::cout << (files.generation_config_derived ? "; generation_config.json derived from config.json" : "")
            << "; README.md\n";
}

}  // namespace

int export_h5(int argc, char** argv) {
  ArgParser args("export",
                 "Writes a Hugging Face directory from a merged.h5 written by 'recall merge': the weights "
                 "(checked against the checksums stored in it), config.json, the tokenizer and generation "
                 "files of the merge's reference model, and a model card.");
  args.positional("H5", "merged.h5")
      .option("out", "DIR", "output directory (created; must not exist)", "", true)
      .option("shard-bytes", "SIZE", "largest shard, e.g. 5GB, 500MiB or 1e9 (bytes)", "5GB")
      .option("source", "DIR",
              "model directory to copy the tokenizer and generation files from (default: the reference model "
              "recorded in merged.h5)");
  if (!args.parse(argc, argv)) return 0;
  const std::string h5_path = args.get("H5"), out = args.get("out");
  const uint64_t shard_bytes = args.get_bytes("shard-bytes");
  if (path_exists(out)) fail("'", out, "' already exists; choose a new directory");
  if (args.has("source") && !is_directory(args.get("source")))
    fail("--source '", args.get("source"), "' is not a directory");
  const MergeRecord rec = read_merge_record(h5_path);

  // Under mpirun/srun the shards are written in parallel (one rank per shard); alone, a world of one.
  dist::Context ctx(&argc, &argv);
  const bool lead = ctx.rank() == 0;
  if (lead)
    for (const std::string& note : rec.notes) std::cerr << "recall export: warning: " << note << "\n";
  const std::string tmp = out + ".partial";
  try {
    auto step = [&](const char* name, auto&& fn) {
      return dist::run_collectively(ctx.control_mpi(), ctx.where(), name, fn);
    };
    step("prepare output", [&] {
      if (!lead) return;
      remove_tree(tmp);  // the leftovers of an interrupted export
      make_directories(tmp);
    });
    const ExportResult ex = step("shards", [&] {
      return export_hf_shards(ctx.world_mpi(), h5_path, tmp, rec.tensors, shard_bytes);
    });
    step("finish", [&] {
      if (lead) finish_export(h5_path, rec, ex, args.has("source") ? args.get("source") : rec.source_path, tmp,
                              out, shard_bytes);
    });
  } catch (const dist::CollectiveError& e) {
    return dist::report_failure(ctx.control_mpi(), e);
  }
  return 0;
}

}  // namespace recall::jobs
