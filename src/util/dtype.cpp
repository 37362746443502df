// Element types of checkpoint tensors: names, sizes and float decoding/encoding.
#include "recall/util/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "recall/util/error.h"

namespace recall {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::BOOL: case DType::U8: case DType::I8: case DType::F8_E4M3: case DType::F8_E5M2:
      return 1;
    case DType::I16: case DType::U16: case DType::F16: case DType::BF16:
      return 2;
    case DType::I32: case DType::U32: case DType::F32:
      return 4;
    case DType::I64: case DType::U64: case DType::F64:
      return 8;
  }
  fail("internal error: unknown DType ", static_cast<int>(t));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::BOOL: return "BOOL";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::I16: return "I16";
    case DType::U16: return "U16";
    case DType::I32: return "I32";
    case DType::U32: return "U32";
    case DType::I64: return "I64";
    case DType::U64: return "U64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E5M2: return "F8_E5M2";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : kAllDTypes)
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

std::optional<DType> parse_torch_dtype(std::string_view name) {
  if (name.substr(0, 6) == "torch.") name.remove_prefix(6);
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16" || name == "half") return DType::F16;
  if (name == "float32" || name == "float") return DType::F32;
  if (name == "float64" || name == "double") return DType::F64;
  if (name == "float8_e4m3fn") return DType::F8_E4M3;
  if (name == "float8_e5m2") return DType::F8_E5M2;
  return std::nullopt;
}

std::string supported_dtype_names() {
  std::string out;
  for (DType t : kAllDTypes) {
    if (!out.empty()) out += ", ";
    out += dtype_name(t);
  }
  return out;
}

bool is_float(DType t) {
  switch (t) {
    case DType::F16: case DType::BF16: case DType::F32: case DType::F64:
    case DType::F8_E4M3: case DType::F8_E5M2:
      return true;
    default:
      return false;
  }
}

float bf16_to_float(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_float(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1u, exp = (bits >> 10) & 0x1fu, man = bits & 0x3ffu;
  float mag;
  if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -24);  // zero and subnormals
  else if (exp == 31)
    mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    mag = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -mag : mag;
}

float f8e4m3_to_float(uint8_t bits) {
  const uint32_t sign = bits >> 7, exp = (bits >> 3) & 0xfu, man = bits & 0x7u;
  float mag;
  if (exp == 0xf && man == 0x7)
    mag = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^(1-7)
  else
    mag = std::ldexp(static_cast<float>(man | 0x8u), static_cast<int>(exp) - 10);
  return sign ? -mag : mag;
}

float f8e5m2_to_float(uint8_t bits) {
  // E5M2 is the top byte of an IEEE half.
  return f16_to_float(static_cast<uint16_t>(bits) << 8);
}

uint16_t float_to_bf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

uint16_t float_to_f16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in half: value * 2^24 rounded to an integer, ties to even.
    float f;
    std::memcpy(&f, &abs, 4);
    const float scaled = f * 16777216.0f;  // exact (power of two)
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: rebias exponent from 127 to 15 and round the 23-bit mantissa to 10 bits.
  const uint32_t rebased = abs - ((127u - 15u) << 23);
  const uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return sign | static_cast<uint16_t>((rebased + rounding) >> 13);
}

void decode_to_float(DType t, const void* src, size_t count, float* dst) {
  const auto* b = static_cast<const unsigned char*>(src);
  auto load = [&](auto tag, size_t i) {
    decltype(tag) v;
    std::memcpy(&v, b + i * sizeof(v), sizeof(v));
    return v;
  };
  for (size_t i = 0; i < count; ++i) {
    switch (t) {
      case DType::BOOL: dst[i] = b[i] ? 1.0f : 0.0f; break;
      case DType::U8: dst[i] = static_cast<float>(b[i]); break;
      case DType::I8: dst[i] = static_cast<float>(static_cast<int8_t>(b[i])); break;
      case DType::I16: dst[i] = static_cast<float>(load(int16_t{}, i)); break;
      case DType::U16: dst[i] = static_cast<float>(load(uint16_t{}, i)); break;
      case DType::I32: dst[i] = static_cast<float>(load(int32_t{}, i)); break;
      case DType::U32: dst[i] = static_cast<float>(load(uint32_t{}, i)); break;
      case DType::I64: dst[i] = static_cast<float>(load(int64_t{}, i)); break;
      case DType::U64: dst[i] = static_cast<float>(load(uint64_t{}, i)); break;
      case DType::F16: dst[i] = f16_to_float(load(uint16_t{}, i)); break;
      case DType::BF16: dst[i] = bf16_to_float(load(uint16_t{}, i)); break;
      case DType::F32: dst[i] = load(float{}, i); break;
      case DType::F64: dst[i] = static_cast<float>(load(double{}, i)); break;
      case DType::F8_E4M3: dst[i] = f8e4m3_to_float(b[i]); break;
      case DType::F8_E5M2: dst[i] = f8e5m2_to_float(b[i]); break;
    }
  }
}

}  // namespace recall
