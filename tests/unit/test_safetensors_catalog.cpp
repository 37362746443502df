// The safetensors catalog: broken files built byte by byte, each asserting that the error names
// the file and the problem; good files (zero-size tensors, every dtype, metadata, padding);
// the atomic and sharded writers; and Checkpoint over an index with every way it can be wrong.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "recall/io/checkpoint.h"
#include "recall/io/safetensors.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using namespace recall;
using recall::testing::expect_error;
using recall::testing::safetensors_bytes;
using recall::testing::TempDir;
using recall::testing::write_bytes;

namespace {

// Writes a file from header text and a data buffer of `data_bytes` zero bytes; returns its path.
std::string make_file(const TempDir& dir, const std::string& name, const std::string& header,
                      size_t data_bytes) {
  const std::string path = dir.file(name);
  write_bytes(path, safetensors_bytes(header, std::string(data_bytes, '\0')));
  return path;
}

// Opening `header` + `data_bytes` must fail naming the file and every fragment.
void expect_open_error(const std::string& header, size_t data_bytes,
                       std::initializer_list<std::string> fragments) {
  TempDir dir;
  const std::string path = make_file(dir, "bad.safetensors", header, data_bytes);
  std::vector<std::string> all = {path};
  all.insert(all.end(), fragments.begin(), fragments.end());
  expect_error([&] { SafetensorsFile::open(path); }, all);
}

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + 37 * i);
  return v;
}

TensorData tensor(const std::string& name, DType dt, std::vector<int64_t> shape, uint8_t seed = 1) {
  TensorData t{{name, dt, std::move(shape)}, {}};
  t.bytes = pattern_bytes(t.spec.nbytes(), seed);
  return t;
}

}  // namespace

// ---- the catalog of broken files ----------------------------------------------------------------

TEST(SafetensorsCatalog, FileShorterThanEightBytes) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  write_bytes(path, std::string("\x05\x00\x00", 3));
  expect_error([&] { SafetensorsFile::open(path); },
               {path, "3 bytes", "too short for the 8-byte header length"});
}

TEST(SafetensorsCatalog, EmptyFile) {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  write_bytes(path, "");
  expect_error([&] { SafetensorsFile::open(path); }, {path, "0 bytes", "too short"});
}

TEST(SafetensorsCatalog, HeaderLengthPastFileEnd) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, safetensors_bytes("{}", "", /*declared_len=*/1000));
  expect_error([&] { SafetensorsFile::open(path); },
               {path, "header length 1000 is larger than the file (10 bytes)"});
}

TEST(SafetensorsCatalog, HugeHeaderLengthDoesNotOverflow) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, safetensors_bytes("{}", "", /*declared_len=*/UINT64_MAX - 3));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "not a safetensors file"});
}

// A file that is not safetensors at all (here a password file): its first 8 bytes are no plausible
// header length, and the error says so without printing them as a number.
TEST(SafetensorsCatalog, NotSafetensorsQuotesNoBytes) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::string secret = "root:$6$Zq8.secret:19000:0:99999:7:::\n";
  write_bytes(path, secret);
  uint64_t as_length = 0;
  for (int i = 7; i >= 0; --i) as_length = (as_length << 8) | static_cast<unsigned char>(secret[i]);
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened a file that is not safetensors";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("not a safetensors file"), std::string::npos) << msg;
    EXPECT_EQ(msg.find(std::to_string(as_length)), std::string::npos) << msg;
    EXPECT_EQ(msg.find("root"), std::string::npos) << msg;
  }
}

// nlohmann's parse errors quote the token they stopped at ("last read: '...'"); ours do not.
TEST(SafetensorsCatalog, HeaderNotJsonQuotesNoBytes) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  write_bytes(path, safetensors_bytes("{hunter2secret}", ""));
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened a header that is not JSON";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("header is not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("line 1, column 2"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("last read"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("hunter"), std::string::npos) << msg;
  }
}

TEST(SafetensorsCatalog, HeaderLengthTooShort) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, safetensors_bytes("", "abcd"));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header length 0"});
}

