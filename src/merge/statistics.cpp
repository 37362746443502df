// The linear layers' input groups (see recall/merge/statistics.h).
#include "recall/merge/statistics.h"

namespace recall {

const char* linear_group_name(LinearGroup g) {
  switch (g) {
    case LinearGroup::AttnIn: return "attn_in";
    case LinearGroup::AttnOut: return "attn_out";
    case LinearGroup::MlpIn: return "mlp_in";
    case LinearGroup::MlpOut: return "mlp_out";
  }
  return "?";
}

std::optional<LinearGroup> linear_group_of(Role role) {
  switch (role) {
    case Role::QProj:
    case Role::KProj:
    case Role::VProj: return LinearGroup::AttnIn;
    case Role::OProj: return LinearGroup::AttnOut;
    case Role::GateProj:
    case Role::UpProj: return LinearGroup::MlpIn;
    case Role::DownProj: return LinearGroup::MlpOut;
    default: return std::nullopt;
  }
}

}  // namespace recall
