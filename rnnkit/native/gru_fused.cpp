// The GRU time loops (both forms) fused around the tile GEMM of tile_gemm.h.
//
// One OpenMP team runs the whole sequence. At every step a thread computes the recurrent product
// for its share of the work tile by tile (a few batch rows × 16–48 columns: 16 hidden units, the
// width of a packed panel, with all their gates) and applies the gate arithmetic of gru_rows.h to
// the tile while it is in cache. The share is a slice of the batch rows where every thread gets
// at least 8 (the threads then never exchange data), else a range of units, with a barrier per
// product because the next one needs every unit of the state just written (see my_work in
// tile_gemm.h). No tensors are created inside the loop and the framework is never entered.
//
// Buffers are those of the step-by-step loops in gru_steps.cpp (see rnnkit/fast.py): time-major,
// contiguous, gate-major rows. Weights arrive packed by rnnkit.fast._panels.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "gru_rows.h"
#include "tile_gemm.h"

namespace rnnkit_native {
namespace {

void check_state(const at::Tensor& h0, int64_t B, int64_t H) {
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H && h0.stride(1) == 1,
              "rnnkit native: h0 must be (", B, ", ", H, ") with contiguous rows");
}

// Exchanges a[0, n) and b[0, n) (distinct memory).
template <typename T>
inline void swap_rows(int64_t n, T* __restrict__ a, T* __restrict__ b) {
  for (int64_t j = 0; j < n; ++j) {
    const T x = a[j];
    a[j] = b[j];
    b[j] = x;
  }
}

// Adds b_hh to one row of a fused tile: ``gates`` gates side by side (16 apart in the tile), units
// j0 … j0 + cnt − 1 of each, starting at gate ``first`` of the bias (gates H apart); no bias, no-op.
template <typename T>
inline void add_tile_bias(T* a, const T* bias, int gates, int first, int64_t H, int64_t j0,
                          int64_t cnt) {
  if (bias == nullptr) return;
  for (int gate = 0; gate < gates; ++gate)
    for (int64_t u = 0; u < cnt; ++u) a[gate * kPanel + u] += bias[(first + gate) * H + j0 + u];
}

// h_{t−1} for step t: the initial state at t = 0, else row block t − 1 of hs.
template <typename T>
struct PrevState {
  const T* h0;
  int64_t ld0;
  const T* hs;
  int64_t B, H;
  const T* row(int64_t t, int64_t b) const {
    return t == 0 ? h0 + b * ld0 : hs + ((t - 1) * B + b) * H;
  }
  const T* rows(int64_t t) const { return t == 0 ? h0 : hs + (t - 1) * B * H; }
  int64_t ld(int64_t t) const { return t == 0 ? ld0 : H; }
};

// ---------------------------------------------------------------------------------------------
// Reset after the product
// ---------------------------------------------------------------------------------------------

// w: W_hhᵀ packed with the three gates of each 16 units side by side, (G, H, 48).
template <typename T>
void gru_fused_forward_impl(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w,
                            const std::optional<at::Tensor>& b,
                            const std::optional<at::Tensor>& alpha, const at::Tensor& rz,
                            const at::Tensor& n, const at::Tensor& an, const at::Tensor& hs) {
  const int64_t T_ = xp.size(0), B = xp.size(1), H = hs.size(2), G = groups_of(H);
  check_seq(xp, T_, B, 3 * H, "xp");
  check_seq(rz, T_, B, 2 * H, "rz");
  for (const auto* t : {&n, &an, &hs}) check_seq(*t, T_, B, H, "n / an / hs");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  check_state(h0, B, H);
  check_panels(w, H, H, 3 * kPanel, "w");
  const T *X = xp.data_ptr<T>(), *W = w.data_ptr<T>(), *bias = data_or_null<T>(b);
  const T* AL = data_or_null<T>(alpha);
  T *RZ = rz.data_ptr<T>(), *N = n.data_ptr<T>(), *AN = an.data_ptr<T>(), *HS = hs.data_ptr<T>();
  const PrevState<T> prev{h0.data_ptr<T>(), h0.stride(0), HS, B, H};

#pragma omp parallel num_threads(team_size(B, G))
  {
    const Work w = my_work(B, G);
    alignas(64) T buf[kTileBuf];
    for (int64_t t = 0; t < T_; ++t) {
      tile_products(w.b0, w.b1, w.g0, w.g1, 3, H, H, prev.rows(t), prev.ld(t), W, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, T* a) {
                      const int64_t row = t * B + bb;
                      add_tile_bias(a, bias, 3, 0, H, j0, cnt);
                      const T* hp = prev.row(t, bb) + j0;
                      T* out = HS + row * H + j0;
                      gru_forward_row<T>(cnt, H, X + row * 3 * H + j0, a, kPanel, hp,
                                         RZ + row * 2 * H + j0, N + row * H + j0,
                                         AN + row * H + j0, out);
                      if (AL != nullptr) blend_row<T>(cnt, hp, AL + row * H + j0, out);
                    });
      team_barrier(w);
    }
  }
}

