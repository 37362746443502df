// mergekit configs, read unchanged: a mergekit YAML (detected by its `merge_method`) translated
// into recall's config keys, which the one field table of recall/config/merge_config.h then
// decodes and checks like any recall config. docs/ALGORITHM.md lists the mapping, key by key, and
// every mergekit key recall refuses with the reason.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace recall {

struct MergekitTranslation {
  YAML::Node config;               // recall keys: models, slices, base, reference, method, params, output
  std::vector<std::string> notes;  // where recall's arithmetic differs from what the file asked for
};

// True for a mapping with `merge_method` (mergekit's required key).
bool is_mergekit_config(const YAML::Node& root);

// The recall config of mergekit config `root` read from `where`. Models are named after their
// directories. Throws "<where>:<line>:<column>: ..." for keys and values recall refuses.
MergekitTranslation translate_mergekit_config(const YAML::Node& root, const std::string& where);

}  // namespace recall
