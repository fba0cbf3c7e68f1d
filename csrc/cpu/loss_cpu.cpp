// C++ (CPU) kernels of sem_fast_ext::sem_loss, mixed_ce_backward and sem_distance_backward.
//
// One task per row: a max pass and an exp-sum pass over the K logits (no dense target), the SEM
// target gathered from z_clean[perm[b]] on the fly. Row results are summed in a fixed order in
// float64, so the loss is deterministic. Semantics: sem_fast.reference.sem_loss.
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../op_args.h"
#include "cpu_utils.h"

namespace sem_fast::cpu {
namespace {

// Partner label yp = labels[perm[b]], or -1 where perm[b] is out of range.
inline int64_t partner_label(const int64_t* labels, const int64_t* perm, int64_t b, int64_t B) {
  const int64_t j = perm[b];
  return (j >= 0 && j < B) ? labels[j] : -1;
}

// Row b's logit of class k, NaN for a class outside [0, K) (a bad label).
template <typename T>
float logit_at(const T* row, int64_t k, int64_t K) {
  return (k >= 0 && k < K) ? static_cast<float>(row[k]) : kNaN;
}

// Writes lse[b] and returns the mixed cross-entropy of every row, (B,).
template <typename T>
std::vector<float> ce_rows(const at::Tensor& logits, const int64_t* labels, const int64_t* perm, const float* lam,
                           float eps, float* lse) {
  const int64_t B = logits.size(0), K = logits.size(1);
  const T* x = logits.data_ptr<T>();
  std::vector<float> ce(B);
  at::parallel_for(0, B, row_grain(K), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* row = x + b * K;
      float m = -INFINITY;
#pragma omp simd reduction(max : m)
      for (int64_t k = 0; k < K; ++k) m = std::max(m, static_cast<float>(row[k]));
      // A NaN logit makes both sums NaN, whatever the max.
      const double s = chunked_sum(K, [&](int64_t k) { return exp_nonpositive(static_cast<float>(row[k]) - m); });
      const float sum = static_cast<float>(chunked_sum(K, [&](int64_t k) { return static_cast<float>(row[k]); }));
      lse[b] = m + static_cast<float>(std::log(s));
      const int64_t yp = partner_label(labels, perm, b, B);
      const float l_yp = yp < 0 ? kNaN : logit_at(row, yp, K);
      ce[b] = mixed_ce_row(lse[b], logit_at(row, labels[b], K), l_yp, sum, lam[b], eps, K);
    }
  });
  return ce;
}

// Row b of the SEM error z_mix[b] - (lam[b] * z_clean[b] + (1 - lam[b]) * z_clean[perm[b]]);
// `ok` is false (and the pointers unset) for an out-of-range perm[b].
template <typename T>
struct SemRow {
  const T* zm = nullptr;
  const T* zc = nullptr;
  const T* zc_partner = nullptr;
  float lam = 0.0f;
  bool ok = false;

  SemRow(const T* z_mix, const T* z_clean, const int64_t* perm, const float* lams, int64_t B, int64_t D, int64_t b) {
    const int64_t j = perm[b];
    if (j < 0 || j >= B) return;
    zm = z_mix + b * D;
    zc = z_clean + b * D;
    zc_partner = z_clean + j * D;
    lam = lams[b];
    ok = true;
  }

  float error(int64_t d) const {
    return static_cast<float>(zm[d]) - sem_target(static_cast<float>(zc[d]), static_cast<float>(zc_partner[d]), lam);
  }
};

// Sum over rows of the squared SEM error, rows summed in float64 in a fixed order.
template <typename T>
double sem_sum(const at::Tensor& z_mix, const at::Tensor& z_clean, const int64_t* perm, const float* lam) {
  const int64_t B = z_mix.size(0), D = z_mix.size(1);
  const T* zm = z_mix.data_ptr<T>();
  const T* zc = z_clean.data_ptr<T>();
  std::vector<double> row_sums(B);
  at::parallel_for(0, B, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const SemRow<T> row(zm, zc, perm, lam, B, D, b);
      if (!row.ok) {
        row_sums[b] = kNaN;
        continue;
      }
      row_sums[b] = chunked_sum(D, [&](int64_t d) {
        const float e = row.error(d);
        return e * e;
      });
    }
  });
  double total = 0.0;
  for (double r : row_sums) total += r;
  return total;
}

