// Small file-system helpers with errors that name the path: whole-file reads, atomic writes
// (temporary name + fsync + rename), and checked POSIX I/O.
#pragma once

#include <cstdint>
#include <string>

namespace recall {

std::string read_text_file(const std::string& path);
// Writes content to "<path>.tmp.<pid>", fsyncs, renames to path.
void write_file_atomic(const std::string& path, const std::string& content);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size_of(const std::string& path);
// Joins with exactly one '/'.
std::string join_path(const std::string& a, const std::string& b);
// Reads exactly n bytes at offset or throws naming path (short reads mean truncation).
void pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path);
void pwrite_exact(int fd, const void* src, uint64_t n, uint64_t offset, const std::string& path);
// Creates dir and its parents (mkdir -p).
void make_directories(const std::string& dir);
// Copies a file byte for byte (atomically at the destination).
void copy_file(const std::string& from, const std::string& to);

}  // namespace recall
