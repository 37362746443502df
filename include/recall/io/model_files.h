// The files recall reads next to a model's weights (config.json, the safetensors index and shards,
// tokenizer and generation files, adapter files), checked before a byte is read: only regular files
// that resolve inside the model directory, or, for a Hugging Face hub snapshot
// (<cache>/models--<org>--<name>/snapshots/<revision>/, whose files link to ../../blobs/), inside
// that repository's blobs/. A link elsewhere (merges.txt -> /etc/shadow) is refused, so no copy
// into an export and no error message can carry the bytes of a file outside the model.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace recall {

// The path of `name` (a plain file name) in model directory `dir` once checked; nullopt when there
// is no such file. Throws naming the file when it is not a regular file (a directory, a FIFO, a
// dangling link) or resolves outside the directory (and its snapshot's blobs/).
std::optional<std::string> find_model_file(const std::string& dir, const std::string& name);
// As find_model_file, but a missing file is an error too ("'<dir>/<name>' does not exist").
std::string model_file(const std::string& dir, const std::string& name);

// The files an export carries over from the reference model when they exist: tokenizer files,
// generation_config.json, the chat template.
const std::vector<std::string>& side_file_names();

// Copies the side files (tokenizer, generation config, chat template: side_file_names()) that exist
// in model_dir into out_dir, each only if it is a regular file of the model (find_model_file), with
// no wider permissions than the source's and never world-writable.
std::vector<std::string> copy_side_files(const std::string& model_dir, const std::string& out_dir);

// A JSON parser's message without the input it quotes (nlohmann's "; last read: '...'"): where
// the file stops being JSON and why, never what it holds.
std::string parse_error_text(const std::exception& e);

}  // namespace recall
