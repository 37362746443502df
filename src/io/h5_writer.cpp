// Parallel-HDF5 writer for the merged checkpoint (collective metadata and raw-data writes, disk
// space reserved ahead of HDF5, errors agreed on by every rank).
#include "recall/io/h5_writer.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>

#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

// One check for every HDF5 call: a negative return is an error naming the call and the file.
#define H5_CHECK(call)                                                                    \
  ([&]() {                                                                                \
    auto _r = (call);                                                                     \
    if (_r < 0) fail("HDF5 error in ", #call, " (", __FILE__, ":", __LINE__, ")");        \
    return _r;                                                                            \
  }())

// HDF5 1.10 cannot move 2 GiB or more in one call; stay well below.
constexpr uint64_t kMaxBytesPerCall = 1ull << 30;

// What one call may add to the file besides its own bytes (a dataset's data, an attribute's value):
// an object header, B-tree and symbol-table nodes, a header continuation, a new 2 KiB block of the
// metadata or small-data aggregator: a few KiB, with room to spare. A group's name heap doubles
// as it fills (the old block is freed), so 4x the bytes of each name added come on top.
constexpr uint64_t kCallAllowance = 8ull << 10;
// Reserved before HDF5 creates a file: its superblock and root group (about 2 KiB).
constexpr uint64_t kCreateAllowance = 64ull << 10;

// ": <strerror>" for the errno a failed HDF5 call left behind (HDF5 reports no cause of its own).
std::string cause(int err) { return err ? std::string(": ") + std::strerror(err) : std::string(); }

// A 16-bit float type: copy of f32 with the given field layout.
hid_t make_half(size_t epos, size_t esize, size_t msize, size_t ebias) {
  hid_t t = H5_CHECK(H5Tcopy(H5T_IEEE_F32LE));
  H5_CHECK(H5Tset_fields(t, 15, epos, esize, 0, msize));
  H5_CHECK(H5Tset_precision(t, 16));
  H5_CHECK(H5Tset_size(t, 2));
  H5_CHECK(H5Tset_ebias(t, ebias));
  return t;
}

struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() { if (id >= 0) close(id); }
};

// The allowance of a call that adds a link named by the last component of `path`.
uint64_t link_allowance(const std::string& path) {
  const auto slash = path.rfind('/');
  const uint64_t name = path.size() - (slash == std::string::npos ? 0 : slash + 1) + 8;  // NUL, padding
  return kCallAllowance + 4 * name;
}

}  // namespace

int64_t h5_type_for(DType dtype) {
  static std::mutex mu;
  static std::map<DType, hid_t> defined;
  switch (dtype) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::F64: return H5T_IEEE_F64LE;
    case DType::I64: return H5T_STD_I64LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::U64: return H5T_STD_U64LE;
    case DType::U8: return H5T_STD_U8LE;
    case DType::BF16:
    case DType::F16: {
      std::lock_guard<std::mutex> lock(mu);
      auto it = defined.find(dtype);
      if (it != defined.end()) return it->second;
      // bf16: f32's top half (8 exponent bits, 7 mantissa bits, bias 127); f16: IEEE half.
      hid_t t = dtype == DType::BF16 ? make_half(7, 8, 7, 127) : make_half(10, 5, 10, 15);
      defined[dtype] = t;
      return t;
    }
    default: break;
  }
  fail("HDF5: no type for dtype ", dtype_name(dtype));
}

H5Writer::H5Writer(const std::string& path, MPI_Comm comm, Mode mode) : path_(path), comm_(comm) {
  MPI_Comm_rank(comm, &rank_);
  const char* verb = mode == Mode::Create ? "create" : "open";
  try {
    // A new file gets its first reservation before HDF5 creates it: HDF5 writes the superblock and
    // the root group at its first flush, and a file it cannot write cannot be closed safely. (HDF5
    // truncates an existing file only when it is not empty, so the reserved blocks of the empty
    // file stay.)
    dist::agreed(comm_, [&] {
      if (rank_ != 0) return;
      reserve_fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | (mode == Mode::Create ? O_CREAT | O_TRUNC : 0), 0644);
      if (reserve_fd_ < 0) fail("cannot ", verb, " '", path, "'", cause(errno));
      if (mode == Mode::Create) reserve(kCreateAllowance);
    });
    // HDF5 opens a file collectively: it opened on every rank or on none (one that opened on some
    // ranks only would have split the ranks inside H5Fcreate already).
    dist::agreed(comm_, [&] {
      Handle fapl{H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose};
      H5_CHECK(H5Pset_fapl_mpio(fapl.id, comm, MPI_INFO_NULL));
      H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.id, true));
      H5_CHECK(H5Pset_coll_metadata_write(fapl.id, true));
      errno = 0;
      file_ = mode == Mode::Create ? H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id)
                                   : H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id);
      if (file_ < 0) fail("cannot ", verb, " HDF5 file '", path, "'", cause(errno));
      dxpl_ = H5_CHECK(H5Pcreate(H5P_DATASET_XFER));
      H5_CHECK(H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE));
      // What HDF5 has allocated so far (the size is exact until MPI-IO first writes; later the
      // writer keeps an upper bound, made exact again by the file's size after each flush).
      hsize_t size = 0;
      H5_CHECK(H5Fget_filesize(file_, &size));
      accounted_ = size;
    });
    collective(kCallAllowance, [] {});  // what HDF5 allocated on creation or holds already, and a call's worth
  } catch (const std::exception&) {
    release();  // every rank is here; what HDF5 holds lies in reserved space
    throw;
  }
}

