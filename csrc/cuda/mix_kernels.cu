// CUDA kernels of sem_fast_native::mix_images and mix_images_backward (schemas: sem_fast/ops/schema.py).
// Torch-free (see kernels.h). The index math mirrors the Triton kernels (sem_fast/ops/triton/mix.py).
//
// Forward of the loader's layout (uint8 NHWC input with contiguous channels, channels-last output,
// 1, 3 or 4 channels, rows of whole runs): mix_forward_run_kernel. Grid (tiles, B): a block of
// kRunThreads threads covers as many runs of V consecutive pixels of one row of one sample, every
// channel, V = 16 bytes / output element, so each channel row of a run is one 16-byte store and,
// for a dense input, one 4- or 8-byte load. Every register's channel and pixel are compile-time
// constants: the per-channel normalization is one FMA with constant-bank operands
// (x * 1/(255 std) - mean/std), pixel work (column, crop, flip, box) is done once per pixel,
// per-sample values once per thread, and the row of a run comes from a multiply-high by a magic
// number (FastDiv): no division, no 64-bit index math per element.
// Every other input (float, NCHW output, other channel counts, partial runs): mix_forward_kernel,
// one thread per pixel and a loop over channels, 32-bit in-sample offsets when the tensors allow
// (a checked 64-bit instance otherwise).
// Backward: mix_backward_kernel, one thread per input pixel and a loop over channels, gathering the
// gradients of the output pixels that read it (no atomics).
//
// Semantics of bad values (unchecked under torch.compile), as the Triton kernels: a crop offset
// outside [0, 2 * pad] gives NaN (the offset is clamped so every read stays in the image), a partner
// outside the batch gives a NaN x_mix, a -1 in the inverse permutation a NaN gradient.
#include <type_traits>

#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

// 4 warps per block, as the Triton kernels (benchmarks/static.py: instructions per element,
// registers, no spills); a block covers 128 runs (a 32x32 image in bf16).
constexpr int kRunThreads = 128;
// One thread per pixel in the generic kernels: 8 warps to hide the latency of their scalar gathers.
constexpr int kPixelThreads = 256;
// Channels of the run kernel (RGB, gray, RGBA).
constexpr int kMaxRunChannels = 4;

// Where the run kernel reads a run: dense NHWC (vector loads at the output's offsets), strided
// NHWC without augmentation, or cropped and flipped with zero or reflect padding.
enum Source : int { kDense = 0, kStrided = 1, kZeros = 2, kReflect = 3 };

struct RunParams {
  int B, H, W;
  int runs_per_row;  // W / V
  FastDiv runs;      // division by runs_per_row
  int64_t sample_in;  // input sample stride (elements)
  int row_in, col_in;  // input row and column strides; the channel stride is 1
  int pad;
  float scale[kMaxRunChannels], bias[kMaxRunChannels];  // uint8 -> normalized value: x * scale + bias
  bool mixes;
};

// Sample k's crop and flip: output pixel (i, j) reads padded source (i + row_shift, col_base +
// col_sign * j); ok is false for an offset outside [0, 2 * pad] (then clamped to pad).
struct Crop {
  int row_shift, col_base, col_sign;
  bool ok;
};

__device__ __forceinline__ Crop crop_of(const DrawView& d, int64_t k, int pad, int W, bool enabled) {
  if (!enabled) return {0, 0, 1, true};
  int dy = d.offset[2 * k], dx = d.offset[2 * k + 1];
  const bool ok = dy >= 0 && dy <= 2 * pad && dx >= 0 && dx <= 2 * pad;
  dy = (ok ? dy : pad) - pad;
  dx = (ok ? dx : pad) - pad;
  const bool flip = d.flip[k];
  return {dy, flip ? W - 1 + dx : dx, flip ? -1 : 1, ok};
}

// A padded index s in [-pad, n + pad) mirrored into [0, n) (reflect padding, pad < n).
__device__ __forceinline__ int reflect_index(int s, int n) {
  s = abs(s);
  return min(s, 2 * (n - 1) - s);
}

