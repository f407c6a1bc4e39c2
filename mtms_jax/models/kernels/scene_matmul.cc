// Per-example matmuls with per-scene weights, as XLA FFI custom calls on the CPU.
//
// SceneMatmul:  y[b, :] = x[b, :] @ w[scene[b]]          x (B, I), w (S, I, H) -> y (B, H)
// SceneMatmulTransposed:  y[b, :] = x[b, :] @ w[scene[b]]^T   x (B, H), w (S, I, H) -> (B, I)
// SceneOuter:   g[s] = sum over b with scene[b] == s of outer(x[b], dy[b])
//                                                         x (B, I), dy (B, H) -> g (S, I, H)
//
// Examples are grouped by scene (a counting sort of the batch) and go through their scene's
// weights in blocks of 4 examples x 64 output columns (AVX-512; 16 with AVX2) whose sums
// stay in vector registers:
// each weight vector loaded serves 4 examples, and a scene's weights (20 KiB for 320 x 16)
// stay in L1 while its examples pass. So per-scene weights cost about what one shared
// matmul costs, however many scenes there are. Narrow outputs (8, or not a multiple of 16)
// take simpler per-example loops. Sums run over the input axis in order, never reassociated:
// results are bitwise the same run to run, and equal XLA's matmul to float rounding (also
// across builds of another vector width, whose blocks may sum an output of 8 otherwise).
// SceneMatmul's input gradient is SceneMatmulTransposed, its weight gradient SceneOuter.
// Scene ids outside [0, S) are clamped, as jnp indexing clamps them. `python -m
// mtms_jax.models.kernels` compiles this file for the CPU it runs on (-march=native): the
// vectors are as wide as its widest extension (below), so no vector is emulated.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

int64_t ClampScene(int32_t s, int64_t num_scenes) {
  return std::min<int64_t>(std::max<int32_t>(s, 0), num_scenes - 1);
}

// One vector register of the widest extension the build targets: AVX-512 (16 floats, 32
// registers), AVX or AVX2 (8 floats, 16 registers), else 4 floats (SSE, NEON). A GCC/Clang
// vector wider than the target's registers would be emulated, at twice the instructions,
// and change the ABI of the functions that pass it.
#if defined(__AVX512F__)
#define MTMS_VECTOR_BYTES 64
#elif defined(__AVX__)
#define MTMS_VECTOR_BYTES 32
#else
#define MTMS_VECTOR_BYTES 16
#endif
typedef float Vec __attribute__((vector_size(MTMS_VECTOR_BYTES)));
constexpr int64_t kLanes = sizeof(Vec) / sizeof(float);
// Output vectors a SceneMatmul block keeps (x 4 examples): 16 sums + 4 weights of 32
// AVX-512 registers; 8 + 2 of AVX2's 16.
constexpr int kBlockChunks = kLanes == 16 ? 4 : 2;
// Rows of a two-vector SceneOuter block: 16 sums of 32 registers, or 8 of 16.
constexpr int kOuterRows = kLanes == 16 ? 8 : 4;
#if MTMS_VECTOR_BYTES == 64
typedef float Vec8 __attribute__((vector_size(32)));   // outputs of 8 under AVX-512
#endif

template <typename Vec>
Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

template <typename Vec>
void Store(float* p, Vec v) {
  std::memcpy(p, &v, sizeof(Vec));
}

