// y[M, N] = x[M, K] @ W for W packed in column panels: w[s, k, 0:16] = W[k, 16 s : 16 s + 16]
// (float32 or bfloat16 weights, float32 x and y). An XLA FFI handler for XLA:CPU, built and
// registered by rolellm_jax/models/kernels/cpu_decode_kernels.py.
//
// Why: at decode the GEMMs have M = 1..16 rows, and XLA:CPU's GEMM libraries spend more time
// packing the weight than reading it (a [8, 576] x [576, 3072] GEMM took 1.0-1.4 ms against a
// 0.35 ms read floor, benchmarks/RESULTS.md); XLA:CPU has no bf16 GEMV at all (it converts the
// weight to a float32 copy per call). Packed once, a panel is one sequential stream: each weight
// is read once from memory, whatever M, and bf16 weights are read as bf16. One copy of each loop per
// vector width (AVX-512, AVX2, 128-bit), the one the CPU runs picked when the library loads.
#include <atomic>
#include <cmath>
#include <vector>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;     // columns per panel: one 64-byte line of float32
constexpr int64_t kPrefetch = 4096;  // bytes ahead in the panel stream (measured: 1-4 KiB)

// Float vectors of L lanes, the width of the instruction set a copy is compiled for: L = 16 with
// AVX-512, 8 with AVX2, 4 otherwise. To GCC a 64-byte vector on AVX2 is not two 32-byte ones: it went
// through the stack (a SmolLM2-sized bf16 GEMV chain read 8.8 GB/s on a Zen 3 that streams 30;
// 22-25 GB/s with L = 8, benchmarks/RESULTS.md).
template <int L>
struct Vec {
  typedef float F __attribute__((vector_size(4 * L)));
  typedef uint16_t H __attribute__((vector_size(2 * L)));
  typedef uint32_t U __attribute__((vector_size(4 * L)));
};

