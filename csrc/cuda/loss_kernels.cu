// CUDA kernels of sem_fast_native::sem_loss and sem_loss_backward (schemas: sem_fast/ops/schema.py).
// Torch-free (see kernels.h).
//
// Forward, one launch: one warp per row finds the row max, then sums exp(x - max) and x - max
// (everything relative to the max, so logits of any magnitude keep their accuracy), writes the
// row's mixed smoothed CE and statistics, sums the row's squared SEM error with the target
// gathered from z_clean[perm[b]], and writes inv_perm[perm[b]] = b. The last block to finish
// (elected by an atomic counter, last_block) sums the rows in a fixed order (deterministic) and
// checks that perm is a permutation. Backward, one launch: one thread per element of dlogits (the
// softmax recomputed from the saved row statistics) and of dz_mix / dz_clean (dz_clean's second
// term read through the forward's inverse permutation).
#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

constexpr int kRowsPerBlock = kThreads / kWarp;

// Row statistics of every row of a batch whose perm is not a permutation (values are unchecked
// under torch.compile): logits never give a negative log-sum-exp relative to their max (>= 0 or
// NaN), so -inf marks the batch, and the NaN max makes the recomputed softmax NaN
// (sem_fast/ops/triton/loss.py: POISONED_STATS).
constexpr float kPoisonedLogD = -INFINITY;

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
template <typename Z>
__device__ __forceinline__ float sem_diff(const Z* zm, const Z* zc, const int64_t* perm, const float* lam,
                                          const LossParams& p, int64_t b, int64_t d) {
  const int64_t j = perm[b];
  if (j < 0 || j >= p.B) return NAN;
  return to_float(zm[b * p.D + d]) - sem_target(to_float(zc[b * p.D + d]), to_float(zc[j * p.D + d]), lam[b]);
}

// Row b of the forward, by one warp: row_stats[b], ce_row[b] and (z_clean given) sem_row[b].
template <typename T, typename Z>
__device__ void forward_row(const T* logits, const Z* z_mix, const Z* z_clean, const int64_t* labels,
                            const int64_t* perm, const float* lam, const LossParams& p, int64_t b, int lane,
                            float* row_stats, float* ce_row, float* sem_row) {
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
  float sq = 0.0f;
  if (z_clean != nullptr) {
    for (int64_t d = lane; d < p.D; d += kWarp) {
      const float e = sem_diff(z_mix, z_clean, perm, lam, p, b, d);
      sq += e * e;
    }
    sq = warp_sum(sq);
  }
  if (lane != 0) return;
  const float log_d = logf(s);
  row_stats[2 * b] = m;
  row_stats[2 * b + 1] = log_d;
  const int64_t y = labels[b], yp = partner_label(labels, perm, b, p.B);
  const bool ok = label_ok(y, p.K) && label_ok(yp, p.K);
  ce_row[b] = mixed_ce_row(m, log_d, ok ? to_float(row[y]) : 0.0f, ok ? to_float(row[yp]) : 0.0f, rel_sum, lam[b],
                           p.label_smoothing, p.K, ok);
  if (z_clean != nullptr) sem_row[b] = sq;
}

// Whether this block is the last of the grid to get here; called by every thread after the
// block's stores. Each thread's __threadfence() orders its stores before the block's count (the
// atomic), and thread 0's fence after the count orders the last block's reads after every other
// block's stores (fence-fence synchronization through the counter); the last block reads with
// __ldcg (L2, past the SM's L1) and resets the counter, which every other block has counted.
__device__ bool last_block(unsigned int* counter) {
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
    if (is_last) {
      __threadfence();
      *counter = 0;
    }
  }
  __syncthreads();
  return is_last;
}

