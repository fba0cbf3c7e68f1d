// Argument checks, kernel parameters and output allocation shared by the CPU and CUDA
// implementations of the sem_fast_native ops (csrc/cpu/*.cpp, csrc/cuda/ops_cuda.cpp; schemas in
// sem_fast/ops/schema.py).
//
// The public functions (sem_fast/ops/functional.py) check every argument with sem_fast/_checks.py first;
// these checks repeat the metadata ones (dtype, shape, device: no host sync) so that a direct
// call of torch.ops.sem_fast_native.* can never read out of bounds. Values (labels, perm, offsets)
// are not checked here: the kernels mask every gather and write NaN for an out-of-range index.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cstdint>

#include "sem_math.h"

namespace sem_fast {

// t must have dtype `dtype`, shape `shape` and ref's device.
inline void check_array(const at::Tensor& t, const char* name, at::ScalarType dtype, c10::IntArrayRef shape,
                        const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, " (B = the batch size), got ", t.sizes());
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but the data is on ", ref.device());
}

inline Strides4 strides_bchw(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The draw tensors as contiguous (B,) / (B, 4) / (B, 2) arrays after checking their metadata.
struct DrawArgs {
  at::Tensor perm, lam, box, is_cutmix, offset, flip;  // offset/flip undefined without augment
};

inline DrawArgs check_draw(const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& box,
                           const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                           const c10::optional<at::Tensor>& flip, int64_t B, const at::Tensor& ref) {
  check_array(perm, "perm", at::kLong, {B}, ref);
  check_array(lam, "lam", at::kFloat, {B}, ref);
  check_array(box, "box", at::kInt, {B, 4}, ref);
  check_array(is_cutmix, "is_cutmix", at::kBool, {B}, ref);
  TORCH_CHECK(offset.has_value() == flip.has_value(), "offset and flip must be given together (an AugmentDraw)");
  DrawArgs d{perm.contiguous(), lam.contiguous(), box.contiguous(), is_cutmix.contiguous(), {}, {}};
  if (offset.has_value()) {
    check_array(*offset, "offset", at::kInt, {B, 2}, ref);
    check_array(*flip, "flip", at::kBool, {B}, ref);
    d.offset = offset->contiguous();
    d.flip = flip->contiguous();
  }
  return d;
}

// Raw pointers of the (contiguous) draw tensors on their device.
inline DrawView draw_view(const DrawArgs& d) {
  return {d.perm.data_ptr<int64_t>(),
          d.lam.data_ptr<float>(),
          d.box.data_ptr<int32_t>(),
          d.is_cutmix.data_ptr<bool>(),
          d.offset.defined() ? d.offset.data_ptr<int32_t>() : nullptr,
          d.flip.defined() ? d.flip.data_ptr<bool>() : nullptr};
}

inline CropFlip make_crop_flip(bool enabled, int64_t crop_padding, bool reflect, int64_t H, int64_t W) {
  TORCH_CHECK(crop_padding >= 0, "crop_padding must be >= 0, got ", crop_padding);
  TORCH_CHECK(!(enabled && reflect) || crop_padding < std::min(H, W), "crop_padding=", crop_padding,
              " with reflect padding must be smaller than the image size (", H, ", ", W, ")");
  return {enabled, crop_padding, reflect, H, W};
}

inline bool is_float_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

// mix_images: checks, kernel parameters and the two outputs (x_mix is (0,) when !mixes).
struct MixForward {
  MixParams params;
  DrawArgs draw;
  at::Tensor x_clean, x_mix;
};

inline MixForward prepare_mix_forward(const at::Tensor& images, const at::Tensor& perm, const at::Tensor& lam,
                                      const at::Tensor& box, const at::Tensor& is_cutmix,
                                      const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& flip,
                                      c10::ArrayRef<double> mean, c10::ArrayRef<double> std, int64_t crop_padding,
                                      bool reflect, at::ScalarType out_dtype, bool channels_last, bool mixes) {
  TORCH_CHECK(images.dim() == 4, "images must be 4-D, (B, H, W, C) uint8 or (B, C, H, W) float; got shape ",
              images.sizes());
  const bool from_uint8 = images.scalar_type() == at::kByte;
  TORCH_CHECK(from_uint8 || is_float_dtype(images.scalar_type()),
              "images must be uint8 (B, H, W, C) or float32/bfloat16/float16 (B, C, H, W), got ",
              images.scalar_type());
  TORCH_CHECK(is_float_dtype(out_dtype), "out_dtype must be float32, bfloat16 or float16, got ", out_dtype);
  // A uint8 (B, H, W, C) batch is read through its (B, C, H, W) view.
  const at::Tensor x = from_uint8 ? images.permute({0, 3, 1, 2}) : images;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(B > 0 && C > 0 && H > 0 && W > 0, "images must be non-empty in every dimension, got shape ",
              images.sizes());

  MixForward f;
  f.draw = check_draw(perm, lam, box, is_cutmix, offset, flip, B, images);
  MixParams& p = f.params;
  p.B = B;
  p.C = C;
  p.H = H;
  p.W = W;
  p.in = strides_bchw(x);
  p.from_uint8 = from_uint8;
  if (from_uint8) {
    TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C, "images have ", C,
                " channels but mean/std have ", mean.size(), "/", std.size(), " values");
    TORCH_CHECK_VALUE(C <= kMaxNormChannels, "uint8 images may have at most ", kMaxNormChannels, " channels, got ", C);
    for (int64_t c = 0; c < C; ++c) {
      p.mean[c] = static_cast<float>(mean[c]);
      p.std[c] = static_cast<float>(std[c]);
    }
  }
  p.aug = make_crop_flip(offset.has_value(), crop_padding, reflect, H, W);
  p.mixes = mixes;

  const auto options = images.options().dtype(out_dtype);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  f.x_clean = at::empty({B, C, H, W}, options.memory_format(format));
  f.x_mix = mixes ? at::empty({B, C, H, W}, options.memory_format(format)) : at::empty({0}, options);
  p.out = strides_bchw(f.x_clean);
  return f;
}