template <int L>
inline __attribute__((always_inline)) typename Vec<L>::F load(const float* p) {
  typename Vec<L>::F v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int L>
inline __attribute__((always_inline)) typename Vec<L>::F load(const uint16_t* p) {
  typename Vec<L>::H h;  // bf16 -> f32 is the 16 bits shifted to the top
  std::memcpy(&h, p, sizeof h);
  typename Vec<L>::U bits = __builtin_convertvector(h, typename Vec<L>::U) << 16;
  typename Vec<L>::F v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

inline float scalar(float v) { return v; }
inline float scalar(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Rows of x per register tile, R x 16 / L accumulators (8 with AVX2 too: 6, which fits its 16
// registers without a spill, ran M = 8 at 75 GFLOP/s against 94-99 with 8, benchmarks/RESULTS.md)
template <int L>
constexpr int kRows = L >= 8 ? 8 : 3;

template <int R, int L, typename W>
inline __attribute__((always_inline)) void tile(const float* x, const W* panel, float* y, int64_t K, int64_t N) {
  using F = typename Vec<L>::F;
  constexpr int P = kPanel / L;  // vectors per panel row
  // with few accumulators, two per row and vector (even and odd k) so that the FMA latency does not
  // serialise the stream
  constexpr int A = R * P <= 4 ? 2 : 1;
  F acc[A][R][P];
  for (int a = 0; a < A; ++a)
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) acc[a][r][p] = F{};
  const char* ahead = reinterpret_cast<const char*>(panel) + kPrefetch;
  int64_t k = 0;
  for (; k + A <= K; k += A) {
    for (int a = 0; a < A; ++a) {
      __builtin_prefetch(ahead + (k + a) * kPanel * sizeof(W));
      for (int p = 0; p < P; ++p) {
        F w = load<L>(panel + (k + a) * kPanel + p * L);
        for (int r = 0; r < R; ++r) acc[a][r][p] += x[r * K + k + a] * w;
      }
    }
  }
  for (; k < K; ++k) {
    for (int p = 0; p < P; ++p) {
      F w = load<L>(panel + k * kPanel + p * L);
      for (int r = 0; r < R; ++r) acc[0][r][p] += x[r * K + k] * w;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int p = 0; p < P; ++p) {
      F sum = acc[0][r][p];
      for (int a = 1; a < A; ++a) sum += acc[a][r][p];
      std::memcpy(y + r * N + p * L, &sum, sizeof sum);
    }
  }
}

// A tile of `rows` <= R rows: the instantiation for exactly that many
template <int R, int L, typename W>
inline __attribute__((always_inline)) void tile_of(int64_t rows, const float* x, const W* panel, float* y, int64_t K,
                                                   int64_t N) {
  if constexpr (R > 1) {
    if (rows < R) return tile_of<R - 1, L>(rows, x, panel, y, K, N);
  }
  tile<R, L>(x, panel, y, K, N);
}

// Panels [p0, p1) for every row: the rows go in tiles over one panel, so a panel is read from
// memory once and from cache for the tiles after the first.
template <int L, typename W>
inline __attribute__((always_inline)) void panels_impl(const float* x, const W* w, float* y, int64_t M, int64_t K,
                                                       int64_t N, int64_t p0, int64_t p1) {
  constexpr int R = kRows<L>;
  for (int64_t p = p0; p < p1; ++p) {
    const W* panel = w + p * K * kPanel;
    for (int64_t m = 0; m < M; m += R)
      tile_of<R, L>(M - m < R ? M - m : R, x + m * K, panel, y + m * N + p * kPanel, K, N);
  }
}

// One copy per instruction set, picked at run time (no -march: the file the cache holds runs on any
// machine of the architecture the cache is shared with). ROLELLM_CPU_KERNEL_LANES=4 or 8 picks a
// narrower copy than the CPU could run (the tests run each copy the machine has; 16, or a copy the CPU
// cannot run, gives the widest it can; cpu_decode_kernels.py refuses other values).
#if defined(__x86_64__)
inline int vector_lanes() {
  static const int lanes = [] {
    int best = 4;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 8;
    if (best == 8 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      best = 16;
    const char* asked = std::getenv("ROLELLM_CPU_KERNEL_LANES");
    int wanted = asked ? std::atoi(asked) : best;
    return wanted == 4 || (wanted == 8 && best >= 8) ? wanted : best;
  }();
  return lanes;
}
#define PER_ISA(NAME, PARAMS, ARGS)                                                                 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2"))) void NAME##_16 PARAMS { \
    NAME##_impl<16> ARGS;                                                                           \
  }                                                                                                 \
  __attribute__((target("avx2,fma,f16c,bmi2"))) void NAME##_8 PARAMS { NAME##_impl<8> ARGS; }       \
  void NAME##_4 PARAMS { NAME##_impl<4> ARGS; }                                                     \
  void NAME PARAMS {                                                                                \
    switch (vector_lanes()) {                                                                       \
      case 16: return NAME##_16 ARGS;                                                               \
      case 8: return NAME##_8 ARGS;                                                                 \
      default: return NAME##_4 ARGS;                                                                \
    }                                                                                               \
  }
#else
#define PER_ISA(NAME, PARAMS, ARGS) \
  void NAME PARAMS { NAME##_impl<4> ARGS; }
#endif

#define PANELS_PARAMS(W) (const float* x, const W* w, float* y, int64_t M, int64_t K, int64_t N, int64_t p0, int64_t p1)
PER_ISA(panels, PANELS_PARAMS(float), (x, w, y, M, K, N, p0, p1))
PER_ISA(panels, PANELS_PARAMS(uint16_t), (x, w, y, M, K, N, p0, p1))

// Work shared with XLA's intra-op threads by chunks of items (panels, heads) claimed from a counter. The caller
// claims chunks too and waits only for chunks already claimed, so a task the pool starts late
// (or never, with every pool thread busy) finds nothing left and cannot stall the call.
struct Shared {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

// spin gently: the core's sibling hyperthread, if any, gets the cycles
inline void spin_pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

template <typename Fn>
void run_chunks(ffi::ThreadPool& pool, int64_t n_items, int64_t chunk, Fn work) {
  int64_t n_chunks = (n_items + chunk - 1) / chunk;
  // the pool has a thread per core and the caller takes one core: one helper fewer than the pool's
  // threads (measured on 2 cores: 23 GB/s of weight reads with one helper, 21.6 with two, 17.7 alone)
  int64_t helpers = pool.num_threads() - 1;
  if (helpers > n_chunks - 1) helpers = n_chunks - 1;
  if (helpers < 0) helpers = 0;
  auto shared = std::make_shared<Shared>();
  auto claim = [shared, n_chunks, n_items, chunk, work]() {
    for (int64_t c; (c = shared->next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
      int64_t p0 = c * chunk, p1 = p0 + chunk < n_items ? p0 + chunk : n_items;
      work(p0, p1);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(claim)(claim));
  claim();
  while (shared->done.load(std::memory_order_acquire) < n_chunks) {
    spin_pause();  // a helper still on its last chunk
  }
}

ffi::Error PackedMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w,
                        ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions();
  if (wd.size() != 3 || wd[2] != kPanel) return ffi::Error::InvalidArgument("packed weight must be [N/16, K, 16]");
  int64_t n_panels = wd[0], K = wd[1], N = n_panels * kPanel;
  auto xd = x.dimensions();
  if (xd.size() == 0 || xd[xd.size() - 1] != K) return ffi::Error::InvalidArgument("x's last axis must be K");
  int64_t M = x.element_count() / K;
  if (M == 0 || N == 0) return ffi::Error::Success();
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  // one chunk per thread: each thread's panels are one sequential stream, which the prefetchers
  // follow best (SmolLM2 bf16 batch-1 chain on a Zen 5: 55.8 GB/s vs 50.9 with 4 chunks per thread,
  // the decode step 3% faster; benchmarks/RESULTS.md). A helper that starts late still cannot stall
  // the call: the caller takes its chunk too.
  int64_t threads = pool.num_threads() > 1 ? pool.num_threads() : 1;
  int64_t chunk = (n_panels + threads - 1) / threads;
  if (chunk < 1) chunk = 1;
  switch (w.element_type()) {
    case ffi::F32: {
      const float* wp = w.typed_data<float>();
      run_chunks(pool, n_panels, chunk, [=](int64_t p0, int64_t p1) { panels(xp, wp, yp, M, K, N, p0, p1); });
      return ffi::Error::Success();
    }
    case ffi::BF16: {
      const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.untyped_data());
      run_chunks(pool, n_panels, chunk, [=](int64_t p0, int64_t p1) { panels(xp, wp, yp, M, K, N, p0, p1); });
      return ffi::Error::Success();
    }
    default:
      return ffi::Error::InvalidArgument("packed weight must be float32 or bfloat16");
  }
}


// One query token per row against a KV cache read where it is (no transposed copy for a dot):
// out[b, h] = softmax(scale * q[b, h] . k[b, s, h / G] (soft-capped) + bias[b, s]) @ v[b, s, h / G],
// in float32, for the G = H / KV query heads of one kv head at a time.
template <int L, typename C>
inline __attribute__((always_inline)) void one_query_heads(const float* q, const C* k, const C* v,
                                                           const float* bias, float* out, int64_t b, int64_t kvh,
                                                           int64_t S, int64_t KV, int64_t G, int64_t hd,
                                                           float scale, float softcap, float* scores) {
  using F = typename Vec<L>::F;
  const int64_t lanes = hd / L;
  const float* qb = q + (b * KV * G + kvh * G) * hd;
  for (int64_t g = 0; g < G; ++g) {
    float* sg = scores + g * S;
    float top = -INFINITY;
    for (int64_t s = 0; s < S; ++s) {
      float masked = bias[b * S + s];
      if (masked == -INFINITY) {
        sg[s] = -INFINITY;
        continue;
      }
      const C* ks = k + ((b * S + s) * KV + kvh) * hd;
      F acc{};
      for (int64_t l = 0; l < lanes; ++l) acc += load<L>(qb + g * hd + L * l) * load<L>(ks + L * l);
      float dot = 0.f;
      for (int i = 0; i < L; ++i) dot += acc[i];
      for (int64_t d = L * lanes; d < hd; ++d) dot += qb[g * hd + d] * scalar(ks[d]);
      float score = dot * scale;
      if (softcap > 0.f) score = softcap * std::tanh(score / softcap);
      sg[s] = score + masked;
      top = sg[s] > top ? sg[s] : top;
    }
    float total = 0.f;
    for (int64_t s = 0; s < S; ++s) {
      // no allowed slot at all: every weight 1, the mean of v, as XLA's finite masked score gives
      sg[s] = top == -INFINITY ? 1.f : sg[s] == -INFINITY ? 0.f : std::exp(sg[s] - top);
      total += sg[s];
    }
    F acc[256 / L] = {};  // hd <= 256
    float tail[L] = {};   // the hd % L last dimensions
    for (int64_t s = 0; s < S; ++s) {
      if (sg[s] == 0.f) continue;
      const C* vs = v + ((b * S + s) * KV + kvh) * hd;
      for (int64_t l = 0; l < lanes; ++l) acc[l] += sg[s] * load<L>(vs + L * l);
      for (int64_t d = L * lanes; d < hd; ++d) tail[d - L * lanes] += sg[s] * scalar(vs[d]);
    }
    float* og = out + (b * KV * G + kvh * G + g) * hd;
    for (int64_t l = 0; l < lanes; ++l) {
      F o = acc[l] / total;
      std::memcpy(og + L * l, &o, sizeof o);
    }
    for (int64_t d = L * lanes; d < hd; ++d) og[d] = tail[d - L * lanes] / total;
  }
}

// kv heads [i0, i1) of the B x KV (row, kv head) pairs, in a KV cache of C (float or bf16 bits)
template <int L, typename C>
inline __attribute__((always_inline)) void heads_impl(const float* q, const C* k, const C* v, const float* bias,
                                                      float* out, int64_t i0, int64_t i1, int64_t S, int64_t KV,
                                                      int64_t G, int64_t hd, float scale, float softcap) {
  std::vector<float> scores(G * S);
  for (int64_t i = i0; i < i1; ++i)
    one_query_heads<L>(q, k, v, bias, out, i / KV, i % KV, S, KV, G, hd, scale, softcap, scores.data());
}

#define HEADS_PARAMS(C)                                                                                          \
  (const float* q, const C* k, const C* v, const float* bias, float* out, int64_t i0, int64_t i1, int64_t S, int64_t KV, \
   int64_t G, int64_t hd, float scale, float softcap)
PER_ISA(heads, HEADS_PARAMS(float), (q, k, v, bias, out, i0, i1, S, KV, G, hd, scale, softcap))
PER_ISA(heads, HEADS_PARAMS(uint16_t), (q, k, v, bias, out, i0, i1, S, KV, G, hd, scale, softcap))

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                           ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out, float scale, float softcap) {
  auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 3 || kd.size() != 4) return ffi::Error::InvalidArgument("q must be [B, H, hd], k/v [B, S, KV, hd]");
  int64_t B = qd[0], H = qd[1], hd = qd[2], S = kd[1], KV = kd[2];
  auto vd = v.dimensions(), bd = bias.dimensions(), od = out->dimensions();
  bool same_kv = vd.size() == 4 && vd[0] == kd[0] && vd[1] == kd[1] && vd[2] == kd[2] && vd[3] == kd[3];
  bool bias_ok = bd.size() == 2 && bd[0] == B && bd[1] == S;
  bool out_ok = od.size() == 3 && od[0] == B && od[1] == H && od[2] == hd;
  if (kd[0] != B || kd[3] != hd || H % KV != 0 || hd > 256 || k.element_type() != v.element_type() || !same_kv ||
      !bias_ok || !out_ok)
    return ffi::Error::InvalidArgument(
        "attention shapes: q [B, H, hd], k and v [B, S, KV, hd], bias [B, S], out [B, H, hd], H % KV == 0, hd <= 256");
  int64_t G = H / KV;
  const float *qp = q.typed_data(), *bp = bias.typed_data();
  float* op = out->typed_data();
  switch (k.element_type()) {
    case ffi::F32: {
      const float *kp = k.typed_data<float>(), *vp = v.typed_data<float>();
      run_chunks(pool, B * KV, 1, [=](int64_t i0, int64_t i1) {
        heads(qp, kp, vp, bp, op, i0, i1, S, KV, G, hd, scale, softcap);
      });
      return ffi::Error::Success();
    }
    case ffi::BF16: {
      auto kp = reinterpret_cast<const uint16_t*>(k.untyped_data());
      auto vp = reinterpret_cast<const uint16_t*>(v.untyped_data());
      run_chunks(pool, B * KV, 1, [=](int64_t i0, int64_t i1) {
        heads(qp, kp, vp, bp, op, i0, i1, S, KV, G, hd, scale, softcap);
      });
      return ffi::Error::Success();
    }
    default:
      return ffi::Error::InvalidArgument("KV cache must be float32 or bfloat16");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(rolellm_packed_matmul, PackedMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(rolellm_decode_attention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Attr<float>("softcap"));

// The float lanes of the copy this CPU runs (16: AVX-512, 8: AVX2, 4: 128-bit), for the logs and tests
extern "C" int rolellm_cpu_kernel_lanes() {
#if defined(__x86_64__)
  return vector_lanes();
#else
  return 4;
#endif
}
