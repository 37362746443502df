// safetensors reader (validating, memory-mapped) and atomic writer.
#include "recall/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "recall/io/model_files.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

using nlohmann::json;

namespace {

// The reference implementation refuses headers above 100 MB; a 70B checkpoint's largest shard
// header is a few tens of KB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

TensorInfo parse_entry(const std::string& name, const json& e, const std::string& where) {
  auto bad = [&](const std::string& what) {
    fail(where, ": tensor '", name, "': ", what);
  };
  if (!e.is_object()) bad("entry is not a JSON object");
  TensorInfo t;
  t.name = name;

  auto dt = e.find("dtype");
  if (dt == e.end()) bad("missing 'dtype'");
  if (!dt->is_string()) bad("'dtype' is not a string");
  auto parsed = parse_dtype(dt->get_ref<const std::string&>());
  if (!parsed)
    bad("unknown dtype '" + dt->get<std::string>() + "'; supported: " + supported_dtype_names());
  t.dtype = *parsed;

  auto sh = e.find("shape");
  if (sh == e.end()) bad("missing 'shape'");
  if (!sh->is_array()) bad("'shape' is not an array");
  uint64_t numel = 1;
  for (const json& d : *sh) {
    if (!d.is_number_integer()) bad("'shape' has a non-integer dimension " + d.dump());
    if (!d.is_number_unsigned()) bad("'shape' has a negative dimension " + d.dump());
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX) || mul_overflows(numel, v, &numel))
      bad("'shape' " + sh->dump() + " overflows 64-bit element count");
    t.shape.push_back(static_cast<int64_t>(v));
  }
  uint64_t expected_bytes;
  if (mul_overflows(numel, dtype_size(t.dtype), &expected_bytes))
    bad("'shape' " + sh->dump() + " overflows 64-bit byte count");

  auto off = e.find("data_offsets");
  if (off == e.end()) bad("missing 'data_offsets'");
  if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    bad("'data_offsets' must be two non-negative integers [begin, end], got " + off->dump());
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin)
    bad("'data_offsets' are reversed: begin " + std::to_string(t.begin) + " > end " +
        std::to_string(t.end));
  if (t.end - t.begin != expected_bytes)
    bad("size does not match shape x dtype: expected " + std::to_string(expected_bytes) +
        " bytes for " + shape_str(t.shape) + " " + std::string(dtype_name(t.dtype)) + ", got " +
        std::to_string(t.end - t.begin));
  return t;
}

}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t buffer_size,
                                           const std::string& where) {
  // Track top-level keys during parsing: nlohmann keeps the last of duplicate keys silently.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    fail(where, ": header is not valid JSON: ", parse_error_text(e));
  }
  if (!duplicate.empty()) fail(where, ": duplicate tensor name '", duplicate, "' in header");
  if (!root.is_object()) fail(where, ": header is not a JSON object");

  SafetensorsHeader h;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(where, ": '__metadata__' is not an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          fail(where, ": '__metadata__' value for '", m.key(), "' is not a string: ", m->dump());
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(it.key(), *it, where));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const TensorInfo& t : h.tensors) {
    if (t.end > buffer_size)
      fail(where, ": tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
           "] run past the end of the data buffer (", buffer_size,
           " bytes): the file is truncated or the offsets are corrupt");
    if (t.begin < cursor)
      fail(where, ": tensor '", t.name, "' overlaps the previous tensor: begins at ", t.begin,
           ", previous ends at ", cursor);
    if (t.begin > cursor)
      fail(where, ": gap in the data buffer: bytes [", cursor, ", ", t.begin,
           ") belong to no tensor (before '", t.name, "')");
    cursor = t.end;
  }
  if (cursor != buffer_size)
    fail(where, ": data buffer has ", buffer_size, " bytes but the tensors cover ", cursor,
         " (trailing bytes or a truncated header)");
  return h;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) fail("cannot open '", path, "': ", std::strerror(errno));
  f->file_size_ = file_size_of(path);
  if (f->file_size_ < 8)
    fail(path, ": file has ", f->file_size_, " bytes, too short for the 8-byte header length");
  unsigned char len_bytes[8];
  pread_exact(f->fd_, len_bytes, 8, 0, path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  // The length is the file's first 8 bytes: quoted only when plausible, so that the error about a
  // file that is not safetensors at all does not print its bytes.
  if (n > kMaxHeaderBytes)
    fail(path, ": not a safetensors file (its first 8 bytes are not a header length of at most 100 MB)");
  if (n > f->file_size_ - 8)
    fail(path, ": header length ", n, " is larger than the file (", f->file_size_, " bytes): truncated?");
  if (n < 2) fail(path, ": header length ", n, " is too short for a JSON object");
  std::string text(n, '\0');
  pread_exact(f->fd_, text.data(), n, 8, path);
  if (text[0] != '{') fail(path, ": header is not a JSON object (first byte is not '{')");
  f->data_start_ = 8 + n;
  f->header_ = parse_safetensors_header(text, f->file_size_ - f->data_start_, path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i)
    f->by_name_.emplace(f->header_.tensors[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), file_size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(path_, ": no tensor named '", name, "'");
  return *t;
}

const uint8_t* SafetensorsFile::data(const TensorInfo& t) const {
  // Several threads may ask for data at once: the first mapping to be published wins and the
  // others are unmapped, so every caller sees the same pointer without a data race.
  const uint8_t* m = __atomic_load_n(&map_, __ATOMIC_ACQUIRE);
  if (!m) {
    void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) fail("cannot map '", path_, "': ", std::strerror(errno));
    const uint8_t* expected = nullptr;
    if (__atomic_compare_exchange_n(&map_, &expected, static_cast<const uint8_t*>(p), false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      m = static_cast<const uint8_t*>(p);
    } else {
      ::munmap(p, file_size_);
      m = expected;
    }
  }
  return m + data_start_ + t.begin;
}

void SafetensorsFile::read(const TensorInfo& t, uint64_t offset, uint64_t n, void* dst) const {
  if (offset > t.nbytes() || n > t.nbytes() - offset)
    fail(path_, ": read of ", n, " bytes at ", offset, " is outside tensor '", t.name, "' (",
         t.nbytes(), " bytes)");
  pread_exact(fd_, dst, n, data_start_ + t.begin + offset, path_);
}

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) fail("tensor '", name, "' has a negative dimension");
    if (mul_overflows(n, static_cast<uint64_t>(d), &n))
      fail("tensor '", name, "' overflows 64-bit byte count");
  }
  return n;
}

