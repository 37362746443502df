// The merged checkpoint as one parallel-HDF5 file. Every rank of the communicator makes every
// create/attribute/close call with the same arguments (HDF5 metadata is collective); raw data is
// written collectively, each rank its own row range (possibly empty), in pieces under HDF5
// 1.10's 2 GiB-per-call limit. bf16 has no native HDF5 type: a 16-bit float type with bf16's
// field layout is defined and bytes go to the file without conversion, so I/O stays collective.
//
// Errors are collective too. HDF5 1.10.8 does not survive a write that fails on some ranks only (a
// full disk): the failing rank leaves HDF5's internal collectives early (a metadata sync point
// skips its MPI_Barrier, H5FD_truncate its MPI_Bcast) and the others wait for it forever, even at
// MPI_Finalize, where HDF5 closes the files still open. So before every call that allocates file
// space, disk blocks are reserved (fallocate) for the file as it is, the call's bytes (a dataset,
// an attribute) and a margin for the metadata it adds; every rank learns whether the reservation
// succeeded before anyone enters HDF5, and whatever HDF5 writes later (at a flush or close) lies in
// reserved space. Every collective call ends with an agreement, so all ranks throw the same
// message; after a failure the writer refuses further calls and close() only releases the file.
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
  // Closes without throwing (call close() to see errors). Closing is collective, so while an
  // exception from outside the writer unwinds (perhaps on this rank only) the file is left open:
  // HDF5 closes it at MPI_Finalize, which every rank reaches.
  ~H5Writer();
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
  // Collective: flush and close; errors are thrown. After a failed call it only releases the file
  // (that failure was thrown already).
  void close();

  const std::string& path() const { return path_; }
  bool is_open() const { return file_ >= 0; }

 private:
  std::string path_;
  MPI_Comm comm_;
  int rank_ = 0;
  int64_t file_ = -1;         // hid_t
  int64_t dxpl_ = -1;         // collective transfer property list
  int reserve_fd_ = -1;       // rank 0: the file again, for fallocate and fstat
  uint64_t reserved_ = 0;     // rank 0: bytes [0, reserved_) have disk blocks
  uint64_t accounted_ = 0;    // rank 0: an upper bound of HDF5's end of allocation (HDF5 1.10 tells
                              // it only for non-MPI drivers)
  std::string failed_;        // the agreed message of a failed collective call

  // One collective call that may add up to `grows` bytes to the file: reserves them (rank 0),
  // agrees, runs fn, agrees; on failure every rank throws the same message and the writer is failed.
  template <typename Fn>
  void collective(uint64_t grows, Fn&& fn);
  // Rank 0: adds `grows` to the bound and reserves disk blocks up to it.
  void reserve(uint64_t grows);
  // Rank 0, after a flush (HDF5 sets the file's size to its end of allocation): the exact size
  // replaces the bound and the reservation (the rest goes back to the file system); a size past the
  // reservation is reported as a bug.
  void measure();
  // Closes the HDF5 handles and the reservation descriptor (collective); false when HDF5 failed.
  bool release();
  void drop_attribute(const std::string& object, const std::string& name);
  void put_attribute(const std::string& object, const std::string& name, int64_t type, const void* value,
                     uint64_t value_bytes);
};

// The HDF5 type for a DType, used as both memory and file type (bf16 and f16 are defined as
// 16-bit float layouts; HDF5 1.10 has no native half types). Owned by the library; do not close.
int64_t h5_type_for(DType dtype);

}  // namespace recall
