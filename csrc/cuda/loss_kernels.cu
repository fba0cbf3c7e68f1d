// CUDA kernels of sem_fast_native::sem_loss and sem_loss_backward (schemas: sem_fast/ops/schema.py).
// Torch-free (see kernels.h).
//
// Forward: one warp per row finds the row max, then sums exp(x - max) and x - max (everything
// relative to the max, so logits of any magnitude keep their accuracy) and writes the row's mixed
// smoothed CE and statistics; another warp per row sums the squared SEM error with the target
// gathered from z_clean[perm[b]]; a single block then sums the rows in a fixed order
// (deterministic, no atomics). Backward: one thread per element of dlogits (the softmax recomputed
// from the saved row statistics) and of dz_mix / dz_clean; dz_clean reads its second term through
// the inverse permutation.
#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

constexpr int kRowsPerBlock = kThreads / kWarp;

__device__ __forceinline__ int64_t partner_label(const int64_t* labels, const int64_t* perm, int64_t b, int64_t B) {
  const int64_t j = perm[b];
  return (j >= 0 && j < B) ? labels[j] : -1;
}

__device__ __forceinline__ bool label_ok(int64_t k, int64_t K) { return k >= 0 && k < K; }

// The larger of a and b, NaN if either is NaN (fmaxf would drop a NaN logit).
__device__ __forceinline__ float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// z_mix[b, d] - (lam[b] * z_clean[b, d] + (1 - lam[b]) * z_clean[perm[b], d]).
template <typename T>
__device__ __forceinline__ float sem_diff(const T* zm, const T* zc, const int64_t* perm, const float* lam,
                                          const LossParams& p, int64_t b, int64_t d) {
  const int64_t j = perm[b];
  if (j < 0 || j >= p.B) return NAN;
  return to_float(zm[b * p.D + d]) - sem_target(to_float(zc[b * p.D + d]), to_float(zc[j * p.D + d]), lam[b]);
}

template <typename T>
__global__ void ce_rows_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                               const int64_t* __restrict__ perm, const float* __restrict__ lam, const LossParams p,
                               float* __restrict__ row_stats, float* __restrict__ ce_row) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t b = global_thread() / kWarp; b < p.B; b += grid_threads() / kWarp) {  // warp-uniform
    const T* row = logits + b * p.K;
    float m = -INFINITY;
    for (int64_t k = lane; k < p.K; k += kWarp) m = nan_max(m, to_float(row[k]));
    m = warp_max(m);
    float s = 0.0f, rel_sum = 0.0f;
    for (int64_t k = lane; k < p.K; k += kWarp) {
      const float v = to_float(row[k]) - m;
      s += expf(v);
      rel_sum += v;
    }
    s = warp_sum(s);
    rel_sum = warp_sum(rel_sum);
    if (lane == 0) {
      const float log_d = logf(s);
      row_stats[2 * b] = m;
      row_stats[2 * b + 1] = log_d;
      const int64_t y = labels[b], yp = partner_label(labels, perm, b, p.B);
      const bool ok = label_ok(y, p.K) && label_ok(yp, p.K);
      ce_row[b] = mixed_ce_row(m, log_d, ok ? to_float(row[y]) : 0.0f, ok ? to_float(row[yp]) : 0.0f, rel_sum,
                               lam[b], p.label_smoothing, p.K, ok);
    }
  }
}

template <typename T>
__global__ void sem_rows_kernel(const T* __restrict__ z_mix, const T* __restrict__ z_clean,
                                const int64_t* __restrict__ perm, const float* __restrict__ lam, const LossParams p,
                                float* __restrict__ sem_row) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t b = global_thread() / kWarp; b < p.B; b += grid_threads() / kWarp) {  // warp-uniform
    float acc = 0.0f;
    for (int64_t d = lane; d < p.D; d += kWarp) {
      const float e = sem_diff(z_mix, z_clean, perm, lam, p, b, d);
      acc += e * e;
    }
    acc = warp_sum(acc);
    if (lane == 0) sem_row[b] = acc;
  }
}

// One block of kThreads: per-thread partial sums over rows, then a shared-memory tree.
__global__ void finalize_kernel(const float* __restrict__ ce_row, const float* __restrict__ sem_row,
                                const LossParams p, float* loss, float* ce, float* sem) {
  __shared__ float ce_part[kThreads];
  __shared__ float sem_part[kThreads];
  float a = 0.0f, s = 0.0f;
  for (int64_t b = threadIdx.x; b < p.B; b += blockDim.x) {
    a += ce_row[b];
    if (sem_row != nullptr) s += sem_row[b];
  }
  ce_part[threadIdx.x] = a;
  sem_part[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      ce_part[threadIdx.x] += ce_part[threadIdx.x + stride];
      sem_part[threadIdx.x] += sem_part[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float ce_value = ce_part[0] / static_cast<float>(p.B);
    const float sem_value = sem_part[0] / static_cast<float>(p.sem_mean ? p.B * p.D : p.B);
    *ce = ce_value;
    *sem = sem_value;
    *loss = ce_value + p.gamma * sem_value;
  }
}

__device__ __forceinline__ float value_or_zero(const float* v) { return v != nullptr ? *v : 0.0f; }

template <typename T>
__global__ void mixed_ce_backward_kernel(const LossGrads g, const T* __restrict__ logits,
                                         const int64_t* __restrict__ labels, const int64_t* __restrict__ perm,
                                         const float* __restrict__ lam, const float* __restrict__ row_stats,
                                         const LossParams p, T* __restrict__ dlogits) {
  const float scale = (value_or_zero(g.loss) + value_or_zero(g.ce)) / static_cast<float>(p.B);
  const int64_t total = p.B * p.K;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t b = idx / p.K, k = idx - b * p.K;
    const int64_t y = labels[b], yp = partner_label(labels, perm, b, p.B);
    float grad = NAN;
    if (label_ok(y, p.K) && label_ok(yp, p.K)) {
      const float prob = expf((to_float(logits[idx]) - row_stats[2 * b]) - row_stats[2 * b + 1]);
      grad = scale * (prob - mixed_target(k, y, yp, lam[b], p.label_smoothing, p.K));
    }
    dlogits[idx] = from_float<T>(grad);
  }
}

