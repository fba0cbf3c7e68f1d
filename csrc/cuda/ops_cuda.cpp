// CUDA implementations of the sem_fast_native ops (schemas: sem_fast/ops/schema.py): argument checks and
// output allocation (csrc/op_args.h), then the launchers of csrc/cuda/*.cu on the current stream.
// Compiled by the host compiler, only in builds with CUDA (setup.py).
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "../op_args.h"
#include "kernels.h"

namespace sem_fast::cuda {
namespace {

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kByte:
      return DType::kUInt8;
    case at::kFloat:
      return DType::kFloat32;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kHalf:
      return DType::kFloat16;
    default:
      TORCH_CHECK(false, "unsupported dtype ", t);
  }
}

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "sem_fast_native::", op, " kernel launch failed: ", cudaGetErrorString(status));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_mix_sizes(int64_t B, int64_t H, int64_t W) {
  TORCH_CHECK_VALUE(B <= kMaxMixBatch, "the CUDA mix kernels take at most ", kMaxMixBatch,
                    " images per call, got ", B, ": split the batch");
  TORCH_CHECK_VALUE(H * W <= kMaxMixPixels, "the CUDA mix kernels take images of at most ", kMaxMixPixels,
                    " pixels, got ", H, " x ", W);
}

std::tuple<at::Tensor, at::Tensor> mix_images_cuda(const at::Tensor& images, const at::Tensor& perm,
                                                   const at::Tensor& lam, const at::Tensor& box,
                                                   const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                                   const c10::optional<at::Tensor>& flip, c10::ArrayRef<double> mean,
                                                   c10::ArrayRef<double> std, int64_t crop_padding, bool reflect,
                                                   at::ScalarType out_dtype, bool channels_last, bool mixes) {
  const c10::cuda::CUDAGuard guard(images.device());
  const MixForward f = prepare_mix_forward(images, perm, lam, box, is_cutmix, offset, flip, mean, std, crop_padding,
                                           reflect, out_dtype, channels_last, mixes);
  check_mix_sizes(f.params.B, f.params.H, f.params.W);
  check_launch(launch_mix_forward(images.data_ptr(), dtype_of(images.scalar_type()), dtype_of(out_dtype), f.params,
                                  draw_view(f.draw), f.x_clean.data_ptr(), mixes ? f.x_mix.data_ptr() : nullptr,
                                  current_stream()),
               "mix_images");
  return {f.x_clean, f.x_mix};
}

at::Tensor mix_images_backward_cuda(const c10::optional<at::Tensor>& grad_clean,
                                    const c10::optional<at::Tensor>& grad_mix,
                                    const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& box,
                                    const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                    const c10::optional<at::Tensor>& flip, int64_t crop_padding, bool reflect,
                                    at::ScalarType in_dtype, bool channels_last) {
  const MixBackward g = prepare_mix_backward(grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip,
                                             crop_padding, reflect, in_dtype, channels_last);
  const c10::cuda::CUDAGuard guard(g.grad_images.device());
  check_mix_sizes(g.params.B, g.params.H, g.params.W);
  at::Tensor inv = at::empty({g.params.B}, perm.options());
  const at::Tensor& ref = g.params.has_grad_clean ? g.grad_clean : g.grad_mix;
  check_launch(launch_mix_backward(g.params.has_grad_clean ? g.grad_clean.data_ptr() : nullptr,
                                   g.params.has_grad_mix ? g.grad_mix.data_ptr() : nullptr,
                                   dtype_of(ref.scalar_type()), dtype_of(in_dtype), g.params, draw_view(g.draw),
                                   inv.data_ptr<int64_t>(), g.grad_images.data_ptr(), current_stream()),
               "mix_images_backward");
  return g.grad_images;
}

