// Softmax attention for XLA:CPU as two XLA FFI custom calls (forward, backward), float32.
//
// Built and loaded at run time by attention.py (g++, OpenBLAS from the scipy-openblas32
// wheel). Why by hand: XLA:CPU has no fused attention, and its Eigen dots run the [L, 64] x
// [64, L] products of attention at ~100 GFLOP/s on a 2-core machine where OpenBLAS, one
// (batch, head) pair per thread, reaches ~90 per core (experiments/README.md); the kernel's own
// register tiles (below) do better than OpenBLAS from ~192 tokens on.
//
// Layout: q, k, v, o, do, dq, dk, dv are row-major [N, L, H, D]; lse is [N, H, L] (each query
// row's log-sum-exp of its scaled scores). Each (n, h) pair is independent: the calling thread and
// tasks on XLA's intra-op thread pool claim pairs one at a time. A pair's scores are computed a
// block of rows at a time (`block`, 128 from attention.py): each thread holds one (forward) or
// two (backward) [rows, L] float32 scratch matrices, which stay in cache where [L, L] ones would
// not (about 20% faster forward + backward at ViViT-B's 3137 tokens; experiments/README.md).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for x <= 0 (softmax arguments after the row maximum), vectorisable: 2^n times a
// degree-6 polynomial on [-ln2/2, ln2/2]; relative error ~2e-7. Arguments below -87 give
// ~1e-38 instead of 0 (harmless beside a row sum >= 1).
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float t = x * 1.44269504f + shifter;
  float n = t - shifter;
  float r = x - n * 0.693145752f - n * 1.42860677e-6f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666418f +
                                                r * (0.00833345205f + r * 0.00138925493f)))));
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  int32_t scale_bits = (bits - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, 4);
  return p * scale;
}

// An operand read in place: element (r, k) at data[r * row_stride + k * col_stride].
struct Strided {
  const float* data;
  int64_t row_stride, col_stride;
};

// Register-tiled products for head dim 64 on AVX-512 (every ViViT size has head dim 64), used
// from `tile_from` tokens on (attention.py: TILE_FROM_TOKENS). Why by hand: OpenBLAS packs both
// operands on every call; here k^T (forward; q^T and do^T backward) is packed once per pair and
// the other operands are read in place: about 15% faster than OpenBLAS for attention alone at
// ViViT-B's [2, 785, 12, 64], forward + backward (experiments/README.md). Below ~192 tokens OpenBLAS measured as fast
// or faster (its small-matrix path, which packs nothing, is the likely reason); there, and for
// another head dim or without AVX-512, OpenBLAS runs them.
constexpr int64_t kTileD = 64;  // the head dim the tiles are written for
constexpr int64_t kPanel = 32;  // columns of a packed panel: two 16-float registers

// L rounded up to whole panels: the row stride of tiled score blocks.
int64_t Padded(int64_t L) { return (L + kPanel - 1) / kPanel * kPanel; }

#if defined(__AVX512F__)
constexpr bool kTiledBuild = true;

// Calls tile(std::integral_constant<int, n>{}) for a run-time n in [1, N].
template <int N, typename Tile>
inline void WithRows(int64_t n, Tile tile) {
  if constexpr (N > 0) {
    if (n == N) return tile(std::integral_constant<int, N>{});
    WithRows<N - 1>(n, tile);
  }
}

// Calls tile(std::integral_constant<int, m>{}, r) for rows [0, rows) in tiles of m = MR rows
// from row r on, the last one of the rows % MR left over: each row count its own compiled tile.
template <int MR, typename Tile>
inline void ForRowTiles(int64_t rows, Tile tile) {
  int64_t r = 0;
  for (; r + MR <= rows; r += MR) tile(std::integral_constant<int, MR>{}, r);
  WithRows<MR - 1>(rows - r, [&](auto m) { tile(m, r); });
}

// Packs rows [0, L) of x (64 floats each, `stride` apart) transposed, as panels [Lp/32][64][32],
// zero past L.
void PackTransposed(const float* x, int64_t stride, int64_t L, float* out) {
  for (int64_t p0 = 0; p0 < L; p0 += kPanel) {
    float* panel = out + p0 * kTileD;
    for (int64_t j = 0; j < kPanel; ++j) {
      const int64_t t = p0 + j;
      for (int64_t c = 0; c < kTileD; ++c) panel[c * kPanel + j] = t < L ? x[t * stride + c] : 0.0f;
    }
  }
}

