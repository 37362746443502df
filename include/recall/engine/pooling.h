// How a sample's token hidden states become one vector (typical-sample embeddings and RECALL's
// representations): the choices, their names and parsing. Torch-free, so that the config can
// name them; the tensor code is pool_hidden in recall/engine/model.h.
#pragma once

#include <string>

#include "recall/util/error.h"

namespace recall {

enum class Pooling {
  Mean,           // mean over all real (non-pad) tokens
  MeanSkipFirst,  // mean over the real tokens after the first (BOS, where pretrained LLMs put
                  // massive activations); a 1-token sample falls back to that token
  Last,           // the last real token
};

inline std::string pooling_name(Pooling p) {
  switch (p) {
    case Pooling::Mean: return "mean";
    case Pooling::MeanSkipFirst: return "mean_skip_first";
    case Pooling::Last: return "last";
  }
  return "?";
}

// Throws listing the choices.
inline Pooling parse_pooling(const std::string& name) {
  for (Pooling p : {Pooling::Mean, Pooling::MeanSkipFirst, Pooling::Last})
    if (pooling_name(p) == name) return p;
  fail("unknown pooling '", name, "'; expected one of: mean, mean_skip_first, last");
}

}  // namespace recall
