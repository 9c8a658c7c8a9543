// Fused steps of the LSTM time loop with any of rnnkit's options: peepholes, layer norm on the
// recurrent product (one LN over all 4H) and on the cell (LN over H), and the blend coefficients
// α of lengths and zoneout. See common.h for the scheme and lstm_sequence in rnnkit/fast.py for
// the buffers.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <memory>
#include <tuple>
#include <vector>

#include "common.h"
#include "tile_gemm.h"

namespace rnnkit_native {
namespace {

// Optional per-unit vectors (peepholes, LN gains and shifts): pointers or null.
template <typename T>
struct LSTMParams {
  const T* w_ci;
  const T* w_cf;
  const T* w_co;
  const T* lnh_w;
  const T* lnh_b;
  const T* lnc_w;
  const T* lnc_b;
  T eps;
};

template <typename T>
const T* vec_or_null(const std::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->is_contiguous(), "rnnkit native LSTM: ", name, " must be contiguous");
  return t->data_ptr<T>();
}

// Mean and 1/sqrt(var + eps) of x[0..n) (two passes, as torch's layer norm: biased variance).
template <typename T>
inline void moments(const T* __restrict__ x, int64_t n, T eps, T& mean, T& rstd) {
  mean = row_sum(x, n) / T(n);
  T v = 0;
  const T m = mean;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < n; ++j) v += (x[j] - m) * (x[j] - m);
  rstd = T(1) / std::sqrt(v / T(n) + eps);
}

// Layer norm's backward for one row: y = γ ⊙ x̂ + β, x̂ = (x − μ) σ⁻¹, given ∂y:
//   ∂x = σ⁻¹ (ĝ − mean(ĝ) − x̂ mean(ĝ ⊙ x̂)),  ĝ = γ ⊙ ∂y.
template <typename T>
void layer_norm_backward_row(int64_t n, const T* __restrict__ gamma, const T* __restrict__ dy,
                             const T* __restrict__ x, T mean, T rstd, T* __restrict__ dx) {
  T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const T g = gamma[j] * dy[j];
    s1 += g;
    s2 += g * (x[j] - mean) * rstd;
  }
  s1 /= T(n);
  s2 /= T(n);
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * (gamma[j] * dy[j] - s1 - (x[j] - mean) * rstd * s2);
}

// Forward step t, given a = W_hh h + b_hh (B, 4H):
//   z = x̂ + â, â = a or γ_h ⊙ LN(a) + β_h;  z_i += w_ci ⊙ c, z_f += w_cf ⊙ c (peepholes);
//   i, f = σ(z_i), σ(z_f); g = tanh(z_g); c̃ = f ⊙ c + i ⊙ g;  z_o += w_co ⊙ c̃; o = σ(z_o);
//   τ = tanh(ĉ), ĉ = c̃ or γ_c ⊙ LN(c̃) + β_c;  h̃ = o ⊙ τ.
// Writes gates = [i, f, g, o], ct = c̃, tc = τ, h (= h̃, or h + α_h (h̃ − h)), c (only with α:
// c + α_c (c̃ − c); without α the caller's ct is the cell-state buffer) and the LN statistics
// (mean, rstd) per row into stats_h / stats_c (B, 2).
template <typename T>
void lstm_forward_row(int64_t H, const LSTMParams<T>& p, const T* __restrict__ x,
                      const T* __restrict__ a, const T* __restrict__ c, T* __restrict__ gates,
                      T* __restrict__ ct, T* __restrict__ tc, T* __restrict__ h_out,
                      T* __restrict__ st_h, T* __restrict__ st_c) {
  const int64_t G = 4 * H;
  if (p.lnh_w != nullptr) {
    T mean, rstd;
    moments(a, G, p.eps, mean, rstd);
    st_h[0] = mean;
    st_h[1] = rstd;
    for (int64_t j = 0; j < G; ++j)
      gates[j] = x[j] + (a[j] - mean) * rstd * p.lnh_w[j] + p.lnh_b[j];
  } else {
    for (int64_t j = 0; j < G; ++j) gates[j] = x[j] + a[j];
  }
  T* __restrict__ zi = gates;
  T* __restrict__ zf = gates + H;
  T* __restrict__ zg = gates + 2 * H;
  T* __restrict__ zo = gates + 3 * H;
  if (p.w_ci != nullptr) {
    for (int64_t j = 0; j < H; ++j) {
      zi[j] += p.w_ci[j] * c[j];
      zf[j] += p.w_cf[j] * c[j];
    }
  }
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid(zi[j]), f = sigmoid(zf[j]), g = tanh_(zg[j]);
    zi[j] = i;
    zf[j] = f;
    zg[j] = g;
    ct[j] = f * c[j] + i * g;
  }
  if (p.w_co != nullptr) {
    for (int64_t j = 0; j < H; ++j) zo[j] += p.w_co[j] * ct[j];
  }
  if (p.lnc_w != nullptr) {
    T mean, rstd;
    moments(ct, H, p.eps, mean, rstd);
    st_c[0] = mean;
    st_c[1] = rstd;
    for (int64_t j = 0; j < H; ++j)
      tc[j] = tanh_((ct[j] - mean) * rstd * p.lnc_w[j] + p.lnc_b[j]);
  } else {
    for (int64_t j = 0; j < H; ++j) tc[j] = tanh_(ct[j]);
  }
  for (int64_t j = 0; j < H; ++j) {
    const T o = sigmoid(zo[j]);
    zo[j] = o;
    h_out[j] = o * tc[j];
  }
}