H5Writer::~H5Writer() {
  if (file_ < 0) {
    release();
    return;
  }
  // Unwinding from an error this writer did not agree on: other ranks may be elsewhere.
  if (std::uncaught_exceptions() > 0 && failed_.empty()) return;
  release();
}

bool H5Writer::release() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  dxpl_ = -1;
  bool ok = true;
  if (file_ >= 0) {
    ok = H5Fclose(file_) >= 0;
    file_ = -1;
  }
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
  reserve_fd_ = -1;
  return ok;
}

void H5Writer::reserve(uint64_t grows) {
  if (rank_ != 0) return;
  accounted_ += grows;
  rlimit limit{};
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && accounted_ > limit.rlim_cur)
    fail("'", path_, "' may grow to ", format_bytes(accounted_), ", past the file-size limit of this process (",
         format_bytes(limit.rlim_cur), ", ulimit -f): ", std::strerror(EFBIG));
  if (reserve_fd_ < 0 || accounted_ <= reserved_) return;
  if (reserve_space(reserve_fd_, reserved_, accounted_ - reserved_, path_)) {
    reserved_ = accounted_;
  } else {
    // No fallocate here (NFS before 4.2, BeeGFS, older ZFS): nothing can be reserved, so a full
    // disk during an HDF5 metadata write may still stop the ranks inside HDF5.
    std::fprintf(stderr, "recall: warning: the file system of '%s' cannot reserve disk space (fallocate is "
                         "not supported); a full disk may stop the job without a clean error\n", path_.c_str());
    ::close(reserve_fd_);
    reserve_fd_ = -1;
  }
}

void H5Writer::measure() {
  struct stat st;
  if (rank_ != 0 || reserve_fd_ < 0 || ::fstat(reserve_fd_, &st) != 0) return;
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > reserved_)  // the allowances are wrong: HDF5 wrote outside the reserved space
    std::fprintf(stderr, "recall: warning: '%s' has %llu bytes, more than the %llu reserved for it (a bug in "
                         "H5Writer's allowances: please report)\n", path_.c_str(), static_cast<unsigned long long>(size),
                 static_cast<unsigned long long>(reserved_));
  // The flush set the size with ftruncate, which also drops the blocks reserved past the end on ext4
  // and tmpfs, even when the size stays the same; drop them on every file system (so a closed file
  // holds no more than its size), and reserve again as the next calls need.
  if (size < reserved_) release_space(reserve_fd_, size, reserved_ - size);
  accounted_ = reserved_ = size;
}

template <typename Fn>
void H5Writer::collective(uint64_t grows, Fn&& fn) {
  if (!failed_.empty()) throw Error(failed_);
  if (file_ < 0) fail("internal error: '", path_, "' is closed");
  try {
    if (grows > 0) dist::agreed(comm_, [&] { reserve(grows); });
    dist::agreed(comm_, fn);
  } catch (const std::exception& e) {
    failed_ = e.what();
    throw;
  }
}

void H5Writer::close() {
  if (file_ < 0) return;
  if (!failed_.empty()) {
    release();
    return;
  }
  try {
    dist::agreed(comm_, [&] {
      errno = 0;
      const bool flushed = H5Fflush(file_, H5F_SCOPE_GLOBAL) >= 0;
      const int err = errno;
      if (flushed) measure();  // the file's size is HDF5's end of allocation after a flush
      if (!release() || !flushed) fail("cannot flush and close HDF5 file '", path_, "'", cause(err));
    });
  } catch (const std::exception& e) {
    failed_ = e.what();
    throw;
  }
}

bool H5Writer::exists(const std::string& path) const { return H5Lexists(file_, path.c_str(), H5P_DEFAULT) > 0; }

void H5Writer::drop_attribute(const std::string& object, const std::string& name) {
  if (H5Aexists_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0 &&
      H5Adelete_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) < 0)
    fail(path_, ": cannot replace attribute '", name, "' of '", object, "'");
}

void H5Writer::flush() {
  collective(0, [&] {
    errno = 0;
    if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0) fail("cannot flush HDF5 file '", path_, "'", cause(errno));
    measure();
  });
}

