// The message of the recall::Error a call throws, or "(no error)" when it throws none: for tests
// that check what an error says.
#pragma once

#include <functional>
#include <string>

#include "recall/util/error.h"

inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const recall::Error& e) {
    return e.what();
  }
  return "(no error)";
}