// Whether 0 <= s < n, in one unsigned compare.
__device__ __forceinline__ bool inside(int s, int n) { return static_cast<unsigned>(s) < static_cast<unsigned>(n); }

template <int V>
struct alignas(V) Bytes {
  uint8_t b[V];
};

// The C * V raw values of a run (register e: pixel e / C, channel e % C) of the input sample at xs.
template <int C, int V, int kSource>
__device__ __forceinline__ void load_run(const uint8_t* __restrict__ xs, const RunParams& p, const Crop& crop, int i,
                                         int j0, int o, float (&v)[C * V]) {
  if constexpr (kSource == kDense) {
#pragma unroll
    for (int k = 0; k < C; ++k) {
      const Bytes<V> chunk = reinterpret_cast<const Bytes<V>*>(xs + o)[k];
#pragma unroll
      for (int t = 0; t < V; ++t) v[k * V + t] = chunk.b[t];
    }
  } else {
    const int si = kSource == kStrided ? i : i + crop.row_shift;
    const bool row_in = kSource != kZeros || inside(si, p.H);
    const uint8_t* row = xs + static_cast<int64_t>(kSource == kReflect ? reflect_index(si, p.H) : si) * p.row_in;
#pragma unroll
    for (int u = 0; u < V; ++u) {
      int sj = kSource == kStrided ? j0 + u : crop.col_base + crop.col_sign * (j0 + u);
      if constexpr (kSource == kReflect) sj = reflect_index(sj, p.W);
      const bool in = kSource != kZeros || (row_in && inside(sj, p.W));
      const uint8_t* px = row + sj * p.col_in;
#pragma unroll
      for (int c = 0; c < C; ++c) v[u * C + c] = in ? px[c] : 0;
    }
  }
}

// The run of sample k, cropped and flipped by its AugmentDraw, normalized: x * scale + bias per
// channel (NaN for a crop offset outside [0, 2 * pad]).
template <int C, int V, int kSource>
__device__ __forceinline__ void normalized_run(const uint8_t* __restrict__ x, int64_t k, const RunParams& p,
                                               const DrawView& d, int i, int j0, int o, float (&v)[C * V]) {
  const Crop crop = crop_of(d, k, p.pad, p.W, kSource >= kZeros);
  load_run<C, V, kSource>(x + k * p.sample_in, p, crop, i, j0, o, v);
  const float nan = crop.ok ? 0.0f : NAN;
#pragma unroll
  for (int e = 0; e < C * V; ++e) v[e] = fmaf(v[e], p.scale[e % C], p.bias[e % C] + nan);
}

// 16 bytes of out_t (V values) from floats.
template <typename out_t>
__device__ __forceinline__ uint4 pack16(const float* f) {
  if constexpr (std::is_same_v<out_t, float>) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  } else {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = pack2<out_t>(f[2 * k], f[2 * k + 1]);
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// Stores the C * V values of a run at dst (16-byte aligned): C vector stores.
template <typename out_t, int C, int V>
__device__ __forceinline__ void store_run(out_t* __restrict__ dst, const float (&v)[C * V]) {
#pragma unroll
  for (int k = 0; k < C; ++k) reinterpret_cast<uint4*>(dst)[k] = pack16<out_t>(v + k * V);
}

template <typename out_t, int C, int kSource>
__global__ void __launch_bounds__(kRunThreads)
    mix_forward_run_kernel(const uint8_t* __restrict__ x, const RunParams p, const DrawView d,
                           out_t* __restrict__ clean, out_t* __restrict__ mix) {
  constexpr int V = 16 / sizeof(out_t);
  constexpr int N = C * V;
  const int b = blockIdx.y;
  const int run = blockIdx.x * kRunThreads + threadIdx.x;
  const int i = p.runs.div(run);
  if (i >= p.H) return;
  const int j0 = (run - i * p.runs_per_row) * V;
  const int o = (i * p.W + j0) * C;  // the run's first element in a dense sample, NHWC
  const int64_t out = static_cast<int64_t>(b) * p.H * p.W * C + o;

  float v[N];
  normalized_run<C, V, kSource>(x, b, p, d, i, j0, o, v);
  store_run<out_t, C, V>(clean + out, v);
  if (!p.mixes) return;

  int64_t q = d.perm[b];
  const bool perm_ok = q >= 0 && q < p.B;
  q = perm_ok ? q : 0;
  float w[N];
  normalized_run<C, V, kSource>(x, q, p, d, i, j0, o, w);
  if (d.is_cutmix[b] && perm_ok) {
    const int32_t* box = d.box + 4 * b;
    const int x0 = box[2], x1 = box[3];
    const bool row_in = i >= box[0] && i < box[1];
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const int j = j0 + e / C;
      v[e] = row_in && j >= x0 && j < x1 ? w[e] : v[e];
    }
  } else {
    // A partner outside the batch makes the whole mixed image NaN (through its weight).
    const float lam = d.lam[b], weight = perm_ok ? 1.0f - lam : NAN;
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = fmaf(lam, v[e], weight * w[e]);
  }
  store_run<out_t, C, V>(mix + out, v);
}

