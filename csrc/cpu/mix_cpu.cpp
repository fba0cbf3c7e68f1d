// C++ (CPU) kernels of sem_fast_native::mix_images and mix_images_backward (schemas:
// sem_fast/ops/schema.py).
//
// One pass over the output: each (sample, row) task reads its own and its partner's augmented,
// normalized pixels once and writes x_clean and x_mix. Semantics: sem_fast.reference.mix_images.
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "../op_args.h"
#include "cpu_utils.h"

namespace sem_fast::cpu {
namespace {

// An input pixel: its channel-0 element, or null for zero padding (ok) or a bad offset (not ok).
template <typename in_t>
struct Pixel {
  const in_t* at = nullptr;
  bool ok = false;
};

// Reads normalized pixels of the input: uint8 through a (C, 256) table of the reference's
// normalization formula, float as is.
template <typename in_t>
struct PixelReader {
  static constexpr int kLevels = 256;
  const in_t* x;
  const MixParams& p;
  std::vector<float> table;    // (C, 256), uint8 input only
  std::vector<float> padding;  // (C,): the normalized zero padding

  PixelReader(const in_t* data, const MixParams& params) : x(data), p(params), padding(params.C) {
    for (int64_t c = 0; c < p.C; ++c) padding[c] = normalize_pixel(0.0f, c, p);
    if constexpr (std::is_same_v<in_t, uint8_t>) {
      table.resize(p.C * kLevels);
      for (int64_t c = 0; c < p.C; ++c) {
        for (int v = 0; v < kLevels; ++v) table[c * kLevels + v] = normalize_pixel(static_cast<float>(v), c, p);
      }
    }
  }

  // Pixel (u, v) of sample k, u and v crop_source() codes.
  Pixel<in_t> locate(int64_t k, int64_t u, int64_t v) const {
    if (u == kInvalid || v == kInvalid) return {nullptr, false};
    if (u == kZeroPad || v == kZeroPad) return {nullptr, true};
    return {x + k * p.in.b + u * p.in.h + v * p.in.w, true};
  }

  // Normalized channel c of a located pixel (NaN for a bad offset).
  float operator()(const Pixel<in_t>& px, int64_t c) const {
    if (px.at == nullptr) return px.ok ? padding[c] : kNaN;
    const in_t raw = px.at[c * p.in.c];
    if constexpr (std::is_same_v<in_t, uint8_t>) {
      return table[c * kLevels + raw];
    } else {
      return static_cast<float>(raw);
    }
  }
};

template <typename in_t, typename out_t>
void mix_forward(const at::Tensor& images, const MixForward& f) {
  const MixParams& p = f.params;
  const PixelReader<in_t> read(images.data_ptr<in_t>(), p);
  const DrawView d = draw_view(f.draw);
  out_t* clean = f.x_clean.data_ptr<out_t>();
  out_t* mix = p.mixes ? f.x_mix.data_ptr<out_t>() : nullptr;
  const bool channels_inner = p.out.c < p.out.w;  // channels_last output: walk channels innermost

  at::parallel_for(0, p.B * p.H, row_grain(p.C * p.W), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> col_own(p.W), col_partner(p.W);
    std::vector<Pixel<in_t>> own(p.W), partner(p.W);
    std::vector<char> inside(p.W);
    int64_t cols_of = -1;  // sample whose columns col_own/col_partner hold
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.H, h = row % p.H;
      const int64_t j = d.perm[b];
      const bool partner_ok = j >= 0 && j < p.B;
      if (b != cols_of) {
        for (int64_t w = 0; w < p.W; ++w) {
          col_own[w] = augment_col(p.aug, d.offset, d.flip, b, w);
          if (partner_ok) col_partner[w] = augment_col(p.aug, d.offset, d.flip, j, w);
        }
        cols_of = b;
      }
      const int64_t u_own = augment_row(p.aug, d.offset, b, h);
      const int64_t u_partner = partner_ok ? augment_row(p.aug, d.offset, j, h) : kInvalid;
      for (int64_t w = 0; w < p.W; ++w) {
        own[w] = read.locate(b, u_own, col_own[w]);
        partner[w] = partner_ok ? read.locate(j, u_partner, col_partner[w]) : Pixel<in_t>{};
        inside[w] = in_box(d.box, b, h, w);
      }
      const float l = d.lam[b];
      const bool cut = d.is_cutmix[b];
      const int64_t o_row = b * p.out.b + h * p.out.h;
      auto element = [&](int64_t c, int64_t w) {
        const float x_own = read(own[w], c);
        const int64_t o = o_row + c * p.out.c + w * p.out.w;
        clean[o] = static_cast<out_t>(x_own);
        if (mix != nullptr) mix[o] = static_cast<out_t>(mix_pixel(x_own, read(partner[w], c), l, cut, inside[w]));
      };
      if (channels_inner) {
        for (int64_t w = 0; w < p.W; ++w)
          for (int64_t c = 0; c < p.C; ++c) element(c, w);
      } else {
        for (int64_t c = 0; c < p.C; ++c)
          for (int64_t w = 0; w < p.W; ++w) element(c, w);
      }
    }
  });
}

