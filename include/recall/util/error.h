// Error handling for recall: one exception type carrying a message that says what was expected
// and what was found, plus helpers that prefix context ("reading shard 3/8: ...") as an error
// travels up to the single catch in main.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace recall {

// Every error recall raises on purpose. `what()` is the full, user-facing message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds a message from streamable parts: fail("tensor '", name, "' has ", n, " dims").
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts);

// Runs fn(); if it throws, rethrows an Error whose message is "<context>: <original>".
template <typename Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn());

}  // namespace recall

#include <sstream>

namespace recall {

template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

template <typename Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace recall
