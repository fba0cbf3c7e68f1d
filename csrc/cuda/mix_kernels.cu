// CUDA kernels of sem_fast_native::mix_images and mix_images_backward (schemas: sem_fast/ops/schema.py).
// Torch-free (see kernels.h).
//
// Forward: one thread per output element in the outputs' memory order, so writes are coalesced,
// and so are reads when the input has that layout (uint8 NHWC loader batches -> channels_last).
// Dense uint8 NHWC input without augmentation takes a vectorized path: 4 bytes of a sample and 4
// of its partner per 32-bit load, 4 outputs per vector store. Backward: one thread per input
// gradient element, gathering from the augmented pixels that read it (no atomics).
#include "cuda_utils.cuh"

namespace sem_fast::cuda {
namespace {

// Normalized input pixel (c, u, v) of sample k, u and v crop_source() codes.
template <typename in_t>
__device__ __forceinline__ float read_pixel(const in_t* x, const MixParams& p, int64_t k, int64_t c, int64_t u,
                                            int64_t v) {
  if (u == kInvalid || v == kInvalid) return NAN;
  if (u == kZeroPad || v == kZeroPad) return normalize_pixel(0.0f, c, p);
  return normalize_pixel(to_float(x[k * p.in.b + c * p.in.c + u * p.in.h + v * p.in.w]), c, p);
}

template <typename in_t, typename out_t, bool kChannelsLast>
__global__ void mix_forward_kernel(const in_t* __restrict__ x, const MixParams p, const DrawView d,
                                   out_t* __restrict__ clean, out_t* __restrict__ mix) {
  const int64_t total = p.B * p.C * p.H * p.W;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    int64_t t = idx, b, c, h, w;
    if (kChannelsLast) {
      c = t % p.C, t /= p.C, w = t % p.W, t /= p.W, h = t % p.H, b = t / p.H;
    } else {
      w = t % p.W, t /= p.W, h = t % p.H, t /= p.H, c = t % p.C, b = t / p.C;
    }
    const int64_t u = augment_row(p.aug, d.offset, b, h), v = augment_col(p.aug, d.offset, d.flip, b, w);
    const float own = read_pixel(x, p, b, c, u, v);
    const int64_t o = b * p.out.b + c * p.out.c + h * p.out.h + w * p.out.w;
    clean[o] = from_float<out_t>(own);
    if (!p.mixes) continue;
    const int64_t j = d.perm[b];
    float partner = NAN;
    if (j >= 0 && j < p.B) {
      partner = read_pixel(x, p, j, c, augment_row(p.aug, d.offset, j, h), augment_col(p.aug, d.offset, d.flip, j, w));
    }
    mix[o] = from_float<out_t>(mix_pixel(own, partner, d.lam[b], d.is_cutmix[b], in_box(d.box, b, h, w)));
  }
}

// Dense uint8 (B, H, W, C) input, channels_last outputs, no augmentation, H * W * C % 4 == 0:
// a sample is n = H * W * C contiguous elements in the input and in both outputs.
template <typename out_t>
__global__ void mix_forward_uint8_vec4_kernel(const uint8_t* __restrict__ x, const MixParams p, const DrawView d,
                                              out_t* __restrict__ clean, out_t* __restrict__ mix) {
  const int64_t n = p.H * p.W * p.C;
  const int64_t quads = p.B * n / 4;
  for (int64_t q = global_thread(); q < quads; q += grid_threads()) {
    const int64_t e0 = 4 * q, b = e0 / n, r0 = e0 % n;
    const Vec4<uint8_t> own = *reinterpret_cast<const Vec4<uint8_t>*>(x + e0);
    const int64_t j = d.perm[b];
    const bool partner_ok = j >= 0 && j < p.B;
    Vec4<uint8_t> partner{};
    if (partner_ok) partner = *reinterpret_cast<const Vec4<uint8_t>*>(x + j * n + r0);
    Vec4<out_t> out_clean, out_mix;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t r = r0 + k, c = r % p.C, pixel = r / p.C, h = pixel / p.W, w = pixel % p.W;
      const float v = normalize_pixel(to_float(own.v[k]), c, p);
      out_clean.v[k] = from_float<out_t>(v);
      const float vp = partner_ok ? normalize_pixel(to_float(partner.v[k]), c, p) : NAN;
      out_mix.v[k] = from_float<out_t>(mix_pixel(v, vp, d.lam[b], d.is_cutmix[b], in_box(d.box, b, h, w)));
    }
    *reinterpret_cast<Vec4<out_t>*>(clean + e0) = out_clean;
    if (p.mixes) *reinterpret_cast<Vec4<out_t>*>(mix + e0) = out_mix;
  }
}

