// A CPU emulator for the CUDA kernels of Gemma4's MoE graph step (issue 20 item 2), run by KernelEmulationTests:
// expert_gemv (both paths, the out-of-range id), the gemv it repeats at M = 1 (bit for bit), sum_in_id_order. Each warp
// runs as 32 std::threads with a barrier for __shfl_xor_sync; blocks and warps one after the other (these kernels never
// sync a block). f16 is not emulated (its conversions are PTX asm). Built with g++ -std=c++20 -pthread.
#include <cstdio>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <barrier>
#include <thread>
#include <vector>
#include <random>
#include <functional>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
struct dim3_ { unsigned x, y, z; };
thread_local dim3_ threadIdx, blockIdx;
dim3_ blockDim, gridDim;
struct uint4 { unsigned x, y, z, w; };
static inline uint4 __ldg(const uint4* p) { return *p; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline void __syncthreads() {}
static inline int atomicCAS(int* a, int c, int v) { int o = *a; if (o == c) *a = v; return o; }
// one warp at a time: 32 persistent std::threads (the lanes) share these
static float g_vals[32];
static std::barrier<> g_bar(32);
static inline float __shfl_xor_sync(unsigned, float v, int o) {
  int lane = threadIdx.x & 31;
  g_vals[lane] = v; g_bar.arrive_and_wait();
  float r = g_vals[lane ^ o]; g_bar.arrive_and_wait();
  return r;
}
#include "kernels.inc"   // written by KernelEmulationTests: the kernels as the drivers instantiate them, per dtype namespace
// runs kernel over grid (gx, gy) x threads, warp by warp, on the 32 lane threads (started once)
static std::function<void()> g_job;
static unsigned g_warp, g_bx, g_by;
static bool g_quit = false;
static std::barrier<> g_start(33), g_done(33);
static std::vector<std::thread> g_lanes;
static void lanes() {
  for (unsigned l = 0; l < 32; ++l)
    g_lanes.emplace_back([l] {
      for (;;) {
        g_start.arrive_and_wait();
        if (g_quit) return;
        threadIdx = {g_warp * 32 + l, 0, 0}; blockIdx = {g_bx, g_by, 0};
        g_job();
        g_done.arrive_and_wait();
      }
    });
}
static void stop() { g_quit = true; g_start.arrive_and_wait(); for (auto& t : g_lanes) t.join(); }
static void launch(unsigned gx, unsigned gy, unsigned threads, std::function<void()> k) {
  gridDim = {gx, gy, 1}; blockDim = {threads, 1, 1}; g_job = k;
  for (unsigned by = 0; by < gy; ++by) for (unsigned bx = 0; bx < gx; ++bx)
    for (unsigned w = 0; w < threads / 32; ++w) {
      g_warp = w; g_bx = bx; g_by = by;
      g_start.arrive_and_wait();
      g_done.arrive_and_wait();
    }
}
static unsigned short tobf(float f) { return k_bf16::f_to_bf16(f); }
static float frombf(unsigned short h) { return k_bf16::bf16_to_f(h); }

template <bool BF> static int run(int E, int N, int K, int slots, int rowsX, int kpad) {
  // stacked [E, N, kpad] with the view [:, :, :K]; x [rowsX, K] with row stride K
  std::mt19937 rng(7 + E * 31 + K); std::normal_distribution<float> nd;
  std::vector<float> wf((size_t)E * N * kpad), xf((size_t)rowsX * K);
  for (auto& v : wf) v = nd(rng); for (auto& v : xf) v = nd(rng);
  if (BF) { for (auto& v : wf) v = frombf(tobf(v)); for (auto& v : xf) v = frombf(tobf(v)); }
  size_t es = BF ? 2 : 4;
  std::vector<char> W(wf.size() * es + 64), X(xf.size() * es + 64), C((size_t)slots * N * es + 64), G((size_t)N * es + 64);
  char* w = (char*)(((uintptr_t)W.data() + 15) & ~(uintptr_t)15); char* x = (char*)(((uintptr_t)X.data() + 15) & ~(uintptr_t)15);
  for (size_t i = 0; i < wf.size(); ++i) { if (BF) ((unsigned short*)w)[i] = tobf(wf[i]); else ((float*)w)[i] = wf[i]; }
  for (size_t i = 0; i < xf.size(); ++i) { if (BF) ((unsigned short*)x)[i] = tobf(xf[i]); else ((float*)x)[i] = xf[i]; }
  std::vector<long long> ids(slots); for (int s = 0; s < slots; ++s) ids[s] = (s * 3 + 1) % E;
  if (slots > 1) ids[slots - 1] = E;   // out of range: NaN row
  long long ldx = rowsX == 1 ? 0 : K, lde = (long long)N * kpad, ldb = kpad;
  int vec = 16 / (int)es;
  int vecok = K % vec == 0 && ldx % vec == 0 && ldb % vec == 0 && lde % vec == 0;
  launch((N + 7) / 8, slots, 256, [&] { if (BF) k_bf16::expert_gemv(x, ldx, w, ids.data(), lde, ldb, C.data(), E, N, K, vecok);
                                         else k_f32::expert_gemv(x, ldx, w, ids.data(), lde, ldb, C.data(), E, N, K, vecok); });
  int bad = 0; double maxerr = 0;
  for (int s = 0; s < slots; ++s) {
    long long e = ids[s];
    const char* xs = x + (size_t)s * ldx * es;
    // the gemv kernel at M = 1 on expert e's [N, K] (only on the 16-byte path: its precondition)
    if (vecok && e < E) launch((N + 7) / 8, 1, 256, [&] { if (BF) k_bf16_gemv::gemv(xs, K, w + e * lde * es, ldb, G.data(), 1, N, K);
                                                        else k_f32_gemv::gemv(xs, K, w + e * lde * es, ldb, G.data(), 1, N, K); });
    for (int n = 0; n < N; ++n) {
      float got = BF ? frombf(((unsigned short*)C.data())[s * N + n]) : ((float*)C.data())[s * N + n];
      if (e >= E) { if (!std::isnan(got)) { bad++; } continue; }
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) { double p = (double)xf[(rowsX == 1 ? 0 : s) * K + k] * wf[(size_t)e * N * kpad + (size_t)n * kpad + k]; ref += p; mag += std::fabs(p); }
      double err = std::fabs(got - ref) / (mag + 1e-6); if (err > maxerr) maxerr = err;
      if (err > (BF ? 1e-2 : 1e-5)) bad++;
      if (vecok) { float g = BF ? frombf(((unsigned short*)G.data())[n]) : ((float*)G.data())[n]; if (memcmp(&g, &got, 4)) bad++; }
    }
  }
  printf("%s E %d N %d K %d kpad %d slots %d rowsX %d vecok %d: max rel err %.2e, %d bad\n", BF ? "bf16" : "f32 ", E, N, K, kpad, slots, rowsX, vecok, maxerr, bad);
  return bad;
}