TEST(SafetensorsCatalog, HeaderNotJson) {
  expect_open_error("{\"a\": {\"dtype\": \"F32\",", 0, {"header is not valid JSON"});
  expect_open_error("{not json at all}", 0, {"header is not valid JSON"});
}

TEST(SafetensorsCatalog, HeaderNotAnObject) {
  expect_open_error("[1, 2, 3]", 0, {"header is not a JSON object"});
  // The pure parser says the same without the first-byte shortcut.
  expect_error([] { parse_safetensors_header("[1, 2, 3]", 0, "x.safetensors"); },
               {"x.safetensors", "header is not a JSON object"});
  expect_error([] { parse_safetensors_header("\"text\"", 0, "x.safetensors"); },
               {"x.safetensors", "header is not a JSON object"});
}

TEST(SafetensorsCatalog, EntryNotAnObject) {
  expect_open_error(R"({"a": [1, 2]})", 0, {"tensor 'a'", "entry is not a JSON object"});
}

TEST(SafetensorsCatalog, MissingDataOffsets) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2]}})", 8,
                    {"tensor 'w'", "missing 'data_offsets'"});
}

TEST(SafetensorsCatalog, MissingDtypeOrShape) {
  expect_open_error(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "missing 'dtype'"});
  expect_open_error(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "missing 'shape'"});
}

TEST(SafetensorsCatalog, MalformedDataOffsets) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", 8,
                    {"tensor 'w'", "'data_offsets' must be two non-negative integers"});
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8,
                    {"tensor 'w'", "'data_offsets' must be two non-negative integers", "[-8,0]"});
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}})", 8,
                    {"tensor 'w'", "'data_offsets' must be two non-negative integers"});
}

TEST(SafetensorsCatalog, ReversedOffsets) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8,
                    {"tensor 'w'", "'data_offsets' are reversed: begin 8 > end 0"});
}

TEST(SafetensorsCatalog, OffsetsPastTheEnd) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8,
                    {"tensor 'w'", "data_offsets [0, 16] run past the end of the data buffer (8 bytes"});
}

TEST(SafetensorsCatalog, OverlappingTensors) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                    12, {"tensor 'b' overlaps the previous tensor: begins at 4, previous ends at 8"});
  // Two tensors sharing the same bytes.
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                    8, {"overlaps the previous tensor"});
}

TEST(SafetensorsCatalog, GapInTheBuffer) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                    12, {"gap in the data buffer: bytes [4, 8) belong to no tensor (before 'b')"});
  // A gap at the start.
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8,
                    {"gap in the data buffer: bytes [0, 4)"});
}

TEST(SafetensorsCatalog, TrailingBytesAfterLastTensor) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12,
                    {"data buffer has 12 bytes but the tensors cover 4"});
}

TEST(SafetensorsCatalog, SizeNotMatchingShapeTimesDtype) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", 16,
                    {"tensor 'w'", "size does not match shape x dtype: expected 12 bytes for [3] F32, got 16"});
  expect_open_error(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 6]}})", 6,
                    {"tensor 'w'", "expected 12 bytes for [2, 3] BF16, got 6"});
}

TEST(SafetensorsCatalog, UnknownDtype) {
  expect_open_error(R"({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})", 1,
                    {"tensor 'w'", "unknown dtype 'F4'", "supported: BOOL, U8", "F8_E5M2"});
  expect_open_error(R"({"w": {"dtype": 7, "shape": [2], "data_offsets": [0, 1]}})", 1,
                    {"tensor 'w'", "'dtype' is not a string"});
}

TEST(SafetensorsCatalog, NegativeShape) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 0]}})", 0,
                    {"tensor 'w'", "negative dimension -1"});
}

TEST(SafetensorsCatalog, NonIntegerShape) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "non-integer dimension 2.5"});
  expect_open_error(R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})", 16,
                    {"tensor 'w'", "'shape' is not an array"});
}

TEST(SafetensorsCatalog, OverflowingShape) {
  // 2^32 * 2^32 elements overflows the 64-bit element count.
  expect_open_error(
      R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0,
      {"tensor 'w'", "overflows 64-bit element count"});
  // 2^62 elements fit, but 2^62 x 8 bytes does not.
  expect_open_error(
      R"({"w": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0,
      {"tensor 'w'", "overflows 64-bit byte count"});
  // A dimension above INT64_MAX.
  expect_open_error(
      R"({"w": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]}})", 0,
      {"tensor 'w'", "overflows"});
}

