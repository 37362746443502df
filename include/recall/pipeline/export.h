// Hugging Face export of a merged checkpoint: merged.h5 -> hf/ (safetensors shards + index +
// config.json + tokenizer files); the shards are written in parallel, one rank per shard, each
// tensor hashed (XXH3-64) as it goes. (pipeline/verify.h checks a finished output.)
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace recall {

struct ExportResult {
  std::map<std::string, uint64_t> checksums;  // tensor name -> XXH3-64 of its bytes (all ranks)
  std::vector<std::string> shard_files;
  uint64_t bytes_written = 0;                 // by this rank
};

// Collective over comm; a failure on any rank throws the same error on every rank. Reads /tensors/* of h5_path (serially, after the writer closed it) and
// writes the shards into hf_dir (which must exist), plus the index when there are several shards.
// `tensor_order` gives the order of tensors in the shards (HF canonical order).
ExportResult export_hf_shards(MPI_Comm comm, const std::string& h5_path, const std::string& hf_dir,
                              const std::vector<std::string>& tensor_order, uint64_t shard_bytes);

// config.json of the export: the reference's config with its dtype fields set to `dtype_name`
// ("bfloat16", ...). Both "torch_dtype" (transformers 4) and "dtype" (transformers 5) are set.
std::string export_config_json(const std::string& reference_config_json, const std::string& dtype_name);


}  // namespace recall
