// The output directory of a merge job: job key, what may be replaced, .partial, progress, lock,
// commit (see output_dir.h).
#include "recall/pipeline/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "recall/build_id.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"
#include "recall/util/lock_file.h"

namespace recall {

namespace {

constexpr const char* kKeyFile = "job.key";  // recall's marker in <dir>.partial
constexpr const char* kProgressFile = "progress.txt";
constexpr const char* kManifestFormat = "recall-merge-1";

void append_lines(const std::string& path, const std::string& lines) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("cannot append to '", path, "'");
  const bool ok = std::fputs(lines.c_str(), f) >= 0 && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail("cannot append to '", path, "' (disk full?)");
}

// "path\tsize\tmtime_ns\tinode" of a large file (its bytes are not read).
std::string identity(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return path + "\tmissing\n";
  return path + "\t" + std::to_string(st.st_size) + "\t" + std::to_string(modification_time_ns(path)) + "\t" +
         std::to_string(st.st_ino) + "\n";
}

// "path\t<xxh3 of the contents>" of a small file, or nothing when it does not exist.
std::string content_hash(const std::string& path) {
  if (!path_exists(path) || is_directory(path)) return "";
  const std::string text = read_text_file(path);
  return path + "\t" + checksum_hex(xxh3_64(text.data(), text.size())) + "\n";
}

// What lies at a path recall may write or replace. Everything is read through one descriptor of the
// directory, so a concurrent job renaming it (its .partial to the final name, the final name to
// .old) between two looks cannot make a directory recall wrote pass for a user's.
struct Found {
  bool exists = false;
  bool empty = false;         // an empty directory
  bool recall_output = false;  // a directory holding recall's manifest.json
  bool recall_partial = false;  // a directory holding recall's job.key
};

bool manifest_is_recall(int dir_fd) {
  const int fd = ::openat(dir_fd, "manifest.json", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  try {
    const auto j = nlohmann::json::parse(text);
    return j.is_object() && j.value("format", "") == kManifestFormat;
  } catch (const std::exception&) {
    return false;
  }
}

Found inspect(const std::string& path) {
  Found found;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    found.exists = errno != ENOENT;  // a file, or unreadable: exists and is not recall's
    return found;
  }
  found.exists = true;
  found.recall_output = manifest_is_recall(fd);
  found.recall_partial = ::faccessat(fd, kKeyFile, F_OK, 0) == 0;
  if (DIR* d = ::fdopendir(::dup(fd))) {
    found.empty = true;
    while (const dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) found.empty = false;
    ::closedir(d);
  }
  ::close(fd);
  return found;
}

// Removes a directory recall wrote with its marker (manifest.json or job.key) last and the emptied
// directory after it: a job looking without the lock sees recall's directory or an empty one,
// never one that lost its marker while still holding files.
void remove_marked_tree(const std::string& dir, const char* marker) {
  struct stat st{};
  if (::lstat(dir.c_str(), &st) != 0) return;
  if (S_ISLNK(st.st_mode)) {  // a link is removed, never followed (as remove_tree does)
    remove_tree(dir);
    return;
  }
  std::vector<std::string> entries;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0 && std::strcmp(e->d_name, marker) != 0)
        entries.push_back(e->d_name);
    ::closedir(d);
  }
  for (const std::string& e : entries) remove_tree(join_path(dir, e));
  remove_tree(dir);
}

// True when `inner` is `outer` or lies inside it (both resolved).
bool within(const std::string& outer, const std::string& inner) {
  const std::string o = resolved_path(outer), i = resolved_path(inner);
  return i == o || o == "/" || (i.size() > o.size() && i.compare(0, o.size(), o) == 0 && i[o.size()] == '/');
}

