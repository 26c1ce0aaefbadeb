#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// o[n0 .. n0+NC) += sum over j of val[j] * w[idx[j], n0 .. n0+NC), fused multiply-adds in j
// order from zero (one accumulator per output).
template <int NC>
inline void block_chunk(const int32_t* idx, const float* val, int cnt, const float* w,
                        int64_t N, int64_t n0, float* o) {
#ifdef __AVX512F__
  constexpr int R = NC / 16;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int j = 0; j < cnt; ++j) {
    const float* row = w + static_cast<int64_t>(idx[j]) * N + n0;
    const __m512 v = _mm512_set1_ps(val[j]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 16 * r), acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float* out = o + n0 + 16 * r;
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), acc[r]));
  }
#else
  float acc[NC];
  for (int n = 0; n < NC; ++n) acc[n] = 0.f;
  for (int j = 0; j < cnt; ++j) {
    const float* row = w + static_cast<int64_t>(idx[j]) * N + n0;
    const float v = val[j];
    for (int n = 0; n < NC; ++n) acc[n] = std::fma(v, row[n], acc[n]);
  }
  for (int n = 0; n < NC; ++n) o[n0 + n] += acc[n];
#endif
}

inline void block_tail(const int32_t* idx, const float* val, int cnt, const float* w,
                       int64_t N, int64_t n0, float* o) {
  for (int64_t n = n0; n < N; ++n) {
    float acc = 0.f;
    for (int j = 0; j < cnt; ++j) acc = std::fma(val[j], w[static_cast<int64_t>(idx[j]) * N + n], acc);
    o[n] += acc;
  }
}

// The nonzero inputs of x[k0 .. k1): their indices and values, in order; returns the count.
inline int nonzeros(const float* x, int64_t k0, int64_t k1, int32_t* idx, float* val) {
  int cnt = 0;
  int64_t k = k0;
#ifdef __AVX512F__
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; k + 16 <= k1; k += 16) {
    const __m512 v = _mm512_loadu_ps(x + k);
    const __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512i ks = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(k)), lane);
    _mm512_storeu_si512(idx + cnt, _mm512_maskz_compress_epi32(nz, ks));
    _mm512_storeu_ps(val + cnt, _mm512_maskz_compress_ps(nz, v));
    cnt += __builtin_popcount(static_cast<unsigned>(nz));
  }
#endif
  for (; k < k1; ++k) {  // branch-free: a mispredicted branch per spike costs more than this
    idx[cnt] = static_cast<int32_t>(k);
    val[cnt] = x[k];
    cnt += (x[k] != 0.f);
  }
  return cnt;
}

}  // namespace

// x [M, K] and wt [K, N] contiguous float32, bias [N] or empty: the output [M, N].
torch::Tensor sparse_linear(torch::Tensor x, torch::Tensor wt, torch::Tensor bias, int64_t kc) {
  const int64_t M = x.size(0), K = x.size(1), N = wt.size(1);
  auto out = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  const float* W = wt.data_ptr<float>();
  const float* B = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* O = out.data_ptr<float>();
  constexpr int NC = 128;  // outputs per accumulator set: 8 AVX-512 registers
  constexpr int64_t TM = 32;  // rows per tile: a tile reuses each block of weights from cache
  const int64_t stride = kc + 16;
  const int64_t tiles = (M + TM - 1) / TM;
  // tiles dealt round-robin: spike density drifts along the rows (time steps, tokens)
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), tiles);
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    std::vector<int32_t> idx(TM * stride);
    std::vector<float> val(TM * stride);
    int cnt[TM];
    for (int64_t worker = w0; worker < w1; ++worker)
    for (int64_t tile = worker; tile < tiles; tile += workers) {
      const int64_t m0 = tile * TM, rows = std::min(TM, M - m0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t n = 0; n < N; ++n) O[(m0 + r) * N + n] = B ? B[n] : 0.f;
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t k1 = std::min(K, k0 + kc);
        for (int64_t r = 0; r < rows; ++r)
          cnt[r] = nonzeros(X + (m0 + r) * K, k0, k1, &idx[r * stride], &val[r * stride]);
        int64_t n0 = 0;
        for (; n0 + NC <= N; n0 += NC)
          for (int64_t r = 0; r < rows; ++r)
            block_chunk<NC>(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
        for (; n0 + 16 <= N; n0 += 16)
          for (int64_t r = 0; r < rows; ++r)
            block_chunk<16>(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
        for (int64_t r = 0; r < rows; ++r)
          block_tail(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
      }
    }
  });
  return out;
}

// x [M, K] and g [M, N] contiguous float32: gt [K, N] = x^T g, each element summed over the
// rows in order with fused multiply-adds, skipping zero inputs. Threads own ranges of K.
torch::Tensor sparse_weight_grad(torch::Tensor x, torch::Tensor g) {
  const int64_t M = x.size(0), K = x.size(1), N = g.size(1);
  auto gt = torch::zeros({K, N}, g.options());
  const float* X = x.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  float* GT = gt.data_ptr<float>();
  at::parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
    std::vector<int32_t> idx(k1 - k0 + 16);
    std::vector<float> val(k1 - k0 + 16);
    for (int64_t m = 0; m < M; ++m) {
      const int cnt = nonzeros(X + m * K, k0, k1, idx.data(), val.data());
      const float* gr = G + m * N;
      for (int j = 0; j < cnt; ++j) {
        float* out = GT + static_cast<int64_t>(idx[j]) * N;
        const float v = val[j];
        int64_t n = 0;
#ifdef __AVX512F__
        const __m512 vv = _mm512_set1_ps(v);
        for (; n + 16 <= N; n += 16)
          _mm512_storeu_ps(out + n, _mm512_fmadd_ps(vv, _mm512_loadu_ps(gr + n), _mm512_loadu_ps(out + n)));
#endif
        for (; n < N; ++n) out[n] = std::fma(v, gr[n], out[n]);
      }
    }
  });
  return gt;
}