// Sizes and crop of a batch as the generic kernels (one thread per pixel) index it.
struct Images {
  int B, C, H, W;
  FastDiv cols;  // division by W
  int pad;
  bool augment, reflect;
};

// The generic forward: any input, dense output in out's strides.
struct PixelParams {
  Images im;
  int64_t sample_in, sample_out;
  Strides4 in, out;  // c, h, w strides used (index_t arithmetic)
  bool mixes;
  float scale[kMaxNormChannels], bias[kMaxNormChannels];  // uint8 input only
};

// The (row, column) of this thread's pixel of its sample's H x W grid (blockIdx.x tiles the grid,
// blockIdx.y is the sample); false for the threads past its last pixel.
__device__ __forceinline__ bool pixel_of(const Images& im, int& row, int& col) {
  const int pixel = blockIdx.x * kPixelThreads + threadIdx.x;
  row = im.cols.div(pixel);
  col = pixel - row * im.W;
  return row < im.H;
}

// Offset (index_t) of the source pixel of output (i, j) under crop, and whether it is inside the
// image (false in zero padding).
template <typename index_t>
__device__ __forceinline__ index_t source_pixel(const PixelParams& p, const Crop& crop, int i, int j, bool& in) {
  const Images& im = p.im;
  int si = i, sj = j;
  in = true;
  if (im.augment) {
    si = i + crop.row_shift;
    sj = crop.col_base + crop.col_sign * j;
    if (im.reflect) {
      si = reflect_index(si, im.H);
      sj = reflect_index(sj, im.W);
    } else {
      in = inside(si, im.H) && inside(sj, im.W);
    }
  }
  return static_cast<index_t>(si) * static_cast<index_t>(p.in.h) + static_cast<index_t>(sj) * static_cast<index_t>(p.in.w);
}