// w_t: W_hh packed as 16-unit panels of its columns, (G, 3H, 16). Returns ∂L/∂h_0.
//
// On return da holds ∂L/∂x̂ = [∂â_r, ∂â_z, ∂x̂_n] (the input projection's gradient) and dxn holds
// ∂â_n = r ⊙ ∂x̂_n (for W_hh's gradient): step t's product needs ∂â in da's rows, so once it is
// done the thread swaps its share of the n-parts while the rows are still in cache, instead of a
// pass over the whole buffers afterwards.
template <typename T>
at::Tensor gru_fused_backward_impl(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                                   const at::Tensor& n, const at::Tensor& an,
                                   const at::Tensor& h0, const at::Tensor& hs,
                                   const std::optional<at::Tensor>& alpha, const at::Tensor& w_t,
                                   const at::Tensor& da, const at::Tensor& dxn) {
  const int64_t T_ = hs.size(0), B = hs.size(1), H = hs.size(2), G = groups_of(H);
  check_seq(rz, T_, B, 2 * H, "rz");
  check_seq(da, T_, B, 3 * H, "da");
  for (const auto* t : {&n, &an, &hs, &dxn}) check_seq(*t, T_, B, H, "n / an / hs / dxn");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  const SeqRows<T> GY = seq_rows<T>(gy, T_, B, H, "gy");
  check_state(h0, B, H);
  check_panels(w_t, H, 3 * H, kPanel, "w_t");
  at::Tensor carry = last_grad_or_zeros(gy, B, H, hs.options());
  const T *W = w_t.data_ptr<T>(), *AL = data_or_null<T>(alpha);
  const T *RZ = rz.data_ptr<T>(), *N = n.data_ptr<T>(), *AN = an.data_ptr<T>();
  T *DA = da.data_ptr<T>(), *DXN = dxn.data_ptr<T>(), *C = carry.data_ptr<T>();
  const PrevState<T> prev{h0.data_ptr<T>(), h0.stride(0), hs.data_ptr<T>(), B, H};

  // The rows of step s for units [j0, j0 + cnt) of batch row bb, ∂L/∂h_s's GEMM part in mm.
  auto step_rows = [&](int64_t s, int64_t bb, int64_t j0, int64_t cnt, const T* mm) {
    const int64_t row = s * B + bb;
    const T* gy_prev = (GY && s > 0) ? GY.row(s - 1, bb) + j0 : nullptr;
    gru_backward_row_any<T>(cnt, H, mm, AL != nullptr ? AL + row * H + j0 : nullptr,
                            RZ + row * 2 * H + j0, N + row * H + j0, AN + row * H + j0,
                            prev.row(s, bb) + j0, gy_prev, DA + row * 3 * H + j0,
                            DXN + row * H + j0, C + bb * H + j0);
  };

#pragma omp parallel num_threads(team_size(B, G))
  {
    const Work w = my_work(B, G);
    const int64_t u0 = w.g0 * kPanel, u1 = std::min(w.g1 * kPanel, H);
    alignas(64) T buf[kTileBuf];
    for (int64_t bb = w.b0; bb < w.b1 && u1 > u0; ++bb) step_rows(T_ - 1, bb, u0, u1 - u0, nullptr);
    team_barrier(w);
    for (int64_t t = T_ - 1; t >= 0; --t) {
      tile_products(w.b0, w.b1, w.g0, w.g1, 1, 3 * H, H, DA + t * B * 3 * H, 3 * H, W, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, const T* mm) {
                      if (t > 0) {
                        step_rows(t - 1, bb, j0, cnt, mm);
                      } else {
                        for (int64_t u = 0; u < cnt; ++u) C[bb * H + j0 + u] += mm[u];
                      }
                    });
      team_barrier(w);  // every thread is done reading step t's rows of da
      for (int64_t bb = w.b0; bb < w.b1 && u1 > u0; ++bb) {
        const int64_t row = t * B + bb;
        swap_rows(u1 - u0, DA + row * 3 * H + 2 * H + u0, DXN + row * H + u0);
      }
    }
  }
  return carry;
}