// The last block: loss, ce and sem summed in a fixed order (per-thread strided sums, then a
// shared-memory tree), and the permutation check: perm is one iff every b finds
// inv[perm[b]] == b (a repeated entry leaves one of its rows unconfirmed; entries that no row
// wrote are never read). Otherwise loss, ce and (with the SEM term) sem are NaN and every row's
// statistics poisoned.
__device__ void reduce_rows(const float* ce_row, const float* sem_row, const int64_t* perm, const int64_t* inv,
                            const LossParams& p, float* row_stats, float* loss, float* ce, float* sem) {
  __shared__ float ce_part[kThreads];
  __shared__ float sem_part[kThreads];
  float a = 0.0f, s = 0.0f;
  bool unconfirmed = false;
  for (int64_t b = threadIdx.x; b < p.B; b += blockDim.x) {
    a += __ldcg(ce_row + b);
    if (sem_row != nullptr) s += __ldcg(sem_row + b);
    const int64_t j = perm[b];
    unconfirmed |= j < 0 || j >= p.B || __ldcg(inv + j) != b;
  }
  ce_part[threadIdx.x] = a;
  sem_part[threadIdx.x] = s;
  const bool is_perm = __syncthreads_or(unconfirmed) == 0;
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      ce_part[threadIdx.x] += ce_part[threadIdx.x + stride];
      sem_part[threadIdx.x] += sem_part[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float nan_unless_perm = is_perm ? 0.0f : NAN;
    const float ce_value = ce_part[0] / static_cast<float>(p.B) + nan_unless_perm;
    const float sem_value =
        sem_part[0] / static_cast<float>(p.sem_mean ? p.B * p.D : p.B) + (sem_row != nullptr ? nan_unless_perm : 0.0f);
    *ce = ce_value;
    *sem = sem_value;
    *loss = ce_value + p.gamma * sem_value;
  }
  if (is_perm) return;
  for (int64_t b = threadIdx.x; b < p.B; b += blockDim.x) {
    row_stats[2 * b] = NAN;
    row_stats[2 * b + 1] = kPoisonedLogD;
  }
}

// Grid: any number of blocks of kThreads (none waits for another); rows in a grid-stride loop.
template <typename T, typename Z>
__global__ void __launch_bounds__(kThreads)
    sem_loss_forward_kernel(const T* __restrict__ logits, const Z* __restrict__ z_mix, const Z* __restrict__ z_clean,
                            const int64_t* __restrict__ labels, const int64_t* __restrict__ perm,
                            const float* __restrict__ lam, const LossParams p, LossForwardOut out) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t b = global_thread() / kWarp; b < p.B; b += grid_threads() / kWarp) {  // warp-uniform
    forward_row(logits, z_mix, z_clean, labels, perm, lam, p, b, lane, out.row_stats, out.ce_row, out.sem_row);
    const int64_t j = perm[b];
    if (lane == 0 && j >= 0 && j < p.B) out.inv_perm[j] = b;
  }
  if (last_block(out.counter)) {
    reduce_rows(out.ce_row, z_clean != nullptr ? out.sem_row : nullptr, perm, out.inv_perm, p, out.row_stats,
                out.loss, out.ce, out.sem);
  }
}

__device__ __forceinline__ float value_or_zero(const float* v) { return v != nullptr ? *v : 0.0f; }

