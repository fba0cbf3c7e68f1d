// Inverse of the partner permutation, on the device (no host sync). Torch-free (see kernels.h).
#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

// One block does both passes, so the inverse is one launch: the -1 fill, a barrier (which makes the
// block's global writes visible to all its threads), then the scatter. A perm with repeated or
// out-of-range entries (values are unchecked under torch.compile) leaves -1 holes that the readers
// turn into NaN; a repeated entry's slot gets any one of its writers.
constexpr int kInverseThreads = 1024;

__global__ void __launch_bounds__(kInverseThreads) inverse_permutation_kernel(const int64_t* perm, int64_t B,
                                                                                int64_t* inv) {
  for (int64_t i = threadIdx.x; i < B; i += kInverseThreads) inv[i] = -1;
  __syncthreads();
  for (int64_t b = threadIdx.x; b < B; b += kInverseThreads) {
    const int64_t j = perm[b];
    if (j >= 0 && j < B) inv[j] = b;
  }
}

}  // namespace

cudaError_t launch_inverse_permutation(const int64_t* perm, int64_t B, int64_t* inv, cudaStream_t stream) {
  inverse_permutation_kernel<<<1, kInverseThreads, 0, stream>>>(perm, B, inv);
  return cudaGetLastError();
}

}  // namespace sem_fast::cuda
