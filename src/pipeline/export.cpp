// HF export of merged.h5: shards, config.json and the side files of the reference model.
#include "recall/pipeline/export.h"

#include <nlohmann/json.hpp>

#include "recall/io/h5_reader.h"
#include "recall/io/model_files.h"
#include "recall/io/safetensors.h"
#include "recall/util/checksum.h"
#include "recall/dist/mpi_check.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

using nlohmann::json;

ExportResult export_hf_shards(MPI_Comm comm, const std::string& h5_path, const std::string& hf_dir,
                              const std::vector<std::string>& tensor_order, uint64_t shard_bytes) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  ExportResult result;
  std::vector<TensorSpec> specs;
  {
    H5Reader h5(h5_path);
    for (const std::string& name : tensor_order) {
      H5DatasetInfo i = h5.info("/tensors/" + name);
      specs.push_back({name, i.dtype, i.shape});
    }
  }
  const auto shards = plan_shards(specs, shard_bytes);
  for (size_t s = 0; s < shards.size(); ++s) result.shard_files.push_back(shard_file_name(s, shards.size()));

  // One rank per shard, round robin; the file is read serially by each writer. A failure (a
  // full disk, say) is shared before the next collective so that no rank waits for a dead peer.
  std::string mine;  // "name\thash\n" records of this rank
  std::string error;
  try {
    H5Reader h5(h5_path);
    std::vector<uint8_t> buf;
    for (size_t s = 0; s < shards.size(); ++s) {
      if (static_cast<int>(s % static_cast<size_t>(world)) != rank) continue;
      std::vector<TensorSpec> shard_specs;
      for (size_t i : shards[s]) shard_specs.push_back(specs[i]);
      SafetensorsWriter w(join_path(hf_dir, result.shard_files[s]), shard_specs);
      for (size_t i : shards[s]) {
        buf.resize(specs[i].nbytes());
        h5.read("/tensors/" + specs[i].name, buf.data());
        const uint64_t h = xxh3_64(buf.data(), buf.size());
        w.write(specs[i].name, buf.data(), buf.size());
        mine += specs[i].name + "\t" + checksum_hex(h) + "\n";
        result.bytes_written += buf.size();
      }
      w.commit();
    }
    if (rank == 0 && shards.size() > 1) write_safetensors_index(hf_dir, specs, shards);
  } catch (const std::exception& e) {
    error = e.what();
  }
  int failed = error.empty() ? 0 : 1, any_failed = 0;
  MPI_CHECK(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, comm));
  if (failed) throw Error(error);
  if (any_failed) {
    result.aborted = true;  // another rank failed; the caller's agreement reports its error
    return result;
  }

  // Every rank learns every checksum.
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(world), displs(world);
  MPI_CHECK(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm));
  int total = 0;
  for (int r = 0; r < world; ++r) displs[r] = total, total += counts[r];
  std::string all(total, '\0');
  MPI_CHECK(MPI_Allgatherv(mine.data(), n, MPI_CHAR, all.data(), counts.data(), displs.data(), MPI_CHAR, comm));
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t tab = all.find('\t', pos), nl = all.find('\n', tab);
    result.checksums[all.substr(pos, tab - pos)] = std::stoull(all.substr(tab + 1, nl - tab - 1), nullptr, 16);
    pos = nl + 1;
  }
  return result;
}

std::string export_config_json(const std::string& reference_config_json, const std::string& dtype_name) {
  json cfg = json::parse(reference_config_json);
  cfg["torch_dtype"] = dtype_name;
  cfg["dtype"] = dtype_name;
  return cfg.dump(2) + "\n";
}


}  // namespace recall