// Removes files named <anything>.tmp.<digits> below `dir`: write_file_atomic's temporaries of
// processes that died before their rename.
void remove_stale_temporaries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> subdirs, stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = join_path(dir, name);
    if (is_directory(path)) {
      subdirs.push_back(path);
      continue;
    }
    const auto dot = name.rfind(".tmp.");
    if (dot != std::string::npos && dot + 5 < name.size() &&
        name.find_first_not_of("0123456789", dot + 5) == std::string::npos)
      stale.push_back(path);
  }
  ::closedir(d);
  for (const std::string& p : stale) ::unlink(p.c_str());
  for (const std::string& s : subdirs) remove_stale_temporaries(s);
}

}  // namespace

std::vector<std::string> merge_input_paths(const MergeConfig& c) {
  std::vector<std::string> out;
  for (const ModelEntry& m : c.models) {
    out.push_back(m.path);
    if (!m.base_model.empty()) out.push_back(m.base_model);
  }
  if (!c.data.empty()) out.push_back(c.data);
  if (!c.origin.file.empty() && path_exists(c.origin.file)) out.push_back(c.origin.file);
  return out;
}

std::string job_key(MergeConfig cfg, const MergeInputs& in) {
  cfg.output.overwrite = false;
  cfg.output.checkpoint_bytes = 0;  // how often progress is saved does not change the result
  std::string text = std::string("recall ") + RECALL_ENGINE_BUILD + "\n" + to_yaml(cfg);
  for (size_t m = 0; m < in.models.size(); ++m) {
    const ModelDir& md = in.models[m];
    text += content_hash(join_path(md.path, "config.json"));
    for (const Checkpoint* ckpt : {&md.checkpoint, md.lora ? &md.lora->checkpoint() : nullptr}) {
      if (!ckpt) continue;
      for (const auto& f : ckpt->files()) text += identity(f->path());
    }
    if (md.lora) text += content_hash(join_path(md.lora->path(), "adapter_config.json"));
  }
  const std::string ref = in.models.empty() ? "" : in.models[in.reference].path;
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    if (!ref.empty()) text += content_hash(join_path(ref, f));
  if (!cfg.data.empty()) text += identity(cfg.data);
  return checksum_hex(xxh3_64(text.data(), text.size())) + "\n";
}

OutputDir::OutputDir(std::string final_dir) : final_(std::move(final_dir)), partial_(final_ + ".partial") {}

std::string OutputDir::h5() const { return join_path(partial_, "merged.h5"); }
std::string OutputDir::hf() const { return join_path(partial_, "hf"); }
std::string OutputDir::recall_state() const { return join_path(partial_, "recall_state.json"); }
std::string OutputDir::statistics() const { return join_path(partial_, "statistics"); }
std::string OutputDir::file(const std::string& name) const { return join_path(partial_, name); }

std::vector<std::string> OutputDir::problems(bool overwrite, const std::vector<std::string>& inputs,
                                             const std::vector<std::string>& model_dirs) const {
  std::vector<std::string> out;
  const std::string dir = "output.dir '" + final_ + "'";
  if (resolved_path(final_) == "/") out.push_back(dir + " is the root directory");
  for (const std::string& p : inputs)
    if (within(final_, p))
      out.push_back(dir + " is or holds the input '" + p + "'; refusing to write over an input");
  for (const std::string& m : model_dirs)
    if (within(m, final_) && !within(final_, m))
      out.push_back(dir + " lies inside the model directory '" + m + "'; refusing to write inside an input");
  const Found at_final = inspect(final_);
  if (at_final.exists) {
    if (!overwrite)
      out.push_back(dir + " already exists; set output.overwrite: true (or --set output.overwrite=true) to "
                    "replace it");
    else if (!at_final.recall_output && !at_final.empty)
      out.push_back(dir + " exists and is not a recall output (no recall manifest.json); output.overwrite "
                    "replaces only a directory recall committed, so move it away or choose another output.dir");
  }
  const Found at_partial = inspect(partial_);
  if (at_partial.exists && !at_partial.recall_partial && !at_partial.empty)
    out.push_back("'" + partial_ + "' exists and was not written by recall (it has no " + kKeyFile +
                  "); move it away, recall will not delete it");
  const std::string old = final_ + ".old";
  const Found at_old = inspect(old);
  if (at_old.exists && !at_old.recall_output && !at_old.empty)
    out.push_back("'" + old + "' exists and is not a recall output (no recall manifest.json); move it away, recall "
                  "will not delete it");
  return out;
}

