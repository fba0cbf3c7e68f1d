// Device helpers of the CUDA kernels: float conversions, dtype dispatch, launch sizes, warp
// reductions, the inverse permutation. Torch-free (see kernels.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"

namespace sem_fast::cuda {

// Explicit conversions: torch builds pass -D__CUDA_NO_HALF_CONVERSIONS__ (and the bfloat16 one),
// which removes the implicit operators.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(uint8_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two floats rounded to nearest even into one 32-bit word of two 16-bit floats (low: a, high: b):
// one cvt.rn.bf16x2.f32 / cvt.rn.f16x2.f32 on sm_80+, which turn every NaN into a NaN.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Division of non-negative int32 n < 2**31 by a fixed d >= 1 as a multiply-high and a shift
// (Granlund and Montgomery's 33-bit multiplier 2**32 + mul, shift = ceil(log2 d); umulhi(n, mul)
// + n < 2**32 for such n): the index math of the kernels has no division instruction sequence.
// The same numbers as `_magic` in sem_fast/ops/triton/mix.py.
struct FastDiv {
  uint32_t mul, shift;
  __device__ __forceinline__ int div(int n) const {
    const uint32_t u = static_cast<uint32_t>(n);
    return static_cast<int>((__umulhi(u, mul) + u) >> shift);
  }
};

inline FastDiv make_fast_div(int d) {
  uint32_t shift = 0;
  while ((int64_t{1} << shift) < d) ++shift;
  const uint64_t mul = ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - static_cast<uint64_t>(d))) / d + 1;
  return {static_cast<uint32_t>(mul), shift};
}

// Calls f(T{}) with T the device type of a float DType.
template <typename F>
cudaError_t dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::kFloat32:
      return f(float{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kFloat16:
      return f(__half{});
    default:
      return cudaErrorInvalidValue;
  }
}

// dispatch_float plus uint8 (images).
template <typename F>
cudaError_t dispatch_image(DType t, F&& f) {
  if (t == DType::kUInt8) return f(uint8_t{});
  return dispatch_float(t, f);
}

// 256 threads per block: 8 warps, enough to hide latency in these memory-bound kernels while
// keeping blocks small enough for full occupancy on every architecture since sm_70.
constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Grid-stride loops launch at most this many blocks: 2M threads fill any current GPU several
// times over; larger problems loop inside the kernel.
constexpr int64_t kMaxBlocks = 8192;

inline unsigned int grid_for(int64_t work_items, int64_t items_per_block = kThreads) {
  const int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Online logsumexp state: running max m and sum s of exp(x - m); start from {-inf, 0}.
struct LseState {
  float m, s;
};

// Adds one value x to the state: one exp per element.
__device__ __forceinline__ LseState lse_push(LseState a, float x) {
  if (x > a.m) return {x, a.s * expf(a.m - x) + 1.0f};
  return {a.m, a.s + expf(x - a.m)};
}

// Combines two partial states (an empty state has s == 0).
__device__ __forceinline__ LseState lse_merge(LseState a, LseState b) {
  if (a.s == 0.0f) return b;
  if (b.s == 0.0f) return a;
  const float m = a.m > b.m ? a.m : b.m;
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ LseState warp_lse(LseState st) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const LseState other{__shfl_xor_sync(0xffffffffu, st.m, offset), __shfl_xor_sync(0xffffffffu, st.s, offset)};
    st = lse_merge(st, other);
  }
  return st;
}

// inv[perm[b]] = b, -1 where perm (unchecked under torch.compile) is not a permutation: one launch.
cudaError_t launch_inverse_permutation(const int64_t* perm, int64_t B, int64_t* inv, cudaStream_t stream);

}  // namespace sem_fast::cuda