template <bool BF> static int sum_test() {
  int slots = 5, n = 300; std::vector<long long> ids = {7, 1, 4, 1, 0};
  std::mt19937 rng(3); std::normal_distribution<float> nd;
  std::vector<float> yf(slots * n); for (auto& v : yf) v = BF ? frombf(tobf(nd(rng))) : nd(rng);
  size_t es = BF ? 2 : 4; std::vector<char> Y(yf.size() * es), O(n * es);
  for (size_t i = 0; i < yf.size(); ++i) { if (BF) ((unsigned short*)Y.data())[i] = tobf(yf[i]); else ((float*)Y.data())[i] = yf[i]; }
  launch(2, 1, 256, [&] { if (BF) k_bf16::sum_in_id_order(Y.data(), ids.data(), O.data(), slots, n); else k_f32::sum_in_id_order(Y.data(), ids.data(), O.data(), slots, n); });
  int order[5] = {4, 1, 3, 2, 0}, bad = 0;   // (0,4) (1,1) (1,3) (4,2) (7,0)
  for (int j = 0; j < n; ++j) {
    float acc = 0; for (int r = 0; r < slots; ++r) { acc = acc + yf[order[r] * n + j]; if (BF) acc = frombf(tobf(acc)); }
    float got = BF ? frombf(((unsigned short*)O.data())[j]) : ((float*)O.data())[j];
    if (memcmp(&acc, &got, 4)) bad++;
  }
  printf("%s sum_in_id_order: %d bad\n", BF ? "bf16" : "f32 ", bad);
  return bad;
}

// argv[1] "quick": the two tiny cases and the sums only (the planted-bug run)
int main(int argc, char** argv) {
  lanes();
  int bad = 0;
  if (argc > 1 && !strcmp(argv[1], "quick")) {
    bad += run<false>(4, 64, 32, 3, 3, 32); bad += run<true>(4, 32, 64, 2, 1, 64); bad += sum_test<false>(); bad += sum_test<true>();
    printf(bad ? "FAILED\n" : "all good\n");
    stop();
    return bad != 0;
  }
  bad += run<false>(4, 32, 64, 2, 1, 64);      // tiny gate/up (fp32), one row for every slot
  bad += run<true>(4, 32, 64, 2, 1, 64);
  bad += run<false>(4, 64, 32, 3, 3, 32);      // tiny down, one row per slot
  bad += run<true>(4, 64, 32, 3, 3, 32);
  bad += run<true>(5, 16, 1536, 3, 1, 1536);   // the unrolled loop (K > 3 * 32 * VEC)
  bad += run<false>(5, 16, 768, 3, 3, 768);
  bad += run<true>(3, 9, 13, 3, 1, 14);        // scalar path: odd K, padded rows
  bad += run<false>(3, 9, 13, 3, 3, 14);
  bad += sum_test<false>(); bad += sum_test<true>();
  printf(bad ? "FAILED\n" : "all good\n");
  stop();
  return bad != 0;
}
