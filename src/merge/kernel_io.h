// Internal to src/merge: what every merge kernel shares. Decoding a model's elements into the
// accumulator type (float for BF16/F16 outputs, double for F32 outputs), rounding results to the
// output dtype (round to nearest even), input checks, the counter-based random draws of
// DARE/DELLA, and the dispatch on the accumulator type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "recall/merge/methods.h"
#include "recall/util/dtype.h"
#include "recall/util/error.h"

namespace recall::kernel {

inline constexpr uint64_t kChunk = 8192;  // elements decoded at a time by the streaming kernels

inline void check_view(const TensorView& v, const char* what, size_t index) {
  if (!is_float(v.dtype)) fail("merge: ", what, " ", index, " has dtype ", dtype_name(v.dtype), "; expected a float dtype");
  if (!v.data) fail("merge: ", what, " ", index, " has no data");
}

inline float bf16_bits_to_float(uint16_t bits) {  // = bf16_to_float, inlined for the hot loops
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16_bits(float value) {  // = float_to_bf16 (RNE; NaN stays quiet NaN)
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Decodes elements [begin, begin + n) of v into dst (exact: every source value fits Acc, except
// F64 into float, which rounds to nearest); n at most kChunk (see load).
template <typename Acc>
void load_piece(const TensorView& v, uint64_t begin, uint64_t n, Acc* dst) {
  const auto* b = static_cast<const unsigned char*>(v.data);
  switch (v.dtype) {
    case DType::BF16: {
      std::vector<uint16_t> raw(n);
      std::memcpy(raw.data(), b + begin * 2, n * 2);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(bf16_bits_to_float(raw[i]));
      return;
    }
    case DType::F16: {
      std::vector<uint16_t> raw(n);
      std::memcpy(raw.data(), b + begin * 2, n * 2);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(f16_to_float(raw[i]));
      return;
    }
    case DType::F32: {
      if constexpr (std::is_same_v<Acc, float>) {
        std::memcpy(dst, b + begin * 4, n * 4);
      } else {
        std::vector<float> raw(n);
        std::memcpy(raw.data(), b + begin * 4, n * 4);
        for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(raw[i]);
      }
      return;
    }
    case DType::F64: {
      std::vector<double> raw(n);
      std::memcpy(raw.data(), b + begin * 8, n * 8);
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(raw[i]);
      return;
    }
    default: {
      std::vector<float> tmp(n);
      decode_to_float(v.dtype, b + begin * dtype_size(v.dtype), n, tmp.data());
      for (uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(tmp[i]);
    }
  }
}

// Any number of elements, decoded kChunk at a time (the staging buffers stay small: the memory
// plan counts a kernel's whole-tensor arrays, not transient copies).
template <typename Acc>
void load(const TensorView& v, uint64_t begin, uint64_t n, Acc* dst) {
  for (uint64_t k = 0; k < n; k += kChunk) load_piece(v, begin + k, std::min(kChunk, n - k), dst + k);
}

template <typename Acc>
std::vector<Acc> load_all(const TensorView& v, uint64_t numel) {
  std::vector<Acc> r(numel);
  load(v, 0, numel, r.data());
  return r;
}

// Every view decoded whole, in order.
template <typename Acc>
std::vector<std::vector<Acc>> load_each(const std::vector<TensorView>& views, uint64_t numel) {
  std::vector<std::vector<Acc>> out;
  out.reserve(views.size());
  for (const TensorView& v : views) out.push_back(load_all<Acc>(v, numel));
  return out;
}

// Encodes n <= kChunk values at out + begin elements (round to nearest even).
template <typename Acc>
void store_piece(const Acc* src, uint64_t begin, uint64_t n, DType out, void* dst) {
  auto* b = static_cast<unsigned char*>(dst);
  if (out == DType::F32) {
    std::vector<float> raw(n);
    for (uint64_t i = 0; i < n; ++i) raw[i] = static_cast<float>(src[i]);
    std::memcpy(b + begin * 4, raw.data(), n * 4);
    return;
  }
  std::vector<uint16_t> raw(n);
  if (out == DType::BF16)
    for (uint64_t i = 0; i < n; ++i) raw[i] = float_to_bf16_bits(static_cast<float>(src[i]));
  else
    for (uint64_t i = 0; i < n; ++i) raw[i] = float_to_f16(static_cast<float>(src[i]));
  std::memcpy(b + begin * 2, raw.data(), n * 2);
}

// Any number of values, kChunk at a time.
template <typename Acc>
void store(const Acc* src, uint64_t begin, uint64_t n, DType out, void* dst) {
  for (uint64_t k = 0; k < n; k += kChunk) store_piece(src + k, begin + k, std::min(kChunk, n - k), out, dst);
}

// Calls fn(Acc{}) with the accumulator type of the output dtype: float for BF16/F16, double for
// F32 (mergekit with `dtype: float32` / `float64`). Checks the output dtype and every input view.
template <typename Fn>
void with_accumulator(DType out, const std::vector<TensorView>& inputs, Fn&& fn) {
  check_merge_output_dtype(out);
  for (size_t i = 0; i < inputs.size(); ++i) check_view(inputs[i], "model", i);
  if (out == DType::F32)
    fn(double{});
  else
    fn(float{});
}

// SplitMix64's finalizer and increment: the counter-based draws of DARE and DELLA (methods.h).
inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

// The uniform double in [0, 1) drawn for element `element` of a stream (dare_keep's u_j).
inline double stream_uniform(uint64_t stream, uint64_t element) {
  return static_cast<double>(splitmix64_mix(stream + (element + 1) * kGolden) >> 11) * 0x1.0p-53;
}

// Euclidean norm, dot product and sum of squares summed in double, in index order.
template <typename Acc>
double norm2(const Acc* v, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * static_cast<double>(v[i]);
  return std::sqrt(s);
}
template <typename Acc>
double dot(const Acc* a, const Acc* b, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

}  // namespace recall::kernel