TEST(SafetensorsCatalog, DuplicateNames) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                    8, {"duplicate tensor name 'a'"});
}

TEST(SafetensorsCatalog, NonStringMetadata) {
  expect_open_error(R"({"__metadata__": {"format": "pt", "step": 3}})", 0,
                    {"'__metadata__' value for 'step' is not a string: 3"});
  expect_open_error(R"({"__metadata__": ["format", "pt"]})", 0,
                    {"'__metadata__' is not an object of strings"});
}

TEST(SafetensorsCatalog, TruncatedData) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto t = tensor("w", DType::F32, {4, 4});
  write_safetensors_model(dir.path(), {t}, 0);
  const uint64_t full = file_size_of(path);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(full - 20)), 0);
  expect_error([&] { SafetensorsFile::open(path); },
               {path, "tensor 'w'", "run past the end of the data buffer", "truncated"});
}

TEST(SafetensorsCatalog, TruncatedInsideHeader) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors_model(dir.path(), {tensor("w", DType::F32, {4})}, 0);
  ASSERT_EQ(::truncate(path.c_str(), 20), 0);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "is larger than the file (20 bytes)"});
}

TEST(SafetensorsCatalog, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.safetensors");
  expect_error([&] { SafetensorsFile::open(path); }, {path, "cannot open", "No such file"});
}

TEST(SafetensorsCatalog, ErrorsAreRecallErrorsForEveryPrefixOfAGoodFile) {
  // Every truncation of a valid file is refused with a recall::Error, never a crash.
  TempDir dir;
  const std::string good = dir.file("model.safetensors");
  write_safetensors_model(dir.path(), {tensor("a", DType::BF16, {3, 5}), tensor("b", DType::U8, {7})}, 0);
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string path = dir.file("cut.safetensors");
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(path, bytes.substr(0, n));
    EXPECT_THROW(SafetensorsFile::open(path), Error) << "prefix of " << n << " bytes";
  }
  write_bytes(path, bytes);
  EXPECT_NO_THROW(SafetensorsFile::open(path));
}

// ---- good files ---------------------------------------------------------------------------------

TEST(SafetensorsGood, ZeroSizeAndScalarTensors) {
  TempDir dir;
  const std::string path = make_file(dir, "z.safetensors",
                                     R"({"empty": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
                                         "empty2": {"dtype": "BF16", "shape": [3, 0], "data_offsets": [0, 0]},
                                         "scalar": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
                                         "tail": {"dtype": "I64", "shape": [0, 2], "data_offsets": [4, 4]}})",
                                     4);
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->at("empty").nbytes(), 0u);
  EXPECT_EQ(f->at("empty2").shape, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(f->at("scalar").numel(), 1u);
  EXPECT_TRUE(f->at("scalar").shape.empty());
  EXPECT_EQ(f->at("tail").begin, 4u);
  // A file with no tensors at all is valid too.
  const std::string none = make_file(dir, "none.safetensors", R"({"__metadata__": {"format": "pt"}})", 0);
  EXPECT_TRUE(SafetensorsFile::open(none)->tensors().empty());
  // Zero-size tensors round-trip through the writer.
  TempDir out;
  write_safetensors_model(out.path(), {tensor("e", DType::F16, {0, 4}), tensor("s", DType::F64, {}),
                                       tensor("e2", DType::U8, {0})}, 0);
  Checkpoint c = Checkpoint::open(out.path());
  EXPECT_EQ(c.entries().size(), 3u);
  EXPECT_TRUE(c.read_float("e").empty());
  EXPECT_EQ(c.read_float("s").size(), 1u);
}