// dlogits (B, K) and dz_mix / dz_clean (B, D), each in its own grid-stride loop over its elements;
// a null output is skipped.
template <typename T, typename Z>
__global__ void sem_loss_backward_kernel(const LossGrads g, const T* __restrict__ logits,
                                         const Z* __restrict__ z_mix, const Z* __restrict__ z_clean,
                                         const int64_t* __restrict__ labels, const int64_t* __restrict__ perm,
                                         const float* __restrict__ lam, const float* __restrict__ row_stats,
                                         const int64_t* __restrict__ inv, const LossParams p, T* __restrict__ dlogits,
                                         Z* __restrict__ dz_mix, Z* __restrict__ dz_clean) {
  if (dlogits != nullptr) {
    const float scale = (value_or_zero(g.loss) + value_or_zero(g.ce)) / static_cast<float>(p.B);
    for (int64_t idx = global_thread(); idx < p.B * p.K; idx += grid_threads()) {
      const int64_t b = idx / p.K, k = idx - b * p.K;
      const int64_t y = labels[b], yp = partner_label(labels, perm, b, p.B);
      float grad = NAN;
      if (label_ok(y, p.K) && label_ok(yp, p.K)) {  // poisoned statistics give a NaN softmax
        const float prob = expf((to_float(logits[idx]) - row_stats[2 * b]) - row_stats[2 * b + 1]);
        grad = scale * (prob - mixed_target(k, y, yp, lam[b], p.label_smoothing, p.K));
      }
      dlogits[idx] = from_float<T>(grad);
    }
  }
  if (dz_mix == nullptr && dz_clean == nullptr) return;
  const float g_sem = p.gamma * value_or_zero(g.loss) + value_or_zero(g.sem);
  const float c2 = 2.0f * g_sem / static_cast<float>(p.sem_mean ? p.B * p.D : p.B);
  for (int64_t idx = global_thread(); idx < p.B * p.D; idx += grid_threads()) {
    const int64_t b = idx / p.D, d = idx - b * p.D;
    const float c = row_stats[2 * b + 1] == kPoisonedLogD ? NAN : c2;
    const float e = sem_diff(z_mix, z_clean, perm, lam, p, b, d);
    if (dz_mix != nullptr) dz_mix[idx] = from_float<Z>(c * e);
    if (dz_clean == nullptr) continue;
    // Sample m = inv[b] has b as its partner; inv is exact unless the statistics are poisoned,
    // and never followed out of bounds (a direct op call may pass anything).
    const int64_t m = inv[b];
    const float from_partner =
        (m < 0 || m >= p.B) ? NAN : (1.0f - lam[m]) * sem_diff(z_mix, z_clean, perm, lam, p, m, d);
    dz_clean[idx] = from_float<Z>(-c * (lam[b] * e + from_partner));
  }
}

}  // namespace

cudaError_t launch_sem_loss(const void* logits, DType logits_type, const void* z_mix, const void* z_clean,
                            DType z_type, const int64_t* labels, const int64_t* perm, const float* lam,
                            const LossParams& p, const LossForwardOut& out, cudaStream_t stream) {
  return dispatch_float(logits_type, [&](auto logits_tag) {
    using T = decltype(logits_tag);
    return dispatch_float(z_type, [&](auto z_tag) {
      using Z = decltype(z_tag);
      sem_loss_forward_kernel<T, Z><<<grid_for(p.B, kRowsPerBlock), kThreads, 0, stream>>>(
          static_cast<const T*>(logits), static_cast<const Z*>(z_mix), static_cast<const Z*>(z_clean), labels, perm,
          lam, p, out);
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_sem_loss_backward(const LossGrads& grads, const void* logits, DType logits_type,
                                     const void* z_mix, const void* z_clean, DType z_type, const int64_t* labels,
                                     const int64_t* perm, const float* lam, const float* row_stats,
                                     const int64_t* inv_perm, const LossParams& p, void* dlogits, void* dz_mix,
                                     void* dz_clean, cudaStream_t stream) {
  const int64_t logit_items = dlogits != nullptr ? p.B * p.K : 0;
  const int64_t feature_items = (dz_mix != nullptr || dz_clean != nullptr) ? p.B * p.D : 0;
  const unsigned int grid = grid_for(logit_items > feature_items ? logit_items : feature_items);
  return dispatch_float(logits_type, [&](auto logits_tag) {
    using T = decltype(logits_tag);
    return dispatch_float(z_type, [&](auto z_tag) {
      using Z = decltype(z_tag);
      sem_loss_backward_kernel<T, Z><<<grid, kThreads, 0, stream>>>(
          grads, static_cast<const T*>(logits), static_cast<const Z*>(z_mix), static_cast<const Z*>(z_clean), labels,
          perm, lam, row_stats, inv_perm, p, static_cast<T*>(dlogits), static_cast<Z*>(dz_mix),
          static_cast<Z*>(dz_clean));
      return cudaGetLastError();
    });
  });
}

}  // namespace sem_fast::cuda
