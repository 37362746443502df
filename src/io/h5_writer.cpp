// Parallel-HDF5 writer for the merged checkpoint (collective metadata and raw-data writes).
#include "recall/io/h5_writer.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "recall/util/error.h"

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
  Handle fapl{H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose};
  H5_CHECK(H5Pset_fapl_mpio(fapl.id, comm, MPI_INFO_NULL));
  H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.id, true));
  H5_CHECK(H5Pset_coll_metadata_write(fapl.id, true));
  file_ = mode == Mode::Create ? H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id)
                               : H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id);
  if (file_ < 0) fail("cannot ", mode == Mode::Create ? "create" : "open", " HDF5 file '", path, "'");
  dxpl_ = H5_CHECK(H5Pcreate(H5P_DATASET_XFER));
  H5_CHECK(H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE));
}

H5Writer::~H5Writer() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  if (file_ >= 0) H5Fclose(file_);
}

void H5Writer::close() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  dxpl_ = -1;
  if (file_ >= 0) {
    hid_t f = file_;
    file_ = -1;
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(f) < 0)
      fail("cannot flush and close HDF5 file '", path_, "'");
  }
}

bool H5Writer::exists(const std::string& path) const { return H5Lexists(file_, path.c_str(), H5P_DEFAULT) > 0; }

void H5Writer::drop_attribute(const std::string& object, const std::string& name) {
  if (H5Aexists_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0 &&
      H5Adelete_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) < 0)
    fail(path_, ": cannot replace attribute '", name, "' of '", object, "'");
}

void H5Writer::flush() {
  if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0) fail("cannot flush HDF5 file '", path_, "'");
}

void H5Writer::create_group(const std::string& path) {
  hid_t g = H5Gcreate2(file_, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) fail(path_, ": cannot create group '", path, "'");
  H5Gclose(g);
}

void H5Writer::create_dataset(const std::string& path, DType dtype, const std::vector<int64_t>& shape) {
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
}

void H5Writer::write_rows(const std::string& path, uint64_t row_begin, uint64_t row_count,
                          const void* data) {
  Handle d{H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose};
  if (d.id < 0) fail(path_, ": no dataset '", path, "'");
  Handle type{H5_CHECK(H5Dget_type(d.id)), H5Tclose};
  Handle space{H5_CHECK(H5Dget_space(d.id)), H5Sclose};
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.id));
  std::vector<hsize_t> dims(std::max(rank, 1), 1);
  if (rank > 0) H5_CHECK(H5Sget_simple_extent_dims(space.id, dims.data(), nullptr));
  const uint64_t rows = rank > 0 ? dims[0] : 1;
  if (row_begin + row_count > rows)
    fail(path_, ": rows [", row_begin, ", ", row_begin + row_count, ") are outside dataset '", path,
         "' (", rows, " rows)");
  uint64_t row_bytes = H5Tget_size(type.id);
  for (int i = 1; i < rank; ++i) row_bytes *= dims[i];
  // Rows per call under the limit; every rank makes the same number of collective calls.
  const uint64_t rows_per_call = std::max<uint64_t>(1, kMaxBytesPerCall / std::max<uint64_t>(row_bytes, 1));
  uint64_t calls = (row_count + rows_per_call - 1) / rows_per_call, max_calls = 0;
  if (MPI_Allreduce(&calls, &max_calls, 1, MPI_UINT64_T, MPI_MAX, comm_) != MPI_SUCCESS)
    fail(path_, ": MPI_Allreduce failed while writing '", path, "'");
  if (max_calls == 0) max_calls = 1;  // a collective call even when nobody has rows
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (uint64_t c = 0; c < max_calls; ++c) {
    const uint64_t begin = std::min(row_count, c * rows_per_call);
    const uint64_t n = std::min(rows_per_call, row_count - begin);
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
    if (H5Dwrite(d.id, type.id, mspace.id, fspace.id, dxpl_, n ? bytes + begin * row_bytes : nullptr) < 0)
      fail(path_, ": writing rows of '", path, "' failed (disk full or file-size limit?)");
  }
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, const std::string& value) {
  drop_attribute(object, name);
  Handle type{H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose};
  H5_CHECK(H5Tset_size(type.id, std::max<size_t>(value.size(), 1)));
  H5_CHECK(H5Tset_cset(type.id, H5T_CSET_UTF8));
  Handle space{H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose};
  Handle attr{H5Acreate_by_name(file_, object.c_str(), name.c_str(), type.id, space.id, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0) fail(path_, ": cannot create attribute '", name, "' on '", object, "'");
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  if (H5Awrite(attr.id, type.id, padded.data()) < 0)
    fail(path_, ": cannot write attribute '", name, "' on '", object, "'");
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, uint64_t value) {
  drop_attribute(object, name);
  Handle space{H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose};
  Handle attr{H5Acreate_by_name(file_, object.c_str(), name.c_str(), H5T_STD_U64LE, space.id,
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0 || H5Awrite(attr.id, H5T_NATIVE_UINT64, &value) < 0)
    fail(path_, ": cannot write attribute '", name, "' on '", object, "'");
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, double value) {
  drop_attribute(object, name);
  Handle space{H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose};
  Handle attr{H5Acreate_by_name(file_, object.c_str(), name.c_str(), H5T_IEEE_F64LE, space.id,
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0 || H5Awrite(attr.id, H5T_NATIVE_DOUBLE, &value) < 0)
    fail(path_, ": cannot write attribute '", name, "' on '", object, "'");
}

void H5Writer::write_small(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
                           const void* data) {
  create_dataset(path, dtype, shape);
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  const uint64_t rows = shape.empty() ? 1 : static_cast<uint64_t>(shape[0]);
  write_rows(path, 0, rank == 0 ? rows : 0, data);
}

}  // namespace recall
