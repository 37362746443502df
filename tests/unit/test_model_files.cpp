// Files next to the weights (io/model_files.h): regular files inside the model directory, links
// inside it, and a Hugging Face hub snapshot's links into its repository's blobs/ are read; a link
// out of the directory (merges.txt -> a password file), a dangling link, a directory or a FIFO are
// refused before a byte is read, by the checkpoint, the tokenizer and the export's copy of the side
// files, which never widens permissions. Parse errors quote no input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "recall/io/checkpoint.h"
#include "recall/io/model_files.h"
#include "recall/pipeline/export.h"
#include "recall/text/tokenizer.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using namespace recall;
using recall::testing::expect_error;
using recall::testing::TempDir;
using recall::testing::write_bytes;

namespace {

const char* kSecret = "root:$6$Zq8.secret-hash:19000:0:99999:7:::\n";

void link_to(const std::string& target, const std::string& link) {
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0) << link;
}

void write_one_tensor_model(const std::string& path) {
  TensorData t{{"w", DType::F32, {2}}, std::vector<uint8_t>(8, 0)};
  SafetensorsWriter w(path, {t.spec});
  w.write("w", t.bytes.data(), t.bytes.size());
  w.commit();
}

mode_t mode_of(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Asserts that fn throws an Error that names `fragments` and quotes no byte of the secret.
void expect_refused(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  expect_error(fn, fragments);
  try {
    fn();
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()).find("Zq8"), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ModelFiles, RegularFilesAndLinksInsideAreRead) {
  TempDir dir;
  write_bytes(dir.file("config.json"), "{}");
  ASSERT_EQ(::mkdir(dir.file("real").c_str(), 0755), 0);
  write_bytes(dir.file("real/tok.json"), "{}");
  link_to("real/tok.json", dir.file("tokenizer.json"));
  EXPECT_EQ(find_model_file(dir.path(), "config.json"), dir.file("config.json"));
  EXPECT_EQ(find_model_file(dir.path(), "tokenizer.json"), dir.file("tokenizer.json"));
  EXPECT_EQ(find_model_file(dir.path(), "merges.txt"), std::nullopt);
  expect_error([&] { model_file(dir.path(), "merges.txt"); }, {dir.file("merges.txt"), "does not exist"});
  // The model directory itself may be reached through a link.
  TempDir other;
  link_to(dir.path(), other.file("model"));
  EXPECT_TRUE(find_model_file(other.file("model"), "tokenizer.json"));
}

TEST(ModelFiles, LinkOutOfTheDirectoryIsRefused) {
  TempDir dir, elsewhere;
  write_bytes(elsewhere.file("shadow"), kSecret);
  link_to(elsewhere.file("shadow"), dir.file("merges.txt"));
  expect_refused([&] { find_model_file(dir.path(), "merges.txt"); },
                 {dir.file("merges.txt"), "is a link to '" + elsewhere.file("shadow") + "'",
                  "outside the model directory '" + dir.path() + "'"});
  link_to("../" + elsewhere.path().substr(elsewhere.path().rfind('/') + 1) + "/shadow", dir.file("vocab.json"));
  expect_refused([&] { find_model_file(dir.path(), "vocab.json"); }, {dir.file("vocab.json"), "outside the model"});
}

TEST(ModelFiles, DanglingLinkDirectoryAndFifoAreRefused) {
  TempDir dir;
  link_to("nowhere.json", dir.file("tokenizer.json"));
  expect_error([&] { find_model_file(dir.path(), "tokenizer.json"); },
               {dir.file("tokenizer.json"), "is a link to 'nowhere.json', which does not exist"});
  ASSERT_EQ(::mkdir(dir.file("merges.txt").c_str(), 0755), 0);
  expect_error([&] { find_model_file(dir.path(), "merges.txt"); },
               {dir.file("merges.txt"), "is a directory; expected a regular file"});
  ASSERT_EQ(::mkfifo(dir.file("vocab.json").c_str(), 0644), 0);  // reading it would block forever
  expect_error([&] { find_model_file(dir.path(), "vocab.json"); }, {dir.file("vocab.json"), "is a FIFO"});
}

// The hub cache: <cache>/models--org--name/snapshots/<rev>/<file> -> ../../blobs/<hash>.
TEST(ModelFiles, HuggingFaceSnapshotLinksIntoItsBlobs) {
  TempDir cache;
  const std::string repo = cache.file("models--org--tiny");
  for (const std::string& d : {repo, repo + "/blobs", repo + "/snapshots", repo + "/snapshots/abc123"})
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
  write_one_tensor_model(repo + "/blobs/5f1e");
  write_bytes(repo + "/blobs/77aa", "{}");
  const std::string snap = repo + "/snapshots/abc123";
  link_to("../../blobs/5f1e", snap + "/model.safetensors");
  link_to("../../blobs/77aa", snap + "/tokenizer_config.json");
  const Checkpoint c = Checkpoint::open(snap);
  EXPECT_TRUE(c.find("w"));
  EXPECT_TRUE(find_model_file(snap, "tokenizer_config.json"));
  // A link out of the repository is refused even from a snapshot.
  write_bytes(cache.file("shadow"), kSecret);
  link_to("../../../shadow", snap + "/merges.txt");
  expect_refused([&] { find_model_file(snap, "merges.txt"); }, {snap + "/merges.txt", "outside the model directory"});
  // The same layout outside a models--* repository gets no blobs/ exception.
  const std::string fake = cache.file("fake");
  for (const std::string& d : {fake, fake + "/blobs", fake + "/snapshots", fake + "/snapshots/r"})
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
  write_bytes(fake + "/blobs/1", "{}");
  link_to("../../blobs/1", fake + "/snapshots/r/tokenizer.json");
  expect_error([&] { find_model_file(fake + "/snapshots/r", "tokenizer.json"); }, {"outside the model directory"});
}

TEST(ModelFiles, CheckpointRefusesShardsAndIndexLinkedOut) {
  TempDir dir, elsewhere;
  write_one_tensor_model(elsewhere.file("model.safetensors"));
  link_to(elsewhere.file("model.safetensors"), dir.file("model.safetensors"));
  expect_error([&] { Checkpoint::open(dir.path()); }, {dir.file("model.safetensors"), "outside the model directory"});

  TempDir sharded;
  write_bytes(elsewhere.file("index.json"), R"({"weight_map": {"w": "model-00001-of-00001.safetensors"}})");
  link_to(elsewhere.file("index.json"), sharded.file("model.safetensors.index.json"));
  expect_error([&] { Checkpoint::open(sharded.path()); },
               {sharded.file("model.safetensors.index.json"), "outside the model directory"});
  ::unlink(sharded.file("model.safetensors.index.json").c_str());
  write_bytes(sharded.file("model.safetensors.index.json"), R"({"weight_map": {"w": "model-00001-of-00001.safetensors"}})");
  link_to(elsewhere.file("model.safetensors"), sharded.file("model-00001-of-00001.safetensors"));
  expect_error([&] { Checkpoint::open(sharded.path()); },
               {sharded.file("model-00001-of-00001.safetensors"), "outside the model directory"});
}

TEST(ModelFiles, TokenizerLinkedOutIsRefused) {
  TempDir dir, elsewhere;
  write_bytes(elsewhere.file("shadow"), kSecret);
  link_to(elsewhere.file("shadow"), dir.file("tokenizer.model"));
  expect_refused([&] { Tokenizer::open_model_dir(dir.path()); }, {dir.file("tokenizer.model"), "outside the model"});
}

TEST(ModelFiles, ExportCopiesSideFilesWithoutWideningPermissions) {
  TempDir model, out;
  const mode_t old_umask = ::umask(022);
  write_bytes(model.file("tokenizer.json"), "{\"model\": {}}");
  ASSERT_EQ(::chmod(model.file("tokenizer.json").c_str(), 0600), 0);
  write_bytes(model.file("generation_config.json"), "{}");
  ASSERT_EQ(::chmod(model.file("generation_config.json").c_str(), 0666), 0);
  write_bytes(model.file("notes.txt"), "not a side file");
  const auto copied = copy_side_files(model.path(), out.path());
  ::umask(old_umask);
  EXPECT_EQ(copied, (std::vector<std::string>{"tokenizer.json", "generation_config.json"}));
  EXPECT_EQ(read_text_file(out.file("tokenizer.json")), "{\"model\": {}}");
  EXPECT_EQ(mode_of(out.file("tokenizer.json")), 0600u);          // no wider than the source
  EXPECT_EQ(mode_of(out.file("generation_config.json")), 0644u);  // never world-writable
  EXPECT_EQ(out.list(), (std::vector<std::string>{"generation_config.json", "tokenizer.json"}));
}

TEST(ModelFiles, ExportRefusesASideFileLinkedOut) {
  TempDir model, out, elsewhere;
  write_bytes(model.file("tokenizer.json"), "{}");
  write_bytes(elsewhere.file("shadow"), kSecret);
  link_to(elsewhere.file("shadow"), model.file("merges.txt"));
  expect_refused([&] { copy_side_files(model.path(), out.path()); },
                 {model.file("merges.txt"), "outside the model directory"});
  for (const std::string& f : out.list()) EXPECT_NE(read_text_file(out.file(f)), kSecret) << f;
}

TEST(ModelFiles, ParseErrorsQuoteNoInput) {
  try {
    (void)nlohmann::json::parse("root:$6$Zq8.secret");
    FAIL() << "parsed";
  } catch (const std::exception& e) {
    const std::string text = parse_error_text(e);
    EXPECT_NE(std::string(e.what()).find("last read"), std::string::npos);  // nlohmann quotes the input...
    EXPECT_EQ(text.find("last read"), std::string::npos) << text;         // ...we do not
    EXPECT_EQ(text.find("root"), std::string::npos) << text;
    EXPECT_NE(text.find("line 1, column 1"), std::string::npos) << text;
  }
}