// ---------------------------------------------------------------------------------------------
// Reset before the product
// ---------------------------------------------------------------------------------------------

// w_rz: W_rzᵀ packed with r and z of each 16 units side by side, (G, H, 32);
// w_n: W_nᵀ as 16-unit panels, (G, H, 16).
template <typename T>
void gru_rb_fused_forward_impl(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_rz,
                               const at::Tensor& w_n, const std::optional<at::Tensor>& b,
                               const std::optional<at::Tensor>& alpha, const at::Tensor& rz,
                               const at::Tensor& rh, const at::Tensor& n, const at::Tensor& hs) {
  const int64_t T_ = xp.size(0), B = xp.size(1), H = hs.size(2), G = groups_of(H);
  check_seq(xp, T_, B, 3 * H, "xp");
  check_seq(rz, T_, B, 2 * H, "rz");
  for (const auto* t : {&rh, &n, &hs}) check_seq(*t, T_, B, H, "rh / n / hs");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  check_state(h0, B, H);
  check_panels(w_rz, H, H, 2 * kPanel, "w_rz");
  check_panels(w_n, H, H, kPanel, "w_n");
  const T *X = xp.data_ptr<T>(), *WRZ = w_rz.data_ptr<T>(), *WN = w_n.data_ptr<T>();
  const T *bias = data_or_null<T>(b), *AL = data_or_null<T>(alpha);
  T *RZ = rz.data_ptr<T>(), *RH = rh.data_ptr<T>(), *N = n.data_ptr<T>(), *HS = hs.data_ptr<T>();
  const PrevState<T> prev{h0.data_ptr<T>(), h0.stride(0), HS, B, H};

#pragma omp parallel num_threads(team_size(B, G))
  {
    const Work w = my_work(B, G);
    alignas(64) T buf[kTileBuf];
    for (int64_t t = 0; t < T_; ++t) {
      // r, z and r ⊙ h_{t−1} for this thread's share
      tile_products(w.b0, w.b1, w.g0, w.g1, 2, H, H, prev.rows(t), prev.ld(t), WRZ, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, T* a) {
                      const int64_t row = t * B + bb;
                      add_tile_bias(a, bias, 2, 0, H, j0, cnt);
                      gru_rb_gates_row<T>(cnt, H, X + row * 3 * H + j0, a, kPanel,
                                          prev.row(t, bb) + j0, RZ + row * 2 * H + j0,
                                          RH + row * H + j0);
                    });
      team_barrier(w);
      // n and h_t, from W_n (r ⊙ h_{t−1}) over every unit
      tile_products(w.b0, w.b1, w.g0, w.g1, 1, H, H, RH + t * B * H, H, WN, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, T* a) {
                      const int64_t row = t * B + bb;
                      add_tile_bias(a, bias, 1, 2, H, j0, cnt);
                      const T* hp = prev.row(t, bb) + j0;
                      T* out = HS + row * H + j0;
                      gru_rb_state_row<T>(cnt, X + row * 3 * H + 2 * H + j0, a, hp,
                                          RZ + row * 2 * H + H + j0, N + row * H + j0, out);
                      if (AL != nullptr) blend_row<T>(cnt, hp, AL + row * H + j0, out);
                    });
      team_barrier(w);
    }
  }
}

