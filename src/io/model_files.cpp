// Checked access to the files of a model directory (inside it, or in its HF snapshot's blobs/).
#include "recall/io/model_files.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

bool inside(const std::string& path, const std::string& root) {
  return !root.empty() && path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

std::string parent(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos || slash == 0 ? std::string("/") : p.substr(0, slash);
}

std::string base(const std::string& p) { return p.substr(p.rfind('/') + 1); }

// The blobs/ of the Hugging Face hub repository whose snapshot `real_dir` is, or "".
std::string snapshot_blobs(const std::string& real_dir) {
  const std::string snapshots = parent(real_dir), repo = parent(snapshots);
  if (base(snapshots) != "snapshots" || base(repo).rfind("models--", 0) != 0) return "";
  return real_path(join_path(repo, "blobs"));
}

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  return "not a regular file";
}

}  // namespace

std::optional<std::string> find_model_file(const std::string& dir, const std::string& name) {
  const std::string path = join_path(dir, name);
  struct stat lst;
  if (::lstat(path.c_str(), &lst) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    fail("cannot read '", path, "': ", std::strerror(errno));
  }
  std::string target;  // where a link points, for messages
  if (S_ISLNK(lst.st_mode)) {
    std::vector<char> buf(static_cast<size_t>(lst.st_size > 0 ? lst.st_size : PATH_MAX) + 1);
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size() - 1);
    target = n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string("?");
  }
  const std::string real = real_path(path);
  if (real.empty()) fail("'", path, "' is a link to '", target, "', which does not exist");
  struct stat st;
  if (::stat(real.c_str(), &st) != 0) fail("cannot read '", path, "': ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("'", path, "' is ", kind_of(st.st_mode), "; expected a regular file");
  const std::string real_dir = real_path(dir), blobs = snapshot_blobs(real_dir);
  if (!inside(real, real_dir) && !inside(real, blobs))
    fail("'", path, "' is a link to '", target.empty() ? real : target, "', outside the model directory '", dir,
         "'; recall reads only files inside a model directory (or, for a Hugging Face cache snapshot, in its "
         "repository's blobs/)\n---> HINT: copy the file into the directory (or hard-link it) if it belongs there");
  return path;
}

std::string model_file(const std::string& dir, const std::string& name) {
  if (auto p = find_model_file(dir, name)) return *p;
  fail("'", join_path(dir, name), "' does not exist");
}

const std::vector<std::string>& side_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
      "vocab.json",      "merges.txt",     "generation_config.json", "chat_template.jinja"};
  return names;
}

std::string parse_error_text(const std::exception& e) {
  std::string s = e.what();
  if (const auto at = s.find("; last read:"); at != std::string::npos) s.resize(at);
  return s;
}

std::vector<std::string> copy_side_files(const std::string& model_dir, const std::string& out_dir) {
  std::vector<std::string> copied;
  for (const std::string& f : side_file_names())
    if (const auto src = find_model_file(model_dir, f)) {  // a regular file of the model, or an error
      copy_file(*src, join_path(out_dir, f));
      copied.push_back(f);
    }
  return copied;
}

}  // namespace recall