// c[MR, 32] = alpha * a[MR, 64] panel, a's rows `a_stride` apart; c's rows `c_stride` apart.
template <int MR>
inline void TileRowsByPanel(const float* a, int64_t a_stride, const float* panel, float alpha,
                            float* c, int64_t c_stride) {
  __m512 lo[MR], hi[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kTileD; ++k) {
    const __m512 b0 = _mm512_loadu_ps(panel + k * kPanel);
    const __m512 b1 = _mm512_loadu_ps(panel + k * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * a_stride + k]);
      lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
    }
  }
  const __m512 s = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(c + r * c_stride, _mm512_mul_ps(lo[r], s));
    _mm512_storeu_ps(c + r * c_stride + 16, _mm512_mul_ps(hi[r], s));
  }
}

// s[rows, Lp] = alpha * a[rows, 64] x^T, with x^T packed by PackTransposed (Lp columns; those
// past L come out 0).
void ProductWithPacked(const float* a, int64_t a_stride, int64_t rows, const float* packed,
                       int64_t Lp, float alpha, float* s) {
  constexpr int MR = 12;  // 24 accumulators + 2 panel registers of the 32
  for (int64_t p0 = 0; p0 < Lp; p0 += kPanel) {
    const float* panel = packed + p0 * kTileD;
    ForRowTiles<MR>(rows, [&](auto m, int64_t r) {
      TileRowsByPanel<decltype(m)::value>(a + r * a_stride, a_stride, panel, alpha,
                                          s + r * Lp + p0, Lp);
    });
  }
}

// c[MR, 64] = scale(r) * sum_k a(r, k) b[k, 0:64] (+ c when ACCUMULATE); b's rows `b_stride`
// apart; scale(r) = scale[r * scale_stride].
template <int MR, bool ACCUMULATE>
inline void TileRowsByRows(Strided a, int64_t K, const float* b, int64_t b_stride,
                           const float* scale, int64_t scale_stride, float* c, int64_t c_stride) {
  __m512 acc[MR][4];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * b_stride;
    const __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
    const __m512 b2 = _mm512_loadu_ps(bk + 32), b3 = _mm512_loadu_ps(bk + 48);
    const float* ak = a.data + k * a.col_stride;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(ak[r * a.row_stride]);
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m512 s = _mm512_set1_ps(scale[r * scale_stride]);
    for (int j = 0; j < 4; ++j) {
      __m512 y = _mm512_mul_ps(acc[r][j], s);
      if (ACCUMULATE) y = _mm512_add_ps(y, _mm512_loadu_ps(c + r * c_stride + 16 * j));
      _mm512_storeu_ps(c + r * c_stride + 16 * j, y);
    }
  }
}

// c[rows, 64] = scale(r) * a[rows, K] b[K, 64] (+ c when ACCUMULATE).
template <bool ACCUMULATE>
void ProductInPlace(Strided a, int64_t rows, int64_t K, const float* b, int64_t b_stride,
                    const float* scale, int64_t scale_stride, float* c, int64_t c_stride) {
  constexpr int MR = 6;  // 24 accumulators + 4 registers of b's row
  ForRowTiles<MR>(rows, [&](auto m, int64_t r) {
    TileRowsByRows<decltype(m)::value, ACCUMULATE>(
        {a.data + r * a.row_stride, a.row_stride, a.col_stride}, K, b, b_stride,
        scale + r * scale_stride, scale_stride, c + r * c_stride, c_stride);
  });
}
#else
constexpr bool kTiledBuild = false;
#endif

// Whether a call with L tokens of head dim D takes the tiled products: from `tile_from` tokens
// on (the call's attribute; 0: never).
bool UseTiles(int64_t tile_from, int64_t L, int64_t D) {
  return kTiledBuild && tile_from > 0 && L >= tile_from && D == kTileD;
}

// x[0:L, 0:D]^T packed for ScoresProduct where the tiles run (else nothing to do).
void PackForScores(bool tiled, const float* x, int64_t x_stride, int64_t L, float* packed) {
#if defined(__AVX512F__)
  if (tiled) PackTransposed(x, x_stride, L, packed);
#endif
}

// out[rows, 0:L] = alpha * a[rows, 0:D] x[0:L, 0:D]^T, out's rows `ldo` apart: tiled from x's
// packed copy (columns L..ldo come out 0), else OpenBLAS from x itself.
void ScoresProduct(bool tiled, const float* a, int64_t a_stride, int64_t rows, const float* x,
                   int64_t x_stride, const float* packed, int64_t L, int64_t D, float alpha,
                   float* out, int64_t ldo) {
#if defined(__AVX512F__)
  if (tiled) return ProductWithPacked(a, a_stride, rows, packed, ldo, alpha, out);
#endif
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, L, D, alpha, a, a_stride, x,
                    x_stride, 0.0f, out, ldo);
}