// Upstream gradients of one channel c (see mix_grad_input).
template <typename g_t>
struct ChannelGrad {
  const g_t* g_clean;
  const g_t* g_mix;
  const MixGradParams& p;
  int64_t c;

  float clean(int64_t k, int64_t i, int64_t j) const {
    const Strides4& s = p.grad_clean;
    return static_cast<float>(g_clean[k * s.b + c * s.c + i * s.h + j * s.w]);
  }
  float mix(int64_t k, int64_t i, int64_t j) const {
    const Strides4& s = p.grad_mix;
    return static_cast<float>(g_mix[k * s.b + c * s.c + i * s.h + j * s.w]);
  }
};

template <typename g_t, typename in_t>
void mix_backward(const MixBackward& g) {
  const MixGradParams& p = g.params;
  const g_t* gc = p.has_grad_clean ? g.grad_clean.data_ptr<g_t>() : nullptr;
  const g_t* gm = p.has_grad_mix ? g.grad_mix.data_ptr<g_t>() : nullptr;
  const DrawView d = draw_view(g.draw);
  in_t* out = g.grad_images.data_ptr<in_t>();
  const std::vector<int64_t> inv = inverse_permutation(d.perm, p.B);

  at::parallel_for(0, p.B * p.C, row_grain(p.H * p.W), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / p.C, c = plane % p.C;
      const ChannelGrad<g_t> grad{gc, gm, p, c};
      for (int64_t r = 0; r < p.H; ++r) {
        for (int64_t s = 0; s < p.W; ++s) {
          out[b * p.grad_in.b + c * p.grad_in.c + r * p.grad_in.h + s * p.grad_in.w] =
              static_cast<in_t>(mix_grad_input(p, d, inv[b], b, r, s, grad));
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> mix_images_cpu(const at::Tensor& images, const at::Tensor& perm,
                                                  const at::Tensor& lam, const at::Tensor& box,
                                                  const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                                  const c10::optional<at::Tensor>& flip, c10::ArrayRef<double> mean,
                                                  c10::ArrayRef<double> std, int64_t crop_padding, bool reflect,
                                                  at::ScalarType out_dtype, bool channels_last, bool mixes) {
  const MixForward f = prepare_mix_forward(images, perm, lam, box, is_cutmix, offset, flip, mean, std, crop_padding,
                                           reflect, out_dtype, channels_last, mixes);
  dispatch_image(images.scalar_type(), [&](auto in_tag) {
    dispatch_float(out_dtype, [&](auto out_tag) { mix_forward<decltype(in_tag), decltype(out_tag)>(images, f); });
  });
  return {f.x_clean, f.x_mix};
}

at::Tensor mix_images_backward_cpu(const c10::optional<at::Tensor>& grad_clean,
                                   const c10::optional<at::Tensor>& grad_mix,
                                   const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& box,
                                   const at::Tensor& is_cutmix, const c10::optional<at::Tensor>& offset,
                                   const c10::optional<at::Tensor>& flip, int64_t crop_padding, bool reflect,
                                   at::ScalarType in_dtype, bool channels_last) {
  const MixBackward g = prepare_mix_backward(grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip,
                                             crop_padding, reflect, in_dtype, channels_last);
  const at::ScalarType grad_dtype = (grad_clean.has_value() ? *grad_clean : *grad_mix).scalar_type();
  dispatch_float(grad_dtype, [&](auto g_tag) {
    dispatch_float(in_dtype, [&](auto in_tag) { mix_backward<decltype(g_tag), decltype(in_tag)>(g); });
  });
  return g.grad_images;
}

}  // namespace
}  // namespace sem_fast::cpu

TORCH_LIBRARY_IMPL(sem_fast_native, CPU, m) {
  m.impl("mix_images", &sem_fast::cpu::mix_images_cpu);
  m.impl("mix_images_backward", &sem_fast::cpu::mix_images_backward_cpu);
}
