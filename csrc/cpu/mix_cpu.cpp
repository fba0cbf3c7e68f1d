// C++ (CPU) kernels of sem_fast_native::mix_images and mix_images_backward (schemas:
// sem_fast/ops/schema.py). Semantics: sem_fast.reference.mix_images.
//
// Forward: an augment pass (crop with padding, flip, or a layout change; skipped without them)
// copies the raw input rows into a batch laid out like the outputs, then a mix pass writes x_clean
// and x_mix from it. Backward: a terms pass writes the gradient with respect to the augmented
// batch (grad_images itself without augmentation), then an unaugment pass gathers it back onto the
// input pixels. Each pass is one at::parallel_for over the B * H (sample, row) tasks, and its
// loops run over contiguous runs of rows laid out like the outputs (csrc/cpu/mix_rows.inc): a
// sample's rows merge into one run wherever no CutMix box or crop breaks them, so there is no
// index math per element (the old kernels divided, looked up the crop and the normalization per
// element). The run loops are compiled once per instruction set (SSE2, AVX2, AVX-512; cpu_isa()
// picks one) from the same source with the same operations in the same order (no FMA
// contraction), so results are bit-identical across instruction sets, thread counts and task
// splits (tests/ops/test_native_backend.py). uint8 pixels are normalized by a multiply and an add
// (Affine), within 2-3 float ulps of the reference's two divisions.
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../op_args.h"
#include "cpu_utils.h"

namespace sem_fast::cpu {
namespace {

// Element strides of a (C, W) image row.
struct RowStrides {
  int64_t c, w;
};

// Whether a row's pixels are adjacent runs of C elements: one run of W * C elements.
inline bool channels_inner(RowStrides s, int64_t C) { return s.w == C && (s.c == 1 || C == 1); }

// How the kernels lay a batch out: like the outputs, channels innermost (channels_last: one
// plane, rows of W * C elements) or one plane per channel (NCHW: C planes of rows of W), samples
// dense. A sample's rows are adjacent within a plane, so rows [h0, h1) of a plane are one run.
struct Layout {
  int64_t planes;   // 1 or C
  int64_t channel;  // element stride between channels (and planes)
  int64_t pixel;    // element stride between pixels: C or 1
  int64_t row;      // elements per row of a plane: W * C or W
  int64_t sample;   // C * H * W
  int64_t C, H, W;

  RowStrides strides() const { return {channel, pixel}; }
  // A single row (a row buffer): planes W apart.
  RowStrides row_strides() const { return {planes > 1 ? W : 1, pixel}; }
  // Whether a (B, C, H, W) tensor with element strides s has its samples laid out like this
  // (strides of size-1 dimensions do not matter).
  bool dense(const Strides4& s) const {
    return (s.c == channel || C == 1) && (s.h == row || H == 1) && (s.w == pixel || W == 1);
  }
};

inline Layout make_layout(bool channels_last, int64_t C, int64_t H, int64_t W) {
  if (channels_last) return {1, 1, C, W * C, C * H * W, C, H, W};
  return {C, H * W, 1, W, C * H * W, C, H, W};
}

// Which input column each output column of one augmented sample reads (augment_col of
// csrc/sem_math.h, as runs): output columns [lo, hi) read input columns first, first + step, ...
// (step -1 when flipped); the others read the padding (zeros, or a mirrored column: augment_col per
// column). valid is false for a crop offset outside [0, 2 * pad].
struct ColumnMap {
  bool valid;
  int64_t lo, hi, first, step;
};

inline ColumnMap column_map(const CropFlip& a, const int32_t* offset, const bool* flip, int64_t k, int64_t W) {
  if (!a.enabled) return {true, 0, W, 0, 1};
  const int64_t dx = offset[2 * k + 1];
  if (!valid_offset(dx, a.pad)) return {false, 0, 0, 0, 1};
  // Output column j reads input column base + step * j where that lies in [0, W).
  const bool flipped = flip[k];
  const int64_t step = flipped ? -1 : 1;
  const int64_t base = (flipped ? W - 1 : 0) + dx - a.pad;
  const int64_t lo = std::clamp<int64_t>(flipped ? base - W + 1 : -base, 0, W);
  const int64_t hi = std::clamp<int64_t>(flipped ? base + 1 : W - base, lo, W);
  return {true, lo, hi, base + step * lo, step};
}

// A sample's CutMix box (y0, y1, x0, x1) clipped to the image: the pixels in_box of
// csrc/sem_math.h accepts. Empty by default.
struct Box {
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;