TEST(SafetensorsGood, EveryDtypeRoundTrips) {
  TempDir dir;
  std::vector<TensorData> tensors;
  uint8_t seed = 3;
  for (DType t : kAllDTypes)
    tensors.push_back(tensor("t." + std::string(dtype_name(t)), t, {2, 3}, seed += 11));
  write_safetensors_model(dir.path(), tensors, 0);
  auto f = SafetensorsFile::open(dir.file("model.safetensors"));
  ASSERT_EQ(f->tensors().size(), std::size(kAllDTypes));
  for (const TensorData& t : tensors) {
    const TensorInfo& info = f->at(t.spec.name);
    EXPECT_EQ(info.dtype, t.spec.dtype) << t.spec.name;
    EXPECT_EQ(info.shape, t.spec.shape) << t.spec.name;
    ASSERT_EQ(info.nbytes(), t.bytes.size()) << t.spec.name;
    EXPECT_EQ(std::memcmp(f->data(info), t.bytes.data(), t.bytes.size()), 0) << t.spec.name;
    std::vector<uint8_t> copy(t.bytes.size());
    f->read(info, 0, copy.size(), copy.data());
    EXPECT_EQ(copy, t.bytes) << t.spec.name;
  }
  // Decoding agrees with the scalar decoders for a few dtypes.
  Checkpoint c = Checkpoint::open(dir.file("model.safetensors"));
  const TensorData& bf = tensors[static_cast<size_t>(DType::BF16)];
  const auto vals = c.read_float(bf.spec.name);
  for (size_t i = 0; i < vals.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &bf.bytes[2 * i], 2);
    const float want = bf16_to_float(bits);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(vals[i]));
    else EXPECT_EQ(vals[i], want);
  }
  const TensorData& i16 = tensors[static_cast<size_t>(DType::I16)];
  const auto ivals = c.read_float(i16.spec.name);
  int16_t first;
  std::memcpy(&first, i16.bytes.data(), 2);
  EXPECT_EQ(ivals[0], static_cast<float>(first));
}

TEST(SafetensorsGood, MetadataReadBack) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  {
    SafetensorsWriter w(path, {{"x", DType::F32, {1}}}, {{"step", "1200"}, {"note", "héllo \"q\""}});
    const float v = 1.5f;
    w.write("x", &v, 4);
    w.commit();
  }
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "pt");  // added by the writer
  EXPECT_EQ(f->metadata().at("step"), "1200");
  EXPECT_EQ(f->metadata().at("note"), "héllo \"q\"");
  // An explicit format is kept.
  const std::string path2 = dir.file("m2.safetensors");
  {
    SafetensorsWriter w(path2, {}, {{"format", "np"}});
    w.commit();
  }
  EXPECT_EQ(SafetensorsFile::open(path2)->metadata().at("format"), "np");
}

TEST(SafetensorsGood, HeaderPaddedToEightBytes) {
  TempDir dir;
  // Names of different lengths make different raw header lengths; all must be padded.
  for (int len = 1; len <= 9; ++len) {
    const std::string path = dir.file("p" + std::to_string(len) + ".safetensors");
    SafetensorsWriter w(path, {{std::string(static_cast<size_t>(len), 'n'), DType::U8, {3}}});
    const uint8_t b[3] = {1, 2, 3};
    w.write(std::string(static_cast<size_t>(len), 'n'), b, 3);
    w.commit();
    auto f = SafetensorsFile::open(path);
    EXPECT_EQ(f->data_start() % 8, 0u) << "name length " << len;
    EXPECT_EQ(f->file_size(), f->data_start() + 3);
    EXPECT_EQ(f->data(f->at(std::string(static_cast<size_t>(len), 'n')))[2], 3);
  }
}

TEST(SafetensorsGood, PartialWritesAtOffsets) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  SafetensorsWriter w(path, {{"a", DType::F32, {4}}, {"b", DType::U8, {2}}});
  const float hi[2] = {3.f, 4.f}, lo[2] = {1.f, 2.f};
  w.write("a", hi, 8, 8);
  w.write("a", lo, 8, 0);
  const uint8_t b[2] = {9, 8};
  w.write("b", b, 2);
  expect_error([&] { w.write("a", hi, 8, 12); }, {path, "overflow tensor 'a'"});
  expect_error([&] { w.write("c", hi, 4); }, {path, "tensor 'c' is not in the header"});
  w.commit();
  Checkpoint c = Checkpoint::open(path);
  EXPECT_EQ(c.read_float("a"), (std::vector<float>{1, 2, 3, 4}));
}

