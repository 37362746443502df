// Element types of checkpoint tensors (the safetensors dtype names), their sizes, and decoding of
// the float formats (F16, BF16, F8_E4M3, F8_E5M2) to float without any dependency on torch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace recall {

enum class DType : uint8_t {
  BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2,
};

inline constexpr DType kAllDTypes[] = {
    DType::BOOL, DType::U8,  DType::I8,  DType::I16,  DType::U16,     DType::I32,
    DType::U32,  DType::I64, DType::U64, DType::F16,  DType::BF16,    DType::F32,
    DType::F64,  DType::F8_E4M3, DType::F8_E5M2};

// Bytes per element.
size_t dtype_size(DType t);

// The safetensors spelling, e.g. "BF16".
std::string_view dtype_name(DType t);

// Parses a safetensors dtype name; nullopt for names recall does not support.
std::optional<DType> parse_dtype(std::string_view name);

// Parses a PyTorch/transformers float dtype name ("bfloat16", "float16", "float32", "float64",
// "float8_e4m3fn", "float8_e5m2"; also "torch.bfloat16"); nullopt otherwise.
std::optional<DType> parse_torch_dtype(std::string_view name);

// The comma-separated list of supported names, for error messages.
std::string supported_dtype_names();

// True for F16, BF16, F32, F64 and the F8 formats.
bool is_float(DType t);

// Scalar decoders (exact: every value of these formats is representable as float).
float f16_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);
float f8e4m3_to_float(uint8_t bits);  // E4M3FN: bias 7, no infinities, S.1111.111 is NaN
float f8e5m2_to_float(uint8_t bits);  // E5M2: bias 15, IEEE-like infinities and NaN

// Encoders with round-to-nearest-even (NaN stays NaN).
uint16_t float_to_bf16(float value);
uint16_t float_to_f16(float value);

// Converts `count` elements of type `t` at `src` to float (integers and BOOL by value cast).
void decode_to_float(DType t, const void* src, size_t count, float* dst);

}  // namespace recall