// Backward step t. ∂L/∂h_t arrives as ``mm`` (the previous step's ∂a W_hh; null at t = T − 1)
// plus ``carry_h``; ∂L/∂c_t as ``carry_c``. With g_h = α_h ⊙ ∂L/∂h_t, g_c = α_c ⊙ ∂L/∂c_t:
//   ∂z_o = g_h ⊙ τ o(1 − o);  ∂ĉ = g_h ⊙ o(1 − τ²);
//   ∂c̃ = g_c + (∂ĉ, or LN_c's backward of it) + ∂z_o ⊙ w_co;
//   ∂z_i = ∂c̃ ⊙ g i(1 − i);  ∂z_f = ∂c̃ ⊙ c_{t−1} f(1 − f);  ∂z_g = ∂c̃ ⊙ i(1 − g²);
//   ∂a = ∂z, or LN_h's backward: σ⁻¹(ĝ − mean ĝ − â mean(ĝ ⊙ â)), ĝ = γ_h ⊙ ∂z, â = (a − μ)/σ;
//   carry_c ← ∂c̃ ⊙ f + ∂z_i ⊙ w_ci + ∂z_f ⊙ w_cf + (∂L/∂c_t − g_c) + ∂L/∂c_{t−1} (output);
//   carry_h ← (∂L/∂h_t − g_h) + ∂L/∂y_{t−1}: the part of ∂L/∂h_{t−1} outside ∂a W_hh.
// Writes dz = ∂z (= ∂x̂), da = ∂a (only with LN_h; else the caller uses dz) and dchat = ∂ĉ
// (only with LN_c, for the gain and shift gradients).
template <typename T>
void lstm_backward_row(int64_t H, const LSTMParams<T>& p, const T* __restrict__ mm,
                       const T* __restrict__ al_h, const T* __restrict__ al_c,
                       const T* __restrict__ gates, const T* __restrict__ ct,
                       const T* __restrict__ tc, const T* __restrict__ c_prev,
                       const T* __restrict__ a, const T* __restrict__ st_h,
                       const T* __restrict__ st_c, const T* __restrict__ gy,
                       const T* __restrict__ gcy, T* __restrict__ dz, T* __restrict__ da,
                       T* __restrict__ dchat, T* __restrict__ carry_h, T* __restrict__ carry_c,
                       T* __restrict__ scratch) {
  const int64_t G = 4 * H;
  const T* __restrict__ i = gates;
  const T* __restrict__ f = gates + H;
  const T* __restrict__ g = gates + 2 * H;
  const T* __restrict__ o = gates + 3 * H;
  T* __restrict__ dzi = dz;
  T* __restrict__ dzf = dz + H;
  T* __restrict__ dzg = dz + 2 * H;
  T* __restrict__ dzo = dz + 3 * H;
  T* __restrict__ gh = scratch;       // g_h, H values
  T* __restrict__ dct = scratch + H;  // ∂c̃, H values
  if (mm != nullptr) {
    for (int64_t j = 0; j < H; ++j) carry_h[j] += mm[j];
  }
  if (al_h != nullptr) {
    for (int64_t j = 0; j < H; ++j) gh[j] = carry_h[j] * al_h[j];
  } else {
    for (int64_t j = 0; j < H; ++j) gh[j] = carry_h[j];
  }
  for (int64_t j = 0; j < H; ++j) {
    const T ghj = gh[j];
    dzo[j] = ghj * tc[j] * o[j] * (T(1) - o[j]);
    dct[j] = ghj * o[j] * (T(1) - tc[j] * tc[j]);  // ∂ĉ for now
  }
  if (p.lnc_w != nullptr) {
    for (int64_t j = 0; j < H; ++j) dchat[j] = dct[j];
    layer_norm_backward_row(H, p.lnc_w, dchat, ct, st_c[0], st_c[1], dct);
  }
  // ∂c̃ += g_c, and carry_c keeps ∂L/∂c_t − g_c (the part that skips the cell)
  if (al_c != nullptr) {
    for (int64_t j = 0; j < H; ++j) {
      const T gcj = carry_c[j] * al_c[j];
      dct[j] += gcj;
      carry_c[j] -= gcj;
    }
  } else {
    for (int64_t j = 0; j < H; ++j) {
      dct[j] += carry_c[j];
      carry_c[j] = T(0);
    }
  }
  if (p.w_co != nullptr) {
    for (int64_t j = 0; j < H; ++j) dct[j] += dzo[j] * p.w_co[j];
  }
  for (int64_t j = 0; j < H; ++j) {
    const T d = dct[j];
    dzi[j] = d * g[j] * i[j] * (T(1) - i[j]);
    dzf[j] = d * c_prev[j] * f[j] * (T(1) - f[j]);
    dzg[j] = d * i[j] * (T(1) - g[j] * g[j]);
    carry_c[j] += d * f[j];
  }
  if (p.w_ci != nullptr) {
    for (int64_t j = 0; j < H; ++j) carry_c[j] += dzi[j] * p.w_ci[j] + dzf[j] * p.w_cf[j];
  }
  if (gcy != nullptr) {
    for (int64_t j = 0; j < H; ++j) carry_c[j] += gcy[j];
  }
  for (int64_t j = 0; j < H; ++j) carry_h[j] -= gh[j];
  if (gy != nullptr) {
    for (int64_t j = 0; j < H; ++j) carry_h[j] += gy[j];
  }
  if (p.lnh_w != nullptr) layer_norm_backward_row(G, p.lnh_w, dz, a, st_h[0], st_h[1], da);
}

