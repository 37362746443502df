// Small file-system helpers with errors that name the path: whole-file reads, atomic writes
// (temporary name + fsync + rename), and checked POSIX I/O.
#pragma once

#include <cstdint>
#include <string>

namespace recall {

std::string read_text_file(const std::string& path);
// Writes content to "<path>.tmp.<pid>" (created with `mode`, less the umask), fsyncs, renames to path.
void write_file_atomic(const std::string& path, const std::string& content, unsigned mode = 0644);
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
// rm -rf with POSIX calls (nftw). std::filesystem::remove_all must not be used: libtorch 2.11's
// libtorch.so exports its own copies of std::filesystem functions built against a newer
// libstdc++, and remove_all crashes in any binary that links it.
void remove_tree(const std::string& path);
// rename(2) with an error naming both paths.
void rename_path(const std::string& from, const std::string& to);
// Absolute path with symlinks and ".." resolved for the part that exists (realpath), the rest
// appended as written.
std::string resolved_path(const std::string& path);
// Modification time in nanoseconds since the epoch (0 when it cannot be read).
int64_t modification_time_ns(const std::string& path);
// Asks the kernel to start writing back the dirty pages of [offset, offset + n) of fd (n = 0: to
// the end of the file) without waiting (sync_file_range SYNC_FILE_RANGE_WRITE). A hint: errors are
// ignored here and reported by the next fsync.
void start_writeback(int fd, uint64_t offset = 0, uint64_t n = 0);
// Reserves disk blocks for bytes [offset, offset + n) of fd without changing the file's size
// (fallocate FALLOC_FL_KEEP_SIZE), so that later writes there cannot fail for lack of space.
// Returns false when the file system cannot (EOPNOTSUPP: nothing reserved); other errors (ENOSPC,
// EDQUOT, EFBIG) throw naming `path`.
bool reserve_space(int fd, uint64_t offset, uint64_t n, const std::string& path);
// Hands reserved blocks of [offset, offset + n) back without changing the file's size (fallocate
// FALLOC_FL_PUNCH_HOLE); best effort, errors are ignored.
void release_space(int fd, uint64_t offset, uint64_t n);
// Bytes an unprivileged writer may still use on the file system that holds `path`, or would hold
// it: the nearest existing ancestor's (statvfs f_bavail x f_frsize). UINT64_MAX when unknown.
uint64_t free_bytes(const std::string& path);
// Disk blocks used by the files below `path` (or by the file), in bytes; 0 when it does not exist.
uint64_t tree_bytes(const std::string& path);
// fsync(2) of an existing file (flushes its dirty pages written through any descriptor).
void sync_file(const std::string& path);
// Copies a regular file byte for byte (atomically at the destination), with the source's permission
// bits less world-write (and less the umask): a copy is never more open than its source.
void copy_file(const std::string& from, const std::string& to);

}  // namespace recall