TEST(SafetensorsGood, ConcurrentFirstAccessSharesOneMapping) {
  TempDir dir;
  write_safetensors_model(dir.path(), {tensor("a", DType::F32, {64}, 5), tensor("b", DType::U8, {9}, 6)}, 0);
  for (int round = 0; round < 20; ++round) {
    auto f = SafetensorsFile::open(dir.file("model.safetensors"));
    std::vector<const uint8_t*> seen(8);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < seen.size(); ++i)
      threads.emplace_back([&, i] { seen[i] = f->data(f->at("a")); });
    for (auto& th : threads) th.join();
    for (const uint8_t* p : seen) ASSERT_EQ(p, seen[0]);
    EXPECT_EQ(f->data(f->at("b")), seen[0] + 256);
  }
}

TEST(SafetensorsWriter, RefusesIncompleteTensorsAndLeavesNoTempFile) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {4}}, {"b", DType::F32, {2}}});
    const float v[4] = {1, 2, 3, 4};
    w.write("a", v, 16);
    w.write("b", v, 4);  // half of b
    EXPECT_EQ(dir.list().size(), 1u);  // the temporary file, not the final name
    EXPECT_FALSE(path_exists(path));
    expect_error([&] { w.commit(); }, {path, "tensor 'b' got 4 of 8 bytes"});
  }
  EXPECT_TRUE(dir.list().empty()) << "left behind: " << dir.list().front();
  // A writer destroyed without commit also leaves nothing.
  { SafetensorsWriter w(path, {{"a", DType::F32, {4}}}); }
  EXPECT_TRUE(dir.list().empty());
}

TEST(SafetensorsWriter, RefusesDuplicateAndNegativeSpecs) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  expect_error([&] { SafetensorsWriter w(path, {{"a", DType::F32, {1}}, {"a", DType::F32, {1}}}); },
               {path, "duplicate tensor name 'a'"});
  expect_error([&] { SafetensorsWriter w(path, {{"n", DType::F32, {2, -3}}}); },
               {"tensor 'n'", "negative dimension"});
  EXPECT_TRUE(dir.list().empty());
  expect_error([&] { write_safetensors_model(dir.path(), {TensorData{{"t", DType::F32, {3}}, {1, 2}}}, 0); },
               {dir.path(), "tensor 't' has 2 bytes, its shape needs 12"});
}

// ---- sharding and the index ---------------------------------------------------------------------

