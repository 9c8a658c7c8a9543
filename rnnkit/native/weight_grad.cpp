// Weight gradients of the hoisted products: ∂W = Σ_k ∂y_kᵀ x_k, one (M × K)·(K × N) product with a
// long reduction (K = T·B rows, e.g. 4096) and a small result (M × N, the weight's shape).
//
// On this project's 2-core AMD EPYC (2 threads, K = 4096, M × N from 384 × 128 to 2048 × 512)
// torch.mm on the transposed view ran at 176–191 GFLOP/s, this kernel at 176–204; with the bias
// sum (a separate pass after torch.mm) 164–181 against 177–199. It reads both operands in place,
// without packing: a tile of the result, 8 rows (units of ∂y, broadcast one at a time) × 16–48
// columns (one to three vectors of x), stays in registers while k runs over a block of 256 rows;
// ∂y's block for the thread's 128-row slab of the result and x's block both stay in L2 while the
// tiles sweep them. Each thread owns a slab of result rows (no reduction between threads). With
// ``sums`` the same pass adds up the columns of ∂y (the bias gradient).
//
// The rows of x may come from two tensors, x0 for the first rows and then x: the recurrent weight
// gradient's h_{t−1} (the initial state, then the states of steps 0 … T − 2) without a
// concatenated copy. Likewise the columns of ∂y may come from two tensors, dy then dy2: the GRU's
// ∂â_r, ∂â_z (in the projection-gradient buffer) and ∂â_n (a buffer of its own).
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common.h"
#include "tile_gemm.h"

namespace rnnkit_native {
namespace {

constexpr int kRows = 8;          // result rows per tile (∂y columns broadcast)
constexpr int64_t kDepth = 256;   // k rows per block
constexpr int64_t kSlab = 128;    // result rows per block of ∂y

// c (rows × ≤ 16·NV, row stride ldc) (+)= Σ_{k<kk} a[k·lda + r] · b[k·ldb + ·]; ``cols`` valid
// columns in the last vector, ``load``: add to what c holds.
template <typename T, int NV>
inline void wgrad_tile(int64_t kk, const T* __restrict__ a, int64_t lda, const T* __restrict__ b,
                       int64_t ldb, T* __restrict__ c, int64_t ldc, bool load, int rows,
                       int cols) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    __m512 acc[kRows][NV];
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    // the last vector loads only its ``cols`` columns (x's final row may end the allocation)
    const __mmask16 tail = cols == kPanel ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
    for (int64_t k = 0; k < kk; ++k) {
      __m512 bv[NV];
#pragma GCC unroll 3
      for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + v * kPanel);
      bv[NV - 1] = _mm512_maskz_loadu_ps(tail, b + k * ldb + (NV - 1) * kPanel);
      const float* ak = a + k * lda;
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        const __m512 av = _mm512_set1_ps(ak[r]);
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
      }
    }
    // constant indices only (a run-time row bound would keep acc in memory through the k loop)
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        const __mmask16 m = v == NV - 1 ? tail : 0xFFFF;
        float* p = c + r * ldc + v * kPanel;
        __m512 x = acc[r][v];
        if (load) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, p));
        _mm512_mask_storeu_ps(p, m, x);
      }
    }
    return;
  }
#endif
  T acc[kRows][NV * kPanel] = {};
  const int width = (NV - 1) * kPanel + cols;
  for (int64_t k = 0; k < kk; ++k)
    for (int r = 0; r < kRows; ++r) {
      const T av = a[k * lda + r];
      for (int u = 0; u < width; ++u) acc[r][u] += av * b[k * ldb + u];
    }
  for (int r = 0; r < rows; ++r)
    for (int u = 0; u < width; ++u) c[r * ldc + u] = (load ? c[r * ldc + u] : T(0)) + acc[r][u];
}

