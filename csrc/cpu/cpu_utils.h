// Helpers of the C++ (CPU) kernels: dtype dispatch, instruction-set selection, work split,
// inverse permutation.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace sem_fast::cpu {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Calls f(T{}) with T the C++ type of the float dtype t (float32, bfloat16, float16).
template <typename F>
void dispatch_float(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(float{});
    case at::kBFloat16:
      return f(c10::BFloat16{});
    case at::kHalf:
      return f(c10::Half{});
    default:
      TORCH_CHECK(false, "expected float32, bfloat16 or float16, got ", t);
  }
}

// dispatch_float plus uint8 (images).
template <typename F>
void dispatch_image(at::ScalarType t, F&& f) {
  if (t == at::kByte) return f(uint8_t{});
  dispatch_float(t, f);
}

// Instruction sets the vectorized kernels are compiled for. With GCC on x86-64 a kernel file
// compiles its hot loops once per set and picks one at run time (SEM_FAST_CPU_MULTI_ISA);
// elsewhere only the baseline exists.
enum class Isa { kBaseline, kAvx2, kAvx512 };

// Functions defined between SEM_FAST_BEGIN_<set> and SEM_FAST_END_ISA are compiled for that set:
// the x86-64 baseline (SSE2), or the extensions ATen's AVX2 and AVX512 kernels require, with
// 512-bit vectors for AVX-512 (GCC's default tuning stays at 256). None contracts a * b + c into
// an FMA (GCC's default for C++ where the target has FMA, as AVX-512 does), so every set rounds
// every operation alike and results do not depend on the machine; none turns a short copy loop
// into a libc call (which costs more than a 32 x 32 image row).
#if defined(__GNUC__)
// Inlined into every caller, for short helpers of per-row loops whose calls would cost as much as
// their work.
#define SEM_FAST_ALWAYS_INLINE inline __attribute__((always_inline))
#define SEM_FAST_LAMBDA_ALWAYS_INLINE __attribute__((always_inline))
#else
#define SEM_FAST_ALWAYS_INLINE inline
#define SEM_FAST_LAMBDA_ALWAYS_INLINE
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define SEM_FAST_BEGIN_BASELINE \
  _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off,no-tree-loop-distribute-patterns\")")
#define SEM_FAST_END_ISA _Pragma("GCC pop_options")
#else
#define SEM_FAST_BEGIN_BASELINE
#define SEM_FAST_END_ISA
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>  // the few intrinsics of the AVX2 and AVX-512 copies (their targets enable them)
#define SEM_FAST_CPU_MULTI_ISA 1
#define SEM_FAST_BEGIN_AVX2 SEM_FAST_BEGIN_BASELINE _Pragma("GCC target(\"avx2\")")
#define SEM_FAST_BEGIN_AVX512 \
  SEM_FAST_BEGIN_BASELINE _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512\")")
#else
#define SEM_FAST_CPU_MULTI_ISA 0
#endif

// The set to run: the one ATen runs its own kernels with (at::get_cpu_capability(): the best the
// CPU has, lowered by the environment variable ATEN_CPU_CAPABILITY=default|avx2|avx512), so one
// switch governs both; always the baseline without SEM_FAST_CPU_MULTI_ISA.
inline Isa cpu_isa() {
  static const Isa isa = [] {
    if (!SEM_FAST_CPU_MULTI_ISA) return Isa::kBaseline;
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return Isa::kAvx512;
    return capability == "AVX2" ? Isa::kAvx2 : Isa::kBaseline;
  }();
  return isa;
}

// The kernel of the running instruction set (cpu_isa()) among its copies.
template <typename Fn>
Fn pick_isa(Fn baseline, Fn avx2, Fn avx512) {
  switch (cpu_isa()) {
    case Isa::kAvx512:
      return avx512;
    case Isa::kAvx2:
      return avx2;
    default:
      return baseline;
  }
}

// Elements below which a parallel region costs more than it saves: ATen's own threshold
// (at::internal::GRAIN_SIZE in ATen/TensorIterator.h, not included here for compile time).
constexpr int64_t kGrainSize = 32768;

// Rows per at::parallel_for task so that each task handles about kGrainSize elements.
inline int64_t row_grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, elements_per_row));
}

// exp(x) for x <= 0 (softmax terms x - max and x - logsumexp) in plain arithmetic that the
// compiler vectorizes in `#pragma omp simd` loops (libm's expf does not vectorize without
// -ffast-math, which would break the NaN propagation the kernels rely on). Cephes' expf:
// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, a degree-6 polynomial for exp(r);
// relative error below one float ulp (measured: at most 8.1e-8 against double-precision exp on
// [-87, 0] in steps of 1e-6). x below -87.3 (exp < 1.2e-38, the smallest normal float; -inf
// too, a masked logit) returns 0, as a GPU's flush-to-zero exp does; NaN propagates.
inline float exp_nonpositive(float x) {
  constexpr float kLowest = -87.3f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 split for an exact n * ln2
  const bool underflows = x < kLowest;
  x = underflows ? kLowest : x;
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return underflows ? 0.0f : p * scale;
}

// Terms per float partial sum in chunked_sum: 128 terms over 4-8 vector lanes are 16-32
// sequential float additions, so a chunk's relative rounding error stays near 1e-6 at worst.
constexpr int64_t kSumChunk = 128;

// Sum of f(k) over k in [0, n): float partial sums over chunks of kSumChunk terms (vectorized),
// the chunks added in float64, so the error does not grow with n (K = 65k classes, say).
template <typename F>
double chunked_sum(int64_t n, const F& f) {
  double total = 0.0;
  for (int64_t k0 = 0; k0 < n; k0 += kSumChunk) {
    const int64_t k1 = std::min(n, k0 + kSumChunk);
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t k = k0; k < k1; ++k) part += f(k);
    total += part;
  }
  return total;
}

// inv[perm[b]] = b; -1 where perm (not a permutation) misses an index. perm: (B,) int64.
inline std::vector<int64_t> inverse_permutation(const int64_t* perm, int64_t B) {
  std::vector<int64_t> inv(B, -1);
  for (int64_t b = 0; b < B; ++b) {
    if (perm[b] >= 0 && perm[b] < B) inv[perm[b]] = b;
  }
  return inv;
}

}  // namespace sem_fast::cpu