template <typename T>
LSTMParams<T> params(const std::optional<at::Tensor>& w_ci, const std::optional<at::Tensor>& w_cf,
                     const std::optional<at::Tensor>& w_co,
                     const std::optional<at::Tensor>& lnh_w,
                     const std::optional<at::Tensor>& lnh_b,
                     const std::optional<at::Tensor>& lnc_w,
                     const std::optional<at::Tensor>& lnc_b, double eps) {
  LSTMParams<T> p{vec_or_null<T>(w_ci, "w_ci"),   vec_or_null<T>(w_cf, "w_cf"),
                  vec_or_null<T>(w_co, "w_co"),   vec_or_null<T>(lnh_w, "lnh_w"),
                  vec_or_null<T>(lnh_b, "lnh_b"), vec_or_null<T>(lnc_w, "lnc_w"),
                  vec_or_null<T>(lnc_b, "lnc_b"), static_cast<T>(eps)};
  TORCH_CHECK((p.w_ci == nullptr) == (p.w_cf == nullptr) && (p.w_ci == nullptr) == (p.w_co == nullptr),
              "rnnkit native LSTM: give all three peephole vectors or none");
  TORCH_CHECK((p.lnh_w == nullptr) == (p.lnh_b == nullptr) && (p.lnc_w == nullptr) == (p.lnc_b == nullptr),
              "rnnkit native LSTM: a layer norm needs its gain and its shift");
  return p;
}

template <typename T>
void lstm_forward_impl(const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& h_,
                       const at::Tensor& c_, const LSTMParams<T>& p,
                       const std::optional<at::Tensor>& alpha_h_,
                       const std::optional<at::Tensor>& alpha_c_, const at::Tensor& gates_,
                       const at::Tensor& ct_, const at::Tensor& tc_, const at::Tensor& h_out_,
                       const std::optional<at::Tensor>& c_out_,
                       const std::optional<at::Tensor>& stats_h_,
                       const std::optional<at::Tensor>& stats_c_) {
  const int64_t B = h_.size(0), H = h_.size(1);
  TORCH_CHECK(alpha_h_.has_value() == c_out_.has_value() &&
                  alpha_h_.has_value() == alpha_c_.has_value(),
              "rnnkit native LSTM: alpha_h, alpha_c and c_out go together");
  TORCH_CHECK(p.lnh_w == nullptr || stats_h_.has_value(), "rnnkit native LSTM: LN needs stats_h");
  TORCH_CHECK(p.lnc_w == nullptr || stats_c_.has_value(), "rnnkit native LSTM: LN needs stats_c");
  auto x = tile<T>(x_, "x"), a = tile<T>(a_, "a"), h = tile<T>(h_, "h"), c = tile<T>(c_, "c");
  auto ah = maybe_tile<T>(alpha_h_, "alpha_h"), ac = maybe_tile<T>(alpha_c_, "alpha_c");
  auto gates = tile<T>(gates_, "gates"), ct = tile<T>(ct_, "ct"), tc = tile<T>(tc_, "tc");
  auto h_out = tile<T>(h_out_, "h_out"), c_out = maybe_tile<T>(c_out_, "c_out");
  auto st_h = maybe_tile<T>(stats_h_, "stats_h"), st_c = maybe_tile<T>(stats_c_, "stats_c");
  over_rows(B, 4 * H, [&](int64_t b) {
    lstm_forward_row<T>(H, p, x.row(b), a.row(b), c.row(b), gates.row(b), ct.row(b), tc.row(b),
                        h_out.row(b), st_h.p != nullptr ? st_h.row(b) : nullptr,
                        st_c.p != nullptr ? st_c.row(b) : nullptr);
    if (ah.p != nullptr) {
      blend_row<T>(H, h.row(b), ah.row(b), h_out.row(b));
      T* __restrict__ co = c_out.row(b);
      const T* __restrict__ cn = ct.row(b);
      const T* __restrict__ cp = c.row(b);
      const T* __restrict__ acr = ac.row(b);
      for (int64_t j = 0; j < H; ++j) co[j] = cp[j] + acr[j] * (cn[j] - cp[j]);
    }
  });
}