at::Tensor scalar(float v, const at::Tensor& like) {
  at::Tensor t = at::empty({}, like.options().dtype(at::kFloat));
  *t.data_ptr<float>() = v;
  return t;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sem_loss_cpu(
    const at::Tensor& logits, const at::Tensor& z_mix, const c10::optional<at::Tensor>& z_clean,
    const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam, double label_smoothing, double gamma,
    bool sem_mean) {
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  const int64_t B = a.B;
  const int64_t* p = a.perm.data_ptr<int64_t>();
  const float* l = a.lam.data_ptr<float>();
  at::Tensor lse = at::empty({B}, logits.options().dtype(at::kFloat));
  std::vector<float> ce_row;
  dispatch_float(a.logits.scalar_type(), [&](auto tag) {
    ce_row = ce_rows<decltype(tag)>(a.logits, a.labels.data_ptr<int64_t>(), p, l, static_cast<float>(label_smoothing),
                                    lse.data_ptr<float>());
  });
  double ce_total = 0.0;
  for (float c : ce_row) ce_total += c;
  const float ce = static_cast<float>(ce_total / B);

  float sem = 0.0f;
  if (a.z_clean.defined()) {
    double total = 0.0;
    dispatch_float(a.z_mix.scalar_type(),
                   [&](auto tag) { total = sem_sum<decltype(tag)>(a.z_mix, a.z_clean, p, l); });
    sem = static_cast<float>(total / (sem_mean ? static_cast<double>(B) * a.z_mix.size(1) : B));
  }
  const float loss = ce + static_cast<float>(gamma) * sem;
  return {scalar(loss, logits), scalar(ce, logits), scalar(sem, logits), lse};
}

at::Tensor mixed_ce_backward_cpu(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                 const at::Tensor& perm, const at::Tensor& lam, const at::Tensor& lse,
                                 double label_smoothing) {
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, nullptr, nullptr);
  const int64_t B = a.B, K = a.logits.size(1);
  check_array(lse, "lse", at::kFloat, {B}, perm);
  const float scale = check_scalar_grad(grad, "grad", perm).item<float>() / static_cast<float>(B);
  const float eps = static_cast<float>(label_smoothing);
  const at::Tensor s = lse.contiguous();
  const at::Tensor& x = a.logits;
  const int64_t* yv = a.labels.data_ptr<int64_t>();
  const int64_t* pv = a.perm.data_ptr<int64_t>();
  const float* lv = a.lam.data_ptr<float>();
  const float* sv = s.data_ptr<float>();
  at::Tensor dlogits = at::empty_like(x);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xv = x.data_ptr<T>();
    T* dv = dlogits.data_ptr<T>();
    at::parallel_for(0, B, row_grain(K), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t y = yv[b], yp = partner_label(yv, pv, b, B);
        const float l = lv[b], row_lse = sv[b];
        const T* row = xv + b * K;
        T* d_row = dv + b * K;
        auto grad_at = [&](int64_t k, float target) {
          return static_cast<T>(scale * (exp_nonpositive(static_cast<float>(row[k]) - row_lse) - target));
        };
        // Every class but the two labels has the target eps / K (mixed_target with no hard part);
        // the labels' entries are then rewritten with their full target.
        const float smooth = eps / static_cast<float>(K);
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) d_row[k] = grad_at(k, smooth);
        for (const int64_t k : {y, yp}) {
          if (k >= 0 && k < K) d_row[k] = grad_at(k, mixed_target(k, y, yp, l, eps, K));
        }
      }
    });
  });
  return dlogits;
}

std::tuple<at::Tensor, at::Tensor> sem_distance_backward_cpu(const at::Tensor& grad, const at::Tensor& z_mix,
                                                             const at::Tensor& z_clean, const at::Tensor& perm,
                                                             const at::Tensor& lam, bool sem_mean, bool with_clean) {
  const LossArgs a = prepare_loss_args(perm, lam, nullptr, nullptr, &z_mix, &z_clean);
  const int64_t B = a.B, D = a.z_mix.size(1);
  const float g = check_scalar_grad(grad, "grad", perm).item<float>();
  const float c2 = 2.0f * g / static_cast<float>(sem_mean ? static_cast<double>(B) * D : B);
  const at::Tensor &zm = a.z_mix, &zc = a.z_clean;
  const int64_t* pv = a.perm.data_ptr<int64_t>();
  const float* lv = a.lam.data_ptr<float>();
  const std::vector<int64_t> inv = inverse_permutation(pv, B);
  at::Tensor dz_mix = at::empty_like(zm);
  at::Tensor dz_clean = with_clean ? at::empty_like(zc) : at::empty({0}, z_clean.options());
  dispatch_float(zm.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* zmv = zm.data_ptr<T>();
    const T* zcv = zc.data_ptr<T>();
    T* dm = dz_mix.data_ptr<T>();
    T* dc = with_clean ? dz_clean.data_ptr<T>() : nullptr;
    at::parallel_for(0, B, row_grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const SemRow<T> row(zmv, zcv, pv, lv, B, D, b);
        T* dm_b = dm + b * D;
        if (row.ok) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) dm_b[d] = static_cast<T>(c2 * row.error(d));
        } else {
          std::fill(dm_b, dm_b + D, static_cast<T>(kNaN));
        }
        if (dc == nullptr) continue;
        // Sample b is the partner of m = inv[b]: the target of m holds (1 - lam[m]) * z_clean[b].
        const int64_t m = inv[b];
        T* dc_b = dc + b * D;
        if (m < 0 || !row.ok) {
          std::fill(dc_b, dc_b + D, static_cast<T>(kNaN));
          continue;
        }
        const SemRow<T> partner_row(zmv, zcv, pv, lv, B, D, m);
        const float own = lv[b], partner = 1.0f - lv[m];
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          dc_b[d] = static_cast<T>(-c2 * (own * row.error(d) + partner * partner_row.error(d)));
        }
      }
    });
  });
  // Mixed input dtypes were computed in float32: return each gradient in its input's dtype.
  return {dz_mix.to(z_mix.scalar_type()), with_clean ? dz_clean.to(z_clean.scalar_type()) : dz_clean};
}

}  // namespace
}  // namespace sem_fast::cpu

TORCH_LIBRARY_IMPL(sem_fast_ext, CPU, m) {
  m.impl("sem_loss", &sem_fast::cpu::sem_loss_cpu);
  m.impl("mixed_ce_backward", &sem_fast::cpu::mixed_ce_backward_cpu);
  m.impl("sem_distance_backward", &sem_fast::cpu::sem_distance_backward_cpu);
}
