// Resolution of method parameters given in mergekit's forms (see recall/config/param_setting.h).
#include "recall/config/param_setting.h"

#include <algorithm>
#include <cmath>

namespace recall {

std::optional<double> ParamSetting::resolve(std::string_view tensor, double t, bool discrete) const {
  for (const Entry& e : entries) {
    if (!(e.filter.empty() || e.filter == "*" || tensor.find(e.filter) != std::string_view::npos)) continue;
    const auto& v = e.values;
    if (v.empty()) return std::nullopt;
    if (v.size() == 1) return v[0];
    const double scaled = t * static_cast<double>(v.size() - 1);
    const size_t i0 = std::min(v.size() - 1, static_cast<size_t>(std::floor(scaled)));
    if (discrete) return v[i0];
    const size_t i1 = std::min(v.size() - 1, i0 + 1);
    const double frac = scaled - static_cast<double>(i0);
    return (1 - frac) * v[i0] + frac * v[i1];
  }
  return std::nullopt;
}

double gradient_position(int64_t block, int64_t num_blocks) {
  if (block < 0) return 0;
  if (num_blocks <= 1) return 1;
  return static_cast<double>(block) / static_cast<double>(num_blocks - 1);
}

}  // namespace recall