template <typename T>
void lstm_backward_impl(const std::optional<at::Tensor>& mm_, const at::Tensor& gates_,
                        const at::Tensor& ct_, const at::Tensor& tc_, const at::Tensor& c_prev_,
                        const std::optional<at::Tensor>& a_, const std::optional<at::Tensor>& st_h_,
                        const std::optional<at::Tensor>& st_c_, const LSTMParams<T>& p,
                        const std::optional<at::Tensor>& alpha_h_,
                        const std::optional<at::Tensor>& alpha_c_,
                        const std::optional<at::Tensor>& gy_, const std::optional<at::Tensor>& gcy_,
                        const at::Tensor& dz_, const std::optional<at::Tensor>& da_,
                        const std::optional<at::Tensor>& dchat_, const at::Tensor& carry_h_,
                        const at::Tensor& carry_c_) {
  const int64_t B = carry_h_.size(0), H = carry_h_.size(1);
  TORCH_CHECK(p.lnh_w == nullptr || (a_.has_value() && st_h_.has_value() && da_.has_value()),
              "rnnkit native LSTM: LN_h backward needs a, stats_h and da");
  TORCH_CHECK(p.lnc_w == nullptr || (st_c_.has_value() && dchat_.has_value()),
              "rnnkit native LSTM: LN_c backward needs stats_c and dchat");
  auto mm = maybe_tile<T>(mm_, "mm"), gates = tile<T>(gates_, "gates"), ct = tile<T>(ct_, "ct");
  auto tc = tile<T>(tc_, "tc"), cp = tile<T>(c_prev_, "c_prev"), a = maybe_tile<T>(a_, "a");
  auto st_h = maybe_tile<T>(st_h_, "stats_h"), st_c = maybe_tile<T>(st_c_, "stats_c");
  auto ah = maybe_tile<T>(alpha_h_, "alpha_h"), ac = maybe_tile<T>(alpha_c_, "alpha_c");
  auto gy = maybe_tile<T>(gy_, "gy"), gcy = maybe_tile<T>(gcy_, "gcy");
  auto dz = tile<T>(dz_, "dz"), da = maybe_tile<T>(da_, "da"), dch = maybe_tile<T>(dchat_, "dchat");
  auto carry_h = tile<T>(carry_h_, "carry_h"), carry_c = tile<T>(carry_c_, "carry_c");
  at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(4 * H, 1)),
                   [&](int64_t b0, int64_t b1) {
                     std::unique_ptr<T[]> scratch(new T[2 * H]);
                     for (int64_t b = b0; b < b1; ++b) {
                       lstm_backward_row<T>(
                           H, p, row_or_null(mm, b), row_or_null(ah, b), row_or_null(ac, b),
                           gates.row(b), ct.row(b), tc.row(b), cp.row(b), row_or_null(a, b),
                           row_or_null(st_h, b), row_or_null(st_c, b), row_or_null(gy, b),
                           row_or_null(gcy, b), dz.row(b),
                           da.p != nullptr ? da.row(b) : nullptr,
                           dch.p != nullptr ? dch.row(b) : nullptr, carry_h.row(b),
                           carry_c.row(b), scratch.get());
                     }
                   });
}

void lstm_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& h,
                  const at::Tensor& c, const std::optional<at::Tensor>& w_ci,
                  const std::optional<at::Tensor>& w_cf, const std::optional<at::Tensor>& w_co,
                  const std::optional<at::Tensor>& lnh_w, const std::optional<at::Tensor>& lnh_b,
                  const std::optional<at::Tensor>& lnc_w, const std::optional<at::Tensor>& lnc_b,
                  const std::optional<at::Tensor>& alpha_h,
                  const std::optional<at::Tensor>& alpha_c, double eps, const at::Tensor& gates,
                  const at::Tensor& ct, const at::Tensor& tc, const at::Tensor& h_out,
                  const std::optional<at::Tensor>& c_out, const std::optional<at::Tensor>& stats_h,
                  const std::optional<at::Tensor>& stats_c) {
  if (h.scalar_type() == at::kFloat) {
    lstm_forward_impl<float>(x, a, h, c, params<float>(w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b, eps),
                             alpha_h, alpha_c, gates, ct, tc, h_out, c_out, stats_h, stats_c);
  } else if (h.scalar_type() == at::kDouble) {
    lstm_forward_impl<double>(x, a, h, c, params<double>(w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b, eps),
                              alpha_h, alpha_c, gates, ct, tc, h_out, c_out, stats_h, stats_c);
  } else {
    TORCH_CHECK(false, "rnnkit native: float32 or float64 only, got ", h.scalar_type());
  }
}

void lstm_backward(const std::optional<at::Tensor>& mm, const at::Tensor& gates,
                   const at::Tensor& ct, const at::Tensor& tc, const at::Tensor& c_prev,
                   const std::optional<at::Tensor>& a, const std::optional<at::Tensor>& stats_h,
                   const std::optional<at::Tensor>& stats_c,
                   const std::optional<at::Tensor>& w_ci, const std::optional<at::Tensor>& w_cf,
                   const std::optional<at::Tensor>& w_co, const std::optional<at::Tensor>& lnh_w,
                   const std::optional<at::Tensor>& lnc_w,
                   const std::optional<at::Tensor>& alpha_h,
                   const std::optional<at::Tensor>& alpha_c, const std::optional<at::Tensor>& gy,
                   const std::optional<at::Tensor>& gcy, const at::Tensor& dz,
                   const std::optional<at::Tensor>& da, const std::optional<at::Tensor>& dchat,
                   const at::Tensor& carry_h, const at::Tensor& carry_c) {
  // the backward reads only the gains of the layer norms; their shifts stand in as "present"
  if (carry_h.scalar_type() == at::kFloat) {
    lstm_backward_impl<float>(mm, gates, ct, tc, c_prev, a, stats_h, stats_c,
                              params<float>(w_ci, w_cf, w_co, lnh_w, lnh_w, lnc_w, lnc_w, 0.0),
                              alpha_h, alpha_c, gy, gcy, dz, da, dchat, carry_h, carry_c);
  } else if (carry_h.scalar_type() == at::kDouble) {
    lstm_backward_impl<double>(mm, gates, ct, tc, c_prev, a, stats_h, stats_c,
                               params<double>(w_ci, w_cf, w_co, lnh_w, lnh_w, lnc_w, lnc_w, 0.0),
                               alpha_h, alpha_c, gy, gcy, dz, da, dchat, carry_h, carry_c);
  } else {
    TORCH_CHECK(false, "rnnkit native: float32 or float64 only, got ", carry_h.scalar_type());
  }
}


