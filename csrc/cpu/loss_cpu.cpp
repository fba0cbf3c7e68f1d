// C++ (CPU) kernels of sem_fast_native::sem_loss and sem_loss_backward (schemas:
// sem_fast/ops/schema.py).
//
// One task per row: a max pass and an exp-sum pass over the K logits (no dense target), the SEM
// target gathered from z_clean[perm[b]] on the fly. Everything is relative to the row max (the
// forward saves it with log sum exp(x - max): row_stats), so logits of any magnitude keep their
// accuracy. Row results are summed in a fixed order in float64, so the loss is deterministic.
// The forward also builds inv_perm[perm[b]] = b and checks that perm is a permutation: if not
// (values are unchecked under torch.compile), loss, ce and (with z_clean) sem are NaN and every
// row's statistics are poisoned, which the backward turns into NaN gradients.
// Semantics: sem_fast.reference.sem_loss.
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

inline bool label_ok(int64_t k, int64_t K) { return k >= 0 && k < K; }

// Row statistics (max, log sum exp(x - max)) of every row of a batch whose perm is not a
// permutation: logits never give a negative log-sum-exp relative to their max (>= 0 or NaN), so
// -inf marks the batch, and the NaN max makes the recomputed softmax NaN
// (sem_fast/ops/triton/loss.py: POISONED_STATS).
constexpr float kPoisonedMax = kNaN;
constexpr float kPoisonedLogD = -INFINITY;
inline bool poisoned(const float* row_stats, int64_t b) { return row_stats[2 * b + 1] == kPoisonedLogD; }

// inv[perm[b]] = b for every in-range perm[b]; returns whether perm is a permutation of [0, B):
// every b in range and confirmed by inv[perm[b]] == b (a repeated entry leaves one of its rows
// unconfirmed; entries of inv that no row wrote are never read).
bool build_inverse(const int64_t* perm, int64_t B, int64_t* inv) {
  for (int64_t b = 0; b < B; ++b) {
    if (perm[b] >= 0 && perm[b] < B) inv[perm[b]] = b;
  }
  for (int64_t b = 0; b < B; ++b) {
    if (perm[b] < 0 || perm[b] >= B || inv[perm[b]] != b) return false;
  }
  return true;
}

// Writes row_stats[b] = (max, log sum exp(x - max)) and returns the mixed cross-entropy of every row, (B,).
template <typename T>
std::vector<float> ce_rows(const at::Tensor& logits, const int64_t* labels, const int64_t* perm, const float* lam,
                           float eps, float* row_stats) {
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
      const float rel_sum = static_cast<float>(chunked_sum(K, [&](int64_t k) { return static_cast<float>(row[k]) - m; }));
      const float log_d = static_cast<float>(std::log(s));
      row_stats[2 * b] = m;
      row_stats[2 * b + 1] = log_d;
      const int64_t y = labels[b], yp = partner_label(labels, perm, b, B);
      const bool ok = label_ok(y, K) && label_ok(yp, K);
      ce[b] = mixed_ce_row(m, log_d, ok ? static_cast<float>(row[y]) : 0.0f, ok ? static_cast<float>(row[yp]) : 0.0f,
                           rel_sum, lam[b], eps, K, ok);
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

// What the summed squared SEM error is divided by: every element ('mean'), or every row ('sum').
inline double sem_count(int64_t B, int64_t D, bool sem_mean) { return sem_mean ? static_cast<double>(B) * D : B; }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sem_loss_cpu(
    const at::Tensor& logits, const at::Tensor& z_mix, const c10::optional<at::Tensor>& z_clean,
    const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam, double gamma, double label_smoothing,
    bool sem_mean) {
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  const int64_t B = a.B;
  const int64_t* p = a.perm.data_ptr<int64_t>();
  const float* l = a.lam.data_ptr<float>();
  at::Tensor row_stats = at::empty({B, 2}, logits.options().dtype(at::kFloat));
  std::vector<float> ce_row;
  dispatch_float(a.logits.scalar_type(), [&](auto tag) {
    ce_row = ce_rows<decltype(tag)>(a.logits, a.labels.data_ptr<int64_t>(), p, l, static_cast<float>(label_smoothing),
                                    row_stats.data_ptr<float>());
  });
  double ce_total = 0.0;
  for (float c : ce_row) ce_total += c;
  float ce = static_cast<float>(ce_total / B);

  float sem = 0.0f;
  if (a.z_clean.defined()) {
    double total = 0.0;
    dispatch_float(a.z_mix.scalar_type(),
                   [&](auto tag) { total = sem_sum<decltype(tag)>(a.z_mix, a.z_clean, p, l); });
    sem = static_cast<float>(total / sem_count(B, a.z_mix.size(1), sem_mean));
  }
  at::Tensor inv_perm = at::empty({B}, a.perm.options());
  if (!build_inverse(p, B, inv_perm.data_ptr<int64_t>())) {
    float* stats = row_stats.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      stats[2 * b] = kPoisonedMax;
      stats[2 * b + 1] = kPoisonedLogD;
    }
    ce = kNaN;
    if (a.z_clean.defined()) sem = kNaN;
  }
  const float loss = ce + static_cast<float>(gamma) * sem;
  return {scalar(loss, logits), scalar(ce, logits), scalar(sem, logits), row_stats, inv_perm};
}