// sums[c] += Σ_r src[r·ld + c] for rows [0, rows), columns [c0, c1)
template <typename T>
inline void add_column_sums(T* __restrict__ sums, const T* __restrict__ src, int64_t ld,
                            int64_t rows, int64_t c0, int64_t c1) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) sums[c] += src[r * ld + c];
}

// A tile of 1–3 vectors chosen at run time.
template <typename T>
inline void wgrad_tile_any(int nv, int64_t kk, const T* a, int64_t lda, const T* b, int64_t ldb,
                           T* c, int64_t ldc, bool load, int rows, int cols) {
  switch (nv) {
    case 1:
      wgrad_tile<T, 1>(kk, a, lda, b, ldb, c, ldc, load, rows, cols);
      break;
    case 2:
      wgrad_tile<T, 2>(kk, a, lda, b, ldb, c, ldc, load, rows, cols);
      break;
    default:
      wgrad_tile<T, 3>(kk, a, lda, b, ldb, c, ldc, load, rows, cols);
  }
}

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && (t.size(1) <= 1 || t.stride(1) == 1),
              "rnnkit native: ", name, " must be 2-D with contiguous rows, got sizes ", t.sizes(),
              " strides ", t.strides());
}

// out (M, N) = [dy dy2]ᵀ · [x0; x] for dy (K, M1), dy2 (K, M − M1) (optional; M1 a multiple of
// 8), x0 (K0, N) (optional), x (≥ K − K0, N: its first K − K0 rows are used). Returns Σ_k [dy
// dy2]_k (M) with ``sums``, else an undefined tensor.
template <typename T>
at::Tensor weight_grad_impl(const at::Tensor& dy, const at::Tensor& x,
                            const std::optional<at::Tensor>& x0, const at::Tensor& out,
                            bool sums, const std::optional<at::Tensor>& dy2) {
  check_rows(dy, "dy");
  check_rows(x, "x");
  check_rows(out, "out");
  const int64_t K = dy.size(0), M1 = dy.size(1), N = out.size(1);
  const int64_t M = M1 + (dy2.has_value() ? dy2->size(1) : 0);
  if (dy2.has_value()) {
    check_rows(*dy2, "dy2");
    TORCH_CHECK(dy2->size(0) == K && M1 % kRows == 0 && dy2->scalar_type() == dy.scalar_type(),
                "rnnkit native: dy2 must have dy's rows and dtype, and dy a multiple of ", kRows,
                " columns; got dy ", dy.sizes(), ", dy2 ", dy2->sizes());
  }
  const int64_t K0 = x0.has_value() ? x0->size(0) : 0;
  if (x0.has_value()) {
    check_rows(*x0, "x0");
    TORCH_CHECK(x0->size(1) == N, "rnnkit native: x0 must have ", N, " columns");
  }
  TORCH_CHECK(out.size(0) == M && x.size(1) == N && K0 <= K && x.size(0) >= K - K0,
              "rnnkit native: weight_grad shapes dy ", dy.sizes(), ", x ", x.sizes(), ", out ",
              out.sizes());
  TORCH_CHECK(x.scalar_type() == dy.scalar_type() && out.scalar_type() == dy.scalar_type() &&
                  (!x0.has_value() || x0->scalar_type() == dy.scalar_type()),
              "rnnkit native: weight_grad operands must share dy's dtype");
  at::Tensor db = sums ? at::zeros({M}, dy.options()) : at::Tensor();
  if (M == 0 || N == 0) return db;
  if (K == 0) {
    out.zero_();
    return db;
  }
  const T *A = dy.data_ptr<T>(), *X = x.data_ptr<T>();
  const T* A2 = dy2.has_value() ? dy2->data_ptr<T>() : nullptr;
  const T* X0 = x0.has_value() ? x0->data_ptr<T>() : nullptr;
  const int64_t lda = dy.stride(0), lda2 = dy2.has_value() ? dy2->stride(0) : 0;
  const int64_t ldx = x.stride(0), ldc = out.stride(0);
  const int64_t ldx0 = x0.has_value() ? x0->stride(0) : 0;
  T *C = out.data_ptr<T>(), *DB = sums ? db.data_ptr<T>() : nullptr;
  const int64_t groups = groups_of(N), chunks = (groups + 2) / 3;  // column tiles of ≤ 3 vectors
  const int64_t slabs = (M + kRows - 1) / kRows;

  const int team = static_cast<int>(std::clamp<int64_t>(slabs, 1, at::get_num_threads()));
#pragma omp parallel num_threads(team)
  {
    const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t p0 = slabs * tid / nt, p1 = slabs * (tid + 1) / nt;  // this thread's tiles
    const int64_t m0 = p0 * kRows, m1 = std::min(M, p1 * kRows);
    bool first = true;
    // k blocks of ≤ kDepth rows that do not straddle the x0 / x boundary
    for (int64_t k0 = 0; k0 < K;) {
      const int64_t kend = std::min(k0 + kDepth, k0 < K0 ? K0 : K);
      const int64_t kk = kend - k0;
      const T* b = k0 < K0 ? X0 + k0 * ldx0 : X + (k0 - K0) * ldx;
      const int64_t ldb = k0 < K0 ? ldx0 : ldx;
      const T *a = A + k0 * lda, *a2 = A2 + k0 * lda2;  // a2: null without dy2
      if (DB != nullptr) {
        if (m0 < M1) add_column_sums(DB, a, lda, kk, m0, std::min(m1, M1));
        if (m1 > M1) add_column_sums(DB + M1, a2, lda2, kk, std::max(m0, M1) - M1, m1 - M1);
      }
      for (int64_t q0 = p0; q0 < p1; q0 += kSlab / kRows) {
        const int64_t q1 = std::min(p1, q0 + kSlab / kRows);
        for (int64_t j = 0; j < chunks; ++j) {
          const int64_t g0 = groups * j / chunks, g1 = groups * (j + 1) / chunks;
          const int64_t n0 = g0 * kPanel, width = std::min((g1 - g0) * kPanel, N - n0);
          const int nv = static_cast<int>(g1 - g0);
          const int cols = static_cast<int>(width - (nv - 1) * kPanel);
          for (int64_t p = q0; p < q1; ++p) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, M - p * kRows));
            // this tile's 8 columns of ∂y: in dy, or in dy2 past the first M1
            const T* at = p * kRows < M1 ? a + p * kRows : a2 + (p * kRows - M1);
            const int64_t ld = p * kRows < M1 ? lda : lda2;
            if (rows < kRows) {
              // the last tile: read only existing columns of dy through a zero-padded copy
              T pad[kDepth * kRows] = {};
              for (int64_t k = 0; k < kk; ++k)
                for (int r = 0; r < rows; ++r) pad[k * kRows + r] = at[k * ld + r];
              wgrad_tile_any<T>(nv, kk, pad, kRows, b + n0, ldb, C + p * kRows * ldc + n0, ldc,
                                !first, rows, cols);
            } else {
              wgrad_tile_any<T>(nv, kk, at, ld, b + n0, ldb, C + p * kRows * ldc + n0, ldc,
                                !first, rows, cols);
            }
          }
        }
      }
      first = false;
      k0 = kend;
    }
  }
  return db;
}

at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& x,
                       const std::optional<at::Tensor>& x0, const at::Tensor& out, bool sums,
                       const std::optional<at::Tensor>& dy2) {
  return RNNKIT_DISPATCH_RETURN(dy, weight_grad_impl, dy, x, x0, out, sums, dy2);
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_native, m) {
  m.def(
      "weight_grad(Tensor dy, Tensor x, Tensor? x0, Tensor(a!) out, bool sums, "
      "Tensor? dy2=None) -> Tensor",
      &rnnkit_native::weight_grad);
}
