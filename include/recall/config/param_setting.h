// A method parameter as a config gives it, in mergekit's forms (mergekit/config.py,
// evaluate_setting): a number or boolean; a gradient, a list of numbers interpolated over the
// blocks; or a list of {filter, value} entries, the first whose filter is a substring of the
// tensor name winning (a missing filter or "*" matches every tensor), each value itself a number
// or a gradient.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace recall {

struct ParamSetting {
  struct Entry {
    std::string filter;          // "" or "*": every tensor
    std::vector<double> values;  // one value, or a gradient's points (booleans as 0/1)
  };
  std::vector<Entry> entries;

  // The value for `tensor` at gradient position t in [0, 1]; nullopt when no filter matches.
  // A gradient of n points gives, with s = t (n - 1), i = floor(s), f = s - i:
  // (1 - f) v[i] + f v[min(i + 1, n - 1)]; `discrete` (booleans) picks v[floor(t (n - 1))].
  std::optional<double> resolve(std::string_view tensor, double t, bool discrete) const;
};

// Parameter name -> setting (a config's `params`, or one model's).
using ParamSettings = std::map<std::string, ParamSetting>;

// mergekit's gradient position of a tensor: block l of L has t = l / (L - 1) (t = 1 when L = 1);
// tensors outside the blocks (embedding, final norm, lm_head) have t = 0.
double gradient_position(int64_t block, int64_t num_blocks);

}  // namespace recall
