// Small helpers for YAML error messages shared by the config decoders: a node's position as
// "<file>:<line>:<column>" and a short description of what a node holds.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace recall {

// "<where>:<line>:<column>" of the node (1-based), or `where` when yaml-cpp has no position.
std::string yaml_position(const std::string& where, const YAML::Node& node);

// "'value'" for a scalar, "a list", "a mapping" or "nothing".
std::string yaml_describe(const YAML::Node& node);

}  // namespace recall