// w_n_t: W_n as 16-unit panels of its columns, (G, H, 16); w_rz_t: W_rz likewise, (G, 2H, 16).
// Writes ∂L/∂x̂ = ∂L/∂â = [∂r, ∂z, ∂n] into dxp (T, B, 3H); returns ∂L/∂h_0.
template <typename T>
at::Tensor gru_rb_fused_backward_impl(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                                      const at::Tensor& n, const at::Tensor& h0,
                                      const at::Tensor& hs, const std::optional<at::Tensor>& alpha,
                                      const at::Tensor& w_n_t, const at::Tensor& w_rz_t,
                                      const at::Tensor& dxp) {
  const int64_t T_ = hs.size(0), B = hs.size(1), H = hs.size(2), G = groups_of(H);
  check_seq(rz, T_, B, 2 * H, "rz");
  check_seq(dxp, T_, B, 3 * H, "dxp");
  for (const auto* t : {&n, &hs}) check_seq(*t, T_, B, H, "n / hs");
  if (alpha.has_value()) check_seq(*alpha, T_, B, H, "alpha");
  const SeqRows<T> GY = seq_rows<T>(gy, T_, B, H, "gy");
  check_state(h0, B, H);
  check_panels(w_n_t, H, H, kPanel, "w_n_t");
  check_panels(w_rz_t, H, 2 * H, kPanel, "w_rz_t");
  at::Tensor carry = last_grad_or_zeros(gy, B, H, hs.options());
  const T *WN = w_n_t.data_ptr<T>(), *WRZ = w_rz_t.data_ptr<T>();
  const T* AL = data_or_null<T>(alpha);
  const T *RZ = rz.data_ptr<T>(), *N = n.data_ptr<T>();
  // ∂(x̂_rz + â_rz) and ∂(x̂_n + â_n): the two parts of each dxp row (row stride 3H)
  T *DRZ = dxp.data_ptr<T>(), *DN = DRZ + 2 * H, *C = carry.data_ptr<T>();
  const PrevState<T> prev{h0.data_ptr<T>(), h0.stride(0), hs.data_ptr<T>(), B, H};

  // First half of step s for units [j0, j0 + cnt) of batch row bb (∂L/∂h_s's GEMM part in mm).
  auto state_rows = [&](int64_t s, int64_t bb, int64_t j0, int64_t cnt, const T* mm) {
    const int64_t row = s * B + bb;
    const T* gy_prev = (GY && s > 0) ? GY.row(s - 1, bb) + j0 : nullptr;
    gru_rb_backward_state_row_any<T>(cnt, mm, AL != nullptr ? AL + row * H + j0 : nullptr,
                                     RZ + row * 2 * H + H + j0, N + row * H + j0,
                                     prev.row(s, bb) + j0, gy_prev, DN + row * 3 * H + j0,
                                     DRZ + row * 3 * H + H + j0, C + bb * H + j0);
  };

#pragma omp parallel num_threads(team_size(B, G))
  {
    const Work w = my_work(B, G);
    const int64_t u0 = w.g0 * kPanel, u1 = std::min(w.g1 * kPanel, H);
    alignas(64) T buf[kTileBuf];
    for (int64_t bb = w.b0; bb < w.b1 && u1 > u0; ++bb) state_rows(T_ - 1, bb, u0, u1 - u0, nullptr);
    team_barrier(w);
    for (int64_t t = T_ - 1; t >= 0; --t) {
      // ∂L/∂(r ⊙ h_{t−1}) = ∂a_n W_n, then ∂r and the r-path of ∂L/∂h_{t−1}
      tile_products(w.b0, w.b1, w.g0, w.g1, 1, H, H, DN + t * B * 3 * H, 3 * H, WN, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, const T* grh) {
                      const int64_t row = t * B + bb;
                      gru_rb_backward_reset_row<T>(cnt, grh, RZ + row * 2 * H + j0,
                                                   prev.row(t, bb) + j0, DRZ + row * 3 * H + j0,
                                                   C + bb * H + j0);
                    });
      team_barrier(w);
      // ∂a_rz W_rz completes ∂L/∂h_{t−1}; then the first half of step t − 1
      tile_products(w.b0, w.b1, w.g0, w.g1, 1, 2 * H, H, DRZ + t * B * 3 * H, 3 * H, WRZ, buf,
                    [&](int64_t bb, int64_t j0, int64_t cnt, const T* mm) {
                      if (t > 0) {
                        state_rows(t - 1, bb, j0, cnt, mm);
                      } else {
                        for (int64_t u = 0; u < cnt; ++u) C[bb * H + j0 + u] += mm[u];
                      }
                    });
      team_barrier(w);
    }
  }
  return carry;
}