// One example's row times its scene's (in, out) weights. For outputs of kChunks vectors of
// Vec (8 or 16 floats each) the sums stay in registers, in two interleaved sets of
// accumulators so consecutive multiply-adds do not wait on each other; other widths
// (kChunks = 0) accumulate in the output row, whose inner loop the compiler vectorizes.
template <typename Vec, int kChunks>
void RowTimesWeights(const float* __restrict__ xb, const float* __restrict__ wb, int64_t in,
                     int64_t out, float* __restrict__ yb) {
  if constexpr (kChunks > 0) {
    constexpr int kLanes = sizeof(Vec) / sizeof(float);
    constexpr int kOut = kChunks * kLanes;
    Vec even[kChunks] = {}, odd[kChunks] = {};
    int64_t i = 0;
    for (; i + 1 < in; i += 2) {
      for (int c = 0; c < kChunks; ++c) {
        even[c] += xb[i] * Load<Vec>(wb + i * kOut + c * kLanes);
        odd[c] += xb[i + 1] * Load<Vec>(wb + (i + 1) * kOut + c * kLanes);
      }
    }
    if (i < in) {
      for (int c = 0; c < kChunks; ++c) even[c] += xb[i] * Load<Vec>(wb + i * kOut + c * kLanes);
    }
    for (int c = 0; c < kChunks; ++c) Store(yb + c * kLanes, even[c] + odd[c]);
  } else {
    std::fill(yb, yb + out, 0.0f);
    for (int64_t i = 0; i < in; ++i) {
      const float xi = xb[i];
      const float* __restrict__ wi = wb + i * out;
      for (int64_t h = 0; h < out; ++h) yb[h] += xi * wi[h];
    }
  }
}

template <typename Vec, int kChunks>
void SceneMatmulLoop(const float* __restrict__ xs, const float* __restrict__ ws,
                     const int32_t* __restrict__ scenes, int64_t batch, int64_t in,
                     int64_t num_scenes, int64_t out, float* __restrict__ ys) {
  for (int64_t b = 0; b < batch; ++b) {
    RowTimesWeights<Vec, kChunks>(xs + b * in,
                                  ws + ClampScene(scenes[b], num_scenes) * in * out, in, out,
                                  ys + b * out);
  }
}

// Examples of each scene, in batch order: a counting sort of the batch by scene.
std::vector<int64_t> ByScene(const int32_t* scenes, int64_t batch, int64_t num_scenes,
                             std::vector<int64_t>& start) {
  start.assign(num_scenes + 1, 0);
  for (int64_t b = 0; b < batch; ++b) ++start[ClampScene(scenes[b], num_scenes) + 1];
  for (int64_t s = 0; s < num_scenes; ++s) start[s + 1] += start[s];
  std::vector<int64_t> order(batch), next(start.begin(), start.end() - 1);
  for (int64_t b = 0; b < batch; ++b) order[next[ClampScene(scenes[b], num_scenes)]++] = b;
  return order;
}

// y for kExamples examples of one scene (rows) and kChunks vectors of output columns from
// `col`: the kExamples x kChunks sums stay in registers, and each weight vector loaded serves
// every example of the block.
template <int kExamples, int kChunks>
void SceneBlock(const float* __restrict__ xs, const float* __restrict__ wb,
                const int64_t* rows, int64_t in, int64_t out, int64_t col,
                float* __restrict__ ys) {
  Vec acc[kExamples][kChunks] = {};
  for (int64_t i = 0; i < in; ++i) {
    Vec w[kChunks];
    for (int c = 0; c < kChunks; ++c) w[c] = Load<Vec>(wb + i * out + col + c * kLanes);
    for (int e = 0; e < kExamples; ++e) {
      const float xi = xs[rows[e] * in + i];
      for (int c = 0; c < kChunks; ++c) acc[e][c] += xi * w[c];
    }
  }
  for (int e = 0; e < kExamples; ++e) {
    for (int c = 0; c < kChunks; ++c) Store(ys + rows[e] * out + col + c * kLanes, acc[e][c]);
  }
}

template <int kChunks>
void SceneColumns(const float* xs, const float* wb, const int64_t* rows, int64_t count,
                  int64_t in, int64_t out, int64_t col, float* ys) {
  constexpr int kExamples = 4;
  int64_t k = 0;
  for (; k + kExamples <= count; k += kExamples) {
    SceneBlock<kExamples, kChunks>(xs, wb, rows + k, in, out, col, ys);
  }
  for (; k < count; ++k) SceneBlock<1, kChunks>(xs, wb, rows + k, in, out, col, ys);
}

