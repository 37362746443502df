// The merged checkpoint as one parallel-HDF5 file. Every rank of the communicator makes every
// create/attribute/close call with the same arguments (HDF5 metadata is collective); raw data is
// written collectively, each rank its own row range (possibly empty), in pieces under HDF5
// 1.10's 2 GiB-per-call limit. bf16 has no native HDF5 type: a 16-bit float type with bf16's
// field layout is defined and bytes go to the file without conversion, so I/O stays collective.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "recall/util/dtype.h"

namespace recall {

class H5Writer {
 public:
  enum class Mode { Create, Append };
  // Collective. Create truncates `path`; Append opens an existing file for writing.
  H5Writer(const std::string& path, MPI_Comm comm, Mode mode = Mode::Create);
  ~H5Writer();  // closes without throwing; call close() to see errors
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  // Collective: a group (parents must exist), e.g. "/tensors".
  void create_group(const std::string& path);
  // Collective: a contiguous dataset of `dtype` (F32, F16, BF16, F64, I64, ...) and `shape`.
  void create_dataset(const std::string& path, DType dtype, const std::vector<int64_t>& shape);
  // Collective: this rank writes rows [row_begin, row_begin + row_count) of dimension 0 from
  // `data` (row-major bytes in the dataset's dtype); row_count may be 0.
  void write_rows(const std::string& path, uint64_t row_begin, uint64_t row_count, const void* data);
  // Collective, same value on every rank: a scalar or string attribute on a group or dataset
  // (replaced when it exists).
  void set_attribute(const std::string& object, const std::string& name, const std::string& value);
  void set_attribute(const std::string& object, const std::string& name, uint64_t value);
  void set_attribute(const std::string& object, const std::string& name, double value);
  // Collective, same data on every rank: a small dataset written whole by rank 0.
  void write_small(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data);
  // Collective (metadata read): whether a link (group or dataset) exists.
  bool exists(const std::string& path) const;
  // Collective: everything written so far reaches the file (a resumable point).
  void flush();
  // Collective: flush and close; errors are thrown.
  void close();

  const std::string& path() const { return path_; }
  bool is_open() const { return file_ >= 0; }

 private:
  std::string path_;
  MPI_Comm comm_;
  int64_t file_ = -1;  // hid_t
  int64_t dxpl_ = -1;  // collective transfer property list
  void drop_attribute(const std::string& object, const std::string& name);
};

// The HDF5 type for a DType, used as both memory and file type (bf16 and f16 are defined as
// 16-bit float layouts; HDF5 1.10 has no native half types). Owned by the library; do not close.
int64_t h5_type_for(DType dtype);

}  // namespace recall