template <typename in_t, typename out_t, typename index_t>
__global__ void __launch_bounds__(kPixelThreads)
    mix_forward_kernel(const in_t* __restrict__ x, const PixelParams p, const DrawView d, out_t* __restrict__ clean,
                       out_t* __restrict__ mix) {
  const Images& im = p.im;
  const int b = blockIdx.y;
  int i, j;
  if (!pixel_of(im, i, j)) return;
  const index_t out = static_cast<index_t>(i) * static_cast<index_t>(p.out.h) +
                      static_cast<index_t>(j) * static_cast<index_t>(p.out.w);
  out_t* clean_px = clean + b * p.sample_out + out;
  out_t* mix_px = mix + b * p.sample_out + out;

  bool in_own, in_partner = false;
  const Crop own = crop_of(d, b, im.pad, im.W, im.augment);
  const in_t* x_own = x + b * p.sample_in + source_pixel<index_t>(p, own, i, j, in_own);
  const float nan_own = own.ok ? 0.0f : NAN;
  const in_t* x_partner = x;
  float lam = 1.0f, weight = 0.0f, nan_partner = 0.0f;
  bool select = false, take_partner = false;  // CutMix: x_mix is x_clean or the partner's, no blend
  if (p.mixes) {
    int64_t q = d.perm[b];
    const bool perm_ok = q >= 0 && q < im.B;
    q = perm_ok ? q : 0;
    const Crop partner = crop_of(d, q, im.pad, im.W, im.augment);
    x_partner = x + q * p.sample_in + source_pixel<index_t>(p, partner, i, j, in_partner);
    nan_partner = partner.ok ? 0.0f : NAN;
    lam = d.lam[b];
    weight = perm_ok ? 1.0f - lam : NAN;  // a partner outside the batch: a NaN x_mix
    const int32_t* box = d.box + 4 * b;
    select = d.is_cutmix[b] && perm_ok;
    take_partner = select && i >= box[0] && i < box[1] && j >= box[2] && j < box[3];
    in_partner = in_partner && (take_partner || !select);  // CutMix reads the partner in the box only
  }
#pragma unroll 1
  for (int c = 0; c < im.C; ++c) {
    const index_t ch = static_cast<index_t>(c) * static_cast<index_t>(p.in.c);
    float scale = 1.0f, bias = -0.0f;  // x * 1 + -0.0 == x, -0.0 included
    if constexpr (std::is_same_v<in_t, uint8_t>) scale = p.scale[c], bias = p.bias[c];
    const float v = fmaf(in_own ? to_float(x_own[ch]) : 0.0f, scale, bias + nan_own);
    const index_t oc = static_cast<index_t>(c) * static_cast<index_t>(p.out.c);
    clean_px[oc] = from_float<out_t>(v);
    if (!p.mixes) continue;
    const float vq = fmaf(in_partner ? to_float(x_partner[ch]) : 0.0f, scale, bias + nan_partner);
    mix_px[oc] = from_float<out_t>(select ? (take_partner ? vq : v) : fmaf(lam, v, weight * vq));
  }
}

struct GradParams {
  Images im;
  int64_t sample_gc, sample_gm, sample_out;
  Strides4 gc, gm, out;  // c, h, w strides used (index_t arithmetic)
  bool has_gc, has_gm;
};

// Output index k along one axis whose (cropped, flipped) padded source base + sign * k, mirrored by
// reflect padding, is input index r: candidate 0 the direct read, 1 the mirror of the leading pad,
// 2 that of the trailing pad (distinct source positions only for r > 0 and r < n - 1).
__device__ __forceinline__ int preimage(int r, int base, int sign, int n, int which, bool& ok) {
  const int u = which == 0 ? r : (which == 1 ? -r : 2 * (n - 1) - r);
  const int k = sign * (u - base);
  ok = (which == 0 || (which == 1 ? r > 0 : r < n - 1)) && inside(k, n);
  return k;
}

