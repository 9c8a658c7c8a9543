// A small-batch GEMM for recurrent steps: C (rows × 16·NV) = A (rows × K) · B, with B packed in
// panels of 16 columns so that a whole tile of C lives in registers while k runs over K.
//
// oneDNN and MKL are built for large products; a recurrent step multiplies a B × H state (B ≈ 32)
// by the recurrent weights, and through torch each such call costs ~15 µs of framework overhead
// besides the arithmetic (measured here: 32×128·128×384 took 30 µs through oneDNN, 15 µs with this
// kernel). The fused sequences of gru_fused.cpp call this kernel on tiles of their own hidden
// units and apply the gate arithmetic to the tile while it is still in cache.
//
// A is row-major with row stride lda (element (r, k) at a + r·lda + k), read one element at a
// time (broadcast).
// Panel layout: vector v (16 columns) of packed row k is at b + k·ldb + v·vstride. A panel of
// ng gates × 16 units packed as (K, ng, 16) has ldb = 16·ng, vstride = 16; consecutive 16-unit
// panels packed as (G, K, 16) have ldb = 16, vstride = 16·K.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace rnnkit_native {

constexpr int kPanel = 16;  // columns per packed vector (one AVX-512 register of floats)

// Rows per tile for NV vectors: R·NV accumulators + NV loaded B vectors stay within the 32
// vector registers.
template <int NV>
constexpr int kTileRows = NV >= 3 ? 8 : 12;

// Whether the fast kernel exists for T on this build (float needs AVX-512; double always runs
// the portable version, which is what the float64 tests exercise).
template <typename T>
constexpr bool tile_gemm_fast() {
#if defined(__AVX512F__)
  return true;
#else
  return std::is_same_v<T, double>;
#endif
}

// Portable tile: plain loops over an accumulator array (vectorised by the compiler; used for
// double and as the reference for float).
template <typename T, int R, int NV>
inline void tile_mm_portable(int64_t K, const T* __restrict__ a, int64_t lda,
                             const T* __restrict__ b, int64_t ldb, int64_t vstride,
                             T* __restrict__ c) {
  T acc[R][NV * kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    for (int r = 0; r < R; ++r) {
      const T av = a[r * lda + k];
      for (int v = 0; v < NV; ++v) {
        const T* bk = b + k * ldb + v * vstride;
        for (int u = 0; u < kPanel; ++u) acc[r][v * kPanel + u] += av * bk[u];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < NV * kPanel; ++u) c[r * NV * kPanel + u] = acc[r][u];
}

// One tile, c (R × 16·NV, row stride 16·NV) = a (R × K) · panels.
template <typename T, int R, int NV>
inline void tile_mm(int64_t K, const T* __restrict__ a, int64_t lda, const T* __restrict__ b,
                    int64_t ldb, int64_t vstride, T* __restrict__ c) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    __m512 acc[R][NV];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + v * vstride);
      const float* ak = a + k;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 av = _mm512_set1_ps(ak[r * lda]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + (r * NV + v) * kPanel, acc[r][v]);
    return;
  }
#endif
  tile_mm_portable<T, R, NV>(K, a, lda, b, ldb, vstride, c);
}

// A tile of ``rows`` ≤ kTileRows<NV> rows: picks the instantiation with R = rows.
template <typename T, int NV, int R = kTileRows<NV>>
inline void tile_mm_rows(int rows, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb,
                         int64_t vstride, T* c) {
  if constexpr (R > 1) {
    if (rows < R) {
      tile_mm_rows<T, NV, R - 1>(rows, K, a, lda, b, ldb, vstride, c);
      return;
    }
  }
  tile_mm<T, R, NV>(K, a, lda, b, ldb, vstride, c);
}

// A tile of ``nv`` ≤ 3 vectors (run-time) and ``rows`` rows.
template <typename T>
inline void tile_mm_any(int nv, int rows, int64_t K, const T* a, int64_t lda, const T* b,
                        int64_t ldb, int64_t vstride, T* c) {
  switch (nv) {
    case 1:
      tile_mm_rows<T, 1>(rows, K, a, lda, b, ldb, vstride, c);
      break;
    case 2:
      tile_mm_rows<T, 2>(rows, K, a, lda, b, ldb, vstride, c);
      break;
    default:
      tile_mm_rows<T, 3>(rows, K, a, lda, b, ldb, vstride, c);
  }
}

// The rows per tile for a run-time ``nv``.
inline int tile_rows(int nv) { return nv == 1 ? kTileRows<1> : nv == 2 ? kTileRows<2> : kTileRows<3>; }

// ---------------------------------------------------------------------------------------------
// Splitting the work of a thread team
// ---------------------------------------------------------------------------------------------
// Size of the scratch tile: the largest kTileRows<NV> · 16 · NV.
constexpr int kTileBuf = 12 * 2 * kPanel > 8 * 3 * kPanel ? 12 * 2 * kPanel : 8 * 3 * kPanel;

inline int64_t groups_of(int64_t H) { return (H + kPanel - 1) / kPanel; }