std::string safetensors_header(const std::vector<TensorSpec>& specs, std::map<std::string, std::string> metadata,
                               std::vector<uint64_t>* begins, const std::string& path) {
  if (!metadata.count("format")) metadata["format"] = "pt";
  json header = json::object();
  header["__metadata__"] = metadata;
  uint64_t cursor = 0;
  for (const TensorSpec& s : specs) {
    if (header.contains(s.name)) fail("writing '", path, "': duplicate tensor name '", s.name, "'");
    const uint64_t n = s.nbytes();
    header[s.name] = {{"dtype", std::string(dtype_name(s.dtype))},
                      {"shape", s.shape},
                      {"data_offsets", {cursor, cursor + n}}};
    if (begins) begins->push_back(cursor);
    cursor += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  return out + text;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<TensorSpec> specs,
                                     std::map<std::string, std::string> metadata)
    : path_(std::move(path)), specs_(std::move(specs)) {
  const std::string header = safetensors_header(specs_, std::move(metadata), &begin_, path_);
  for (size_t i = 0; i < specs_.size(); ++i) by_name_.emplace(specs_[i].name, i);
  written_.assign(specs_.size(), 0);
  data_start_ = header.size();
  file_size_ = data_start_ + (specs_.empty() ? 0 : begin_.back() + specs_.back().nbytes());

  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create '", tmp_path_, "': ", std::strerror(errno));
  pwrite_exact(fd_, header.data(), header.size(), 0, tmp_path_);
  if (::ftruncate(fd_, static_cast<off_t>(file_size_)) != 0)
    fail("cannot size '", tmp_path_, "' to ", file_size_, " bytes: ", std::strerror(errno));
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void SafetensorsWriter::write(std::string_view name, const void* data, uint64_t n,
                              uint64_t offset) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail("writing '", path_, "': tensor '", name, "' is not in the header");
  const size_t i = it->second;
  const uint64_t size = specs_[i].nbytes();
  if (offset > size || n > size - offset)
    fail("writing '", path_, "': ", n, " bytes at ", offset, " overflow tensor '", name, "' (",
         size, " bytes)");
  pwrite_exact(fd_, data, n, data_start_ + begin_[i] + offset, tmp_path_);
  __atomic_add_fetch(&written_[i], n, __ATOMIC_RELAXED);
}

void SafetensorsWriter::commit() {
  for (size_t i = 0; i < specs_.size(); ++i)
    if (written_[i] != specs_[i].nbytes())
      fail("writing '", path_, "': tensor '", specs_[i].name, "' got ", written_[i], " of ",
           specs_[i].nbytes(), " bytes");
  if (::fsync(fd_) != 0) fail("cannot sync '", tmp_path_, "': ", std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    fail("cannot rename '", tmp_path_, "' to '", path_, "': ", std::strerror(errno));
  committed_ = true;
}

std::vector<std::vector<size_t>> plan_shards(const std::vector<TensorSpec>& specs,
                                             uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t n = specs[i].nbytes();
    if (shards.empty() || (max_shard_bytes > 0 && current > 0 && current + n > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += n;
  }
  if (shards.empty()) shards.emplace_back();
  return shards;
}

std::string shard_file_name(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

void write_safetensors_index(const std::string& dir, const std::vector<TensorSpec>& specs,
                             const std::vector<std::vector<size_t>>& shards) {
  json weight_map = json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s)
    for (size_t i : shards[s]) {
      weight_map[specs[i].name] = shard_file_name(s, shards.size());
      total += specs[i].nbytes();
    }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(join_path(dir, "model.safetensors.index.json"), index.dump(2) + "\n");
}

std::vector<std::string> write_safetensors_model(const std::string& dir,
                                                 const std::vector<TensorData>& tensors,
                                                 uint64_t max_shard_bytes) {
  std::vector<TensorSpec> specs;
  for (const TensorData& t : tensors) {
    if (t.bytes.size() != t.spec.nbytes())
      fail("writing '", dir, "': tensor '", t.spec.name, "' has ", t.bytes.size(),
           " bytes, its shape needs ", t.spec.nbytes());
    specs.push_back(t.spec);
  }
  const auto shards = plan_shards(specs, max_shard_bytes);
  std::vector<std::string> names;
  for (size_t s = 0; s < shards.size(); ++s) {
    std::vector<TensorSpec> shard_specs;
    for (size_t i : shards[s]) shard_specs.push_back(specs[i]);
    names.push_back(shard_file_name(s, shards.size()));
    SafetensorsWriter w(join_path(dir, names.back()), shard_specs);
    for (size_t i : shards[s]) w.write(specs[i].name, tensors[i].bytes.data(), tensors[i].bytes.size());
    w.commit();
  }
  if (shards.size() > 1) write_safetensors_index(dir, specs, shards);
  return names;
}

}  // namespace recall
