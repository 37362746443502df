// YAML positions and descriptions for error messages.
#include "recall/config/yaml_text.h"

namespace recall {

std::string yaml_position(const std::string& where, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.line < 0) return where;
  return where + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

std::string yaml_describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

}  // namespace recall
