// y[M, N] = x[M, K] @ W for W packed in column panels: w[s, k, 0:16] = W[k, 16 s : 16 s + 16]
// (float32 or bfloat16 weights, float32 x and y). An XLA FFI handler for XLA:CPU, built and
// registered by rolellm_jax/models/kernels/cpu_decode_kernels.py.
//
// Why: at decode the GEMMs have M = 1..16 rows, and XLA:CPU's GEMM libraries spend more time
// packing the weight than reading it (a [8, 576] x [576, 3072] GEMM took 1.0-1.4 ms against a
// 0.35 ms read floor, benchmarks/RESULTS.md); XLA:CPU has no bf16 GEMV at all (it converts the
// weight to a float32 copy per call). Packed once, a panel is one sequential stream: each weight
// is read once from memory, whatever M, and bf16 weights are read as bf16.
#include <atomic>
#include <cmath>
#include <vector>
#include <cstdint>
#include <cstring>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;     // columns per panel: one 64-byte line of float32
constexpr int kRows = 8;            // rows of x per register tile (kRows accumulators of 16 floats)
constexpr int64_t kPrefetch = 4096;  // bytes ahead in the panel stream (measured: 1-4 KiB)

typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

inline __attribute__((always_inline)) f32x16 load_panel_row(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline __attribute__((always_inline)) f32x16 load_panel_row(const uint16_t* p) {
  u16x16 h;  // bf16 -> f32 is the 16 bits shifted to the top
  std::memcpy(&h, p, sizeof h);
  u32x16 bits = __builtin_convertvector(h, u32x16) << 16;
  f32x16 v;
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

template <int R, typename W>
inline __attribute__((always_inline)) void tile(const float* x, const W* panel, float* y, int64_t K, int64_t N) {
  // with few rows, two accumulators per row (even and odd k) so that the FMA latency does not
  // serialise the stream
  constexpr int A = R <= 4 ? 2 : 1;
  f32x16 acc[A][R];
  for (int a = 0; a < A; ++a)
    for (int r = 0; r < R; ++r) acc[a][r] = f32x16{};
  const char* ahead = reinterpret_cast<const char*>(panel) + kPrefetch;
  int64_t k = 0;
  for (; k + A <= K; k += A) {
    for (int a = 0; a < A; ++a) {
      __builtin_prefetch(ahead + (k + a) * kPanel * sizeof(W));
      f32x16 w = load_panel_row(panel + (k + a) * kPanel);
      for (int r = 0; r < R; ++r) acc[a][r] += x[r * K + k + a] * w;
    }
  }
  for (; k < K; ++k) {
    f32x16 w = load_panel_row(panel + k * kPanel);
    for (int r = 0; r < R; ++r) acc[0][r] += x[r * K + k] * w;
  }
  for (int r = 0; r < R; ++r) {
    f32x16 sum = acc[0][r];
    for (int a = 1; a < A; ++a) sum += acc[a][r];
    std::memcpy(y + r * N, &sum, sizeof sum);
  }
}

// Panels [p0, p1) for every row: the rows go in tiles over one panel, so a panel is read from
// memory once and from cache for the tiles after the first.
template <typename W>
inline __attribute__((always_inline)) void panels(const float* x, const W* w, float* y, int64_t M, int64_t K,
                                                   int64_t N, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const W* panel = w + p * K * kPanel;
    for (int64_t m = 0; m < M; m += kRows) {
      const float* xm = x + m * K;
      float* ym = y + m * N + p * kPanel;
      switch (M - m < kRows ? M - m : kRows) {
        case 1: tile<1>(xm, panel, ym, K, N); break;
        case 2: tile<2>(xm, panel, ym, K, N); break;
        case 3: tile<3>(xm, panel, ym, K, N); break;
        case 4: tile<4>(xm, panel, ym, K, N); break;
        case 5: tile<5>(xm, panel, ym, K, N); break;
        case 6: tile<6>(xm, panel, ym, K, N); break;
        case 7: tile<7>(xm, panel, ym, K, N); break;
        default: tile<8>(xm, panel, ym, K, N); break;
      }
    }
  }
}

// One compiled copy per instruction set, picked when the library loads (no -march: the file the
// cache holds runs on any x86-64 the cache is shared with).
#if defined(__x86_64__)
#define PER_ISA __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PER_ISA
#endif

PER_ISA void panels_f32(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t p0,
                        int64_t p1) {
  panels(x, w, y, M, K, N, p0, p1);
}

PER_ISA void panels_bf16(const float* x, const uint16_t* w, float* y, int64_t M, int64_t K, int64_t N, int64_t p0,
                         int64_t p1) {
  panels(x, w, y, M, K, N, p0, p1);
}

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
      run_chunks(pool, n_panels, chunk, [=](int64_t p0, int64_t p1) { panels_f32(xp, wp, yp, M, K, N, p0, p1); });
      return ffi::Error::Success();
    }
    case ffi::BF16: {
      const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.untyped_data());
      run_chunks(pool, n_panels, chunk, [=](int64_t p0, int64_t p1) { panels_bf16(xp, wp, yp, M, K, N, p0, p1); });
      return ffi::Error::Success();
    }
    default:
      return ffi::Error::InvalidArgument("packed weight must be float32 or bfloat16");
  }
}