TEST(SafetensorsShards, PlanShards) {
  auto spec = [](const char* n, int64_t floats) { return TensorSpec{n, DType::F32, {floats}}; };
  const std::vector<TensorSpec> specs = {spec("a", 4), spec("b", 4), spec("c", 4), spec("d", 4)};
  EXPECT_EQ(plan_shards(specs, 32), (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(plan_shards(specs, 40), (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(plan_shards(specs, 48), (std::vector<std::vector<size_t>>{{0, 1, 2}, {3}}));
  EXPECT_EQ(plan_shards(specs, 0), (std::vector<std::vector<size_t>>{{0, 1, 2, 3}}));
  EXPECT_EQ(plan_shards(specs, 1u << 20), (std::vector<std::vector<size_t>>{{0, 1, 2, 3}}));
  // A tensor larger than the limit gets a shard of its own.
  const std::vector<TensorSpec> big = {spec("a", 4), spec("huge", 100), spec("c", 4)};
  EXPECT_EQ(plan_shards(big, 40), (std::vector<std::vector<size_t>>{{0}, {1}, {2}}));
  EXPECT_EQ(plan_shards({}, 40).size(), 1u);
}

TEST(SafetensorsShards, ShardNames) {
  EXPECT_EQ(shard_file_name(0, 1), "model.safetensors");
  EXPECT_EQ(shard_file_name(0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(2, 3), "model-00003-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(29, 30), "model-00030-of-00030.safetensors");
}

TEST(SafetensorsShards, ShardedWriterIndexAndCheckpoint) {
  TempDir dir;
  std::vector<TensorData> tensors = {
      tensor("model.embed_tokens.weight", DType::BF16, {16, 8}, 1),  // 256 bytes
      tensor("model.layers.0.mlp.up_proj.weight", DType::F32, {8, 8}, 2),  // 256
      tensor("model.layers.0.input_layernorm.weight", DType::F32, {8}, 3),  // 32
      tensor("model.norm.weight", DType::F16, {8}, 4),  // 16
      tensor("lm_head.weight", DType::BF16, {16, 8}, 5),  // 256
  };
  const auto names = write_safetensors_model(dir.path(), tensors, 300);
  EXPECT_EQ(names, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                             "model-00002-of-00003.safetensors",
                                             "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                  "model-00002-of-00003.safetensors",
                                                  "model-00003-of-00003.safetensors",
                                                  "model.safetensors.index.json"}));
  const auto index = nlohmann::json::parse(read_text_file(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 256u + 256 + 32 + 16 + 256);
  EXPECT_EQ(index["weight_map"].size(), 5u);
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.up_proj.weight"], "model-00002-of-00003.safetensors");
  // 256 + 32 fit under 300 bytes; the next 16 do not.
  EXPECT_EQ(index["weight_map"]["model.layers.0.input_layernorm.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");

  Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_TRUE(c.sharded());
  EXPECT_EQ(c.files().size(), 3u);
  EXPECT_EQ(c.entries().size(), 5u);
  EXPECT_EQ(c.total_bytes(), 816u);
  EXPECT_EQ(c.bytes_by_dtype().at(DType::BF16), 512u);
  for (const TensorData& t : tensors) {
    const auto& e = c.at(t.spec.name);
    EXPECT_EQ(std::memcmp(e.file->data(*e.info), t.bytes.data(), t.bytes.size()), 0) << t.spec.name;
  }
  expect_error([&] { c.at("nope"); }, {dir.path(), "missing tensor 'nope'"});
  // Every shard carries {"format": "pt"}.
  for (const auto& f : c.files()) EXPECT_EQ(f->metadata().at("format"), "pt");
}

namespace {

// Two shards written directly (a, b in shard 1; c in shard 2), then an index written by hand.
struct IndexFixture {
  TempDir dir;
  IndexFixture() {
    for (auto [file, names] : {std::pair<const char*, std::vector<std::string>>{"s1.safetensors", {"a", "b"}},
                               {"s2.safetensors", {"c"}}}) {
      std::vector<TensorSpec> specs;
      for (const auto& n : names) specs.push_back({n, DType::F32, {2}});
      SafetensorsWriter w(dir.file(file), specs);
      const float v[2] = {1, 2};
      for (const auto& n : names) w.write(n, v, 8);
      w.commit();
    }
  }
  std::string index(const std::string& weight_map_json) {
    const std::string path = dir.file("model.safetensors.index.json");
    write_bytes(path, R"({"metadata": {"total_size": 24}, "weight_map": )" + weight_map_json + "}");
    return path;
  }
};

}  // namespace

TEST(CheckpointIndex, ValidHandWrittenIndex) {
  IndexFixture fx;
  fx.index(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"})");
  Checkpoint c = Checkpoint::open(fx.dir.path());
  EXPECT_EQ(c.entries().size(), 3u);
  EXPECT_EQ(c.at("c").file->path(), fx.dir.file("s2.safetensors"));
  EXPECT_EQ(c.read_float("b"), (std::vector<float>{1, 2}));
}

TEST(CheckpointIndex, IndexNamesAMissingShard) {
  IndexFixture fx;
  const auto idx = fx.index(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); },
               {idx, "lists shard 's3.safetensors', which does not exist"});
}

TEST(CheckpointIndex, IndexPlacesATensorInAShardThatLacksIt) {
  IndexFixture fx;
  const auto idx = fx.index(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); },
               {idx, "places tensor 'c' in 's1.safetensors', but that shard has no such tensor"});
}

TEST(CheckpointIndex, ShardHoldsATensorTheIndexDoesNotList) {
  IndexFixture fx;
  const auto idx = fx.index(R"({"a": "s1.safetensors", "c": "s2.safetensors"})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); },
               {fx.dir.file("s1.safetensors"), "holds tensor 'b'", "does not list", idx});
}

TEST(CheckpointIndex, IndexNotJson) {
  IndexFixture fx;
  const std::string path = fx.dir.file("model.safetensors.index.json");
  write_bytes(path, R"({"weight_map": {"a": "s1.safetensors",)");
  expect_error([&] { Checkpoint::open(fx.dir.path()); }, {path, "not valid JSON"});
  write_bytes(path, "[]");
  expect_error([&] { Checkpoint::open(fx.dir.path()); }, {path, "not a JSON object"});
  write_bytes(path, R"({"metadata": {}})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); }, {path, "missing 'weight_map'"});
  write_bytes(path, R"({"weight_map": {}})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); }, {path, "'weight_map' lists no tensors"});
  write_bytes(path, R"({"weight_map": {"a": 3}})");
  expect_error([&] { Checkpoint::open(fx.dir.path()); },
               {path, "'weight_map' entry for 'a' is not a file name: 3"});
}

TEST(CheckpointIndex, ShardNameWithDirectories) {
  IndexFixture fx;
  for (const char* bad : {"../s1.safetensors", "sub/s1.safetensors", "/etc/passwd", "..", ".", ""}) {
    const auto idx = fx.index(std::string(R"({"a": ")") + bad + R"("})");
    expect_error([&] { Checkpoint::open(fx.dir.path()); },
                 {idx, std::string("names '") + bad + "', which is not a plain file name"});
  }
  // The pure parser says the same.
  expect_error([] { parse_safetensors_index(R"({"weight_map": {"x": "a/../b"}})", "idx.json"); },
               {"idx.json", "not a plain file name"});
}

TEST(CheckpointIndex, CorruptShardIsNamed) {
  IndexFixture fx;
  fx.index(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"})");
  ASSERT_EQ(::truncate(fx.dir.file("s2.safetensors").c_str(), 30), 0);
  expect_error([&] { Checkpoint::open(fx.dir.path()); }, {fx.dir.file("s2.safetensors")});
}

TEST(CheckpointOpen, PickledOnlyDirectoryIsRefused) {
  TempDir dir;
  write_bytes(dir.file("pytorch_model.bin"), "PK\x03\x04 not really a pickle");
  expect_error([&] { Checkpoint::open(dir.path()); },
               {dir.path(), "holds only a pickled checkpoint ('pytorch_model.bin')", "never loads pickles"});
}

TEST(CheckpointOpen, EmptyOrMissingDirectory) {
  TempDir dir;
  expect_error([&] { Checkpoint::open(dir.path()); },
               {dir.path(), "has neither model.safetensors nor model.safetensors.index.json"});
  expect_error([&] { Checkpoint::open(dir.file("absent")); }, {dir.file("absent"), "does not exist"});
}

TEST(CheckpointOpen, SingleFileAndSingleFileDirectory) {
  TempDir dir;
  write_safetensors_model(dir.path(), {tensor("w", DType::F32, {2, 2})}, 0);
  Checkpoint by_dir = Checkpoint::open(dir.path());
  Checkpoint by_file = Checkpoint::open(dir.file("model.safetensors"));
  EXPECT_FALSE(by_dir.sharded());
  EXPECT_EQ(by_dir.entries().size(), 1u);
  EXPECT_EQ(by_file.entries().size(), 1u);
  EXPECT_EQ(by_dir.read_float("w"), by_file.read_float("w"));
}

TEST(FsHelpers, MakeDirectoriesAndAtomicWrite) {
  TempDir dir;
  const std::string deep = dir.file("a/b/c");
  make_directories(deep);
  make_directories(deep);  // existing: fine
  EXPECT_TRUE(is_directory(deep));
  write_file_atomic(join_path(deep, "x.txt"), "hello");
  EXPECT_EQ(read_text_file(join_path(deep, "x.txt")), "hello");
  write_bytes(dir.file("plain"), "x");
  expect_error([&] { make_directories(dir.file("plain/sub")); }, {dir.file("plain/sub")});
  expect_error([&] { read_text_file(dir.file("absent.txt")); }, {dir.file("absent.txt")});
}