  bool active(int64_t h) const { return h >= y0 && h < y1 && x0 < x1; }
  bool covers_rows(int64_t h0, int64_t h1) const { return x0 < x1 && std::max(h0, y0) < std::min(h1, y1); }
};

inline Box sample_box(const DrawView& d, int64_t k, int64_t H, int64_t W) {
  const int32_t* box = d.box + 4 * k;
  Box b;
  b.y0 = std::clamp<int64_t>(box[0], 0, H);
  b.y1 = std::clamp<int64_t>(box[1], b.y0, H);
  b.x0 = std::clamp<int64_t>(box[2], 0, W);
  b.x1 = std::clamp<int64_t>(box[3], b.x0, W);
  return b;
}

// How uint8 pixels are normalized: v * scale + bias, one multiply and one add per element (a SIMD
// lane each), with scale = 1 / (255 std) and bias = -mean / std rounded from double, where the
// reference's (v / 255 - mean) / std takes two divisions. Over all 256 levels it differs from the
// reference by at most 2.4e-7 for CIFAR's statistics and 4.8e-7 for ImageNet's (2-3 float ulps of
// the result), and v = 0, the zero padding, gives exactly the reference's -mean / std. The
// constants are laid out like `chunk` elements of a plane's run (a multiple of C, so each chunk
// starts at channel 0; one chunk per plane), so that a run reads them as it reads its pixels, in
// chunks (normalize() in csrc/cpu/mix_rows.inc).
struct Affine {
  const float* scale;  // (planes * chunk,)
  const float* bias;
  int64_t chunk;
  int64_t plane_step;  // chunk with one plane per channel, 0 with channels innermost

  Affine plane(int64_t q) const { return {scale + q * plane_step, bias + q * plane_step, chunk, plane_step}; }
};

// Pixels per Affine chunk: 64, 12 AVX-512 vectors of an RGB run; 768 floats of constants.
constexpr int64_t kAffinePixels = 64;

// Float input is already normalized: its elements as they are, in one chunk.
struct Identity {
  static constexpr int64_t chunk = std::numeric_limits<int64_t>::max();

  Identity plane(int64_t) const { return {}; }
};

// What the forward kernels read and write.
struct ForwardArgs {
  const MixParams& p;
  DrawView d;
  Layout layout;
  const void* images;
  void* augmented;        // the augment pass's batch, when there is one
  const void* source;     // what the mix pass reads: images or augmented, laid out as layout
  int64_t source_sample;  // elements between its samples
  void* x_clean;
  void* x_mix;    // null unless p.mixes
  Affine affine;  // uint8 input