// kCandidates: output pixels per axis pair that may read an input pixel: 1 (no augment, or zero
// padding), 9 with reflect padding (see preimage).
template <typename g_t, typename in_t, typename index_t, int kCandidates>
__global__ void __launch_bounds__(kPixelThreads)
    mix_backward_kernel(const g_t* __restrict__ g_clean, const g_t* __restrict__ g_mix, const GradParams p,
                        const DrawView d, const int64_t* __restrict__ inv, in_t* __restrict__ grad) {
  const Images& im = p.im;
  const int k = blockIdx.y;
  int r, s;
  if (!pixel_of(im, r, s)) return;

  int64_t m = inv[k];
  const bool m_ok = m >= 0 && m < im.B;
  m = m_ok ? m : 0;
  const Crop crop = crop_of(d, k, im.pad, im.W, im.augment);
  const int32_t* box_k = d.box + 4 * k;
  const int32_t* box_m = d.box + 4 * m;
  const bool cut_k = d.is_cutmix[k], cut_m = d.is_cutmix[m];
  const float lam_k = d.lam[k], lam_m = d.lam[m], nan_m = m_ok ? 0.0f : NAN;

  // The output pixels that read (r, s), their offsets and the weights of g_mix[k] (own) and
  // g_mix[m] (partner) there.
  bool valid[kCandidates];
  index_t off_gc[kCandidates], off_gm[kCandidates];
  float own[kCandidates], partner[kCandidates];
#pragma unroll
  for (int n = 0; n < kCandidates; ++n) {
    bool row_ok = true, col_ok = true;
    int i = r, j = s;
    if (im.augment) {
      i = preimage(r, crop.row_shift, 1, im.H, n / 3, row_ok);
      j = preimage(s, crop.col_base, crop.col_sign, im.W, n % 3, col_ok);
    }
    valid[n] = row_ok && col_ok;
    off_gc[n] = static_cast<index_t>(i) * static_cast<index_t>(p.gc.h) + static_cast<index_t>(j) * static_cast<index_t>(p.gc.w);
    off_gm[n] = static_cast<index_t>(i) * static_cast<index_t>(p.gm.h) + static_cast<index_t>(j) * static_cast<index_t>(p.gm.w);
    const bool in_k = i >= box_k[0] && i < box_k[1] && j >= box_k[2] && j < box_k[3];
    const bool in_m = i >= box_m[0] && i < box_m[1] && j >= box_m[2] && j < box_m[3];
    own[n] = cut_k ? (in_k ? 0.0f : 1.0f) : lam_k;
    partner[n] = (cut_m ? (in_m ? 1.0f : 0.0f) : 1.0f - lam_m) + nan_m;
  }
  const g_t* gc = g_clean + k * p.sample_gc;
  const g_t* gm_k = g_mix + k * p.sample_gm;
  const g_t* gm_m = g_mix + m * p.sample_gm;
  in_t* out = grad + k * p.sample_out + static_cast<index_t>(r) * static_cast<index_t>(p.out.h) +
              static_cast<index_t>(s) * static_cast<index_t>(p.out.w);
  const float nan_k = crop.ok ? -0.0f : NAN;  // acc + -0.0 == acc
#pragma unroll 1
  for (int c = 0; c < im.C; ++c) {
    const index_t c_gc = static_cast<index_t>(c) * static_cast<index_t>(p.gc.c);
    const index_t c_gm = static_cast<index_t>(c) * static_cast<index_t>(p.gm.c);
    float acc = nan_k;
#pragma unroll
    for (int n = 0; n < kCandidates; ++n) {
      if (!valid[n]) continue;
      if (p.has_gc) acc += to_float(gc[c_gc + off_gc[n]]);
      if (p.has_gm) {
        acc += own[n] * to_float(gm_k[c_gm + off_gm[n]]);
        acc += partner[n] * to_float(gm_m[c_gm + off_gm[n]]);
      }
    }
    out[static_cast<index_t>(c) * static_cast<index_t>(p.out.c)] = from_float<in_t>(acc);
  }
}

// Largest element offset within one sample of a tensor with these (c, h, w) strides.
int64_t sample_span(const Strides4& s, int64_t C, int64_t H, int64_t W) {
  return (C - 1) * (s.c < 0 ? -s.c : s.c) + (H - 1) * (s.h < 0 ? -s.h : s.h) + (W - 1) * (s.w < 0 ? -s.w : s.w);
}

constexpr int64_t kInt32Max = 2147483647;

Images images_of(int64_t B, int64_t C, int64_t H, int64_t W, const CropFlip& aug) {
  const int width = static_cast<int>(W);
  return {static_cast<int>(B), static_cast<int>(C), static_cast<int>(H), width, make_fast_div(width),
          static_cast<int>(aug.pad), aug.enabled, aug.reflect};
}

// Grid of the generic kernels: (pixel blocks, samples).
dim3 pixel_grid(const Images& im) {
  return dim3(static_cast<unsigned>((static_cast<int64_t>(im.H) * im.W + kPixelThreads - 1) / kPixelThreads),
              static_cast<unsigned>(im.B));
}

