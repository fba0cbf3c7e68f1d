// Inverse of the partner permutation, on the device (no host sync). Torch-free (see kernels.h).
#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

__global__ void fill_kernel(int64_t* out, int64_t n, int64_t value) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = value;
}

// A perm with repeated entries (values are unchecked under torch.compile) makes several threads
// write one slot: any of them wins, some slots stay -1, and the readers turn -1 into NaN.
__global__ void scatter_inverse_kernel(const int64_t* perm, int64_t B, int64_t* inv) {
  for (int64_t b = global_thread(); b < B; b += grid_threads()) {
    const int64_t j = perm[b];
    if (j >= 0 && j < B) inv[j] = b;
  }
}

}  // namespace

cudaError_t launch_inverse_permutation(const int64_t* perm, int64_t B, int64_t* inv, cudaStream_t stream) {
  fill_kernel<<<grid_for(B), kThreads, 0, stream>>>(inv, B, -1);
  scatter_inverse_kernel<<<grid_for(B), kThreads, 0, stream>>>(perm, B, inv);
  return cudaGetLastError();
}

}  // namespace sem_fast::cuda
