// The GRU's per-row gate arithmetic (both forms), shared by the step-by-step loops of
// gru_steps.cpp and the fused sequences of gru_fused.cpp.
//
// Each function handles ``n`` consecutive hidden units of one batch row. Gate-major buffers hold
// the gates of a unit H apart (x̂_r at x[j], x̂_z at x[H + j], …); ``sa`` is the gate stride of the
// recurrent product ``a`` (H in a (B, 3H) GEMM output, 16 in a fused tile). Pointers point at the
// first unit; restrict pointers and plain loops are the form GCC vectorises.
#pragma once

#include "common.h"

namespace rnnkit_native {

// Reset after the product (torch's GRU), forward step t, given a = W_hh h + b_hh:
//   r = σ(x_r + a_r), z = σ(x_z + a_z), n = tanh(x_n + r ⊙ a_n), h̃ = n + z ⊙ (h − n).
// Writes rz = [r, z], n, an = a_n (kept for the backward) and h̃ into out.
template <typename T>
inline void gru_forward_row(int64_t cnt, int64_t H, const T* __restrict__ x,
                            const T* __restrict__ a, int64_t sa, const T* __restrict__ h,
                            T* __restrict__ rz, T* __restrict__ n, T* __restrict__ an,
                            T* __restrict__ out) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T r = sigmoid(x[j] + a[j]);
    const T z = sigmoid(x[H + j] + a[sa + j]);
    const T a_n = a[2 * sa + j];
    const T nn = tanh_(x[2 * H + j] + r * a_n);
    rz[j] = r;
    rz[H + j] = z;
    n[j] = nn;
    an[j] = a_n;
    out[j] = nn + z * (h[j] - nn);
  }
}

// Reset after, backward step t. ∂L/∂h_t arrives in two parts, the GEMM ∂a_{t+1} W_hh (``mm``,
// null at t = T − 1) and ``carry``; with g = α ⊙ ∂L/∂h_t (or ∂L/∂h_t) and
// q = g ⊙ (1 − z)(1 − n²):
//   ∂a = [q ⊙ a_n r(1 − r), g ⊙ (h_{t−1} − n) z(1 − z), q ⊙ r]   (∂x̂ for r and z is the same)
//   ∂x̂_n = q
//   carry ← g ⊙ z + (∂L/∂h_t − g) + ∂L/∂y_{t−1}: the part of ∂L/∂h_{t−1} outside ∂a W_hh.
template <typename T, bool kAlpha, bool kGy>
inline void gru_backward_row(int64_t cnt, int64_t H, const T* __restrict__ mm,
                             const T* __restrict__ alpha, const T* __restrict__ rz,
                             const T* __restrict__ n, const T* __restrict__ an,
                             const T* __restrict__ hp, const T* __restrict__ gy,
                             T* __restrict__ da, T* __restrict__ dxn, T* __restrict__ carry) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T gh = mm != nullptr ? carry[j] + mm[j] : carry[j];
    T gj = gh;
    if constexpr (kAlpha) gj = gh * alpha[j];
    const T r = rz[j], z = rz[H + j], nn = n[j];
    const T q = gj * (T(1) - z) * (T(1) - nn * nn);
    da[j] = q * an[j] * r * (T(1) - r);
    da[H + j] = gj * (hp[j] - nn) * z * (T(1) - z);
    da[2 * H + j] = q * r;
    dxn[j] = q;
    T c = gj * z;
    if constexpr (kAlpha) c += gh - gj;
    if constexpr (kGy) c += gy[j];
    carry[j] = c;
  }
}

// The four flag variants of gru_backward_row, chosen at run time.
template <typename T>
inline void gru_backward_row_any(int64_t cnt, int64_t H, const T* mm, const T* alpha,
                                 const T* rz, const T* n, const T* an, const T* hp, const T* gy,
                                 T* da, T* dxn, T* carry) {
  auto row = alpha != nullptr
                 ? (gy != nullptr ? gru_backward_row<T, true, true> : gru_backward_row<T, true, false>)
                 : (gy != nullptr ? gru_backward_row<T, false, true>
                                  : gru_backward_row<T, false, false>);
  row(cnt, H, mm, alpha, rz, n, an, hp, gy, da, dxn, carry);
}

