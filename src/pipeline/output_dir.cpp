// The output directory of a merge job: job key, .partial, progress, commit (see output_dir.h).
#include "recall/pipeline/output_dir.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "recall/util/checksum.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

namespace {

constexpr const char* kKeyFile = "job.key";
constexpr const char* kProgressFile = "progress.txt";

void append_lines(const std::string& path, const std::string& lines) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("cannot append to '", path, "'");
  const bool ok = std::fputs(lines.c_str(), f) >= 0 && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail("cannot append to '", path, "' (disk full?)");
}

}  // namespace

std::string job_key(MergeConfig cfg, const MergeInputs& in) {
  cfg.output.overwrite = false;
  cfg.output.checkpoint_bytes = 0;  // how often progress is saved does not change the result
  std::string text = to_yaml(cfg);
  for (const ModelDir& m : in.models)
    for (const Checkpoint* ckpt : {&m.checkpoint, m.lora ? &m.lora->checkpoint() : nullptr}) {
      if (!ckpt) continue;
      for (const auto& f : ckpt->files()) {
        const int64_t mtime = modification_time_ns(f->path());
        text += f->path() + "\t" + std::to_string(f->file_size()) + "\t" + std::to_string(mtime) + "\n";
      }
    }
  return checksum_hex(xxh3_64(text.data(), text.size())) + "\n";
}

OutputDir::OutputDir(std::string final_dir) : final_(std::move(final_dir)), partial_(final_ + ".partial") {}

std::string OutputDir::h5() const { return join_path(partial_, "merged.h5"); }
std::string OutputDir::hf() const { return join_path(partial_, "hf"); }
std::string OutputDir::recall_state() const { return join_path(partial_, "recall_state.json"); }
std::string OutputDir::file(const std::string& name) const { return join_path(partial_, name); }

bool OutputDir::prepare(const std::string& key, bool fresh) const {
  const std::string key_path = file(kKeyFile);
  if (!fresh && path_exists(key_path) && read_text_file(key_path) == key) return true;
  remove_tree(partial_);
  make_directories(hf());
  write_file_atomic(key_path, key);
  return false;
}

std::set<std::string> OutputDir::merged_tensors() const {
  std::set<std::string> done;
  const std::string path = file(kProgressFile);
  if (!path_exists(path) || !path_exists(h5())) return done;
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

void OutputDir::commit() const {
  const std::string old = final_ + ".old";
  if (path_exists(final_)) {
    remove_tree(old);
    rename_path(final_, old);
  }
  rename_path(partial_, final_);
  remove_tree(old);
}

}  // namespace recall
