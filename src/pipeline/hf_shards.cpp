// The HF export written in place while merging: layout, creation, row writes, sync, checksums.
#include "recall/pipeline/hf_shards.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "recall/pipeline/checksums.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

HfShardWriter::HfShardWriter(std::string dir, std::vector<TensorSpec> specs, uint64_t shard_bytes)
    : dir_(std::move(dir)), specs_(std::move(specs)) {
  shards_ = plan_shards(specs_, shard_bytes);
  shard_of_.assign(specs_.size(), 0);
  offset_of_.assign(specs_.size(), 0);
  for (size_t s = 0; s < shards_.size(); ++s) {
    files_.push_back(join_path(dir_, shard_file_name(s, shards_.size())));
    std::vector<TensorSpec> shard_specs;
    for (size_t i : shards_[s]) shard_specs.push_back(specs_[i]);
    std::vector<uint64_t> begins;
    headers_.push_back(safetensors_header(shard_specs, {}, &begins, files_[s]));
    for (size_t k = 0; k < shards_[s].size(); ++k) {
      shard_of_[shards_[s][k]] = s;
      offset_of_[shards_[s][k]] = headers_[s].size() + begins[k];
    }
  }
}

HfShardWriter::~HfShardWriter() { close(); }

void HfShardWriter::create() const {
  for (size_t s = 0; s < shards_.size(); ++s) {
    const int fd = ::open(files_[s].c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create '", files_[s], "': ", std::strerror(errno));
    uint64_t size = headers_[s].size();
    for (size_t i : shards_[s]) size += specs_[i].nbytes();
    try {
      pwrite_exact(fd, headers_[s].data(), headers_[s].size(), 0, files_[s]);
      if (::ftruncate(fd, static_cast<off_t>(size)) != 0)
        fail("cannot size '", files_[s], "' to ", size, " bytes: ", std::strerror(errno));
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
  if (shards_.size() > 1) write_safetensors_index(dir_, specs_, shards_);
}

bool HfShardWriter::intact() const {
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (!path_exists(files_[s])) return false;
    uint64_t size = headers_[s].size();
    for (size_t i : shards_[s]) size += specs_[i].nbytes();
    if (file_size_of(files_[s]) != size) return false;
    const int fd = ::open(files_[s].c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::string head(headers_[s].size(), '\0');
    const bool same = ::pread(fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()) &&
                      head == headers_[s];
    ::close(fd);
    if (!same) return false;
  }
  return true;
}

void HfShardWriter::open() {
  close();
  for (const std::string& f : files_) {
    const int fd = ::open(f.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) fail("cannot open '", f, "' to write the export: ", std::strerror(errno));
    fds_.push_back(fd);
  }
}

void HfShardWriter::write(size_t tensor, uint64_t offset, const void* data, uint64_t n) {
  const TensorSpec& t = specs_.at(tensor);
  if (offset > t.nbytes() || n > t.nbytes() - offset)
    fail("writing '", files_[shard_of_[tensor]], "': ", n, " bytes at ", offset, " overflow tensor '", t.name, "'");
  if (fds_.empty()) fail("internal error: HfShardWriter::write before open()");
  const size_t s = shard_of_[tensor];
  pwrite_exact(fds_[s], data, n, offset_of_[tensor] + offset, files_[s]);
  // Start writing these pages back now, so that the disk works while the merge goes on instead
  // of all at the final sync (a hint: errors surface at the fsync of the checkpoint).
  start_writeback(fds_[s], offset_of_[tensor] + offset, n);
}

void HfShardWriter::sync() {
  for (size_t s = 0; s < fds_.size(); ++s)
    if (::fsync(fds_[s]) != 0) fail("cannot sync '", files_[s], "' to disk: ", std::strerror(errno));
}

uint64_t HfShardWriter::checksum(size_t tensor) const {
  const TensorSpec& t = specs_.at(tensor);
  const size_t s = shard_of_[tensor];
  const int fd = ::open(files_[s].c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '", files_[s], "' to checksum '", t.name, "': ", std::strerror(errno));
  Xxh3Stream h;
  std::vector<uint8_t> buf(std::min<uint64_t>(t.nbytes(), 16ull << 20));
  try {
    for (uint64_t done = 0; done < t.nbytes();) {
      const uint64_t n = std::min<uint64_t>(buf.size(), t.nbytes() - done);
      pread_exact(fd, buf.data(), n, offset_of_[tensor] + done, files_[s]);
      h.update(buf.data(), n);
      done += n;
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return h.digest();
}

void HfShardWriter::close() {
  for (int fd : fds_) ::close(fd);
  fds_.clear();
}

std::map<std::string, uint64_t> hf_checksums(MPI_Comm comm, const HfShardWriter& shards,
                                             const std::map<size_t, uint64_t>& known,
                                             const ChecksumProgress& progress) {
  std::vector<std::string> names;
  for (const TensorSpec& s : shards.specs()) names.push_back(s.name);
  return collective_checksums(comm, names, known, [&shards](size_t t) { return shards.checksum(t); }, progress);
}

}  // namespace recall