// How a thread team shares a recurrent layer's work: either each thread takes a slice of the
// batch rows and every unit (no data passes between threads, so no barriers: chosen when every
// thread gets at least kMinRows rows), or each takes a range of unit groups for every row (the
// next step then needs the units of the others: one barrier per product).
constexpr int64_t kMinRows = 8;

inline int team_size(int64_t B, int64_t G) {
  const int64_t nt = std::max(1, at::get_num_threads());
  if (nt > 1 && B >= kMinRows * nt) return static_cast<int>(nt);
  return static_cast<int>(std::max<int64_t>(1, std::min(nt, G)));
}

// This thread's rows [b0, b1) and unit groups [g0, g1); ``sync``: barriers needed (same for all).
struct Work {
  int64_t b0, b1, g0, g1;
  bool sync;
};
inline Work my_work(int64_t B, int64_t G) {
  const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
  if (nt == 1) return {0, B, 0, G, false};
  if (B >= kMinRows * nt) return {B * tid / nt, B * (tid + 1) / nt, 0, G, false};
  return {0, B, G * tid / nt, G * (tid + 1) / nt, true};
}

// body(start, count): [begin, end) in as few chunks of at most ``most`` as possible, their sizes
// as even as possible (4 groups in tiles of 3 → 2 + 2: narrow tiles are the slow ones).
template <typename F>
inline void over_even_chunks(int64_t begin, int64_t end, int64_t most, F&& body) {
  const int64_t n = end - begin, chunks = (n + most - 1) / most;
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t a = begin + n * i / chunks, b = begin + n * (i + 1) / chunks;
    body(a, b - a);
  }
}

// A barrier for unit-split teams (row-split threads never wait for each other).
inline void team_barrier(const Work& w) {
  if (w.sync) {
#pragma omp barrier
  }
}

// One thread's share of a step's product: rows [b0, b1) of ``a`` (row stride lda, depth K) times
// the packed panels (rnnkit.fast._panels) of unit groups [g0, g1), N units in all. With gates == 1
// a tile spans up to 3 consecutive groups; with 2 or 3 gates packed side by side it is one group
// and all its gates. For every row b of a tile, row(b, j0, cnt, mm) receives the tile's units
// j0 … j0 + cnt − 1 and mm, that row's products in ``buf`` (writable; gate g of unit j0 + u at
// mm[16 g + u] when gates > 1).
template <typename T, typename F>
inline void tile_products(int64_t b0, int64_t b1, int64_t g0, int64_t g1, int gates, int64_t K,
                          int64_t N, const T* a, int64_t lda, const T* panels, T* buf, F&& row) {
  const bool plain = gates == 1;
  over_even_chunks(g0, g1, plain ? 3 : 1, [&](int64_t g, int64_t groups) {
    const int nv = plain ? static_cast<int>(groups) : gates;
    const int64_t j0 = g * kPanel, cnt = std::min<int64_t>(groups * kPanel, N - j0);
    const T* p = panels + g * K * kPanel * gates;
    const int64_t ldb = kPanel * gates, vstride = plain ? K * kPanel : kPanel;
    over_even_chunks(b0, b1, tile_rows(nv), [&](int64_t m, int64_t rows) {
      tile_mm_any<T>(nv, static_cast<int>(rows), K, a + m * lda, lda, p, ldb, vstride, buf);
      for (int64_t r = 0; r < rows; ++r) row(m + r, j0, cnt, buf + r * nv * kPanel);
    });
  });
}

// Weights packed by rnnkit.fast._panels for H units per gate and depth K: (⌈H/16⌉, K, width).
inline void check_panels(const at::Tensor& w, int64_t H, int64_t K, int64_t width,
                         const char* name) {
  TORCH_CHECK(w.dim() == 3 && w.size(0) == groups_of(H) && w.size(1) == K &&
                  w.size(2) == width && w.is_contiguous(),
              "rnnkit native: ", name, " must be contiguous packed panels (", groups_of(H), ", ",
              K, ", ", width, "), got ", w.sizes());
}

// Row-split teams (the fused LSTM and Elman RNN: every thread runs its own batch rows through
// every step and unit, no barriers).
// Threads for B rows: at most one per kMinRows rows.
inline int row_team(int64_t B) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / kMinRows)));
}

// This thread's rows.
inline std::pair<int64_t, int64_t> my_rows(int64_t B) {
  const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
  return {B * tid / nt, B * (tid + 1) / nt};
}

// out (rows [b0, b1), all N columns, row stride ldo) = x (same rows, K) · panels (G, K, 16).
template <typename T>
inline void rows_mm(int64_t b0, int64_t b1, int64_t K, int64_t N, const T* x, int64_t ldx,
                    const T* panels, T* out, int64_t ldo, T* buf) {
  tile_products(b0, b1, 0, groups_of(N), 1, K, N, x, ldx, panels, buf,
                [&](int64_t b, int64_t j0, int64_t cnt, const T* mm) {
                  std::copy(mm, mm + cnt, out + b * ldo + j0);
                });
}

}  // namespace rnnkit_native