// mix_images_backward: checks, kernel parameters and grad_images ((B, C, H, W), channels_last or contiguous).
struct MixBackward {
  MixGradParams params;
  DrawArgs draw;
  at::Tensor grad_clean, grad_mix;  // undefined when not given
  at::Tensor grad_images;
};

inline MixBackward prepare_mix_backward(const c10::optional<at::Tensor>& grad_clean,
                                        const c10::optional<at::Tensor>& grad_mix,
                                        const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& box,
                                        const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                        const c10::optional<at::Tensor>& flip, int64_t crop_padding, bool reflect,
                                        at::ScalarType in_dtype, bool channels_last) {
  TORCH_CHECK(grad_clean.has_value() || grad_mix.has_value(), "grad_clean and grad_mix cannot both be None");
  TORCH_CHECK(is_float_dtype(in_dtype), "in_dtype must be float32, bfloat16 or float16, got ", in_dtype);
  const at::Tensor& ref = grad_clean.has_value() ? *grad_clean : *grad_mix;
  TORCH_CHECK(ref.dim() == 4, "grad_clean/grad_mix must be (B, C, H, W), got shape ", ref.sizes());
  TORCH_CHECK(is_float_dtype(ref.scalar_type()), "grad_clean/grad_mix must be float, got ", ref.scalar_type());
  for (const auto* grad : {&grad_clean, &grad_mix}) {
    if (!grad->has_value()) continue;
    TORCH_CHECK((*grad)->sizes() == ref.sizes() && (*grad)->scalar_type() == ref.scalar_type() &&
                    (*grad)->device() == ref.device(),
                "grad_clean and grad_mix must have one shape, dtype and device, got ", (*grad)->sizes(), " ",
                (*grad)->scalar_type(), " on ", (*grad)->device(), " and ", ref.sizes(), " ", ref.scalar_type(),
                " on ", ref.device());
  }
  const int64_t B = ref.size(0), C = ref.size(1), H = ref.size(2), W = ref.size(3);
  MixBackward g;
  g.draw = check_draw(perm, lam, box, is_cutmix, offset, flip, B, ref);
  MixGradParams& p = g.params;
  p.B = B;
  p.C = C;
  p.H = H;
  p.W = W;
  p.has_grad_clean = grad_clean.has_value();
  p.has_grad_mix = grad_mix.has_value();
  g.grad_clean = p.has_grad_clean ? *grad_clean : at::Tensor();
  g.grad_mix = p.has_grad_mix ? *grad_mix : at::Tensor();
  p.grad_clean = strides_bchw(ref);  // unused when absent
  p.grad_mix = strides_bchw(ref);
  if (p.has_grad_clean) p.grad_clean = strides_bchw(g.grad_clean);
  if (p.has_grad_mix) p.grad_mix = strides_bchw(g.grad_mix);
  p.aug = make_crop_flip(offset.has_value(), crop_padding, reflect, H, W);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  g.grad_images = at::empty({B, C, H, W}, ref.options().dtype(in_dtype).memory_format(format));
  p.grad_in = strides_bchw(g.grad_images);
  return g;
}

