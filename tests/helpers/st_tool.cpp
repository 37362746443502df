// st_tool: a test helper that exposes the safetensors reader and writer to the Python interop
// tests.
//   st_tool dump PATH                            PATH: a .safetensors file or a model directory;
//                                                prints {name: {dtype, shape, values}} as JSON
//   st_tool copy IN OUT_DIR [--shard-bytes N]    rewrites every tensor of IN with recall's writer
// Non-finite values are printed as NaN / Infinity / -Infinity (Python's json module reads them).
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "recall/io/checkpoint.h"
#include "recall/io/safetensors.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace {

using namespace recall;

constexpr const char* kUsage =
    "usage: st_tool dump PATH\n"
    "       st_tool copy IN OUT_DIR [--shard-bytes N]\n";

void print_float(float v) {
  if (std::isnan(v)) std::fputs("NaN", stdout);
  else if (std::isinf(v)) std::fputs(v > 0 ? "Infinity" : "-Infinity", stdout);
  else if (v == 0.0f && std::signbit(v)) std::fputs("-0.0", stdout);  // "-0" parses as int 0
  else std::printf("%.9g", static_cast<double>(v));
}

int dump_checkpoint(const std::string& path) {
  const Checkpoint ckpt = Checkpoint::open(path);
  std::fputs("{", stdout);
  bool first = true;
  for (const auto& [name, e] : ckpt.entries()) {
    std::printf("%s\n  %s: {\"dtype\": \"%s\", \"shape\": %s, \"values\": [", first ? "" : ",",
                nlohmann::json(name).dump().c_str(), std::string(dtype_name(e.info->dtype)).c_str(),
                nlohmann::json(e.info->shape).dump().c_str());
    first = false;
    const std::vector<float> values = ckpt.read_float(name);
    for (size_t i = 0; i < values.size(); ++i) {
      if (i) std::fputs(", ", stdout);
      print_float(values[i]);
    }
    std::fputs("]}", stdout);
  }
  std::fputs("\n}\n", stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int copy_checkpoint(const std::string& in, const std::string& out_dir, uint64_t shard_bytes) {
  const Checkpoint ckpt = Checkpoint::open(in);
  // Keep each file's layout order (by offset), files in the checkpoint's order.
  std::vector<TensorData> tensors;
  for (const auto& file : ckpt.files())
    for (const TensorInfo& t : file->tensors()) {
      TensorData d{{t.name, t.dtype, t.shape}, std::vector<uint8_t>(t.nbytes())};
      if (t.nbytes()) std::memcpy(d.bytes.data(), file->data(t), t.nbytes());
      tensors.push_back(std::move(d));
    }
  make_directories(out_dir);
  for (const std::string& name : write_safetensors_model(out_dir, tensors, shard_bytes))
    std::cout << join_path(out_dir, name) << "\n";
  return 0;
}

uint64_t parse_u64(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end || errno || s[0] == '-') fail("--shard-bytes: '", s, "' is not a byte count");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 2 && args[0] == "dump") return dump_checkpoint(args[1]);
    if (args.size() == 3 && args[0] == "copy") return copy_checkpoint(args[1], args[2], 0);
    if (args.size() == 5 && args[0] == "copy" && args[3] == "--shard-bytes")
      return copy_checkpoint(args[1], args[2], parse_u64(args[4]));
    std::cerr << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "st_tool: error: " << e.what() << "\n";
    return 1;
  }
}
