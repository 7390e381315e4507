// Softmax attention for XLA:CPU as two XLA FFI custom calls (forward, backward), float32.
//
// Built and loaded at run time by cpu_attention.py (g++, OpenBLAS from the scipy-openblas32
// wheel). Why by hand: XLA:CPU has no fused attention, and its Eigen dots run the [L, 64] x
// [64, L] products of attention at ~100 GFLOP/s on a 2-core machine where OpenBLAS, one
// (batch, head) pair per thread, reaches ~90 per core (experiments/README.md).
//
// Layout: q, k, v, o, do, dq, dk, dv are row-major [N, L, H, D]; lse is [N, H, L] (each query
// row's log-sum-exp of its scaled scores). Each (n, h) pair is independent: the calling thread and
// tasks on XLA's intra-op thread pool claim pairs one at a time. A pair's scores are computed a
// block of rows at a time (`block`, 128 from cpu_attention.py): each thread holds one (forward) or
// two (backward) [rows, L] float32 scratch matrices, which stay in cache where [L, L] ones would
// not (ViViT-B at 3137 tokens: forward + backward 965 -> 768 ms; experiments/README.md).

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
#include <utility>
#include <vector>

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
                          " MiB of scratch ([rows, L] float32 per thread); use fewer tokens, "
                          "a smaller cpu_attention.BLOCK_ROWS or attention_implementation="
                          "'einsum'");
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
                   ffi::ThreadPool pool, int64_t threads, int64_t block) {
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
  return ForEachPair(pool, s, threads, B * L + B, [&](int64_t pair, float* scratch) {
    const int64_t n = pair / s.h, h = pair % s.h;
    const int64_t base = n * L * row + h * D;
    float* scores = scratch;
    float* inv_total = scratch + B * L;
    // A block of query rows at a time: their [b, L] scores stay in cache.
    for (int64_t i0 = 0; i0 < L; i0 += B) {
      const int64_t b = std::min(B, L - i0);
      // scores = scale * q k^T
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, L, D, scale,
                        qp + base + i0 * row, row, kp + base, row, 0.0f, scores, L);
      float* lse_row = lp + pair * L + i0;
      for (int64_t i = 0; i < b; ++i) {
        float* srow = scores + i * L;
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
      float* out = op + base + i0 * row;
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, D, L, 1.0f, scores, L,
                        vp + base, row, 0.0f, out, row);
      for (int64_t i = 0; i < b; ++i) {
#pragma omp simd
        for (int64_t c = 0; c < D; ++c) out[i * row + c] *= inv_total[i];
      }
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
                    ffi::ThreadPool pool, int64_t threads, int64_t block) {
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
  return ForEachPair(pool, s, threads, 2 * B * L + L, [&](int64_t pair, float* scratch) {
    const int64_t n = pair / s.h, h = pair % s.h;
    const int64_t base = n * L * row + h * D;
    float* p = scratch;
    float* ds = scratch + B * L;
    float* delta = scratch + 2 * B * L;
    const float* lse_row = lp + pair * L;
    for (int64_t i = 0; i < L; ++i) {
      const float* a = dop + base + i * row;
      const float* b = op + base + i * row;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < D; ++c) acc += a[c] * b[c];
      delta[i] = acc;
    }
    // A block of key rows at a time (the transposed problem: keys on rows, so that dv and dk
    // are products without a transposed operand): p_t = exp(scale k q^T - lse), ds_t likewise;
    // dq accumulates over the blocks.
    for (int64_t j0 = 0; j0 < L; j0 += B) {
      const int64_t b = std::min(B, L - j0);
      const int64_t at = base + j0 * row;
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, L, D, scale, kp + at, row,
                        qp + base, row, 0.0f, p, L);
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, L, D, 1.0f, vp + at, row,
                        dop + base, row, 0.0f, ds, L);
      for (int64_t j = 0; j < b; ++j) {
        float* prow = p + j * L;
        float* drow = ds + j * L;
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) {
          prow[i] = exp_nonpositive(prow[i] - lse_row[i]);
          drow[i] = prow[i] * (drow[i] - delta[i]);
        }
      }
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, D, L, 1.0f, p, L,
                        dop + base, row, 0.0f, dvp + at, row);
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, D, L, scale, ds, L,
                        qp + base, row, 0.0f, dkp + at, row);
      scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, D, b, scale, ds, L, kp + at,
                        row, j0 == 0 ? 0.0f : 1.0f, dqp + base, row);
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
                                  .Attr<int64_t>("block"));

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
                                  .Attr<int64_t>("block"));
