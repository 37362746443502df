// `recall verify`: a committed merge output checked against its manifest.json, everything a
// loader or a reader of merged.h5 would trust:
// - merged.h5: every manifest tensor with its dtype, shape, bytes (XXH3-64) and xxh3_64 attribute,
//   no other tensor; with method recall, /recall/{similarity, weights, sigma2, typical_samples}
//   with their shapes (blocks x models) and weights that sum to 1 per block;
// - only the outputs the manifest lists (output.formats: "h5", "hf"; both when it lists none);
// - hf/: exactly the manifest's shards (no extra weight file, none missing) and the index when
//   there are several; every shard header as the merge writes it (the manifest's tensors in order,
//   names, dtypes, shapes, packed offsets, {"format": "pt"}); every tensor's bytes; config.json
//   equal to merged.h5's architecture_config (when there is a merged.h5) but for the dtype fields
//   the export sets.
// A `.partial` directory (a merge that never committed) and a directory without manifest.json are
// refused with what to point verify at instead; a sweep point whose weights the sweep's
// keep_weights removed (out/weights_dropped.json) is refused saying so.
#pragma once

#include <string>
#include <vector>

namespace recall {

// Checks an output directory (or a single merged.h5 against its own attributes); returns the
// problems found (empty = verified). `verbose` prints every verified tensor.
std::vector<std::string> verify_output(const std::string& path, bool verbose);

}  // namespace recall