bool OutputDir::prepare(const std::string& key, bool fresh, std::string* log) const {
  const std::string key_path = file(kKeyFile);
  const Found at_partial = inspect(partial_);
  if (at_partial.exists && !at_partial.recall_partial && !at_partial.empty)
    fail("'", partial_, "' exists and was not written by recall (it has no ", kKeyFile, "); move it away");
  if (!fresh && at_partial.recall_partial && read_text_file(key_path) == key) return true;
  remove_marked_tree(partial_, kKeyFile);  // ours, or empty
  if (at_partial.recall_partial) {
    *log = "removed the unfinished '" + partial_ + "' of an earlier job (" +
           (fresh ? std::string("--fresh") : std::string("its config or inputs differ: job.key")) + ")";
  }
  // <dir>.partial appears whole, its job.key already inside: a job that checks it without the lock
  // (another job's preflight) never sees a .partial recall is still creating and takes it for a
  // user's. The staging name is ours alone while the lock is held; one left by a crash holds our key
  // or nothing.
  const std::string staging = partial_ + ".new";
  if (path_exists(staging)) {
    const Found at_staging = inspect(staging);
    if (!at_staging.empty && !at_staging.recall_partial)
      fail("'", staging, "' exists and was not written by recall (it has no ", kKeyFile, "); move it away");
    remove_tree(staging);
  }
  make_directories(staging);
  write_file_atomic(join_path(staging, kKeyFile), key);
  make_directories(join_path(staging, "hf"));
  rename_path(staging, partial_);
  return false;
}

std::set<std::string> OutputDir::merged_tensors() const {
  std::set<std::string> done;
  const std::string path = file(kProgressFile);
  if (!path_exists(path)) return done;  // the caller checks that the outputs survived
  std::istringstream lines(read_text_file(path));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) done.insert(line);
  return done;
}

void OutputDir::start_progress() const { write_file_atomic(file(kProgressFile), ""); }

void OutputDir::record_merged(const std::vector<std::string>& names) const {
  if (names.empty()) return;
  std::string lines;
  for (const auto& n : names) lines += n + "\n";
  append_lines(file(kProgressFile), lines);
}

void OutputDir::commit(bool overwrite) const {
  remove_stale_temporaries(partial_);
  const std::string old = final_ + ".old";
  const Found at_final = inspect(final_);
  if (at_final.exists) {
    if (!overwrite)
      fail("output.dir '", final_, "' appeared during the job (another job committed it?); not replacing it "
           "without output.overwrite; this job's result stays in '", partial_, "'");
    if (!at_final.recall_output && !at_final.empty)
      fail("output.dir '", final_, "' changed during the job and is no longer a recall output; not replacing it");
    if (path_exists(old)) {
      const Found at_old = inspect(old);
      if (!at_old.recall_output && !at_old.empty) fail("'", old, "' exists and is not a recall output; not replacing it");
      remove_marked_tree(old, "manifest.json");
    }
    rename_path(final_, old);
  }
  rename_path(partial_, final_);
  remove_marked_tree(old, "manifest.json");
}

OutputLock::OutputLock(const std::string& final_dir) {
  // The output's parent may not exist yet (output.dir: runs/new/merged): create it, as the job
  // creates <dir>.partial's.
  const std::string path = final_dir + ".lock";
  if (const auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) make_directories(path.substr(0, slash));
  lock_ = std::make_unique<LockFile>(path, LockOptions::from_environment());
  if (!lock_->held())
    fail("output.dir '", final_dir, "' is being written by another recall job (", lock_->holder(), "; lock file '",
         path, "')\n---> HINT: wait for that job; a lock whose holder died is taken over once its heartbeat is 10 "
         "minutes old, or at once on the holder's host");
}

OutputLock::~OutputLock() = default;

const std::string& OutputLock::takeover() const { return lock_->takeover(); }

}  // namespace recall
