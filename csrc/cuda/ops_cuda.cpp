// CUDA implementations of the sem_fast_ext ops (schemas: csrc/ops.cpp): argument checks and
// output allocation (csrc/op_args.h), then the launchers of csrc/cuda/*.cu on the current stream.
// Compiled by the host compiler, only in builds with CUDA (setup.py).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

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
  TORCH_CHECK(status == cudaSuccess, "sem_fast_ext::", op, " kernel launch failed: ", cudaGetErrorString(status));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

std::tuple<at::Tensor, at::Tensor> mix_images_cuda(const at::Tensor& images, const at::Tensor& perm,
                                                   const at::Tensor& lam, const at::Tensor& box,
                                                   const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                                   const c10::optional<at::Tensor>& flip, c10::ArrayRef<double> mean,
                                                   c10::ArrayRef<double> std, int64_t crop_padding, bool reflect,
                                                   at::ScalarType out_dtype, bool channels_last, bool mixes) {
  const c10::cuda::CUDAGuard guard(images.device());
  const MixForward f = prepare_mix_forward(images, perm, lam, box, is_cutmix, offset, flip, mean, std, crop_padding,
                                           reflect, out_dtype, channels_last, mixes);
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
                                    at::ScalarType in_dtype) {
  const MixBackward g = prepare_mix_backward(grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip,
                                             crop_padding, reflect, in_dtype);
  const c10::cuda::CUDAGuard guard(g.grad_images.device());
  at::Tensor inv = at::empty({g.params.B}, perm.options());
  const at::Tensor& ref = g.params.has_grad_clean ? g.grad_clean : g.grad_mix;
  check_launch(launch_mix_backward(g.params.has_grad_clean ? g.grad_clean.data_ptr() : nullptr,
                                   g.params.has_grad_mix ? g.grad_mix.data_ptr() : nullptr,
                                   dtype_of(ref.scalar_type()), dtype_of(in_dtype), g.params, draw_view(g.draw),
                                   inv.data_ptr<int64_t>(), g.grad_images.data_ptr(), current_stream()),
               "mix_images_backward");
  return g.grad_images;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sem_loss_cuda(
    const at::Tensor& logits, const at::Tensor& z_mix, const c10::optional<at::Tensor>& z_clean,
    const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam, double label_smoothing, double gamma,
    bool sem_mean) {
  const c10::cuda::CUDAGuard guard(perm.device());
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  const LossParams params{a.B, a.logits.size(1), a.z_mix.size(1), static_cast<float>(label_smoothing),
                          static_cast<float>(gamma), sem_mean};
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor lse = at::empty({a.B}, f32), rows = at::empty({2 * a.B}, f32);
  at::Tensor loss = at::empty({}, f32), ce = at::empty({}, f32), sem = at::empty({}, f32);
  check_launch(launch_sem_loss(a.logits.data_ptr(), dtype_of(a.logits.scalar_type()), a.z_mix.data_ptr(),
                               a.z_clean.defined() ? a.z_clean.data_ptr() : nullptr, dtype_of(a.z_mix.scalar_type()),
                               a.labels.data_ptr<int64_t>(), a.perm.data_ptr<int64_t>(), a.lam.data_ptr<float>(),
                               params, lse.data_ptr<float>(), rows.data_ptr<float>(), loss.data_ptr<float>(),
                               ce.data_ptr<float>(), sem.data_ptr<float>(), current_stream()),
               "sem_loss");
  return {loss, ce, sem, lse};
}

at::Tensor mixed_ce_backward_cuda(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                  const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& lse,
                                  double label_smoothing) {
  const c10::cuda::CUDAGuard guard(perm.device());
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, nullptr, nullptr);
  check_array(lse, "lse", at::kFloat, {a.B}, perm);
  const at::Tensor g = check_scalar_grad(grad, "grad", perm), s = lse.contiguous();
  const LossParams params{a.B, a.logits.size(1), 0, static_cast<float>(label_smoothing), 0.0f, false};
  at::Tensor dlogits = at::empty_like(a.logits);
  check_launch(launch_mixed_ce_backward(g.data_ptr<float>(), a.logits.data_ptr(), dtype_of(a.logits.scalar_type()),
                                        a.labels.data_ptr<int64_t>(), a.perm.data_ptr<int64_t>(),
                                        a.lam.data_ptr<float>(), s.data_ptr<float>(), params, dlogits.data_ptr(),
                                        current_stream()),
               "mixed_ce_backward");
  return dlogits;
}

std::tuple<at::Tensor, at::Tensor> sem_distance_backward_cuda(const at::Tensor& grad, const at::Tensor& z_mix,
                                                              const at::Tensor& z_clean, const at::Tensor& perm,
                                                              const at::Tensor& lam, bool sem_mean, bool with_clean) {
  const c10::cuda::CUDAGuard guard(perm.device());
  const LossArgs a = prepare_loss_args(perm, lam, nullptr, nullptr, &z_mix, &z_clean);
  const at::Tensor g = check_scalar_grad(grad, "grad", perm);
  const LossParams params{a.B, 0, a.z_mix.size(1), 0.0f, 0.0f, sem_mean};
  at::Tensor dz_mix = at::empty_like(a.z_mix);
  at::Tensor dz_clean = with_clean ? at::empty_like(a.z_clean) : at::empty({0}, z_clean.options());
  at::Tensor inv = at::empty({with_clean ? a.B : 0}, a.perm.options());
  check_launch(launch_sem_distance_backward(g.data_ptr<float>(), a.z_mix.data_ptr(), a.z_clean.data_ptr(),
                                            dtype_of(a.z_mix.scalar_type()), a.perm.data_ptr<int64_t>(),
                                            a.lam.data_ptr<float>(), params,
                                            with_clean ? inv.data_ptr<int64_t>() : nullptr, dz_mix.data_ptr(),
                                            with_clean ? dz_clean.data_ptr() : nullptr, current_stream()),
               "sem_distance_backward");
  // Mixed input dtypes were computed in float32: return each gradient in its input's dtype.
  return {dz_mix.to(z_mix.scalar_type()), with_clean ? dz_clean.to(z_clean.scalar_type()) : dz_clean};
}

}  // namespace
}  // namespace sem_fast::cuda

TORCH_LIBRARY_IMPL(sem_fast_ext, CUDA, m) {
  m.impl("mix_images", &sem_fast::cuda::mix_images_cuda);
  m.impl("mix_images_backward", &sem_fast::cuda::mix_images_backward_cuda);
  m.impl("sem_loss", &sem_fast::cuda::sem_loss_cuda);
  m.impl("mixed_ce_backward", &sem_fast::cuda::mixed_ce_backward_cuda);
  m.impl("sem_distance_backward", &sem_fast::cuda::sem_distance_backward_cuda);
}