// The whole sequence, the time loop in C++ (see gru_steps.cpp). Returns the per-step recurrent
// products a_t (LN's backward needs them) when layer norm is on, else nothing.
std::vector<at::Tensor> lstm_forward_seq(
    const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w,
    bool onednn, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& w_ci,
    const std::optional<at::Tensor>& w_cf, const std::optional<at::Tensor>& w_co,
    const std::optional<at::Tensor>& lnh_w, const std::optional<at::Tensor>& lnh_b,
    const std::optional<at::Tensor>& lnc_w, const std::optional<at::Tensor>& lnc_b,
    const std::optional<at::Tensor>& alpha_h, const std::optional<at::Tensor>& alpha_c, double eps,
    const at::Tensor& gates, const at::Tensor& hs, const at::Tensor& cs, const at::Tensor& ct,
    const at::Tensor& tc, const std::optional<at::Tensor>& stats_h,
    const std::optional<at::Tensor>& stats_c) {
  std::vector<at::Tensor> pre;
  at::Tensor h = h0, c = c0;
  for (int64_t t = 0; t < xp.size(0); ++t) {
    const at::Tensor a = step_mm(h, w, b, onednn);
    if (lnh_w.has_value()) pre.push_back(a);
    at::Tensor h_t = hs.select(0, t), c_t = cs.select(0, t);
    lstm_forward(xp.select(0, t), a, h, c, w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b,
                 at_step(alpha_h, t), at_step(alpha_c, t), eps, gates.select(0, t),
                 ct.select(0, t), tc.select(0, t), h_t,
                 alpha_h.has_value() ? std::optional<at::Tensor>(c_t) : std::nullopt,
                 at_step(stats_h, t), at_step(stats_c, t));
    h = h_t;
    c = c_t;
  }
  return pre;
}

// Returns (∂L/∂h_0, ∂L/∂c_0); fills dz, and da / dchat with layer norm.
std::tuple<at::Tensor, at::Tensor> lstm_backward_seq(
    const std::optional<at::Tensor>& gy, const std::optional<at::Tensor>& gcy,
    const at::Tensor& gates, const at::Tensor& ct, const at::Tensor& tc, const at::Tensor& c_prev,
    at::TensorList pre, const std::optional<at::Tensor>& stats_h,
    const std::optional<at::Tensor>& stats_c, const std::optional<at::Tensor>& w_ci,
    const std::optional<at::Tensor>& w_cf, const std::optional<at::Tensor>& w_co,
    const std::optional<at::Tensor>& lnh_w, const std::optional<at::Tensor>& lnc_w,
    const std::optional<at::Tensor>& alpha_h, const std::optional<at::Tensor>& alpha_c,
    const at::Tensor& w_t, bool onednn, const at::Tensor& dz,
    const std::optional<at::Tensor>& da, const std::optional<at::Tensor>& dchat) {
  const int64_t T = gates.size(0);
  const bool ln_h = lnh_w.has_value();
  TORCH_CHECK(!ln_h || static_cast<int64_t>(pre.size()) == T,
              "rnnkit native LSTM: layer norm needs every step's recurrent product");
  at::Tensor carry_h = last_grad_or_zeros(gy, c_prev.size(1), c_prev.size(2), c_prev.options());
  at::Tensor carry_c =
      last_grad_or_zeros(gcy, c_prev.size(1), c_prev.size(2), c_prev.options());
  std::optional<at::Tensor> mm;
  for (int64_t t = T - 1; t >= 0; --t) {
    const at::Tensor dz_t = dz.select(0, t);
    const std::optional<at::Tensor> da_t = at_step(da, t);
    lstm_backward(mm, gates.select(0, t), ct.select(0, t), tc.select(0, t), c_prev.select(0, t),
                  ln_h ? std::optional<at::Tensor>(pre[t]) : std::nullopt, at_step(stats_h, t),
                  at_step(stats_c, t), w_ci, w_cf, w_co, lnh_w, lnc_w, at_step(alpha_h, t),
                  at_step(alpha_c, t), t > 0 ? at_step(gy, t - 1) : std::nullopt,
                  t > 0 ? at_step(gcy, t - 1) : std::nullopt, dz_t, da_t, at_step(dchat, t),
                  carry_h, carry_c);
    mm = step_mm(ln_h ? *da_t : dz_t, w_t, std::nullopt, onednn);
  }
  if (mm.has_value()) carry_h.add_(*mm);
  return {carry_h, carry_c};
}


// ---------------------------------------------------------------------------------------------
// Whole sequences on the tile GEMM (tile_gemm.h), each thread running its own slice of the batch
// rows through every step: the LSTM's layer norm needs a whole row of the recurrent product, and
// with rows split between threads no row ever waits for another thread (no barriers). Used where
// every thread gets at least kMinRows rows (rnnkit.fast decides; the loops above serve the rest).
// ---------------------------------------------------------------------------------------------