template <typename T>
__global__ void sem_distance_backward_kernel(const LossGrads g, const T* __restrict__ z_mix,
                                             const T* __restrict__ z_clean, const int64_t* __restrict__ perm,
                                             const float* __restrict__ lam, const int64_t* __restrict__ inv,
                                             const LossParams p, T* __restrict__ dz_mix, T* __restrict__ dz_clean) {
  const float g_sem = p.gamma * value_or_zero(g.loss) + value_or_zero(g.sem);
  const float c2 = 2.0f * g_sem / static_cast<float>(p.sem_mean ? p.B * p.D : p.B);
  const int64_t total = p.B * p.D;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const int64_t b = idx / p.D, d = idx - b * p.D;
    const float e = sem_diff(z_mix, z_clean, perm, lam, p, b, d);
    if (dz_mix != nullptr) dz_mix[idx] = from_float<T>(c2 * e);
    if (dz_clean == nullptr) continue;
    const int64_t m = inv[b];
    const float from_partner = m < 0 ? NAN : (1.0f - lam[m]) * sem_diff(z_mix, z_clean, perm, lam, p, m, d);
    dz_clean[idx] = from_float<T>(-c2 * (lam[b] * e + from_partner));
  }
}

}  // namespace

cudaError_t launch_sem_loss(const void* logits, DType logits_type, const void* z_mix, const void* z_clean,
                            DType z_type, const int64_t* labels, const int64_t* perm, const float* lam,
                            const LossParams& p, float* row_stats, float* row_scratch, float* loss, float* ce,
                            float* sem, cudaStream_t stream) {
  float* ce_row = row_scratch;
  float* sem_row = z_clean != nullptr ? row_scratch + p.B : nullptr;
  const unsigned int grid = grid_for(p.B, kRowsPerBlock);
  cudaError_t status = dispatch_float(logits_type, [&](auto tag) {
    using T = decltype(tag);
    ce_rows_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(logits), labels, perm, lam, p, row_stats,
                                                     ce_row);
    return cudaGetLastError();
  });
  if (status != cudaSuccess) return status;
  if (sem_row != nullptr) {
    status = dispatch_float(z_type, [&](auto tag) {
      using T = decltype(tag);
      sem_rows_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(z_mix), static_cast<const T*>(z_clean),
                                                        perm, lam, p, sem_row);
      return cudaGetLastError();
    });
    if (status != cudaSuccess) return status;
  }
  finalize_kernel<<<1, kThreads, 0, stream>>>(ce_row, sem_row, p, loss, ce, sem);
  return cudaGetLastError();
}

cudaError_t launch_sem_loss_backward(const LossGrads& grads, const void* logits, DType logits_type,
                                     const void* z_mix, const void* z_clean, DType z_type, const int64_t* labels,
                                     const int64_t* perm, const float* lam, const float* row_stats,
                                     const LossParams& p, int64_t* inv_scratch, void* dlogits, void* dz_mix,
                                     void* dz_clean, cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  if (dlogits != nullptr) {
    status = dispatch_float(logits_type, [&](auto tag) {
      using T = decltype(tag);
      mixed_ce_backward_kernel<T><<<grid_for(p.B * p.K), kThreads, 0, stream>>>(
          grads, static_cast<const T*>(logits), labels, perm, lam, row_stats, p, static_cast<T*>(dlogits));
      return cudaGetLastError();
    });
    if (status != cudaSuccess) return status;
  }
  if (dz_mix == nullptr && dz_clean == nullptr) return status;
  if (dz_clean != nullptr) {
    status = launch_inverse_permutation(perm, p.B, inv_scratch, stream);
    if (status != cudaSuccess) return status;
  }
  return dispatch_float(z_type, [&](auto tag) {
    using T = decltype(tag);
    sem_distance_backward_kernel<T><<<grid_for(p.B * p.D), kThreads, 0, stream>>>(
        grads, static_cast<const T*>(z_mix), static_cast<const T*>(z_clean), perm, lam, inv_scratch, p,
        static_cast<T*>(dz_mix), static_cast<T*>(dz_clean));
    return cudaGetLastError();
  });
}

}  // namespace sem_fast::cuda
