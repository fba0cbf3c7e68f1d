// Scalar math of the two fused ops, shared by the C++ (CPU) and the CUDA kernels.
//
// Torch-free and CUDA-free: compiled by the host compiler for csrc/cpu/*.cpp and by nvcc
// (__host__ __device__) for csrc/cuda/*.cu, so both backends evaluate the same formulas and the
// CPU tests exercise the index math the GPU kernels use. Semantics: sem_fast/reference.py.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define SEM_HD __host__ __device__ __forceinline__
#else
#define SEM_HD inline
#endif

namespace sem_fast {

// Normalization constants travel inside the kernel-argument struct (no host->device copy, so a
// launch stays legal inside CUDA-graph capture); 16 covers RGB, RGBA and multispectral inputs.
constexpr int kMaxNormChannels = 16;

// crop_source() results that are not a row/column index.
constexpr int64_t kZeroPad = -1;  // the crop reads the zero padding
constexpr int64_t kInvalid = -2;  // an offset outside [0, 2p]: the kernels write NaN

// Element strides of a (B, C, H, W) tensor, in logical (b, c, h, w) order whatever its memory
// format (a uint8 (B, H, W, C) input is described through the permuted view).
struct Strides4 {
  int64_t b, c, h, w;
};

// The per-sample crop-with-padding and flip of a batch of H x W images (AugmentDraw).
struct CropFlip {
  bool enabled;  // offset/flip are given
  int64_t pad;   // crop padding p
  bool reflect;  // reflect padding, else zeros
  int64_t H, W;
};

// The draw of a batch as raw arrays: MixDraw (perm (B,) int64, lam (B,) fp32, box (B, 4) int32,
// is_cutmix (B,) bool) and AugmentDraw (offset (B, 2) int32, flip (B,) bool; null without it).
struct DrawView {
  const int64_t* perm;
  const float* lam;
  const int32_t* box;
  const bool* is_cutmix;
  const int32_t* offset;
  const bool* flip;
};

// Everything the forward mix kernels need besides the data pointers.
struct MixParams {
  int64_t B, C, H, W;
  Strides4 in;   // input images
  Strides4 out;  // both outputs (same memory format)
  bool from_uint8;
  float mean[kMaxNormChannels];  // 0..1 units, used for uint8 input only
  float std[kMaxNormChannels];
  CropFlip aug;
  bool mixes;  // write x_mix
};

// Everything the backward mix kernels need besides the data pointers (float input only).
struct MixGradParams {
  int64_t B, C, H, W;
  Strides4 grad_clean, grad_mix, grad_in;
  CropFlip aug;
  bool has_grad_clean, has_grad_mix;  // an absent gradient counts as zeros
};

// Whether a crop offset lies in [0, 2 * pad] (unchecked under torch.compile).
SEM_HD bool valid_offset(int64_t offset, int64_t pad) { return offset >= 0 && offset <= 2 * pad; }

// Input row (or column) read by output position i of a crop with padding `pad` at offset
// `offset` of a side of length n: kZeroPad inside zero padding, the mirrored index for reflect
// padding (F.pad(mode='reflect'), pad < n), kInvalid for an offset outside [0, 2 * pad].
SEM_HD int64_t crop_source(int64_t i, int64_t offset, int64_t pad, int64_t n, bool reflect) {
  if (!valid_offset(offset, pad)) return kInvalid;
  const int64_t u = i + offset - pad;  // in [-pad, n + pad)
  if (u >= 0 && u < n) return u;
  if (!reflect) return kZeroPad;
  return u < 0 ? -u : 2 * (n - 1) - u;
}

// The output positions i in [0, n) whose crop_source() is input index r: at most 3 (the direct
// one and, for reflect padding, one mirror on each side). Returns their count, written to out,
// or -1 for an offset outside [0, 2 * pad].
SEM_HD int crop_preimages(int64_t r, int64_t offset, int64_t pad, int64_t n, bool reflect, int64_t out[3]) {
  if (!valid_offset(offset, pad)) return -1;
  int count = 0;
  const int64_t shift = pad - offset;  // i = u + pad - offset for padded coordinate u
  const int64_t candidates[3] = {r, -r, 2 * (n - 1) - r};
  const int num = reflect ? 3 : 1;
  for (int k = 0; k < num; ++k) {
    const int64_t u = candidates[k];
    // The mirrors are distinct padded coordinates only outside [0, n).
    if (k > 0 && u >= 0 && u < n) continue;
    const int64_t i = u + shift;
    if (i >= 0 && i < n) out[count++] = i;
  }
  return count;
}

// Column of the (flipped) crop read by output column w.
SEM_HD int64_t flipped_column(int64_t w, bool flip, int64_t width) { return flip ? width - 1 - w : w; }

// Input row read by row h of augmented sample b (crop_source() codes); h without augmentation.
// offset: (B, 2) int32 (dy, dx).
SEM_HD int64_t augment_row(const CropFlip& a, const int32_t* offset, int64_t b, int64_t h) {
  return a.enabled ? crop_source(h, offset[2 * b], a.pad, a.H, a.reflect) : h;
}

// Input column read by column w of augmented sample b; flip: (B,) bool.
SEM_HD int64_t augment_col(const CropFlip& a, const int32_t* offset, const bool* flip, int64_t b, int64_t w) {
  if (!a.enabled) return w;
  return crop_source(flipped_column(w, flip[b], a.W), offset[2 * b + 1], a.pad, a.W, a.reflect);
}

// Rows of augmented sample b that read input row r (at most 3); returns their count, -1 for a
// bad offset.
SEM_HD int augment_row_preimages(const CropFlip& a, const int32_t* offset, int64_t b, int64_t r, int64_t out[3]) {
  if (!a.enabled) {
    out[0] = r;
    return 1;
  }
  return crop_preimages(r, offset[2 * b], a.pad, a.H, a.reflect, out);
}

// Columns of augmented sample b that read input column s (at most 3); returns their count, -1
// for a bad offset.
SEM_HD int augment_col_preimages(const CropFlip& a, const int32_t* offset, const bool* flip, int64_t b, int64_t s,
                                 int64_t out[3]) {
  if (!a.enabled) {
    out[0] = s;
    return 1;
  }
  const int count = crop_preimages(s, offset[2 * b + 1], a.pad, a.W, a.reflect, out);
  for (int k = 0; k < count; ++k) out[k] = flipped_column(out[k], flip[b], a.W);
  return count;
}

// A pixel in the input's own units -> the normalized value (uint8: (v / 255 - mean) / std,
// evaluated in this order in fp32 as the reference does; float input is already normalized).
SEM_HD float normalize_pixel(float v, int64_t c, const MixParams& p) {
  return p.from_uint8 ? (v / 255.0f - p.mean[c]) / p.std[c] : v;
}

// Whether (h, w) lies in sample b's half-open CutMix box (y0, y1, x0, x1); box: (B, 4) int32.
SEM_HD bool in_box(const int32_t* box, int64_t b, int64_t h, int64_t w) {
  const int32_t* bx = box + 4 * b;
  return h >= bx[0] && h < bx[1] && w >= bx[2] && w < bx[3];
}

// x_mix at (h, w) of a sample with own value x_own and partner value x_partner.
SEM_HD float mix_pixel(float x_own, float x_partner, float lam, bool cutmix, bool inside) {
  if (cutmix) return inside ? x_partner : x_own;
  return lam * x_own + (1.0f - lam) * x_partner;
}

// d x_mix[b] / d x_own at (h, w) times the upstream gradient g.
SEM_HD float mix_grad_own(float g, float lam, bool cutmix, bool inside) {
  if (cutmix) return inside ? 0.0f : g;
  return lam * g;
}

// d x_mix[m] / d x_partner at (h, w) times the upstream gradient g (m is the sample whose
// partner is differentiated).
SEM_HD float mix_grad_partner(float g, float lam, bool cutmix, bool inside) {
  if (cutmix) return inside ? g : 0.0f;
  return (1.0f - lam) * g;
}

// Gradient of images[b, c, r, s] (float input): the sum over the augmented pixels (i, j) of
// sample b that read input pixel (r, s) of d x_clean[b] + d x_mix[b] / d x[b] + d x_mix[m] / d x[b]
// with m = inv_perm[b]; NaN when m is -1 (perm is not a permutation) or b's crop offset is bad.
// grad.clean(k, i, j) and grad.mix(k, i, j) return the upstream gradients of channel c as float.
template <typename Grad>
SEM_HD float mix_grad_input(const MixGradParams& p, const DrawView& d, int64_t m, int64_t b, int64_t r, int64_t s,
                            const Grad& grad) {
  int64_t rows[3], cols[3];
  const int num_rows = augment_row_preimages(p.aug, d.offset, b, r, rows);
  const int num_cols = augment_col_preimages(p.aug, d.offset, d.flip, b, s, cols);
  if (num_rows < 0 || num_cols < 0) return NAN;
  float acc = 0.0f;
  for (int ii = 0; ii < num_rows; ++ii) {
    for (int jj = 0; jj < num_cols; ++jj) {
      const int64_t i = rows[ii], j = cols[jj];
      if (p.has_grad_clean) acc += grad.clean(b, i, j);
      if (!p.has_grad_mix) continue;
      acc += mix_grad_own(grad.mix(b, i, j), d.lam[b], d.is_cutmix[b], in_box(d.box, b, i, j));
      acc += m < 0 ? NAN : mix_grad_partner(grad.mix(m, i, j), d.lam[m], d.is_cutmix[m], in_box(d.box, m, i, j));
    }
  }
  return acc;
}

// Mixed, label-smoothed cross-entropy of one row, relative to the row max m so that logits of any
// magnitude keep their accuracy (as F.cross_entropy): lse - l = (m - l) + log_d with
// log_d = log sum_k exp(x_k - m), and the smoothing term's lse - mean(x) = -rel_sum / K + log_d with
// rel_sum = sum_k (x_k - m). A term whose weight is 0 (lam 1 or 0, eps 0) is left out, so a masked
// -inf logit counts only where a target puts weight on it. NaN when labels_ok is false (a label
// outside [0, K) or a partner outside the batch).
SEM_HD float mixed_ce_row(float m, float log_d, float logit_y, float logit_yp, float rel_sum, float lam, float eps,
                          int64_t K, bool labels_ok) {
  if (!labels_ok) return NAN;
  float hard = 0.0f;
  if (lam != 0.0f) hard += lam * (m - logit_y);
  if (lam != 1.0f) hard += (1.0f - lam) * (m - logit_yp);
  const float smooth = eps != 0.0f ? eps * (-rel_sum / static_cast<float>(K)) : 0.0f;
  return (1.0f - eps) * hard + smooth + log_d;
}

// The smoothed mixed target t_k of class k for labels y (own) and yp (partner).
SEM_HD float mixed_target(int64_t k, int64_t y, int64_t yp, float lam, float eps, int64_t K) {
  const float hard = (k == y ? lam : 0.0f) + (k == yp ? 1.0f - lam : 0.0f);
  return (1.0f - eps) * hard + eps / static_cast<float>(K);
}

// SEM target t = lam * z_own + (1 - lam) * z_partner (the reference's order of operations).
SEM_HD float sem_target(float z_own, float z_partner, float lam) { return lam * z_own + (1.0f - lam) * z_partner; }

}  // namespace sem_fast