// w: W_hhᵀ as 16-column panels, (⌈4H/16⌉, H, 16). Writes the buffers of lstm_forward_seq; with
// LN on the recurrent product its pre-LN values go to ``pre`` (T, B, 4H).
template <typename T>
void lstm_fused_forward_impl(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0,
                             const at::Tensor& w, const std::optional<at::Tensor>& b,
                             const LSTMParams<T>& p, const std::optional<at::Tensor>& alpha_h,
                             const std::optional<at::Tensor>& alpha_c, const at::Tensor& gates,
                             const at::Tensor& hs, const at::Tensor& cs, const at::Tensor& ct,
                             const at::Tensor& tc, const std::optional<at::Tensor>& stats_h,
                             const std::optional<at::Tensor>& stats_c,
                             const std::optional<at::Tensor>& pre) {
  const int64_t T_ = xp.size(0), B = xp.size(1), H = hs.size(2), G4 = 4 * H;
  check_seq(xp, T_, B, G4, "xp");
  check_seq(gates, T_, B, G4, "gates");
  for (const auto* t : {&hs, &cs, &ct, &tc}) check_seq(*t, T_, B, H, "hs / cs / ct / tc");
  TORCH_CHECK(alpha_h.has_value() == alpha_c.has_value(), "rnnkit native LSTM: alpha_h with alpha_c");
  if (alpha_h.has_value()) {
    check_seq(*alpha_h, T_, B, H, "alpha_h");
    check_seq(*alpha_c, T_, B, H, "alpha_c");
  }
  TORCH_CHECK(p.lnh_w == nullptr || (stats_h.has_value() && pre.has_value()),
              "rnnkit native LSTM: LN needs stats_h and pre");
  TORCH_CHECK(p.lnc_w == nullptr || stats_c.has_value(), "rnnkit native LSTM: LN needs stats_c");
  if (pre.has_value()) check_seq(*pre, T_, B, G4, "pre");
  for (const auto* t : {&h0, &c0})
    TORCH_CHECK(t->dim() == 2 && t->size(0) == B && t->size(1) == H && t->is_contiguous(),
                "rnnkit native LSTM: h0 and c0 must be contiguous (B, H)");
  check_panels(w, G4, H, kPanel, "w (W_hhᵀ)");
  const T *X = xp.data_ptr<T>(), *W = w.data_ptr<T>(), *bias = data_or_null<T>(b);
  const T *H0 = h0.data_ptr<T>(), *C0 = c0.data_ptr<T>();
  const T *AH = data_or_null<T>(alpha_h), *AC = data_or_null<T>(alpha_c);
  T *GA = gates.data_ptr<T>(), *HS = hs.data_ptr<T>(), *CS = cs.data_ptr<T>();
  T *CT = ct.data_ptr<T>(), *TC = tc.data_ptr<T>(), *PRE = data_or_null<T>(pre);
  T *SH = data_or_null<T>(stats_h);
  T *SC = data_or_null<T>(stats_c);
  // without LN the recurrent products go to a scratch (B, 4H)
  at::Tensor scratch = PRE == nullptr ? at::empty({B, G4}, xp.options()) : at::Tensor();
  T* SCR = PRE == nullptr ? scratch.data_ptr<T>() : nullptr;

#pragma omp parallel num_threads(row_team(B))
  {
    const auto [b0, b1] = my_rows(B);
    alignas(64) T buf[kTileBuf];
    for (int64_t t = 0; t < T_; ++t) {
      const T* hp = t == 0 ? H0 : HS + (t - 1) * B * H;
      const T* cp = t == 0 ? C0 : CS + (t - 1) * B * H;
      T* a = PRE != nullptr ? PRE + t * B * G4 : SCR;
      rows_mm<T>(b0, b1, H, G4, hp, H, W, a, G4, buf);
      for (int64_t bb = b0; bb < b1; ++bb) {
        const int64_t row = t * B + bb;
        T* arow = a + bb * G4;
        if (bias != nullptr)
          for (int64_t j = 0; j < G4; ++j) arow[j] += bias[j];
        T* h_out = HS + row * H;
        lstm_forward_row<T>(H, p, X + row * G4, arow, cp + bb * H, GA + row * G4, CT + row * H,
                            TC + row * H, h_out, SH != nullptr ? SH + row * 2 : nullptr,
                            SC != nullptr ? SC + row * 2 : nullptr);
        if (AH != nullptr) {
          blend_row<T>(H, hp + bb * H, AH + row * H, h_out);
          T* __restrict__ co = CS + row * H;
          const T* __restrict__ cn = CT + row * H;
          const T* __restrict__ cpr = cp + bb * H;
          const T* __restrict__ acr = AC + row * H;
          for (int64_t j = 0; j < H; ++j) co[j] = cpr[j] + acr[j] * (cn[j] - cpr[j]);
        }
      }
    }
  }
}