// A zero int32 counter for launch_sem_loss's last-block election, which leaves it zero. Eager
// launches get one cached per (device, stream): zeroed once when made, and launches on one stream
// run one after another, so no memset is added per call, while launches on two streams never
// share one. While the stream captures a CUDA graph the call gets a fresh zeroed counter from the
// graph's pool (a memset node of the graph: every replay starts from zero, on whatever stream it
// runs, and no cached memory belongs to a graph's pool).
at::Tensor election_counter(const at::Tensor& like, cudaStream_t stream) {
  const auto options = like.options().dtype(at::kInt);
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return at::zeros({1}, options);
  }
  static std::mutex mutex;
  // Never destroyed: freeing CUDA memory during static destruction can outlive the CUDA runtime.
  static auto* counters = new std::map<std::pair<c10::DeviceIndex, cudaStream_t>, at::Tensor>();
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& counter = (*counters)[{like.device().index(), stream}];
  if (!counter.defined()) counter = at::zeros({1}, options);
  return counter;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sem_loss_cuda(
    const at::Tensor& logits, const at::Tensor& z_mix, const c10::optional<at::Tensor>& z_clean,
    const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam, double gamma, double label_smoothing,
    bool sem_mean) {
  const c10::cuda::CUDAGuard guard(perm.device());
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  const LossParams params{a.B, a.logits.size(1), a.z_mix.size(1), static_cast<float>(label_smoothing),
                          static_cast<float>(gamma), sem_mean};
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor row_stats = at::empty({a.B, 2}, f32), rows = at::empty({2 * a.B}, f32);
  at::Tensor inv_perm = at::empty({a.B}, a.perm.options());
  at::Tensor loss = at::empty({}, f32), ce = at::empty({}, f32), sem = at::empty({}, f32);
  const cudaStream_t stream = current_stream();
  const at::Tensor counter = election_counter(perm, stream);
  const LossForwardOut out{row_stats.data_ptr<float>(),
                           inv_perm.data_ptr<int64_t>(),
                           rows.data_ptr<float>(),
                           rows.data_ptr<float>() + a.B,
                           reinterpret_cast<unsigned int*>(counter.data_ptr<int32_t>()),
                           loss.data_ptr<float>(),
                           ce.data_ptr<float>(),
                           sem.data_ptr<float>()};
  check_launch(launch_sem_loss(a.logits.data_ptr(), dtype_of(a.logits.scalar_type()), a.z_mix.data_ptr(),
                               a.z_clean.defined() ? a.z_clean.data_ptr() : nullptr, dtype_of(a.z_mix.scalar_type()),
                               a.labels.data_ptr<int64_t>(), a.perm.data_ptr<int64_t>(), a.lam.data_ptr<float>(),
                               params, out, stream),
               "sem_loss");
  return {loss, ce, sem, row_stats, inv_perm};
}

const float* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> sem_loss_backward_cuda(
    const c10::optional<at::Tensor>& grad_loss, const c10::optional<at::Tensor>& grad_ce,
    const c10::optional<at::Tensor>& grad_sem, const at::Tensor& logits, const at::Tensor& z_mix,
    const c10::optional<at::Tensor>& z_clean, const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam,
    const at::Tensor& row_stats, const at::Tensor& inv_perm, double gamma, double label_smoothing, bool sem_mean,
    bool logits_grad, bool z_mix_grad, bool z_clean_grad) {
  const c10::cuda::CUDAGuard guard(perm.device());
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  check_loss_grad_flags(a, z_mix_grad, z_clean_grad);
  const at::Tensor stats = check_row_stats(row_stats, a.B, perm);
  const at::Tensor inv = check_inv_perm(inv_perm, a.B, perm);
  const at::Tensor g_loss = check_scalar_grad(grad_loss, "grad_loss", perm);
  const at::Tensor g_ce = check_scalar_grad(grad_ce, "grad_ce", perm);
  const at::Tensor g_sem = check_scalar_grad(grad_sem, "grad_sem", perm);
  const LossGrads grads{data_or_null(g_loss), data_or_null(g_ce), data_or_null(g_sem)};
  const LossParams params{a.B, a.logits.size(1), a.z_mix.size(1), static_cast<float>(label_smoothing),
                          static_cast<float>(gamma), sem_mean};
  at::Tensor dlogits = logits_grad ? at::empty_like(a.logits) : at::empty({0}, logits.options());
  at::Tensor dz_mix = z_mix_grad ? at::empty_like(a.z_mix) : at::Tensor();
  at::Tensor dz_clean = z_clean_grad ? at::empty_like(a.z_clean) : at::Tensor();
  check_launch(launch_sem_loss_backward(
                   grads, a.logits.data_ptr(), dtype_of(a.logits.scalar_type()), a.z_mix.data_ptr(),
                   a.z_clean.defined() ? a.z_clean.data_ptr() : nullptr, dtype_of(a.z_mix.scalar_type()),
                   a.labels.data_ptr<int64_t>(), a.perm.data_ptr<int64_t>(), a.lam.data_ptr<float>(),
                   stats.data_ptr<float>(), inv.data_ptr<int64_t>(), params,
                   logits_grad ? dlogits.data_ptr() : nullptr, z_mix_grad ? dz_mix.data_ptr() : nullptr,
                   z_clean_grad ? dz_clean.data_ptr() : nullptr, current_stream()),
               "sem_loss_backward");
  // Mixed feature dtypes were computed in float32: return each gradient in its input's dtype.
  return {dlogits, z_mix_grad ? dz_mix.to(z_mix.scalar_type()) : at::empty({0}, z_mix.options()),
          z_clean_grad ? dz_clean.to(z_clean->scalar_type()) : at::empty({0}, z_mix.options())};
}

}  // namespace
}  // namespace sem_fast::cuda

TORCH_LIBRARY_IMPL(sem_fast_native, CUDA, m) {
  m.impl("mix_images", &sem_fast::cuda::mix_images_cuda);
  m.impl("mix_images_backward", &sem_fast::cuda::mix_images_backward_cuda);
  m.impl("sem_loss", &sem_fast::cuda::sem_loss_cuda);
  m.impl("sem_loss_backward", &sem_fast::cuda::sem_loss_backward_cuda);
}