void H5Writer::create_group(const std::string& path) {
  collective(link_allowance(path), [&] {
    hid_t g = H5Gcreate2(file_, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fail(path_, ": cannot create group '", path, "'");
    H5Gclose(g);
  });
}

void H5Writer::create_dataset(const std::string& path, DType dtype, const std::vector<int64_t>& shape) {
  uint64_t bytes = dtype_size(dtype);
  for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
  collective(bytes + link_allowance(path), [&] {
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    Handle space{H5_CHECK(shape.empty() ? H5Screate(H5S_SCALAR)
                                        : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                 H5Sclose};
    Handle dcpl{H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose};
    // Every byte is written by us: skip HDF5's fill pass, which would double the write volume.
    H5_CHECK(H5Pset_fill_time(dcpl.id, H5D_FILL_TIME_NEVER));
    H5_CHECK(H5Pset_alloc_time(dcpl.id, H5D_ALLOC_TIME_EARLY));
    hid_t d = H5Dcreate2(file_, path.c_str(), h5_type_for(dtype), space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT);
    if (d < 0) fail(path_, ": cannot create dataset '", path, "'");
    H5Dclose(d);
  });
}

void H5Writer::write_rows(const std::string& path, uint64_t row_begin, uint64_t row_count,
                          const void* data) {
  Handle d{-1, H5Dclose}, type{-1, H5Tclose}, space{-1, H5Sclose};
  int rank = 0;
  std::vector<hsize_t> dims;
  uint64_t row_bytes = 0, rows_per_call = 1, calls = 0;
  collective(0, [&] {
    d.id = H5Dopen2(file_, path.c_str(), H5P_DEFAULT);
    if (d.id < 0) fail(path_, ": no dataset '", path, "'");
    type.id = H5_CHECK(H5Dget_type(d.id));
    space.id = H5_CHECK(H5Dget_space(d.id));
    rank = H5_CHECK(H5Sget_simple_extent_ndims(space.id));
    dims.assign(std::max(rank, 1), 1);
    if (rank > 0) H5_CHECK(H5Sget_simple_extent_dims(space.id, dims.data(), nullptr));
    const uint64_t rows = rank > 0 ? dims[0] : 1;
    if (row_begin + row_count > rows)
      fail(path_, ": rows [", row_begin, ", ", row_begin + row_count, ") are outside dataset '", path, "' (", rows,
           " rows)");
    row_bytes = H5Tget_size(type.id);
    for (int i = 1; i < rank; ++i) row_bytes *= dims[i];
    // Rows per call under the limit; every rank makes the same number of collective calls.
    rows_per_call = std::max<uint64_t>(1, kMaxBytesPerCall / std::max<uint64_t>(row_bytes, 1));
    calls = (row_count + rows_per_call - 1) / rows_per_call;
  });
  uint64_t max_calls = dist::all_reduce(comm_, calls, dist::ReduceOp::Max);
  if (max_calls == 0) max_calls = 1;  // a collective call even when nobody has rows
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (uint64_t c = 0; c < max_calls; ++c) {
    const uint64_t begin = std::min(row_count, c * rows_per_call);
    const uint64_t n = std::min(rows_per_call, row_count - begin);
    collective(0, [&] {
      Handle fspace{H5_CHECK(H5Scopy(space.id)), H5Sclose};
      hid_t mspace_id;
      if (n == 0 || rank == 0) {
        if (n == 0) H5_CHECK(H5Sselect_none(fspace.id));
        hsize_t one = n;
        mspace_id = H5_CHECK(H5Screate_simple(1, &one, nullptr));
        if (n == 0) H5_CHECK(H5Sselect_none(mspace_id));
      } else {
        std::vector<hsize_t> start(rank, 0), count(dims.begin(), dims.end());
        start[0] = row_begin + begin;
        count[0] = n;
        H5_CHECK(H5Sselect_hyperslab(fspace.id, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
        mspace_id = H5_CHECK(H5Screate_simple(rank, count.data(), nullptr));
      }
      Handle mspace{mspace_id, H5Sclose};
      errno = 0;
      if (H5Dwrite(d.id, type.id, mspace.id, fspace.id, dxpl_, n ? bytes + begin * row_bytes : nullptr) < 0)
        fail("cannot write rows of '", path, "' to '", path_, "'", cause(errno));
    });
  }
}

void H5Writer::put_attribute(const std::string& object, const std::string& name, int64_t type, const void* value,
                             uint64_t value_bytes) {
  collective(value_bytes + kCallAllowance, [&] {
    drop_attribute(object, name);
    Handle space{H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose};
    Handle attr{H5Acreate_by_name(file_, object.c_str(), name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT,
                                  H5P_DEFAULT),
                H5Aclose};
    if (attr.id < 0 || H5Awrite(attr.id, type, value) < 0)
      fail(path_, ": cannot write attribute '", name, "' on '", object, "'");
  });
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, const std::string& value) {
  Handle type{H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose};
  H5_CHECK(H5Tset_size(type.id, std::max<size_t>(value.size(), 1)));
  H5_CHECK(H5Tset_cset(type.id, H5T_CSET_UTF8));
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  put_attribute(object, name, type.id, padded.data(), padded.size());
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, uint64_t value) {
  put_attribute(object, name, H5T_STD_U64LE, &value, sizeof value);
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, double value) {
  put_attribute(object, name, H5T_IEEE_F64LE, &value, sizeof value);
}

void H5Writer::write_small(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
                           const void* data) {
  create_dataset(path, dtype, shape);
  const uint64_t rows = shape.empty() ? 1 : static_cast<uint64_t>(shape[0]);
  write_rows(path, 0, rank_ == 0 ? rows : 0, data);
}

}  // namespace recall