// dlogits (B, K) = scale * (softmax(logits) - mixed smoothed target), softmax from row_stats.
template <typename T>
void mixed_ce_backward(const LossArgs& a, const float* row_stats, float scale, float eps, at::Tensor& dlogits) {
  const int64_t B = a.B, K = a.logits.size(1);
  const T* xv = a.logits.data_ptr<T>();
  const int64_t* yv = a.labels.data_ptr<int64_t>();
  const int64_t* pv = a.perm.data_ptr<int64_t>();
  const float* lv = a.lam.data_ptr<float>();
  T* dv = dlogits.data_ptr<T>();
  at::parallel_for(0, B, row_grain(K), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t y = yv[b], yp = partner_label(yv, pv, b, B);
      const float l = lv[b], m = row_stats[2 * b], log_d = row_stats[2 * b + 1];
      const T* row = xv + b * K;
      T* d_row = dv + b * K;
      if (!(label_ok(y, K) && label_ok(yp, K))) {
        std::fill(d_row, d_row + K, static_cast<T>(kNaN));
        continue;
      }
      auto grad_at = [&](int64_t k, float target) {
        return static_cast<T>(scale * (exp_nonpositive((static_cast<float>(row[k]) - m) - log_d) - target));
      };
      // Every class but the two labels has the target eps / K (mixed_target with no hard part);
      // the labels' entries are then rewritten with their full target.
      const float smooth = eps / static_cast<float>(K);
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) d_row[k] = grad_at(k, smooth);
      for (const int64_t k : {y, yp}) d_row[k] = grad_at(k, mixed_target(k, y, yp, l, eps, K));
    }
  });
}

// dz_mix = c2 * u and (dz_clean defined) dz_clean[b] = -c2 * (lam[b] * u[b] + (1 - lam[m]) * u[m]),
// u the SEM error and m = inv[b] the sample whose partner is b (the forward's inv_perm); NaN rows
// where the statistics are poisoned (perm not a permutation). An inv entry out of [0, B) is never
// followed (a direct op call may pass anything).
template <typename T>
void sem_distance_backward(const LossArgs& a, const float* row_stats, const int64_t* inv, float c2, at::Tensor& dz_mix,
                           at::Tensor& dz_clean) {
  const int64_t B = a.B, D = a.z_mix.size(1);
  const T* zmv = a.z_mix.data_ptr<T>();
  const T* zcv = a.z_clean.data_ptr<T>();
  const int64_t* pv = a.perm.data_ptr<int64_t>();
  const float* lv = a.lam.data_ptr<float>();
  T* dm = dz_mix.defined() ? dz_mix.data_ptr<T>() : nullptr;
  T* dc = dz_clean.defined() ? dz_clean.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const SemRow<T> row(zmv, zcv, pv, lv, B, D, b);
      const bool ok = row.ok && !poisoned(row_stats, b);
      if (dm != nullptr) {
        T* dm_b = dm + b * D;
        if (ok) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) dm_b[d] = static_cast<T>(c2 * row.error(d));
        } else {
          std::fill(dm_b, dm_b + D, static_cast<T>(kNaN));
        }
      }
      if (dc == nullptr) continue;
      // Sample b is the partner of m = inv[b]: the target of m holds (1 - lam[m]) * z_clean[b].
      const int64_t m = inv[b];
      T* dc_b = dc + b * D;
      if (m < 0 || m >= B || !ok) {
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
}