// out a multiple of kLanes: examples grouped by scene, so a scene's weights stay in cache
// while its examples go through them in blocks of 4, kBlockChunks vectors of output
// columns at a time. With
// `transposed`, w is (S, out, in) and y[b] = x[b] @ w[s]^T: each scene's weights are
// transposed once into a scratch buffer first (20 KiB for 320 x 16).
void SceneMatmulBlocked(const float* xs, const float* ws, const int32_t* scenes,
                        int64_t batch, int64_t in, int64_t num_scenes, int64_t out,
                        bool transposed, float* ys) {
  std::vector<int64_t> start;
  const std::vector<int64_t> order = ByScene(scenes, batch, num_scenes, start);
  std::vector<float> scratch(transposed ? in * out : 0);
  for (int64_t s = 0; s < num_scenes; ++s) {
    const int64_t* rows = order.data() + start[s];
    const int64_t count = start[s + 1] - start[s];
    if (count == 0) continue;
    const float* wb = ws + s * in * out;
    if (transposed) {
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) scratch[i * out + o] = wb[o * in + i];
      }
      wb = scratch.data();
    }
    int64_t col = 0;
    for (; col + kBlockChunks * kLanes <= out; col += kBlockChunks * kLanes) {
      SceneColumns<kBlockChunks>(xs, wb, rows, count, in, out, col, ys);
    }
    for (; col < out; col += kLanes) SceneColumns<1>(xs, wb, rows, count, in, out, col, ys);
  }
}

ffi::Error SceneMatmulAny(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                          ffi::Buffer<ffi::S32> scene, ffi::ResultBuffer<ffi::F32> y,
                          bool transposed) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  const int64_t in_axis = transposed ? 2 : 1;
  if (xd.size() != 2 || wd.size() != 3 || wd[in_axis] != xd[1] ||
      scene.element_count() != xd[0]) {
    return ffi::Error::InvalidArgument(
        transposed ? "SceneMatmulTransposed: expected x (B, H), w (S, I, H), scene (B,)"
                   : "SceneMatmul: expected x (B, I), w (S, I, H), scene (B,)");
  }
  const int64_t batch = xd[0], in = xd[1], num_scenes = wd[0], out = wd[3 - in_axis];
  const float* xs = x.typed_data();
  const float* ws = w.typed_data();
  const int32_t* scenes = scene.typed_data();
  float* ys = y->typed_data();
  if (transposed && out % 16 != 0) {
    return ffi::Error::InvalidArgument("SceneMatmulTransposed: I must be a multiple of 16");
  }
  if (out % kLanes == 0) {
    SceneMatmulBlocked(xs, ws, scenes, batch, in, num_scenes, out, transposed, ys);
#if MTMS_VECTOR_BYTES == 64
  } else if (out == 8) {
    SceneMatmulLoop<Vec8, 1>(xs, ws, scenes, batch, in, num_scenes, out, ys);
#endif
  } else {
    SceneMatmulLoop<Vec, 0>(xs, ws, scenes, batch, in, num_scenes, out, ys);
  }
  return ffi::Error::Success();
}

ffi::Error SceneMatmulImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::Buffer<ffi::S32> scene, ffi::ResultBuffer<ffi::F32> y) {
  return SceneMatmulAny(x, w, scene, y, /*transposed=*/false);
}

ffi::Error SceneMatmulTransposedImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                     ffi::Buffer<ffi::S32> scene,
                                     ffi::ResultBuffer<ffi::F32> y) {
  return SceneMatmulAny(x, w, scene, y, /*transposed=*/true);
}

