// Sample files that are not files: a directory (`data: /data/` by mistake) or a FIFO is named as
// what it is by the reader and by preflight's count, not reported as "holds no sample".
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "recall/engine/extraction.h"
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

TEST(SampleFiles, ReadOneAtATimeInOrderUntilTheCallerStops) {
  TempDir dir;
  write_bytes(dir.file("d.jsonl"), "{\"input_ids\": [1, 5]}\n\n  \r\n{\"text\": \"hi\"}\n{\"input_ids\": [1]}\n");
  std::vector<int64_t> lines;
  EXPECT_EQ(for_each_sample(dir.file("d.jsonl"), [&](Sample&& s) {
              lines.push_back(s.line);
              return true;
            }),
            3);
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 4, 5}));  // blank lines skipped, as count_jsonl_lines does
  EXPECT_EQ(count_jsonl_lines(dir.file("d.jsonl")), 3);
  lines.clear();
  EXPECT_EQ(for_each_sample(dir.file("d.jsonl"), [&](Sample&& s) {
              lines.push_back(s.line);
              return lines.size() < 2;
            }),
            2);
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 4}));
  write_bytes(dir.file("bad.jsonl"), "{\"input_ids\": [1]}\n{oops\n");
  expect_error([&] { for_each_sample(dir.file("bad.jsonl"), [](Sample&&) { return true; }); },
               {dir.file("bad.jsonl") + ":2: malformed JSON line"});
}

TEST(SampleFiles, TokenTableHoldsSamplesBackToBack) {
  engine::SampleTokens t;
  EXPECT_EQ(t.size(), 0);
  t.add({1, 2, 3});
  t.add({7});
  t.add({1, 9});
  EXPECT_EQ(t.size(), 3);
  EXPECT_EQ(t.tokens(), 6);
  EXPECT_EQ(t.length(1), 1);
  EXPECT_EQ(t.sample(0), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(t.sample(2), (std::vector<int64_t>{1, 9}));
  EXPECT_EQ(t.ids, (std::vector<int32_t>{1, 2, 3, 7, 1, 9}));
  EXPECT_EQ(t.offsets, (std::vector<int64_t>{0, 3, 4, 6}));
}