bool dense_nhwc(const Strides4& s, const MixParams& p) {
  return s.c == 1 && s.w == p.C && s.h == p.W * p.C && s.b == p.H * p.W * p.C;
}

// Upstream gradients of one channel c (see mix_grad_input in sem_math.h).
template <typename g_t>
struct ChannelGrad {
  const g_t* g_clean;
  const g_t* g_mix;
  const MixGradParams& p;
  int64_t c;

  __device__ __forceinline__ float clean(int64_t k, int64_t i, int64_t j) const {
    return to_float(g_clean[k * p.grad_clean.b + c * p.grad_clean.c + i * p.grad_clean.h + j * p.grad_clean.w]);
  }
  __device__ __forceinline__ float mix(int64_t k, int64_t i, int64_t j) const {
    return to_float(g_mix[k * p.grad_mix.b + c * p.grad_mix.c + i * p.grad_mix.h + j * p.grad_mix.w]);
  }
};

// One thread per element of the (B, C, H, W) input gradient, in NCHW index order.
template <typename g_t, typename in_t>
__global__ void mix_backward_kernel(const g_t* __restrict__ g_clean, const g_t* __restrict__ g_mix,
                                    const MixGradParams p, const DrawView d, const int64_t* __restrict__ inv,
                                    in_t* __restrict__ grad_in) {
  const int64_t total = p.B * p.C * p.H * p.W;
  for (int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    int64_t t = idx;
    const int64_t s = t % p.W;
    t /= p.W;
    const int64_t r = t % p.H;
    t /= p.H;
    const int64_t c = t % p.C, b = t / p.C;
    const ChannelGrad<g_t> grad{g_clean, g_mix, p, c};
    grad_in[b * p.grad_in.b + c * p.grad_in.c + r * p.grad_in.h + s * p.grad_in.w] =
        from_float<in_t>(mix_grad_input(p, d, inv[b], b, r, s, grad));
  }
}

}  // namespace

cudaError_t launch_mix_forward(const void* images, DType in, DType out, const MixParams& p, const DrawView& d,
                               void* x_clean, void* x_mix, cudaStream_t stream) {
  const int64_t total = p.B * p.C * p.H * p.W;
  const bool channels_last = p.out.c < p.out.w;
  const bool vec4 = in == DType::kUInt8 && !p.aug.enabled && dense_nhwc(p.in, p) && dense_nhwc(p.out, p) &&
                    (p.H * p.W * p.C) % 4 == 0 && reinterpret_cast<uintptr_t>(images) % 4 == 0;
  return dispatch_image(in, [&](auto in_tag) {
    using in_t = decltype(in_tag);
    return dispatch_float(out, [&](auto out_tag) {
      using out_t = decltype(out_tag);
      const auto* x = static_cast<const in_t*>(images);
      auto* clean = static_cast<out_t*>(x_clean);
      auto* mix = static_cast<out_t*>(x_mix);
      if (vec4) {
        mix_forward_uint8_vec4_kernel<out_t><<<grid_for(total / 4), kThreads, 0, stream>>>(
            reinterpret_cast<const uint8_t*>(images), p, d, clean, mix);
      } else if (channels_last) {
        mix_forward_kernel<in_t, out_t, true><<<grid_for(total), kThreads, 0, stream>>>(x, p, d, clean, mix);
      } else {
        mix_forward_kernel<in_t, out_t, false><<<grid_for(total), kThreads, 0, stream>>>(x, p, d, clean, mix);
      }
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_mix_backward(const void* grad_clean, const void* grad_mix, DType grad, DType in,
                                const MixGradParams& p, const DrawView& d, int64_t* inv_scratch, void* grad_images,
                                cudaStream_t stream) {
  const cudaError_t status = launch_inverse_permutation(d.perm, p.B, inv_scratch, stream);
  if (status != cudaSuccess) return status;
  const int64_t total = p.B * p.C * p.H * p.W;
  return dispatch_float(grad, [&](auto g_tag) {
    using g_t = decltype(g_tag);
    return dispatch_float(in, [&](auto in_tag) {
      using in_t = decltype(in_tag);
      mix_backward_kernel<g_t, in_t><<<grid_for(total), kThreads, 0, stream>>>(
          static_cast<const g_t*>(grad_clean), static_cast<const g_t*>(grad_mix), p, d, inv_scratch,
          static_cast<in_t*>(grad_images));
      return cudaGetLastError();
    });
  });
}

}  // namespace sem_fast::cuda