inline float value_or_zero(const at::Tensor& t) { return t.defined() ? *t.data_ptr<float>() : 0.0f; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> sem_loss_backward_cpu(
    const c10::optional<at::Tensor>& grad_loss, const c10::optional<at::Tensor>& grad_ce,
    const c10::optional<at::Tensor>& grad_sem, const at::Tensor& logits, const at::Tensor& z_mix,
    const c10::optional<at::Tensor>& z_clean, const at::Tensor& labels, const at::Tensor& perm, const at::Tensor& lam,
    const at::Tensor& row_stats, const at::Tensor& inv_perm, double gamma, double label_smoothing, bool sem_mean,
    bool logits_grad, bool z_mix_grad, bool z_clean_grad) {
  const LossArgs a = prepare_loss_args(perm, lam, &labels, &logits, &z_mix, z_clean ? &*z_clean : nullptr);
  check_loss_grad_flags(a, z_mix_grad, z_clean_grad);
  const at::Tensor stats = check_row_stats(row_stats, a.B, perm);
  const at::Tensor inv = check_inv_perm(inv_perm, a.B, perm);
  const float g_loss = value_or_zero(check_scalar_grad(grad_loss, "grad_loss", perm));
  const float g_ce = g_loss + value_or_zero(check_scalar_grad(grad_ce, "grad_ce", perm));
  const float g_sem = static_cast<float>(gamma) * g_loss + value_or_zero(check_scalar_grad(grad_sem, "grad_sem", perm));

  at::Tensor dlogits = logits_grad ? at::empty_like(a.logits) : at::empty({0}, logits.options());
  if (logits_grad) {
    dispatch_float(a.logits.scalar_type(), [&](auto tag) {
      mixed_ce_backward<decltype(tag)>(a, stats.data_ptr<float>(), g_ce / static_cast<float>(a.B),
                                       static_cast<float>(label_smoothing), dlogits);
    });
  }
  at::Tensor dz_mix = z_mix_grad ? at::empty_like(a.z_mix) : at::Tensor();
  at::Tensor dz_clean = z_clean_grad ? at::empty_like(a.z_clean) : at::Tensor();
  if (z_mix_grad || z_clean_grad) {
    const float c2 = static_cast<float>(2.0 * g_sem / sem_count(a.B, a.z_mix.size(1), sem_mean));
    dispatch_float(a.z_mix.scalar_type(), [&](auto tag) {
      sem_distance_backward<decltype(tag)>(a, stats.data_ptr<float>(), inv.data_ptr<int64_t>(), c2, dz_mix, dz_clean);
    });
  }
  // Mixed feature dtypes were computed in float32: return each gradient in its input's dtype.
  return {dlogits, z_mix_grad ? dz_mix.to(z_mix.scalar_type()) : at::empty({0}, z_mix.options()),
          z_clean_grad ? dz_clean.to(z_clean->scalar_type()) : at::empty({0}, z_mix.options())};
}

}  // namespace
}  // namespace sem_fast::cpu

TORCH_LIBRARY_IMPL(sem_fast_native, CPU, m) {
  m.impl("sem_loss", &sem_fast::cpu::sem_loss_cpu);
  m.impl("sem_loss_backward", &sem_fast::cpu::sem_loss_backward_cpu);
}
