// Launchers of the CUDA kernels in csrc/cuda/*.cu, called by csrc/cuda/ops_cuda.cpp.
//
// Raw pointers and plain structs only: the .cu files include no torch header, so nvcc compiles
// them in seconds (a .cu that includes torch/extension.h takes minutes), and CI can compile-check
// them on machines without a GPU or a CUDA build of torch. Every launcher enqueues on `stream`
// and returns the launch status (cudaGetLastError()); none synchronizes with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../sem_math.h"

namespace sem_fast::cuda {

// Element types of the tensors a kernel reads or writes.
enum class DType : int { kUInt8, kFloat32, kBFloat16, kFloat16 };

// Limits of the mix kernels: their grid holds the samples on CUDA's 65535-block y axis, and pixel
// indices within an image are 32-bit (with room for a block past the last pixel).
constexpr int64_t kMaxMixBatch = 65535;
constexpr int64_t kMaxMixPixels = (int64_t{1} << 31) - 1024;

// images -> x_clean, x_mix (x_mix unused when !p.mixes); in: uint8 or float, out: float.
cudaError_t launch_mix_forward(const void* images, DType in, DType out, const MixParams& p, const DrawView& d,
                               void* x_clean, void* x_mix, cudaStream_t stream);

// (grad_clean, grad_mix) -> grad_images ((B, C, H, W) of dtype in, strides in p.grad_in); a null
// gradient (p.has_grad_clean / p.has_grad_mix false) counts as zeros. inv_scratch: B int64 values
// of device memory for the inverse permutation.
cudaError_t launch_mix_backward(const void* grad_clean, const void* grad_mix, DType grad, DType in,
                                const MixGradParams& p, const DrawView& d, int64_t* inv_scratch, void* grad_images,
                                cudaStream_t stream);

// Sizes and options of the loss; logits (B, K), z_mix/z_clean (B, D), all rows contiguous.
struct LossParams {
  int64_t B, K, D;
  float label_smoothing, gamma;
  bool sem_mean;  // 'mean' reduction (divide by B * D), else 'sum' (divide by B)
};

// The incoming () float32 gradients of loss, ce and sem on the device; null: absent (zero).
struct LossGrads {
  const float* loss;
  const float* ce;
  const float* sem;
};

// Outputs and scratch of launch_sem_loss, device memory. row_stats (B, 2): row max and
// log sum exp(x - max), (NaN, -inf) in every row when perm is not a permutation; inv_perm (B,):
// inv_perm[perm[b]] = b; ce_row, sem_row (B,): per-row terms (sem_row used with z_clean);
// counter: one zero unsigned int, left zero (the last-block election; ops_cuda.cpp keeps one per
// stream); loss, ce, sem: one float each.
struct LossForwardOut {
  float* row_stats;
  int64_t* inv_perm;
  float* ce_row;
  float* sem_row;
  unsigned int* counter;
  float* loss;
  float* ce;
  float* sem;
};

// One launch -> out. z_clean null: no SEM term (sem = 0). labels, perm: (B,) int64; lam: (B,)
// fp32. A perm that is not a permutation makes loss, ce and (with z_clean) sem NaN.
cudaError_t launch_sem_loss(const void* logits, DType logits_type, const void* z_mix, const void* z_clean,
                            DType z_type, const int64_t* labels, const int64_t* perm, const float* lam,
                            const LossParams& p, const LossForwardOut& out, cudaStream_t stream);

// Gradients of the loss, one launch: dlogits (B, K) = d_ce / B * (softmax - mixed smoothed
// target), the softmax from row_stats; dz_mix and dz_clean (B, D) of the SEM term times d_sem
// (dz_clean through inv_perm); with d_ce = g_loss + g_ce and d_sem = gamma * g_loss + g_sem.
// Poisoned row_stats give NaN gradients. A null output is not computed.
cudaError_t launch_sem_loss_backward(const LossGrads& grads, const void* logits, DType logits_type,
                                     const void* z_mix, const void* z_clean, DType z_type, const int64_t* labels,
                                     const int64_t* perm, const float* lam, const float* row_stats,
                                     const int64_t* inv_perm, const LossParams& p, void* dlogits, void* dz_mix,
                                     void* dz_clean, cudaStream_t stream);

}  // namespace sem_fast::cuda