// Reset before the product (Cho et al.), forward, first half of step t, given a_rz = W_rz h + b_rz:
//   r, z = σ(x_rz + a_rz); writes rz = [r, z] and rh = r ⊙ h.
template <typename T>
inline void gru_rb_gates_row(int64_t cnt, int64_t H, const T* __restrict__ x,
                             const T* __restrict__ a, int64_t sa, const T* __restrict__ h,
                             T* __restrict__ rz, T* __restrict__ rh) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T r = sigmoid(x[j] + a[j]);
    rz[j] = r;
    rz[H + j] = sigmoid(x[H + j] + a[sa + j]);
    rh[j] = r * h[j];
  }
}

// Reset before, forward, second half of step t, given a_n = W_n (r ⊙ h) + b_n:
//   n = tanh(x_n + a_n), h̃ = n + z ⊙ (h − n).
template <typename T>
inline void gru_rb_state_row(int64_t cnt, const T* __restrict__ xn, const T* __restrict__ a,
                             const T* __restrict__ h, const T* __restrict__ z,
                             T* __restrict__ n, T* __restrict__ out) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T nn = tanh_(xn[j] + a[j]);
    n[j] = nn;
    out[j] = nn + z[j] * (h[j] - nn);
  }
}

// Reset before, backward, first half of step t; ∂L/∂h_t = ``mm`` + ``carry`` as above. With g:
//   ∂a_n = ∂x̂_n = g ⊙ (1 − z)(1 − n²) into dn, ∂(x̂_z + â_z) = g ⊙ (h_{t−1} − n) z(1 − z) into dz,
//   carry ← g ⊙ z + (∂L/∂h_t − g) + ∂L/∂y_{t−1}.
template <typename T, bool kAlpha, bool kGy>
inline void gru_rb_backward_state_row(int64_t cnt, const T* __restrict__ mm,
                                      const T* __restrict__ alpha, const T* __restrict__ z,
                                      const T* __restrict__ n, const T* __restrict__ hp,
                                      const T* __restrict__ gy, T* __restrict__ dn,
                                      T* __restrict__ dz, T* __restrict__ carry) {
  if (mm != nullptr) {
    for (int64_t j = 0; j < cnt; ++j) carry[j] += mm[j];
  }
  for (int64_t j = 0; j < cnt; ++j) {
    const T gh = carry[j];
    T gj = gh;
    if constexpr (kAlpha) gj = gh * alpha[j];
    const T zz = z[j], nn = n[j];
    dn[j] = gj * (T(1) - zz) * (T(1) - nn * nn);
    dz[j] = gj * (hp[j] - nn) * zz * (T(1) - zz);
    T c = gj * zz;
    if constexpr (kAlpha) c += gh - gj;
    if constexpr (kGy) c += gy[j];
    carry[j] = c;
  }
}

template <typename T>
inline void gru_rb_backward_state_row_any(int64_t cnt, const T* mm, const T* alpha, const T* z,
                                          const T* n, const T* hp, const T* gy, T* dn, T* dz,
                                          T* carry) {
  auto row = alpha != nullptr ? (gy != nullptr ? gru_rb_backward_state_row<T, true, true>
                                               : gru_rb_backward_state_row<T, true, false>)
                              : (gy != nullptr ? gru_rb_backward_state_row<T, false, true>
                                               : gru_rb_backward_state_row<T, false, false>);
  row(cnt, mm, alpha, z, n, hp, gy, dn, dz, carry);
}

// Reset before, backward, second half of step t, given g_rh = ∂a_n W_n = ∂L/∂(r ⊙ h_{t−1}):
//   ∂(x̂_r + â_r) = g_rh ⊙ h_{t−1} r(1 − r) into dr;  carry += g_rh ⊙ r.
template <typename T>
inline void gru_rb_backward_reset_row(int64_t cnt, const T* __restrict__ grh,
                                      const T* __restrict__ r, const T* __restrict__ hp,
                                      T* __restrict__ dr, T* __restrict__ carry) {
  for (int64_t j = 0; j < cnt; ++j) {
    dr[j] = grh[j] * hp[j] * r[j] * (T(1) - r[j]);
    carry[j] += grh[j] * r[j];
  }
}

}  // namespace rnnkit_native
