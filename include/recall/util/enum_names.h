// Names of enum values as the config and the logs spell them: one table per enum, next to the
// enum, and these lookups over any table.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "recall/util/error.h"

namespace recall {

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

template <typename E, size_t N>
constexpr std::string_view name_of(const EnumName<E> (&table)[N], E value) {
  for (const auto& e : table)
    if (e.value == value) return e.name;
  return "?";
}

template <typename E, size_t N>
std::optional<E> parse_name(const EnumName<E> (&table)[N], std::string_view name) {
  for (const auto& e : table)
    if (e.name == name) return e.value;
  return std::nullopt;
}

// "a, b, c": the choices, for help texts and errors.
template <typename E, size_t N>
std::string names_of(const EnumName<E> (&table)[N]) {
  std::string s;
  for (const auto& e : table) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

// The value named `name`; throws "unknown <what> 'x'; expected one of: a, b, c" otherwise.
template <typename E, size_t N>
E parse_name_or_fail(const EnumName<E> (&table)[N], std::string_view name, std::string_view what) {
  if (auto v = parse_name(table, name)) return *v;
  fail("unknown ", what, " '", name, "'; expected one of: ", names_of(table));
}

}  // namespace recall
