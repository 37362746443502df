// Sample files that are not files: a directory (`data: /data/` by mistake) or a FIFO is named as
// what it is by the reader and by preflight's count, not reported as "holds no sample".
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "recall/pipeline/preflight.h"
#include "recall/text/samples.h"
#include "testing_files.h"

using namespace recall;
using recall::testing::expect_error;
using recall::testing::TempDir;
using recall::testing::write_bytes;

TEST(SampleFiles, ADirectoryIsNamedAsADirectory) {
  TempDir dir;
  write_bytes(dir.file("a.jsonl"), "{\"input_ids\": [1, 2]}\n");
  const std::vector<std::string> expected = {"sample file '" + dir.path() + "' is a directory",
                                             "expected a JSON-lines file"};
  expect_error([&] { read_samples(dir.path()); }, expected);
  expect_error([&] { count_jsonl_lines(dir.path()); }, expected);
  EXPECT_EQ(read_samples(dir.file("a.jsonl")).size(), 1u);
  EXPECT_EQ(count_jsonl_lines(dir.file("a.jsonl")), 1);
}

TEST(SampleFiles, AFifoOrAMissingFileIsNamed) {
  TempDir dir;
  ASSERT_EQ(::mkfifo(dir.file("pipe").c_str(), 0644), 0);  // reading it would wait for a writer
  expect_error([&] { read_samples(dir.file("pipe")); }, {dir.file("pipe"), "is not a regular file"});
  expect_error([&] { count_jsonl_lines(dir.file("absent.jsonl")); },
               {"cannot open sample file '" + dir.file("absent.jsonl") + "'", "No such file or directory"});
}
