// Byte sizes as users write them, in configs and on the command line alike: 5000000000, 5GB,
// 1.5 GB, 512MiB, 1e5. Decimal units (KB, MB, GB, TB: powers of 1000) and binary ones (KiB, MiB,
// GiB, TiB: powers of 1024); B or no unit for bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace recall {

// nullopt for anything else: junk, a negative value, a unit we do not know, more than 2^64 - 1.
std::optional<uint64_t> parse_byte_size(std::string_view text);

}  // namespace recall
