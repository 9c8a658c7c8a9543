// The GRU time loops (both forms) with one oneDNN / torch.mm GEMM call per product and the gate
// arithmetic of gru_rows.h in between; see common.h for the scheme. gru_fused.cpp is the faster
// path where its tile GEMM is compiled (AVX-512); these loops serve every other CPU.
#include <torch/library.h>

#include "gru_rows.h"

namespace rnnkit_native {
namespace {

// Each wrapper checks the tiles and runs the rows of gru_rows.h on the thread pool.

template <typename T>
void gru_forward_impl(const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& h_,
                      const std::optional<at::Tensor>& alpha_, const at::Tensor& rz_,
                      const at::Tensor& n_, const at::Tensor& an_, const at::Tensor& out_) {
  const int64_t B = h_.size(0), H = h_.size(1);
  auto x = tile<T>(x_, "x"), a = tile<T>(a_, "a"), h = tile<T>(h_, "h");
  auto al = maybe_tile<T>(alpha_, "alpha");
  auto rz = tile<T>(rz_, "rz"), n = tile<T>(n_, "n"), an = tile<T>(an_, "an");
  auto out = tile<T>(out_, "out");
  over_rows(B, H, [&](int64_t b) {
    gru_forward_row<T>(H, H, x.row(b), a.row(b), H, h.row(b), rz.row(b), n.row(b), an.row(b),
                       out.row(b));
    if (al.p != nullptr) blend_row<T>(H, h.row(b), al.row(b), out.row(b));
  });
}

template <typename T>
void gru_backward_impl(const std::optional<at::Tensor>& mm_, const at::Tensor& rz_,
                       const at::Tensor& n_, const at::Tensor& an_, const at::Tensor& hprev_,
                       const std::optional<at::Tensor>& alpha_,
                       const std::optional<at::Tensor>& gy_prev_, const at::Tensor& da_,
                       const at::Tensor& dxn_, const at::Tensor& carry_) {
  const int64_t B = carry_.size(0), H = carry_.size(1);
  auto mm = maybe_tile<T>(mm_, "mm"), rz = tile<T>(rz_, "rz"), n = tile<T>(n_, "n");
  auto an = tile<T>(an_, "an"), hp = tile<T>(hprev_, "hprev");
  auto al = maybe_tile<T>(alpha_, "alpha"), gy = maybe_tile<T>(gy_prev_, "gy_prev");
  auto da = tile<T>(da_, "da"), dxn = tile<T>(dxn_, "dxn"), carry = tile<T>(carry_, "carry");
  over_rows(B, H, [&](int64_t b) {
    gru_backward_row_any<T>(H, H, row_or_null(mm, b), row_or_null(al, b), rz.row(b), n.row(b),
                            an.row(b), hp.row(b), row_or_null(gy, b), da.row(b), dxn.row(b),
                            carry.row(b));
  });
}

template <typename T>
void gru_rb_gates_impl(const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& h_,
                       const at::Tensor& rz_, const at::Tensor& rh_) {
  const int64_t B = h_.size(0), H = h_.size(1);
  auto x = tile<T>(x_, "x"), a = tile<T>(a_, "a"), h = tile<T>(h_, "h");
  auto rz = tile<T>(rz_, "rz"), rh = tile<T>(rh_, "rh");
  over_rows(B, H, [&](int64_t b) {
    gru_rb_gates_row<T>(H, H, x.row(b), a.row(b), H, h.row(b), rz.row(b), rh.row(b));
  });
}

template <typename T>
void gru_rb_state_impl(const at::Tensor& xn_, const at::Tensor& a_, const at::Tensor& h_,
                       const at::Tensor& z_, const std::optional<at::Tensor>& alpha_,
                       const at::Tensor& n_, const at::Tensor& out_) {
  const int64_t B = h_.size(0), H = h_.size(1);
  auto xn = tile<T>(xn_, "xn"), a = tile<T>(a_, "a"), h = tile<T>(h_, "h"), z = tile<T>(z_, "z");
  auto al = maybe_tile<T>(alpha_, "alpha");
  auto n = tile<T>(n_, "n"), out = tile<T>(out_, "out");
  over_rows(B, H, [&](int64_t b) {
    gru_rb_state_row<T>(H, xn.row(b), a.row(b), h.row(b), z.row(b), n.row(b), out.row(b));
    if (al.p != nullptr) blend_row<T>(H, h.row(b), al.row(b), out.row(b));
  });
}

template <typename T>
void gru_rb_backward_state_impl(const std::optional<at::Tensor>& mm_, const at::Tensor& z_,
                                const at::Tensor& n_, const at::Tensor& hprev_,
                                const std::optional<at::Tensor>& alpha_,
                                const std::optional<at::Tensor>& gy_prev_, const at::Tensor& dn_,
                                const at::Tensor& dz_, const at::Tensor& carry_) {
  const int64_t B = carry_.size(0), H = carry_.size(1);
  auto mm = maybe_tile<T>(mm_, "mm"), z = tile<T>(z_, "z"), n = tile<T>(n_, "n");
  auto hp = tile<T>(hprev_, "hprev");
  auto al = maybe_tile<T>(alpha_, "alpha"), gy = maybe_tile<T>(gy_prev_, "gy_prev");
  auto dn = tile<T>(dn_, "dn"), dz = tile<T>(dz_, "dz"), carry = tile<T>(carry_, "carry");
  over_rows(B, H, [&](int64_t b) {
    gru_rb_backward_state_row_any<T>(H, row_or_null(mm, b), row_or_null(al, b), z.row(b),
                                     n.row(b), hp.row(b), row_or_null(gy, b), dn.row(b),
                                     dz.row(b), carry.row(b));
  });
}

template <typename T>
void gru_rb_backward_reset_impl(const at::Tensor& grh_, const at::Tensor& r_,
                                const at::Tensor& hprev_, const at::Tensor& dr_,
                                const at::Tensor& carry_) {
  const int64_t B = grh_.size(0), H = grh_.size(1);
  auto grh = tile<T>(grh_, "grh"), r = tile<T>(r_, "r"), hp = tile<T>(hprev_, "hprev");
  auto dr = tile<T>(dr_, "dr"), carry = tile<T>(carry_, "carry");
  over_rows(B, H, [&](int64_t b) {
    gru_rb_backward_reset_row<T>(H, grh.row(b), r.row(b), hp.row(b), dr.row(b), carry.row(b));
  });
}

void gru_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& h,
                 const std::optional<at::Tensor>& alpha, const at::Tensor& rz,
                 const at::Tensor& n, const at::Tensor& an, const at::Tensor& out) {
  RNNKIT_DISPATCH(h, gru_forward_impl, x, a, h, alpha, rz, n, an, out);
}

void gru_backward(const std::optional<at::Tensor>& mm, const at::Tensor& rz, const at::Tensor& n,
                  const at::Tensor& an, const at::Tensor& hprev,
                  const std::optional<at::Tensor>& alpha, const std::optional<at::Tensor>& gy_prev,
                  const at::Tensor& da, const at::Tensor& dxn, const at::Tensor& carry) {
  RNNKIT_DISPATCH(carry, gru_backward_impl, mm, rz, n, an, hprev, alpha, gy_prev, da, dxn, carry);
}

void gru_rb_gates(const at::Tensor& x, const at::Tensor& a, const at::Tensor& h,
                  const at::Tensor& rz, const at::Tensor& rh) {
  RNNKIT_DISPATCH(h, gru_rb_gates_impl, x, a, h, rz, rh);
}

void gru_rb_state(const at::Tensor& xn, const at::Tensor& a, const at::Tensor& h,
                  const at::Tensor& z, const std::optional<at::Tensor>& alpha,
                  const at::Tensor& n, const at::Tensor& out) {
  RNNKIT_DISPATCH(h, gru_rb_state_impl, xn, a, h, z, alpha, n, out);
}

void gru_rb_backward_state(const std::optional<at::Tensor>& mm, const at::Tensor& z,
                           const at::Tensor& n, const at::Tensor& hprev,
                           const std::optional<at::Tensor>& alpha,
                           const std::optional<at::Tensor>& gy_prev, const at::Tensor& dn,
                           const at::Tensor& dz, const at::Tensor& carry) {
  RNNKIT_DISPATCH(carry, gru_rb_backward_state_impl, mm, z, n, hprev, alpha, gy_prev, dn, dz,
                  carry);
}

void gru_rb_backward_reset(const at::Tensor& grh, const at::Tensor& r, const at::Tensor& hprev,
                           const at::Tensor& dr, const at::Tensor& carry) {
  RNNKIT_DISPATCH(grh, gru_rb_backward_reset_impl, grh, r, hprev, dr, carry);
}


// ---------------------------------------------------------------------------------------------
// Whole sequences: the time loop itself in C++, so each step costs its GEMMs and one kernel call
// (about a microsecond of dispatch) instead of a handful of interpreted torch calls.
// ---------------------------------------------------------------------------------------------

void gru_forward_seq(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w, bool onednn,
                     const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& alpha,
                     const at::Tensor& rz, const at::Tensor& n, const at::Tensor& an,
                     const at::Tensor& hs) {
  at::Tensor h = h0;
  for (int64_t t = 0; t < xp.size(0); ++t) {
    const at::Tensor a = step_mm(h, w, b, onednn);
    at::Tensor h_t = hs.select(0, t);
    gru_forward(xp.select(0, t), a, h, at_step(alpha, t), rz.select(0, t), n.select(0, t),
                an.select(0, t), h_t);
    h = h_t;
  }
}

at::Tensor gru_backward_seq(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                            const at::Tensor& n, const at::Tensor& an, const at::Tensor& h_prev,
                            const std::optional<at::Tensor>& alpha, const at::Tensor& w_t,
                            bool onednn, const at::Tensor& da, const at::Tensor& dxn) {
  const int64_t T = rz.size(0);
  at::Tensor carry = last_grad_or_zeros(gy, h_prev.size(1), h_prev.size(2), h_prev.options());
  std::optional<at::Tensor> mm;
  for (int64_t t = T - 1; t >= 0; --t) {
    const at::Tensor da_t = da.select(0, t);
    gru_backward(mm, rz.select(0, t), n.select(0, t), an.select(0, t), h_prev.select(0, t),
                 at_step(alpha, t), t > 0 ? at_step(gy, t - 1) : std::nullopt, da_t,
                 dxn.select(0, t), carry);
    mm = step_mm(da_t, w_t, std::nullopt, onednn);
  }
  return mm.has_value() ? carry.add_(*mm) : carry;
}

void gru_rb_forward_seq(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_rz,
                        const at::Tensor& w_n, bool onednn, const std::optional<at::Tensor>& b_rz,
                        const std::optional<at::Tensor>& b_n,
                        const std::optional<at::Tensor>& alpha, const at::Tensor& rz,
                        const at::Tensor& rh, const at::Tensor& n, const at::Tensor& hs) {
  const int64_t H = hs.size(2);
  at::Tensor h = h0;
  for (int64_t t = 0; t < xp.size(0); ++t) {
    const at::Tensor x_t = xp.select(0, t), rz_t = rz.select(0, t), rh_t = rh.select(0, t);
    gru_rb_gates(x_t, step_mm(h, w_rz, b_rz, onednn), h, rz_t, rh_t);
    at::Tensor h_t = hs.select(0, t);
    gru_rb_state(x_t.narrow(1, 2 * H, H), step_mm(rh_t, w_n, b_n, onednn), h,
                 rz_t.narrow(1, H, H), at_step(alpha, t), n.select(0, t), h_t);
    h = h_t;
  }
}

at::Tensor gru_rb_backward_seq(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                               const at::Tensor& n, const at::Tensor& h_prev,
                               const std::optional<at::Tensor>& alpha, const at::Tensor& w_rz_t,
                               const at::Tensor& w_n_t, bool onednn, const at::Tensor& d_rz,
                               const at::Tensor& d_n) {
  const int64_t T = rz.size(0), H = n.size(2);
  at::Tensor carry = last_grad_or_zeros(gy, h_prev.size(1), h_prev.size(2), h_prev.options());
  std::optional<at::Tensor> mm;
  for (int64_t t = T - 1; t >= 0; --t) {
    const at::Tensor rz_t = rz.select(0, t), hp_t = h_prev.select(0, t);
    const at::Tensor drz_t = d_rz.select(0, t), dn_t = d_n.select(0, t);
    gru_rb_backward_state(mm, rz_t.narrow(1, H, H), n.select(0, t), hp_t, at_step(alpha, t),
                          t > 0 ? at_step(gy, t - 1) : std::nullopt, dn_t,
                          drz_t.narrow(1, H, H), carry);
    const at::Tensor g_rh = step_mm(dn_t, w_n_t, std::nullopt, onednn);  // ∂L/∂(r ⊙ h_{t−1})
    gru_rb_backward_reset(g_rh, rz_t.narrow(1, 0, H), hp_t, drz_t.narrow(1, 0, H), carry);
    mm = step_mm(drz_t, w_rz_t, std::nullopt, onednn);
  }
  return mm.has_value() ? carry.add_(*mm) : carry;
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY(rnnkit_native, m) {
  using namespace rnnkit_native;
  m.def(
      "gru_forward_seq(Tensor xp, Tensor h0, Tensor w, bool onednn, Tensor? b, Tensor? alpha, "
      "Tensor(a!) rz, Tensor(b!) n, Tensor(c!) an, Tensor(d!) hs) -> ()",
      &gru_forward_seq);
  m.def(
      "gru_backward_seq(Tensor? gy, Tensor rz, Tensor n, Tensor an, Tensor h_prev, "
      "Tensor? alpha, Tensor w_t, bool onednn, Tensor(a!) da, Tensor(b!) dxn) -> Tensor",
      &gru_backward_seq);
  m.def(
      "gru_rb_forward_seq(Tensor xp, Tensor h0, Tensor w_rz, Tensor w_n, bool onednn, "
      "Tensor? b_rz, Tensor? b_n, Tensor? alpha, Tensor(a!) rz, Tensor(b!) rh, Tensor(c!) n, "
      "Tensor(d!) hs) -> ()",
      &gru_rb_forward_seq);
  m.def(
      "gru_rb_backward_seq(Tensor? gy, Tensor rz, Tensor n, Tensor h_prev, Tensor? alpha, "
      "Tensor w_rz_t, Tensor w_n_t, bool onednn, Tensor(a!) d_rz, Tensor(b!) d_n) -> Tensor",
      &gru_rb_backward_seq);
}
