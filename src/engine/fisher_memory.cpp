// fisher_memory_bytes: the memory bound of run_fisher (recall/engine/fisher.h), torch-free so the
// memory plan computes it without loading the engine.
#include <algorithm>

#include "recall/engine/fisher.h"
#include "recall/model/tensor_names.h"

namespace recall::engine {

uint64_t fisher_memory_bytes(const ModelConfig& c, int64_t longest_sample) {
  const uint64_t T = static_cast<uint64_t>(std::max<int64_t>(longest_sample, 1));
  const uint64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  const uint64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, L = c.num_hidden_layers;
  uint64_t params = 0, largest = 0;  // HF tensors; a tied lm_head is not among them
  for (const TensorSlot& slot : expected_tensors(c)) {
    uint64_t n = 1;
    for (int64_t d : slot.shape) n *= static_cast<uint64_t>(d);
    params += n;
    largest = std::max(largest, n);
  }
  // The engine's fused tensors are the largest it squares: qkv and gate_up.
  const uint64_t fused = std::max({largest, (Hq + 2 * Hkv) * D * H, 2 * I * H});
  const uint64_t scratch = 16 * std::min<uint64_t>(fused, uint64_t{1} << 22);
  const uint64_t state = params * (4 + 4 + 8) + scratch + 4 * largest;
  // Saved for backward, per block: hidden-sized, attention-sized and MLP-sized tensors per token.
  uint64_t block = 4 * T * (12 * H + 8 * (Hq + 2 * Hkv) * D + 6 * I);
  uint64_t masks = 0;
  if (c.sliding_window && static_cast<uint64_t>(*c.sliding_window) < T) {
    block += 4 * Hq * T * T;  // scores, where SDPA takes the math kernel for a masked attention
    masks = 3 * T * T;        // causal, window, their conjunction (bool)
  }
  const uint64_t head = 4 * T * (3 * H + 4 * V);
  return state + (L + 1) * block + masks + head;
}

}  // namespace recall::engine
