// Progress lines (util/progress.h): due at the interval and once at the end, with counts, rates
// and an ETA in plain text.
#include <gtest/gtest.h>

#include <string>

#include "recall/util/progress.h"

using namespace recall;

TEST(Progress, DueAtTheIntervalAndOnceAtTheEnd) {
  ProgressMeter slow(10, "samples", 3600);
  EXPECT_FALSE(slow.advance(4, 40));  // the interval has not passed
  EXPECT_FALSE(slow.advance(5, 50));
  EXPECT_TRUE(slow.advance(1, 10));   // everything done
  EXPECT_FALSE(slow.advance(0));      // only once
  const std::string end = slow.line();
  EXPECT_EQ(end.rfind("10/10 samples (100.0%), ", 0), 0u) << end;
  EXPECT_NE(end.find(" samples/s, "), std::string::npos) << end;
  EXPECT_NE(end.find(" tokens/s, done in "), std::string::npos) << end;

  ProgressMeter fast(1000, "samples", 0);
  EXPECT_TRUE(fast.advance(250, 0));
  const std::string mid = fast.line();
  EXPECT_EQ(mid.rfind("250/1000 samples (25.0%), ", 0), 0u) << mid;
  EXPECT_NE(mid.find(", ETA "), std::string::npos) << mid;
  EXPECT_EQ(mid.find("tokens/s"), std::string::npos) << "no tokens counted: " << mid;
  EXPECT_EQ(mid.find('\r'), std::string::npos);
}
