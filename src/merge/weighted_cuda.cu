// Fused weighted-sum kernel (see weighted_cuda.h). Compiled with --fmad=false so that w*x + acc is
// a multiply then an add, each rounded, as on the CPU (-ffp-contract=off).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>

#include "recall/merge/weighted_cuda.h"
#include "recall/util/error.h"

namespace recall {

namespace {

struct Args {
  const uint16_t* in[kMaxCudaMergeModels];
  float w[kMaxCudaMergeModels];
  double wd[kMaxCudaMergeModels];  // F32 output accumulates in double, as on the CPU
  int models;
  float wsum;
  double wsum_d;
  bool normalize, shortcut, f16_in;
  int out_kind;  // 0 BF16, 1 F16, 2 F32
};

__device__ __forceinline__ float decode(uint16_t b, bool f16) {
  if (f16) return __half2float(__ushort_as_half(b));
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}

__device__ __forceinline__ uint16_t to_bf16(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// One element: accumulate in model order, normalize, round, same-bits shortcut.
__device__ __forceinline__ void element(const Args& a, const uint16_t* x, void* out, uint64_t i) {
  if (a.out_kind == 2) {  // F32 output: double accumulation (weighted_impl<double> on the CPU)
    double acc = 0.0;
    for (int m = 0; m < a.models; ++m)
      acc = __dadd_rn(acc, __dmul_rn(a.wd[m], static_cast<double>(decode(x[m], a.f16_in))));
    if (a.normalize) acc = __ddiv_rn(acc, a.wsum_d);
    static_cast<float*>(out)[i] = __double2float_rn(acc);  // no shortcut: inputs are 16-bit
    return;
  }
  float acc = 0.0f;
  bool same = true;
  for (int m = 0; m < a.models; ++m) {
    acc = __fadd_rn(acc, __fmul_rn(a.w[m], decode(x[m], a.f16_in)));
    same = same && x[m] == x[0];
  }
  if (a.normalize) acc = __fdiv_rn(acc, a.wsum);
  uint16_t r = a.out_kind == 0 ? to_bf16(acc) : __half_as_ushort(__float2half_rn(acc));
  if (a.shortcut && same) r = x[0];
  static_cast<uint16_t*>(out)[i] = r;
}

// Each thread merges 8 consecutive elements per step with 16-byte loads (inputs are 16-byte
// aligned when the caller's pointers are; checked on the host), grid-stride.
__global__ void weighted_kernel(Args a, uint64_t numel, void* out) {
  const uint64_t vec = numel / 8;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t v = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; v < vec; v += stride) {
    uint16_t x[kMaxCudaMergeModels][8];
    for (int m = 0; m < a.models; ++m) {
      const uint4 q = reinterpret_cast<const uint4*>(a.in[m])[v];
      std::memcpy(x[m], &q, 16);
    }
    for (int k = 0; k < 8; ++k) {
      uint16_t col[kMaxCudaMergeModels];
      for (int m = 0; m < a.models; ++m) col[m] = x[m][k];
      element(a, col, out, v * 8 + k);
    }
  }
  // Tail (fewer than 8 elements).
  const uint64_t t = vec * 8 + blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x;
  if (t < numel && t >= vec * 8) {
    uint16_t col[kMaxCudaMergeModels];
    for (int m = 0; m < a.models; ++m) col[m] = a.in[m][t];
    element(a, col, out, t);
  }
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA merge: ", what, ": ", cudaGetErrorString(e));
}

}  // namespace

bool cuda_merge_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void merge_weighted_cuda(const std::vector<const void*>& inputs, DType in, const std::vector<double>& weights,
                         bool normalize, uint64_t numel, DType out_dtype, void* out, void* stream) {
  if (inputs.empty()) fail("CUDA merge: no models given");
  if (inputs.size() > kMaxCudaMergeModels)
    fail("CUDA merge: ", inputs.size(), " models given; at most ", kMaxCudaMergeModels, " per launch");
  if (weights.size() != inputs.size()) fail("CUDA merge: ", weights.size(), " weights for ", inputs.size(), " models");
  if (in != DType::BF16 && in != DType::F16)
    fail("CUDA merge: input dtype ", dtype_name(in), " is not supported; expected BF16 or F16");
  if (out_dtype != DType::BF16 && out_dtype != DType::F16 && out_dtype != DType::F32)
    fail("CUDA merge: output dtype ", dtype_name(out_dtype), " is not supported; expected BF16, F16 or F32");
  Args a{};
  a.models = static_cast<int>(inputs.size());
  float wsum = 0;
  double wsum_d = 0;
  for (size_t m = 0; m < inputs.size(); ++m) {
    if (!std::isfinite(weights[m])) fail("CUDA merge: weight of model ", m, " is not finite (", weights[m], ")");
    if (reinterpret_cast<uintptr_t>(inputs[m]) % 16 != 0) fail("CUDA merge: input ", m, " is not 16-byte aligned");
    a.in[m] = static_cast<const uint16_t*>(inputs[m]);
    a.w[m] = static_cast<float>(weights[m]);
    a.wd[m] = weights[m];
    wsum += a.w[m];
    wsum_d += weights[m];
  }
  if (normalize && wsum == 0) fail("CUDA merge: the weights sum to 0, so they cannot be normalized");
  a.wsum = wsum;
  a.wsum_d = wsum_d;
  a.normalize = normalize;
  a.f16_in = in == DType::F16;
  a.out_kind = out_dtype == DType::BF16 ? 0 : out_dtype == DType::F16 ? 1 : 2;
  a.shortcut = in == out_dtype && (normalize || std::fabs(wsum_d - 1.0) <= 1e-9);
  if (numel == 0) return;
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int threads = 256;
  const uint64_t needed = (numel / 8 + threads - 1) / threads + 1;
  const int blocks = static_cast<int>(std::min<uint64_t>(needed, static_cast<uint64_t>(sms) * 8));
  weighted_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(a, numel, out);
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace recall