// (B, N) float features/logits as a row-contiguous tensor, after checking its metadata.
inline at::Tensor check_rows(const at::Tensor& t, const char* name, int64_t B, const at::Tensor& ref) {
  TORCH_CHECK(is_float_dtype(t.scalar_type()), name, " must be float32, bfloat16 or float16, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) > 0, name, " must have shape (", B,
              ", N) with N >= 1, got ", t.sizes());
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but perm is on ", ref.device());
  return t.contiguous();
}

// The arguments of the loss ops after their metadata checks: row-contiguous features, z_mix and
// z_clean in one float dtype (both upcast to float32, losslessly, when they differ), int64
// labels, contiguous perm and lam. B is perm's length; tensors an op does not take are null
// pointers here and stay undefined.
struct LossArgs {
  int64_t B = 0;
  at::Tensor logits, z_mix, z_clean, labels, perm, lam;
};

inline LossArgs prepare_loss_args(const at::Tensor& perm, const at::Tensor& lam, const at::Tensor* labels,
                                  const at::Tensor* logits, const at::Tensor* z_mix, const at::Tensor* z_clean) {
  TORCH_CHECK(perm.dim() == 1 && perm.size(0) > 0, "perm must have shape (B,) with B >= 1, got ", perm.sizes());
  LossArgs a;
  a.B = perm.size(0);
  check_array(perm, "perm", at::kLong, {a.B}, perm);
  check_array(lam, "lam", at::kFloat, {a.B}, perm);
  a.perm = perm.contiguous();
  a.lam = lam.contiguous();
  if (labels != nullptr) {
    TORCH_CHECK(labels->scalar_type() == at::kLong || labels->scalar_type() == at::kInt,
                "labels must be int64 or int32, got ", labels->scalar_type());
    check_array(*labels, "labels", labels->scalar_type(), {a.B}, perm);
    a.labels = labels->to(at::kLong).contiguous();
  }
  if (logits != nullptr) a.logits = check_rows(*logits, "logits", a.B, perm);
  if (z_mix != nullptr) a.z_mix = check_rows(*z_mix, "z_mix", a.B, perm);
  if (z_clean != nullptr) {
    a.z_clean = check_rows(*z_clean, "z_clean", a.B, perm);
    TORCH_CHECK(a.z_clean.sizes() == a.z_mix.sizes(), "z_clean must have the shape of z_mix ", a.z_mix.sizes(),
                ", got ", a.z_clean.sizes());
    if (a.z_mix.scalar_type() != a.z_clean.scalar_type()) {
      a.z_mix = a.z_mix.to(at::kFloat);
      a.z_clean = a.z_clean.to(at::kFloat);
    }
  }
  return a;
}

// An optional () gradient scalar on the device of ref, as float32; undefined when absent.
inline at::Tensor check_scalar_grad(const c10::optional<at::Tensor>& grad, const char* name, const at::Tensor& ref) {
  if (!grad.has_value()) return at::Tensor();
  TORCH_CHECK(grad->numel() == 1, name, " must be a single value, got shape ", grad->sizes());
  TORCH_CHECK(grad->device() == ref.device(), name, " must be on ", ref.device());
  return grad->to(at::kFloat).contiguous();
}

// The forward's row statistics: (B, 2) float32 (row max, log-sum-exp relative to it), contiguous.
inline at::Tensor check_row_stats(const at::Tensor& row_stats, int64_t B, const at::Tensor& ref) {
  check_array(row_stats, "row_stats", at::kFloat, {B, 2}, ref);
  return row_stats.contiguous();
}

// The forward's inverse permutation: (B,) int64, contiguous.
inline at::Tensor check_inv_perm(const at::Tensor& inv_perm, int64_t B, const at::Tensor& ref) {
  check_array(inv_perm, "inv_perm", at::kLong, {B}, ref);
  return inv_perm.contiguous();
}

// Which gradients sem_loss_backward writes; z_mix/z_clean gradients need z_clean (the SEM term).
inline void check_loss_grad_flags(const LossArgs& a, bool z_mix_grad, bool z_clean_grad) {
  TORCH_CHECK(a.z_clean.defined() || !(z_mix_grad || z_clean_grad),
              "z_mix_grad and z_clean_grad need z_clean (there is no SEM term without it)");
}

}  // namespace sem_fast
