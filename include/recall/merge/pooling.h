// How a sample's token hidden states become one vector (typical-sample embeddings and RECALL's
// representations): the choices and their names. Torch-free, so that the config can name them;
// the tensor code is pool_hidden in recall/engine/model.h.
#pragma once

#include "recall/util/enum_names.h"

namespace recall {

enum class Pooling {
  Mean,           // mean over all real (non-pad) tokens
  MeanSkipFirst,  // mean over the real tokens after the first (BOS, where pretrained LLMs put
                  // massive activations); a 1-token sample falls back to that token
  Last,           // the last real token
};
inline constexpr EnumName<Pooling> kPoolings[] = {
    {"mean", Pooling::Mean}, {"mean_skip_first", Pooling::MeanSkipFirst}, {"last", Pooling::Last}};

}  // namespace recall
