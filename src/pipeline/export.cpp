// HF export of merged.h5: shards, config.json and the side files of the reference model.
#include "recall/pipeline/export.h"

#include <nlohmann/json.hpp>

#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/io/h5_reader.h"
#include "recall/io/model_files.h"
#include "recall/io/safetensors.h"
#include "recall/util/checksum.h"
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
  // full disk, say) is agreed on before the next collective: every rank throws the message of the
  // lowest failing rank, and no rank waits for a dead peer.
  std::string mine;  // "name\thash\n" records of this rank
  dist::agreed(comm, [&] {
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
  });

  // Every rank learns every checksum.
  const std::string all = dist::all_gather_bytes(comm, mine);
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