// c[rows, 0:D] = scale(r) * a[rows, 0:K] b[0:K, 0:D] (+ c when `accumulate`), scale(r) =
// scale[r * scale_stride]; a is read with either stride 1 (OpenBLAS takes both layouts) and a
// per-row scale (scale_stride > 0) only without `accumulate`.
void RowsProduct(bool tiled, Strided a, int64_t rows, int64_t K, int64_t D, const float* b,
                 int64_t b_stride, const float* scale, int64_t scale_stride, bool accumulate,
                 float* c, int64_t c_stride) {
#if defined(__AVX512F__)
  if (tiled) {
    if (accumulate) {
      return ProductInPlace<true>(a, rows, K, b, b_stride, scale, scale_stride, c, c_stride);
    }
    return ProductInPlace<false>(a, rows, K, b, b_stride, scale, scale_stride, c, c_stride);
  }
#endif
  const bool transposed = a.col_stride != 1;
  scipy_cblas_sgemm(CblasRowMajor, transposed ? CblasTrans : CblasNoTrans, CblasNoTrans, rows, D,
                    K, scale_stride == 0 ? scale[0] : 1.0f, a.data,
                    transposed ? a.col_stride : a.row_stride, b, b_stride,
                    accumulate ? 1.0f : 0.0f, c, c_stride);
  if (scale_stride == 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    const float f = scale[r * scale_stride];
#pragma omp simd
    for (int64_t j = 0; j < D; ++j) c[r * c_stride + j] *= f;
  }
}

struct Dims {
  int64_t n, l, h, d;
};

ffi::Error CheckSame(const char* what, ffi::AnyBuffer::Dimensions a, const Dims& s) {
  if (a.size() != 4 || a[0] != s.n || a[1] != s.l || a[2] != s.h || a[3] != s.d) {
    return ffi::Error::InvalidArgument(std::string("vivit_cpu_attention: ") + what +
                                       " must have q's shape [N, L, H, D]");
  }
  return ffi::Error::Success();
}

ffi::Error CheckLse(ffi::AnyBuffer::Dimensions a, const Dims& s) {
  if (a.size() != 3 || a[0] != s.n || a[1] != s.h || a[2] != s.l) {
    return ffi::Error::InvalidArgument("vivit_cpu_attention: lse must be [N, H, L]");
  }
  return ffi::Error::Success();
}

// Rows per block of a pair's queries (forward) or keys (backward): at most `block` (0: all L
// rows in one block), the L rows split into blocks of equal size (the last one up to one
// row shorter) rather than full blocks and a short tail.
int64_t Rows(int64_t block, int64_t L) {
  if (block <= 0 || block >= L) return L;
  const int64_t blocks = (L + block - 1) / block;
  return (L + blocks - 1) / blocks;
}

// What the workers of one ForEachPair call share. Held by a shared_ptr: a task XLA's pool starts
// after the call has returned finds no pair left and touches nothing else.
struct PairQueue {
  explicit PairQueue(int64_t pairs) : pairs(pairs) {}
  const int64_t pairs;
  std::atomic<int64_t> next{0};  // the next unclaimed pair
  std::atomic<int64_t> slot{0};  // the next unclaimed scratch buffer
  std::atomic<int64_t> done{0};  // pairs finished
  std::mutex mu;
  std::condition_variable all_done;
};

