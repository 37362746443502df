// recall export merged.h5 --out DIR: a Hugging Face directory (safetensors shards + index +
// config.json) from a merged.h5, checked against the checksums stored in it.
#include <mpi.h>

#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/io/h5_reader.h"
#include "recall/pipeline/export.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::jobs {

int export_h5(int argc, char** argv) {
  ArgParser args("export", "Writes a Hugging Face directory from a merged.h5 written by 'recall merge'.");
  args.positional("H5", "merged.h5")
      .option("out", "DIR", "output directory (created; must not exist)", "", true)
      .option("shard-bytes", "SIZE", "largest shard, e.g. 5GB, 500MiB or 1e9 (bytes)", "5GB");
  if (!args.parse(argc, argv)) return 0;
  const std::string h5_path = args.get("H5"), out = args.get("out");
  const uint64_t shard_bytes = args.get_bytes("shard-bytes");
  if (path_exists(out)) fail("'", out, "' already exists; choose a new directory");
  std::vector<std::string> order;
  std::string config_json, dtype;
  {
    H5Reader h5(h5_path);
    order = h5.list("/tensors");
    auto cfg = h5.attribute("/", "architecture_config");
    if (!cfg) fail(h5_path, ": no 'architecture_config' attribute (not written by recall merge?)");
    config_json = *cfg;
    if (order.empty()) fail(h5_path, ": no tensors under /tensors");
    switch (h5.info("/tensors/" + order.front()).dtype) {
      case DType::BF16: dtype = "bfloat16"; break;
      case DType::F16: dtype = "float16"; break;
      default: dtype = "float32";
    }
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(&argc, &argv);
  const std::string tmp = out + ".partial";
  make_directories(tmp);
  ExportResult ex = export_hf_shards(MPI_COMM_SELF, h5_path, tmp, order, shard_bytes);
  H5Reader h5(h5_path);
  for (const auto& [name, h] : ex.checksums) {
    auto expected = h5.attribute("/tensors/" + name, "xxh3_64");
    if (expected && *expected != checksum_hex(h))
      fail(h5_path, ": tensor '", name, "' does not match its stored checksum (", *expected, " vs ", checksum_hex(h),
           "); the file is corrupt");
  }
  write_file_atomic(join_path(tmp, "config.json"), export_config_json(config_json, dtype));
  if (std::rename(tmp.c_str(), out.c_str()) != 0) fail("cannot rename '", tmp, "' to '", out, "'");
  std::cout << "wrote " << out << ": " << order.size() << " tensors in " << ex.shard_files.size() << " shard(s)\n";
  if (!initialized) MPI_Finalize();
  return 0;
}

}  // namespace recall::jobs