  // Whether sample k's crop offsets are valid (else its augmented image reads as NaN).
  bool sample_ok(int64_t k) const {
    return !p.aug.enabled || (valid_offset(d.offset[2 * k], p.aug.pad) && valid_offset(d.offset[2 * k + 1], p.aug.pad));
  }
};

template <typename in_t>
auto normalizer(const ForwardArgs& a) {
  if constexpr (std::is_same_v<in_t, uint8_t>) {
    return a.affine;
  } else {
    return Identity{};
  }
}

// What the backward kernels read and write.
struct BackwardArgs {
  const MixGradParams& p;
  DrawView d;
  Layout layout;       // grad_images'
  const int64_t* inv;  // (B,) inverse permutation, -1 where perm misses an index
  const void* grad_clean;
  const void* grad_mix;
  void* grad_images;
};

// The kernels, once per instruction set (the same source in three namespaces; SEM_ISA_LANES: the
// floats in one of its vector registers). Vector arguments of these internal functions never
// cross the library's interface, so GCC's note that their ABI depends on the set does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
SEM_FAST_BEGIN_BASELINE
#define SEM_ISA isa_baseline
#define SEM_ISA_LANES 4
#include "mix_rows.inc"
#undef SEM_ISA_LANES
#undef SEM_ISA
SEM_FAST_END_ISA
#if SEM_FAST_CPU_MULTI_ISA
SEM_FAST_BEGIN_AVX2
#define SEM_ISA isa_avx2
#define SEM_ISA_LANES 8
#include "mix_rows.inc"
#undef SEM_ISA_LANES
#undef SEM_ISA
SEM_FAST_END_ISA
SEM_FAST_BEGIN_AVX512
#define SEM_ISA isa_avx512
#define SEM_ISA_LANES 16
#include "mix_rows.inc"
#undef SEM_ISA_LANES
#undef SEM_ISA
SEM_FAST_END_ISA
#define SEM_FAST_PICK_ISA(...) \
  pick_isa(&isa_baseline::__VA_ARGS__, &isa_avx2::__VA_ARGS__, &isa_avx512::__VA_ARGS__)
#else
#define SEM_FAST_PICK_ISA(...) (&isa_baseline::__VA_ARGS__)
#endif
#pragma GCC diagnostic pop

// Runs kernel(begin, end) over the B * H (sample, row) tasks in parallel.
template <typename F>
void for_rows(const Layout& L, int64_t B, F&& kernel) {
  at::parallel_for(0, B * L.H, row_grain(L.C * L.W), kernel);
}

template <typename in_t, typename out_t>
void mix_forward(const at::Tensor& images, const MixForward& f, bool channels_last) {
  const MixParams& p = f.params;
  const int64_t C = p.C;
  const Layout L = make_layout(channels_last, C, p.H, p.W);
  TORCH_INTERNAL_ASSERT(L.dense(p.out), "mix kernels: outputs must be laid out as channels_last says");
  // The normalization constants (on the stack: a call allocates nothing but its outputs and the
  // augment pass's batch).
  std::array<float, kAffinePixels * kMaxNormChannels> scale{}, bias{};
  const int64_t chunk = kAffinePixels * (L.planes > 1 ? 1 : C);
  for (int64_t e = 0; e < L.planes * chunk && p.from_uint8; ++e) {
    const int64_t c = L.planes > 1 ? e / chunk : e % C;
    scale[e] = static_cast<float>(1.0 / (255.0 * static_cast<double>(p.std[c])));
    bias[e] = static_cast<float>(-static_cast<double>(p.mean[c]) / static_cast<double>(p.std[c]));
  }
  // The input as is when it is laid out like the output and needs no crop or flip.
  const bool augments = p.aug.enabled || !L.dense(p.in);
  const at::Tensor augmented = augments ? at::empty_like(f.x_clean, images.options()) : at::Tensor();
  const ForwardArgs args{p,
                         draw_view(f.draw),
                         L,
                         images.data_ptr(),
                         augments ? augmented.data_ptr() : nullptr,
                         augments ? augmented.data_ptr() : images.data_ptr(),
                         augments ? L.sample : p.in.b,
                         f.x_clean.data_ptr(),
                         p.mixes ? f.x_mix.data_ptr() : nullptr,
                         Affine{scale.data(), bias.data(), chunk, L.planes > 1 ? chunk : 0}};
  if (augments) {
    const auto kernel = SEM_FAST_PICK_ISA(augment_rows<in_t>);
    for_rows(L, p.B, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
  }
  const auto kernel = SEM_FAST_PICK_ISA(mix_rows<in_t, out_t>);
  for_rows(L, p.B, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
}

template <typename g_t, typename in_t>
void mix_backward(const MixBackward& g, bool channels_last) {
  const MixGradParams& p = g.params;
  const DrawView d = draw_view(g.draw);
  const Layout L = make_layout(channels_last, p.C, p.H, p.W);
  TORCH_INTERNAL_ASSERT(L.dense(p.grad_in), "mix kernels: grad_images must be laid out as channels_last says");
  const std::vector<int64_t> inv = inverse_permutation(d.perm, p.B);
  const BackwardArgs args{p,
                          d,
                          L,
                          inv.data(),
                          p.has_grad_clean ? g.grad_clean.data_ptr() : nullptr,
                          p.has_grad_mix ? g.grad_mix.data_ptr() : nullptr,
                          g.grad_images.data_ptr()};
  if (!p.aug.enabled) {
    const auto kernel = SEM_FAST_PICK_ISA(terms_rows<g_t, in_t>);
    for_rows(L, p.B, [&](int64_t begin, int64_t end) { kernel(args, args.grad_images, p.grad_in.b, begin, end); });
    return;
  }
  const at::Tensor terms = at::empty_like(g.grad_images, g.grad_images.options().dtype(at::kFloat));
  const auto terms_kernel = SEM_FAST_PICK_ISA(terms_rows<g_t, float>);
  for_rows(L, p.B, [&](int64_t begin, int64_t end) { terms_kernel(args, terms.data_ptr(), L.sample, begin, end); });
  const auto kernel = SEM_FAST_PICK_ISA(unaugment_rows<in_t>);
  const float* t = terms.data_ptr<float>();
  for_rows(L, p.B, [&](int64_t begin, int64_t end) { kernel(args, t, begin, end); });
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
    dispatch_float(out_dtype,
                   [&](auto out_tag) { mix_forward<decltype(in_tag), decltype(out_tag)>(images, f, channels_last); });
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
    dispatch_float(in_dtype, [&](auto in_tag) { mix_backward<decltype(g_tag), decltype(in_tag)>(g, channels_last); });
  });
  return g.grad_images;
}

}  // namespace
}  // namespace sem_fast::cpu

TORCH_LIBRARY_IMPL(sem_fast_native, CPU, m) {
  m.impl("mix_images", &sem_fast::cpu::mix_images_cpu);
  m.impl("mix_images_backward", &sem_fast::cpu::mix_images_backward_cpu);
}