// Runs fn(pair, scratch) for every (n, h) pair on the calling thread and up to `threads` - 1
// tasks on XLA's intra-op thread pool, each worker with its own `scratch_floats` of scratch,
// allocated first (an allocation failure is an error, not a crash in a worker). Pairs are
// claimed one at a time, so a task the pool starts late only takes what is left, and the caller
// waits for the pairs, not for the tasks: nothing here waits on a task that has not started.
// Why XLA's pool and not threads of our own: with a std::thread started and joined per call, the
// (a) benchmark's steps (22 short calls per training step) took ~5% longer (A/B in separate
// processes, experiments/README.md). Likely causes, neither measured: the start and join
// themselves, and the new thread sharing its core with a pool thread still spinning after the
// previous op.
template <typename Fn>
ffi::Error ForEachPair(ffi::ThreadPool pool, const Dims& s, int64_t threads,
                       int64_t scratch_floats, Fn fn) {
  const int64_t pairs = s.n * s.h;
  const int64_t workers = std::max<int64_t>(1, std::min(threads, pairs));
  // Every sgemm runs on its calling thread: this library copy (the wheel's) is ours alone.
  static const bool single_threaded = [] {
    scipy_openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded;
  std::vector<std::vector<float>> scratch;
  try {
    for (int64_t w = 0; w < workers; ++w) scratch.emplace_back(scratch_floats);
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      "vivit_cpu_attention: cannot allocate " +
                          std::to_string(workers * scratch_floats * 4 >> 20) +
                          " MiB of scratch (float32 [rows, L] scores and packed operands per "
                          "thread); use fewer tokens, a smaller vivit_jax.backends.cpu.attention.BLOCK_ROWS or "
                          "attention_implementation='einsum'");
  }
  auto queue = std::make_shared<PairQueue>(pairs);
  // Claims pairs until none is left. `fn` and `scratch` are the caller's, alive until every
  // claimed pair is done.
  auto work = [queue, fn_ptr = &fn, scratch_ptr = &scratch]() {
    int64_t p = queue->next.fetch_add(1);
    if (p >= queue->pairs) return;
    float* buffer = (*scratch_ptr)[queue->slot.fetch_add(1)].data();
    for (; p < queue->pairs; p = queue->next.fetch_add(1)) {
      (*fn_ptr)(p, buffer);
      if (queue->done.fetch_add(1) + 1 == queue->pairs) {
        std::lock_guard<std::mutex> lock(queue->mu);
        queue->all_done.notify_all();
      }
    }
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule(decltype(work)(work));  // a copy each
  work();
  std::unique_lock<std::mutex> lock(queue->mu);
  queue->all_done.wait(lock, [&] { return queue->done.load() == pairs; });
  return ffi::Error::Success();
}

ffi::Error CheckAll(std::initializer_list<std::pair<const char*, ffi::AnyBuffer::Dimensions>> all,
                    const Dims& s) {
  for (auto [name, dims] : all) {
    if (auto e = CheckSame(name, dims, s); e.failure()) return e;
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse,
                   ffi::ThreadPool pool, int64_t threads, int64_t block,
                   int64_t tile_from) {
  auto qd = q.dimensions();
  if (qd.size() != 4) return ffi::Error::InvalidArgument("vivit_cpu_attention: q must be 4-D");
  const Dims s{qd[0], qd[1], qd[2], qd[3]};
  if (auto e = CheckAll({{"k", k.dimensions()}, {"v", v.dimensions()}, {"o", o->dimensions()}},
                        s);
      e.failure())
    return e;
  if (auto e = CheckLse(lse->dimensions(), s); e.failure()) return e;
  const int64_t L = s.l, D = s.d, row = s.h * s.d;
  const int64_t B = Rows(block, L);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float* qp = q.typed_data();
  const float* kp = k.typed_data();
  const float* vp = v.typed_data();
  float* op = o->typed_data();
  float* lp = lse->typed_data();
  const bool tiled = UseTiles(tile_from, L, D);
  const int64_t ld = tiled ? Padded(L) : L;  // the scores' row stride
  const int64_t packed_floats = tiled ? kTileD * ld : 0;
  return ForEachPair(pool, s, threads, B * ld + B + packed_floats, [&](int64_t pair,
                                                                      float* scratch) {
    const int64_t n = pair / s.h, h = pair % s.h;
    const int64_t base = n * L * row + h * D;
    float* scores = scratch;
    float* inv_total = scratch + B * ld;
    float* packed = inv_total + B;  // k^T, when tiled
    PackForScores(tiled, kp + base, row, L, packed);
    // A block of query rows at a time: their [b, L] scores stay in cache.
    for (int64_t i0 = 0; i0 < L; i0 += B) {
      const int64_t b = std::min(B, L - i0);
      // scores = scale * q k^T
      ScoresProduct(tiled, qp + base + i0 * row, row, b, kp + base, row, packed, L, D, scale,
                    scores, ld);
      float* lse_row = lp + pair * L + i0;
      for (int64_t i = 0; i < b; ++i) {
        float* srow = scores + i * ld;
        float m = srow[0];
        // A select, not std::max: GCC 12 leaves a std::max reduction scalar (~13x slower here).
#pragma omp simd reduction(max : m)
        for (int64_t j = 1; j < L; ++j) m = srow[j] > m ? srow[j] : m;
        float total = 0.0f;
#pragma omp simd reduction(+ : total)
        for (int64_t j = 0; j < L; ++j) {
          srow[j] = exp_nonpositive(srow[j] - m);
          total += srow[j];
        }
        lse_row[i] = m + std::log(total);
        inv_total[i] = 1.0f / total;
      }
      // o = (p v) / row sum
      RowsProduct(tiled, {scores, ld, 1}, b, L, D, vp + base, row, inv_total, 1, false,
                  op + base + i0 * row, row);
    }
  });
}

// Gradients of the forward pass, recomputing each pair's probabilities from lse (flash
// attention's scheme): dv = p^T do; ds = p * (do v^T - rowsum(do * o)); dq = scale ds k;
// dk = scale ds^T q.
ffi::Error Backward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> d_o, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                    ffi::ThreadPool pool, int64_t threads, int64_t block,
                    int64_t tile_from) {
  auto qd = q.dimensions();
  if (qd.size() != 4) return ffi::Error::InvalidArgument("vivit_cpu_attention: q must be 4-D");
  const Dims s{qd[0], qd[1], qd[2], qd[3]};
  if (auto e = CheckAll({{"k", k.dimensions()},
                         {"v", v.dimensions()},
                         {"o", o.dimensions()},
                         {"do", d_o.dimensions()},
                         {"dq", dq->dimensions()},
                         {"dk", dk->dimensions()},
                         {"dv", dv->dimensions()}},
                        s);
      e.failure())
    return e;
  if (auto e = CheckLse(lse.dimensions(), s); e.failure()) return e;
  const int64_t L = s.l, D = s.d, row = s.h * s.d;
  const int64_t B = Rows(block, L);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *op = o.typed_data(), *dop = d_o.typed_data(), *lp = lse.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  const bool tiled = UseTiles(tile_from, L, D);
  const int64_t ld = tiled ? Padded(L) : L;  // p's and ds's row stride
  const int64_t packed_floats = tiled ? 2 * kTileD * ld : 0;
  return ForEachPair(pool, s, threads, 2 * B * ld + L + packed_floats, [&](int64_t pair,
                                                                          float* scratch) {
    const int64_t n = pair / s.h, h = pair % s.h;
    const int64_t base = n * L * row + h * D;
    float* p = scratch;
    float* ds = scratch + B * ld;
    float* delta = scratch + 2 * B * ld;
    float* q_packed = delta + L;  // q^T and do^T, when tiled
    float* do_packed = q_packed + kTileD * ld;
    const float* lse_row = lp + pair * L;
    for (int64_t i = 0; i < L; ++i) {
      const float* a = dop + base + i * row;
      const float* b = op + base + i * row;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < D; ++c) acc += a[c] * b[c];
      delta[i] = acc;
    }
    PackForScores(tiled, qp + base, row, L, q_packed);
    PackForScores(tiled, dop + base, row, L, do_packed);
    const float one = 1.0f;
    // A block of key rows at a time (the transposed problem: keys on rows, so that dv and dk
    // are products without a transposed operand): p_t = exp(scale k q^T - lse), ds_t likewise;
    // dq accumulates over the blocks.
    for (int64_t j0 = 0; j0 < L; j0 += B) {
      const int64_t b = std::min(B, L - j0);
      const int64_t at = base + j0 * row;
      ScoresProduct(tiled, kp + at, row, b, qp + base, row, q_packed, L, D, scale, p, ld);
      ScoresProduct(tiled, vp + at, row, b, dop + base, row, do_packed, L, D, 1.0f, ds, ld);
      for (int64_t j = 0; j < b; ++j) {
        float* prow = p + j * ld;
        float* drow = ds + j * ld;
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) {
          prow[i] = exp_nonpositive(prow[i] - lse_row[i]);
          drow[i] = prow[i] * (drow[i] - delta[i]);
        }
      }
      RowsProduct(tiled, {p, ld, 1}, b, L, D, dop + base, row, &one, 0, false, dvp + at, row);
      RowsProduct(tiled, {ds, ld, 1}, b, L, D, qp + base, row, &scale, 0, false, dkp + at, row);
      RowsProduct(tiled, {ds, 1, ld}, L, b, D, kp + at, row, &scale, 0, j0 > 0, dqp + base, row);
    }
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VivitAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ctx<ffi::ThreadPool>()
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("tile_from"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VivitAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ctx<ffi::ThreadPool>()
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("tile_from"));