// uint8 channel c -> normalized value x * scale + bias, (x / 255 - mean) / std rounded once from
// double: equal to the reference's fp32 formula within 2 fp32 ulps of the operands (the float32
// tolerance of tests/ops is 1e-5 relative, 1e-6 absolute).
void normalization(const MixParams& p, int64_t c, float& scale, float& bias) {
  scale = static_cast<float>(1.0 / (255.0 * p.std[c]));
  bias = static_cast<float>(-static_cast<double>(p.mean[c]) / p.std[c]);
}

// Launches the run kernel for uint8 images when their layout allows it; returns false otherwise.
template <typename out_t>
bool launch_run(const uint8_t* x, const MixParams& p, const DrawView& d, out_t* clean, out_t* mix,
                cudaStream_t stream) {
  constexpr int V = 16 / sizeof(out_t);
  const bool channels_last = p.out.c == 1 && p.out.w == p.C && p.out.h == p.W * p.C;
  const bool fits = p.H * p.W * p.C <= kInt32Max && sample_span(p.in, p.C, p.H, p.W) <= kInt32Max &&
                    p.in.h <= kInt32Max && p.in.w <= kInt32Max && p.H * (p.W / V) <= kInt32Max;
  if (!channels_last || p.in.c != 1 || p.W % V != 0 || !fits ||
      !(p.C == 1 || p.C == 3 || p.C == 4)) {
    return false;
  }
  RunParams r{};
  r.B = static_cast<int>(p.B);
  r.H = static_cast<int>(p.H);
  r.W = static_cast<int>(p.W);
  r.runs_per_row = static_cast<int>(p.W / V);
  r.runs = make_fast_div(r.runs_per_row);
  r.sample_in = p.in.b;
  r.row_in = static_cast<int>(p.in.h);
  r.col_in = static_cast<int>(p.in.w);
  r.pad = static_cast<int>(p.aug.pad);
  for (int64_t c = 0; c < p.C; ++c) normalization(p, c, r.scale[c], r.bias[c]);
  r.mixes = p.mixes;
  const bool dense = p.in.w == p.C && p.in.h == p.W * p.C && p.in.b % V == 0 &&
                     reinterpret_cast<uintptr_t>(x) % V == 0;
  const int source = p.aug.enabled ? (p.aug.reflect ? kReflect : kZeros) : (dense ? kDense : kStrided);
  const dim3 grid(static_cast<unsigned>((p.H * r.runs_per_row + kRunThreads - 1) / kRunThreads),
                  static_cast<unsigned>(p.B));
  auto launch = [&](auto channels, auto src) {
    mix_forward_run_kernel<out_t, decltype(channels)::value, decltype(src)::value>
        <<<grid, kRunThreads, 0, stream>>>(x, r, d, clean, mix);
  };
  auto with_source = [&](auto channels) {
    switch (source) {
      case kDense:
        return launch(channels, std::integral_constant<int, kDense>{});
      case kStrided:
        return launch(channels, std::integral_constant<int, kStrided>{});
      case kZeros:
        return launch(channels, std::integral_constant<int, kZeros>{});
      default:
        return launch(channels, std::integral_constant<int, kReflect>{});
    }
  };
  if (p.C == 1) with_source(std::integral_constant<int, 1>{});
  if (p.C == 3) with_source(std::integral_constant<int, 3>{});
  if (p.C == 4) with_source(std::integral_constant<int, 4>{});
  return true;
}

// Whether the in-sample offsets of tensors with these strides (and the sizes) fit in int32.
bool offsets_fit_int32(std::initializer_list<Strides4> strides, int64_t C, int64_t H, int64_t W) {
  for (const Strides4& s : strides) {
    if (sample_span(s, C, H, W) > kInt32Max) return false;
  }
  return true;
}

}  // namespace