// g[s] = sum over the scene's examples b of outer(x[b], dy[b]), out = kChunks vectors V
// wide: kRows rows of g[s] at a time stay in registers while the scene's examples stream
// by, so each row of g is written once. Sums run in batch order within a scene.
template <typename V, int kChunks, int kRows>
void SceneOuterBlocked(const float* __restrict__ xs, const float* __restrict__ dys,
                       const std::vector<int64_t>& order, const std::vector<int64_t>& start,
                       int64_t in, float* __restrict__ gs) {
  constexpr int kVLanes = sizeof(V) / sizeof(float);
  constexpr int kOut = kChunks * kVLanes;
  const int64_t num_scenes = static_cast<int64_t>(start.size()) - 1;
  for (int64_t s = 0; s < num_scenes; ++s) {
    float* __restrict__ gb = gs + s * in * kOut;
    for (int64_t i0 = 0; i0 < in; i0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, in - i0));
      V acc[kRows][kChunks] = {};
      for (int64_t k = start[s]; k < start[s + 1]; ++k) {
        const int64_t b = order[k];
        V d[kChunks];
        for (int c = 0; c < kChunks; ++c) d[c] = Load<V>(dys + b * kOut + c * kVLanes);
        const float* __restrict__ xb = xs + b * in + i0;
        if (rows == kRows) {    // a constant trip count: the sums stay in registers
          for (int r = 0; r < kRows; ++r) {
            for (int c = 0; c < kChunks; ++c) acc[r][c] += xb[r] * d[c];
          }
        } else {
          for (int r = 0; r < rows; ++r) {
            for (int c = 0; c < kChunks; ++c) acc[r][c] += xb[r] * d[c];
          }
        }
      }
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < kChunks; ++c) Store(gb + (i0 + r) * kOut + c * kVLanes, acc[r][c]);
      }
    }
  }
}

ffi::Error SceneOuterImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::Buffer<ffi::S32> scene, ffi::ResultBuffer<ffi::F32> g) {
  const auto xd = x.dimensions();
  const auto dd = dy.dimensions();
  const auto gd = g->dimensions();
  if (xd.size() != 2 || dd.size() != 2 || dd[0] != xd[0] || gd.size() != 3 ||
      gd[1] != xd[1] || gd[2] != dd[1] || scene.element_count() != xd[0]) {
    return ffi::Error::InvalidArgument(
        "SceneOuter: expected x (B, I), dy (B, H), scene (B,) and a result (S, I, H)");
  }
  const int64_t batch = xd[0], in = xd[1], out = dd[1], num_scenes = gd[0];
  const float* __restrict__ xs = x.typed_data();
  const float* __restrict__ dys = dy.typed_data();
  float* __restrict__ gs = g->typed_data();
  std::vector<int64_t> start;
  const std::vector<int64_t> order = ByScene(scene.typed_data(), batch, num_scenes, start);
  if (out == kLanes) {
    SceneOuterBlocked<Vec, 1, 8>(xs, dys, order, start, in, gs);
  } else if (out == 2 * kLanes) {
    SceneOuterBlocked<Vec, 2, kOuterRows>(xs, dys, order, start, in, gs);
#if MTMS_VECTOR_BYTES == 64
  } else if (out == 8) {
    SceneOuterBlocked<Vec8, 1, 8>(xs, dys, order, start, in, gs);
#endif
  } else {
    std::memset(gs, 0, sizeof(float) * num_scenes * in * out);
    for (int64_t s = 0; s < num_scenes; ++s) {
      float* __restrict__ gb = gs + s * in * out;
      for (int64_t k = start[s]; k < start[s + 1]; ++k) {
        const float* __restrict__ xb = xs + order[k] * in;
        const float* __restrict__ db = dys + order[k] * out;
        for (int64_t i = 0; i < in; ++i) {
          for (int64_t h = 0; h < out; ++h) gb[i * out + h] += xb[i] * db[h];
        }
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

// The three kernels take the same buffers: (activations or gradients, weights or
// activations, scene of each example) -> one float output.
#define SCENE_HANDLER(name, impl)                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, impl,                         \
                                ffi::Ffi::Bind()                    \
                                    .Arg<ffi::Buffer<ffi::F32>>()   \
                                    .Arg<ffi::Buffer<ffi::F32>>()   \
                                    .Arg<ffi::Buffer<ffi::S32>>()   \
                                    .Ret<ffi::Buffer<ffi::F32>>())

SCENE_HANDLER(SceneMatmul, SceneMatmulImpl);
SCENE_HANDLER(SceneMatmulTransposed, SceneMatmulTransposedImpl);
SCENE_HANDLER(SceneOuter, SceneOuterImpl);
