// Serial reader for merged.h5.
#include "recall/io/h5_reader.h"

#include <hdf5.h>

#include "recall/io/h5_writer.h"
#include "recall/util/error.h"

namespace recall {

namespace {

struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() { if (id >= 0) close(id); }
};

DType dtype_of(hid_t type, const std::string& where) {
  for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F64, DType::I64, DType::I32, DType::U64, DType::U8})
    if (H5Tequal(type, h5_type_for(d)) > 0) return d;
  fail(where, ": unsupported HDF5 element type");
}

}  // namespace

uint64_t H5DatasetInfo::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

H5Reader::H5Reader(const std::string& path) : path_(path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported by us, with the file name
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_ < 0) fail("cannot open '", path, "' as HDF5 (missing, truncated or not HDF5)");
}

H5Reader::~H5Reader() {
  if (file_ >= 0) H5Fclose(file_);
}

std::vector<std::string> H5Reader::list(const std::string& group) const {
  Handle g{H5Gopen2(file_, group.c_str(), H5P_DEFAULT), H5Gclose};
  if (g.id < 0) fail(path_, ": no group '", group, "'");
  H5G_info_t gi;
  if (H5Gget_info(g.id, &gi) < 0) fail(path_, ": cannot list '", group, "'");
  std::vector<std::string> out;
  for (hsize_t i = 0; i < gi.nlinks; ++i) {
    // Creation order is not tracked by default; name order is deterministic.
    ssize_t n = H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) fail(path_, ": cannot read a link name in '", group, "'");
    std::string name(static_cast<size_t>(n), '\0');
    H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), n + 1, H5P_DEFAULT);
    out.push_back(name);
  }
  return out;
}

bool H5Reader::exists(const std::string& path) const {
  return H5Lexists(file_, path.c_str(), H5P_DEFAULT) > 0;
}

H5DatasetInfo H5Reader::info(const std::string& path) const {
  Handle d{H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose};
  if (d.id < 0) fail(path_, ": no dataset '", path, "'");
  Handle type{H5Dget_type(d.id), H5Tclose};
  Handle space{H5Dget_space(d.id), H5Sclose};
  H5DatasetInfo info;
  info.path = path;
  info.dtype = dtype_of(type.id, path_ + ": dataset '" + path + "'");
  const int rank = H5Sget_simple_extent_ndims(space.id);
  if (rank < 0) fail(path_, ": cannot read the shape of '", path, "'");
  std::vector<hsize_t> dims(rank);
  if (rank > 0) H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  for (hsize_t x : dims) info.shape.push_back(static_cast<int64_t>(x));
  return info;
}

void H5Reader::read(const std::string& path, void* dst) const {
  const H5DatasetInfo i = info(path);
  Handle d{H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose};
  if (d.id < 0 || H5Dread(d.id, h5_type_for(i.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
    fail(path_, ": cannot read dataset '", path, "' (truncated file?)");
}

std::vector<uint8_t> H5Reader::read(const std::string& path) const {
  std::vector<uint8_t> out(info(path).nbytes());
  read(path, out.data());
  return out;
}

std::optional<std::string> H5Reader::attribute(const std::string& object, const std::string& name) const {
  if (H5Aexists_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) <= 0) return std::nullopt;
  Handle a{H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (a.id < 0) fail(path_, ": cannot open attribute '", name, "' of '", object, "'");
  Handle type{H5Aget_type(a.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_STRING) fail(path_, ": attribute '", name, "' of '", object, "' is not a string");
  const size_t n = H5Tget_size(type.id);
  std::string value(n, '\0');
  if (H5Aread(a.id, type.id, value.data()) < 0) fail(path_, ": cannot read attribute '", name, "'");
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

}  // namespace recall