// w_t: W_hh as 16-column panels, (⌈H/16⌉, 4H, 16). Same outputs as lstm_backward_seq, with the
// previous cell states read from c0 and cs.
template <typename T>
std::tuple<at::Tensor, at::Tensor> lstm_fused_backward_impl(
    const std::optional<at::Tensor>& gy, const std::optional<at::Tensor>& gcy,
    const at::Tensor& gates, const at::Tensor& ct, const at::Tensor& tc, const at::Tensor& c0,
    const at::Tensor& cs, const std::optional<at::Tensor>& pre,
    const std::optional<at::Tensor>& stats_h, const std::optional<at::Tensor>& stats_c,
    const LSTMParams<T>& p, const std::optional<at::Tensor>& alpha_h,
    const std::optional<at::Tensor>& alpha_c, const at::Tensor& w_t, const at::Tensor& dz,
    const std::optional<at::Tensor>& da, const std::optional<at::Tensor>& dchat) {
  const int64_t T_ = gates.size(0), B = gates.size(1), H = cs.size(2), G4 = 4 * H;
  check_seq(gates, T_, B, G4, "gates");
  check_seq(dz, T_, B, G4, "dz");
  for (const auto* t : {&ct, &tc, &cs}) check_seq(*t, T_, B, H, "ct / tc / cs");
  for (const auto* t : {&alpha_h, &alpha_c, &dchat})
    if (t->has_value()) check_seq(**t, T_, B, H, "alpha / dchat");
  const SeqRows<T> GY = seq_rows<T>(gy, T_, B, H, "gy"), GCY = seq_rows<T>(gcy, T_, B, H, "gcy");
  TORCH_CHECK(p.lnh_w == nullptr || (pre.has_value() && stats_h.has_value() && da.has_value()),
              "rnnkit native LSTM: LN_h backward needs pre, stats_h and da");
  TORCH_CHECK(p.lnc_w == nullptr || (stats_c.has_value() && dchat.has_value()),
              "rnnkit native LSTM: LN_c backward needs stats_c and dchat");
  if (pre.has_value()) check_seq(*pre, T_, B, G4, "pre");
  if (da.has_value()) check_seq(*da, T_, B, G4, "da");
  TORCH_CHECK(c0.dim() == 2 && c0.size(0) == B && c0.size(1) == H && c0.is_contiguous(),
              "rnnkit native LSTM: c0 must be contiguous (B, H)");
  check_panels(w_t, H, G4, kPanel, "w_t (W_hh)");
  at::Tensor carry_h = last_grad_or_zeros(gy, B, H, cs.options());
  at::Tensor carry_c = last_grad_or_zeros(gcy, B, H, cs.options());
  at::Tensor mm_buf = at::empty({B, H}, cs.options());
  const T *GA = gates.data_ptr<T>(), *CT = ct.data_ptr<T>(), *TC = tc.data_ptr<T>();
  const T *C0 = c0.data_ptr<T>(), *CS = cs.data_ptr<T>(), *PRE = data_or_null<T>(pre);
  const T *SH = data_or_null<T>(stats_h), *SC = data_or_null<T>(stats_c), *W = w_t.data_ptr<T>();
  const T *AH = data_or_null<T>(alpha_h), *AC = data_or_null<T>(alpha_c);
  T *DZ = dz.data_ptr<T>(), *DA = data_or_null<T>(da);
  T *DCH = data_or_null<T>(dchat);
  T *CH = carry_h.data_ptr<T>(), *CC = carry_c.data_ptr<T>(), *MM = mm_buf.data_ptr<T>();
  // ∂a of step s: ∂z, or LN_h's backward of it
  T* DGRAD = DA != nullptr ? DA : DZ;

#pragma omp parallel num_threads(row_team(B))
  {
    const auto [b0, b1] = my_rows(B);
    alignas(64) T buf[kTileBuf];
    std::unique_ptr<T[]> scratch(new T[2 * H]);
    auto step_rows = [&](int64_t s, const T* mm) {
      const T* cp = s == 0 ? C0 : CS + (s - 1) * B * H;
      for (int64_t bb = b0; bb < b1; ++bb) {
        const int64_t row = s * B + bb, rh = row * H;
        lstm_backward_row<T>(
            H, p, mm != nullptr ? mm + bb * H : nullptr, AH != nullptr ? AH + rh : nullptr,
            AC != nullptr ? AC + rh : nullptr, GA + row * G4, CT + rh, TC + rh, cp + bb * H,
            PRE != nullptr ? PRE + row * G4 : nullptr, SH != nullptr ? SH + row * 2 : nullptr,
            SC != nullptr ? SC + row * 2 : nullptr,
            (GY && s > 0) ? GY.row(s - 1, bb) : nullptr,
            (GCY && s > 0) ? GCY.row(s - 1, bb) : nullptr, DZ + row * G4,
            DA != nullptr ? DA + row * G4 : nullptr, DCH != nullptr ? DCH + rh : nullptr,
            CH + bb * H, CC + bb * H, scratch.get());
      }
    };
    step_rows(T_ - 1, nullptr);
    for (int64_t t = T_ - 1; t >= 0; --t) {
      rows_mm<T>(b0, b1, G4, H, DGRAD + t * B * G4, G4, W, MM, H, buf);
      if (t > 0) {
        step_rows(t - 1, MM);
      } else {
        for (int64_t j = b0 * H; j < b1 * H; ++j) CH[j] += MM[j];
      }
    }
  }
  return {carry_h, carry_c};
}