// C (M, N) = A (M, K) · B for B packed by rnnkit.fast._panels as (G, K, 16): the tile GEMM on its
// own, for the tests.
template <typename T>
at::Tensor panel_mm_impl(const at::Tensor& a_, const at::Tensor& panels, int64_t N) {
  TORCH_CHECK(a_.dim() == 2, "rnnkit native: a must be 2-D");
  const at::Tensor a = a_.contiguous();
  const int64_t M = a.size(0), K = a.size(1), G = groups_of(N);
  check_panels(panels, N, K, kPanel, "panels");
  at::Tensor c = at::empty({M, N}, a.options());
  const T *A = a.data_ptr<T>(), *P = panels.data_ptr<T>();
  T* Cp = c.data_ptr<T>();
#pragma omp parallel num_threads(team_size(M, G))
  {
    const Work w = my_work(M, G);
    alignas(64) T buf[kTileBuf];
    tile_products(w.b0, w.b1, w.g0, w.g1, 1, K, N, A, K, P, buf,
                  [&](int64_t m, int64_t j0, int64_t cnt, const T* mm) {
                    std::copy(mm, mm + cnt, Cp + m * N + j0);
                  });
  }
  return c;
}

bool tile_gemm_supported(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) return tile_gemm_fast<float>();
  return t.scalar_type() == at::kDouble;
}

void gru_fused_forward(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w,
                       const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& alpha,
                       const at::Tensor& rz, const at::Tensor& n, const at::Tensor& an,
                       const at::Tensor& hs) {
  RNNKIT_DISPATCH(xp, gru_fused_forward_impl, xp, h0, w, b, alpha, rz, n, an, hs);
}

at::Tensor gru_fused_backward(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                              const at::Tensor& n, const at::Tensor& an, const at::Tensor& h0,
                              const at::Tensor& hs, const std::optional<at::Tensor>& alpha,
                              const at::Tensor& w_t, const at::Tensor& da, const at::Tensor& dxn) {
  return RNNKIT_DISPATCH_RETURN(hs, gru_fused_backward_impl, gy, rz, n, an, h0, hs, alpha, w_t,
                                da, dxn);
}

void gru_rb_fused_forward(const at::Tensor& xp, const at::Tensor& h0, const at::Tensor& w_rz,
                          const at::Tensor& w_n, const std::optional<at::Tensor>& b,
                          const std::optional<at::Tensor>& alpha, const at::Tensor& rz,
                          const at::Tensor& rh, const at::Tensor& n, const at::Tensor& hs) {
  RNNKIT_DISPATCH(xp, gru_rb_fused_forward_impl, xp, h0, w_rz, w_n, b, alpha, rz, rh, n, hs);
}

at::Tensor gru_rb_fused_backward(const std::optional<at::Tensor>& gy, const at::Tensor& rz,
                                 const at::Tensor& n, const at::Tensor& h0, const at::Tensor& hs,
                                 const std::optional<at::Tensor>& alpha, const at::Tensor& w_n_t,
                                 const at::Tensor& w_rz_t, const at::Tensor& dxp) {
  return RNNKIT_DISPATCH_RETURN(hs, gru_rb_fused_backward_impl, gy, rz, n, h0, hs, alpha, w_n_t,
                                w_rz_t, dxp);
}

at::Tensor panel_mm(const at::Tensor& a, const at::Tensor& panels, int64_t n) {
  return RNNKIT_DISPATCH_RETURN(a, panel_mm_impl, a, panels, n);
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_native, m) {
  using namespace rnnkit_native;
  m.def("tile_gemm_supported(Tensor t) -> bool", &tile_gemm_supported);
  m.def("panel_mm(Tensor a, Tensor panels, int n) -> Tensor", &panel_mm);
  m.def(
      "gru_fused_forward(Tensor xp, Tensor h0, Tensor w, Tensor? b, Tensor? alpha, "
      "Tensor(a!) rz, Tensor(b!) n, Tensor(c!) an, Tensor(d!) hs) -> ()",
      &gru_fused_forward);
  m.def(
      "gru_fused_backward(Tensor? gy, Tensor rz, Tensor n, Tensor an, Tensor h0, Tensor hs, "
      "Tensor? alpha, Tensor w_t, Tensor(a!) da, Tensor(b!) dxn) -> Tensor",
      &gru_fused_backward);
  m.def(
      "gru_rb_fused_forward(Tensor xp, Tensor h0, Tensor w_rz, Tensor w_n, Tensor? b, "
      "Tensor? alpha, Tensor(a!) rz, Tensor(b!) rh, Tensor(c!) n, Tensor(d!) hs) -> ()",
      &gru_rb_fused_forward);
  m.def(
      "gru_rb_fused_backward(Tensor? gy, Tensor rz, Tensor n, Tensor h0, Tensor hs, "
      "Tensor? alpha, Tensor w_n_t, Tensor w_rz_t, Tensor(a!) dxp) -> Tensor",
      &gru_rb_fused_backward);
}