// One query token per row against a KV cache read where it is (no transposed copy for a dot):
// out[b, h] = softmax(scale * q[b, h] . k[b, s, h / G] (soft-capped) + bias[b, s]) @ v[b, s, h / G],
// in float32, for the G = H / KV query heads of one kv head at a time.
template <typename C>
inline __attribute__((always_inline)) void one_query_heads(const float* q, const C* k, const C* v,
                                                           const float* bias, float* out, int64_t b, int64_t kvh,
                                                           int64_t S, int64_t KV, int64_t G, int64_t hd,
                                                           float scale, float softcap, float* scores) {
  const int64_t lanes = hd / 16;
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
      f32x16 acc{};
      for (int64_t l = 0; l < lanes; ++l) acc += load_panel_row(qb + g * hd + 16 * l) * load_panel_row(ks + 16 * l);
      float dot = 0.f;
      for (int i = 0; i < 16; ++i) dot += acc[i];
      for (int64_t d = 16 * lanes; d < hd; ++d) dot += qb[g * hd + d] * scalar(ks[d]);
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
    f32x16 acc[16] = {};  // hd <= 256
    float tail[16] = {};  // the hd % 16 last dimensions
    for (int64_t s = 0; s < S; ++s) {
      if (sg[s] == 0.f) continue;
      const C* vs = v + ((b * S + s) * KV + kvh) * hd;
      for (int64_t l = 0; l < lanes; ++l) acc[l] += sg[s] * load_panel_row(vs + 16 * l);
      for (int64_t d = 16 * lanes; d < hd; ++d) tail[d - 16 * lanes] += sg[s] * scalar(vs[d]);
    }
    float* og = out + (b * KV * G + kvh * G + g) * hd;
    for (int64_t l = 0; l < lanes; ++l) {
      f32x16 o = acc[l] / total;
      std::memcpy(og + 16 * l, &o, sizeof o);
    }
    for (int64_t d = 16 * lanes; d < hd; ++d) og[d] = tail[d - 16 * lanes] / total;
  }
}

PER_ISA void heads_f32(const float* q, const float* k, const float* v, const float* bias, float* out, int64_t i0,
                       int64_t i1, int64_t S, int64_t KV, int64_t G, int64_t hd, float scale, float softcap) {
  std::vector<float> scores(G * S);
  for (int64_t i = i0; i < i1; ++i)
    one_query_heads(q, k, v, bias, out, i / KV, i % KV, S, KV, G, hd, scale, softcap, scores.data());
}

PER_ISA void heads_bf16(const float* q, const uint16_t* k, const uint16_t* v, const float* bias, float* out,
                        int64_t i0, int64_t i1, int64_t S, int64_t KV, int64_t G, int64_t hd, float scale,
                        float softcap) {
  std::vector<float> scores(G * S);
  for (int64_t i = i0; i < i1; ++i)
    one_query_heads(q, k, v, bias, out, i / KV, i % KV, S, KV, G, hd, scale, softcap, scores.data());
}

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
        heads_f32(qp, kp, vp, bp, op, i0, i1, S, KV, G, hd, scale, softcap);
      });
      return ffi::Error::Success();
    }
    case ffi::BF16: {
      auto kp = reinterpret_cast<const uint16_t*>(k.untyped_data());
      auto vp = reinterpret_cast<const uint16_t*>(v.untyped_data());
      run_chunks(pool, B * KV, 1, [=](int64_t i0, int64_t i1) {
        heads_bf16(qp, kp, vp, bp, op, i0, i1, S, KV, G, hd, scale, softcap);
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