cudaError_t launch_mix_forward(const void* images, DType in, DType out, const MixParams& p, const DrawView& d,
                               void* x_clean, void* x_mix, cudaStream_t stream) {
  return dispatch_image(in, [&](auto in_tag) {
    using in_t = decltype(in_tag);
    return dispatch_float(out, [&](auto out_tag) {
      using out_t = decltype(out_tag);
      const auto* x = static_cast<const in_t*>(images);
      auto* clean = static_cast<out_t*>(x_clean);
      auto* mix = static_cast<out_t*>(x_mix);
      if constexpr (std::is_same_v<in_t, uint8_t>) {
        if (launch_run<out_t>(x, p, d, clean, mix, stream)) return cudaGetLastError();
      }
      PixelParams g{};
      g.im = images_of(p.B, p.C, p.H, p.W, p.aug);
      g.sample_in = p.in.b;
      g.sample_out = p.out.b;
      g.in = p.in;
      g.out = p.out;
      g.mixes = p.mixes;
      for (int64_t c = 0; p.from_uint8 && c < p.C; ++c) normalization(p, c, g.scale[c], g.bias[c]);
      const dim3 grid = pixel_grid(g.im);
      if (offsets_fit_int32({p.in, p.out}, p.C, p.H, p.W)) {
        mix_forward_kernel<in_t, out_t, int><<<grid, kPixelThreads, 0, stream>>>(x, g, d, clean, mix);
      } else {
        mix_forward_kernel<in_t, out_t, int64_t><<<grid, kPixelThreads, 0, stream>>>(x, g, d, clean, mix);
      }
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_mix_backward(const void* grad_clean, const void* grad_mix, DType grad, DType in,
                                const MixGradParams& p, const DrawView& d, int64_t* inv_scratch, void* grad_images,
                                cudaStream_t stream) {
  if (p.has_grad_mix) {
    const cudaError_t status = launch_inverse_permutation(d.perm, p.B, inv_scratch, stream);
    if (status != cudaSuccess) return status;
  }
  GradParams g{};
  g.im = images_of(p.B, p.C, p.H, p.W, p.aug);
  g.sample_gc = p.grad_clean.b;
  g.sample_gm = p.grad_mix.b;
  g.sample_out = p.grad_in.b;
  g.gc = p.grad_clean;
  g.gm = p.grad_mix;
  g.out = p.grad_in;
  g.has_gc = p.has_grad_clean;
  g.has_gm = p.has_grad_mix;
  // Without grad_mix the kernel reads no inverse permutation: point it at perm (any valid array).
  const int64_t* inv = p.has_grad_mix ? inv_scratch : d.perm;
  const dim3 grid = pixel_grid(g.im);
  const bool int32 = offsets_fit_int32({p.grad_clean, p.grad_mix, p.grad_in}, p.C, p.H, p.W);
  const bool reflect = p.aug.enabled && p.aug.reflect;
  return dispatch_float(grad, [&](auto g_tag) {
    using g_t = decltype(g_tag);
    return dispatch_float(in, [&](auto in_tag) {
      using in_t = decltype(in_tag);
      const auto* gc = static_cast<const g_t*>(grad_clean);
      const auto* gm = static_cast<const g_t*>(grad_mix);
      auto* out = static_cast<in_t*>(grad_images);
      auto launch = [&](auto index_tag, auto candidates) {
        mix_backward_kernel<g_t, in_t, decltype(index_tag), decltype(candidates)::value>
            <<<grid, kPixelThreads, 0, stream>>>(gc, gm, g, d, inv, out);
      };
      if (int32 && !reflect) launch(int{}, std::integral_constant<int, 1>{});
      if (int32 && reflect) launch(int{}, std::integral_constant<int, 9>{});
      if (!int32 && !reflect) launch(int64_t{}, std::integral_constant<int, 1>{});
      if (!int32 && reflect) launch(int64_t{}, std::integral_constant<int, 9>{});
      return cudaGetLastError();
    });
  });
}

}  // namespace sem_fast::cuda
