// Serial reading of recall's merged.h5 (after the parallel writer closed it): datasets with their
// dtype (bf16/f16 recognized from their float layout) and shape, and string attributes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "recall/util/dtype.h"

namespace recall {

struct H5DatasetInfo {
  std::string path;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

class H5Reader {
 public:
  explicit H5Reader(const std::string& path);  // read-only
  ~H5Reader();
  H5Reader(const H5Reader&) = delete;
  H5Reader& operator=(const H5Reader&) = delete;

  // Names of the datasets directly inside `group` (e.g. "/tensors"), in creation order.
  std::vector<std::string> list(const std::string& group) const;
  bool exists(const std::string& path) const;
  H5DatasetInfo info(const std::string& path) const;
  // The whole dataset's bytes in its own dtype (row-major).
  void read(const std::string& path, void* dst) const;
  std::vector<uint8_t> read(const std::string& path) const;
  // A string attribute, nullopt when absent.
  std::optional<std::string> attribute(const std::string& object, const std::string& name) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int64_t file_ = -1;
};

}  // namespace recall