void lstm_fused_forward(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& c0,
                        const at::Tensor& w, const std::optional<at::Tensor>& b,
                        const std::optional<at::Tensor>& w_ci, const std::optional<at::Tensor>& w_cf,
                        const std::optional<at::Tensor>& w_co,
                        const std::optional<at::Tensor>& lnh_w,
                        const std::optional<at::Tensor>& lnh_b,
                        const std::optional<at::Tensor>& lnc_w,
                        const std::optional<at::Tensor>& lnc_b,
                        const std::optional<at::Tensor>& alpha_h,
                        const std::optional<at::Tensor>& alpha_c, double eps,
                        const at::Tensor& gates, const at::Tensor& hs, const at::Tensor& cs,
                        const at::Tensor& ct, const at::Tensor& tc,
                        const std::optional<at::Tensor>& stats_h,
                        const std::optional<at::Tensor>& stats_c,
                        const std::optional<at::Tensor>& pre) {
  if (xp.scalar_type() == at::kFloat) {
    lstm_fused_forward_impl<float>(xp, h0, c0, w, b,
                                   params<float>(w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b, eps),
                                   alpha_h, alpha_c, gates, hs, cs, ct, tc, stats_h, stats_c, pre);
  } else {
    TORCH_CHECK(xp.scalar_type() == at::kDouble, "rnnkit native: float32 or float64 only");
    lstm_fused_forward_impl<double>(
        xp, h0, c0, w, b, params<double>(w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b, eps),
        alpha_h, alpha_c, gates, hs, cs, ct, tc, stats_h, stats_c, pre);
  }
}

std::tuple<at::Tensor, at::Tensor> lstm_fused_backward(
    const std::optional<at::Tensor>& gy, const std::optional<at::Tensor>& gcy,
    const at::Tensor& gates, const at::Tensor& ct, const at::Tensor& tc, const at::Tensor& c0,
    const at::Tensor& cs, const std::optional<at::Tensor>& pre,
    const std::optional<at::Tensor>& stats_h, const std::optional<at::Tensor>& stats_c,
    const std::optional<at::Tensor>& w_ci, const std::optional<at::Tensor>& w_cf,
    const std::optional<at::Tensor>& w_co, const std::optional<at::Tensor>& lnh_w,
    const std::optional<at::Tensor>& lnc_w, const std::optional<at::Tensor>& alpha_h,
    const std::optional<at::Tensor>& alpha_c, const at::Tensor& w_t, const at::Tensor& dz,
    const std::optional<at::Tensor>& da, const std::optional<at::Tensor>& dchat) {
  // the shifts are not needed by the backward; the gains stand in to satisfy params()
  if (gates.scalar_type() == at::kFloat) {
    return lstm_fused_backward_impl<float>(
        gy, gcy, gates, ct, tc, c0, cs, pre, stats_h, stats_c,
        params<float>(w_ci, w_cf, w_co, lnh_w, lnh_w, lnc_w, lnc_w, 0.0), alpha_h, alpha_c, w_t,
        dz, da, dchat);
  }
  TORCH_CHECK(gates.scalar_type() == at::kDouble, "rnnkit native: float32 or float64 only");
  return lstm_fused_backward_impl<double>(
      gy, gcy, gates, ct, tc, c0, cs, pre, stats_h, stats_c,
      params<double>(w_ci, w_cf, w_co, lnh_w, lnh_w, lnc_w, lnc_w, 0.0), alpha_h, alpha_c, w_t,
      dz, da, dchat);
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_native, m) {
  using namespace rnnkit_native;
  m.def(
      "lstm_forward_seq(Tensor xp, Tensor h0, Tensor c0, Tensor w, bool onednn, Tensor? b, "
      "Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? lnh_w, Tensor? lnh_b, Tensor? lnc_w, "
      "Tensor? lnc_b, Tensor? alpha_h, Tensor? alpha_c, float eps, Tensor(a!) gates, "
      "Tensor(b!) hs, Tensor(c!) cs, Tensor(d!) ct, Tensor(e!) tc, Tensor(f!)? stats_h, "
      "Tensor(g!)? stats_c) -> Tensor[]",
      &lstm_forward_seq);
  m.def(
      "lstm_backward_seq(Tensor? gy, Tensor? gcy, Tensor gates, Tensor ct, Tensor tc, "
      "Tensor c_prev, Tensor[] pre, Tensor? stats_h, Tensor? stats_c, Tensor? w_ci, "
      "Tensor? w_cf, Tensor? w_co, Tensor? lnh_w, Tensor? lnc_w, Tensor? alpha_h, "
      "Tensor? alpha_c, Tensor w_t, bool onednn, Tensor(a!) dz, Tensor(b!)? da, "
      "Tensor(c!)? dchat) -> (Tensor, Tensor)",
      &lstm_backward_seq);
  m.def(
      "lstm_fused_forward(Tensor xp, Tensor h0, Tensor c0, Tensor w, Tensor? b, Tensor? w_ci, "
      "Tensor? w_cf, Tensor? w_co, Tensor? lnh_w, Tensor? lnh_b, Tensor? lnc_w, Tensor? lnc_b, "
      "Tensor? alpha_h, Tensor? alpha_c, float eps, Tensor(a!) gates, Tensor(b!) hs, "
      "Tensor(c!) cs, Tensor(d!) ct, Tensor(e!) tc, Tensor(f!)? stats_h, Tensor(g!)? stats_c, "
      "Tensor(h!)? pre) -> ()",
      &lstm_fused_forward);
  m.def(
      "lstm_fused_backward(Tensor? gy, Tensor? gcy, Tensor gates, Tensor ct, Tensor tc, "
      "Tensor c0, Tensor cs, Tensor? pre, Tensor? stats_h, Tensor? stats_c, Tensor? w_ci, "
      "Tensor? w_cf, Tensor? w_co, Tensor? lnh_w, Tensor? lnc_w, Tensor? alpha_h, "
      "Tensor? alpha_c, Tensor w_t, Tensor(a!) dz, Tensor(b!)? da, Tensor(c!)? dchat) -> "
      "(Tensor, Tensor)",
      &lstm_fused_backward);
}
