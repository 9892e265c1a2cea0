// conv_narrow.cu — backward data of a convolution whose input has few channels (C <= 4): the discriminator's
// input gradient and, since conv_transpose2d's forward is this same sum, the generator's image layer
// (64 channels -> 3 or 1).
//
// As conv.cu's implicit GEMM this is M = C rows: even the 16-row tile is 3/4 or more padding, and every K step
// gathers dy with integer divisions. Here a thread owns one input pixel position in IMGS images, all C channels
// of each, and sums directly over the stride-phase taps (see "Stride-phase decomposition" in conv.cu):
//
//   dx[n, c, ih, iw] = sum_o sum_{t, u} w[o, c, rh + SH*t, rw + SW*u] * dy[n, o, ohb - t, owb - u]
//
// with (rh, rw) = the pixel's phase, the residues of (ih + PH, iw + PW) mod (SH, SW), and (ohb, owb) =
// ((ih + PH - rh) / SH, (iw + PW - rw) / SW), exact. Everything that depends on the pixel (phase, which taps
// exist and land inside dy, their weight offsets) is decoded once, before the loop over o. The tap loops are
// unrolled to the compile-time bound T x T, so a tap's dy load is an immediate offset from its row's address;
// per o and live tap the body is one shared-memory load of the tap's C weights (a float4, one address for the
// whole warp: a broadcast), IMGS loads of dy (consecutive lanes read consecutive ow: coalesced) and IMGS*C
// FMAs. The IMGS images share each weight load; images past N repeat the last one and are not stored.
//
// Mapping: warp w of the grid takes the phase w % (SH*SW) and 32 consecutive positions of the largest phase's
// grid [ceil(N / IMGS), ceil(H / SH), ceil(W / SW)]; a phase with fewer rows or columns leaves the rest idle.
// The phases of one position group are consecutive warps, of one block when SH*SW divides its 8 warps (DCGAN:
// 4 phases, 2 position groups per block), so the 16 reads of each dy element (4 phases x 4 taps) meet in that
// SM's L1 rather than in L2.
//
// Weights are staged in shared memory as [o][r][s] float4 (channels 0..C-1, the rest zero), WTAPS taps at a
// time: chunks of WTAPS / (KH*KW) output channels (the launch code requires KH*KW <= WTAPS).
//
// Each output element is summed over o, then t, then u, in the same order on every run (no atomics). No inline
// PTX: the same source runs on the GPU (NVRTC) and on the CPU emulation.

#include "common.cuh"

namespace narrow {

constexpr int THREADS = 256;  // blockDim = (256, 1, 1)
constexpr int IMGS = 4;       // images per thread: weight loads per FMA = 1 / (IMGS * C)
constexpr int WTAPS = 1024;   // float4 weight taps in shared memory (16 KB)

// C channels; T = the most taps per dimension of any phase, ceil(KH / SH) and ceil(KW / SW) <= T.
template <int C, int T>
__device__ __forceinline__ void bwd_data(const float* __restrict__ dy, const float* __restrict__ w,
                                         float* __restrict__ dx, int N, int H, int W, int O, int KH, int KW,
                                         int Ho, int Wo, int SH, int SW, int PH, int PW) {
    static_assert(C >= 1 && C <= 4, "one float4 holds a tap's channels");
    static_assert(T * T <= 32, "one bit per tap");
    __shared__ float4 ws[WTAPS];
    const int KHW = KH * KW;
    const int HoWo = Ho * Wo;

    // This warp's phase, and this thread's position (image group g, phase row q, phase column v).
    const int nphase = SH * SW;
    const int warp = blockIdx.x * (THREADS / 32) + threadIdx.x / 32;
    const int phase = warp % nphase;
    const int rh = phase / SW;
    const int rw = phase - rh * SW;
    const int Hq = (H + SH - 1) / SH;
    const int Wq = (W + SW - 1) / SW;
    const int pos = (warp / nphase) * 32 + threadIdx.x % 32;
    const int g = pos / (Hq * Wq);
    const int qv = pos - g * (Hq * Wq);
    const int q = qv / Wq;
    const int ih = ((rh - PH) % SH + SH) % SH + SH * q;  // the phase's first row, then every SH-th
    const int iw = ((rw - PW) % SW + SW) % SW + SW * (qv - q * Wq);
    const bool active = g * IMGS < N && ih < H && iw < W;

    // Taps of the phase (r = rh + SH*t, s = rw + SW*u): bit t*T + u of `live` says the tap exists and lands
    // inside dy. Its dy element is at (ohb - t, owb - u).
    const int ohb = (ih + PH - rh) / SH;  // exact and >= 0: ih + PH = rh (mod SH) and ih + PH >= rh
    const int owb = (iw + PW - rw) / SW;
    const int Rt = rh < KH ? (KH - rh + SH - 1) / SH : 0;
    const int St = rw < KW ? (KW - rw + SW - 1) / SW : 0;
    unsigned live = 0;
    int wrow[T];  // weight index of tap (t, 0) within one output channel's taps
#pragma unroll
    for (int t = 0; t < T; ++t) {
        wrow[t] = (rh + SH * t) * KW + rw;
#pragma unroll
        for (int u = 0; u < T; ++u) {
            const bool in = t < Rt && u < St && ohb - t >= 0 && ohb - t < Ho && owb - u >= 0 && owb - u < Wo;
            live |= (unsigned)in << (t * T + u);
        }
    }

    // dy at (ohb - t, owb) in each image, for the current o (advanced by Ho*Wo per o); tap u is u floats
    // before it, an immediate offset.
    const float* rows[T][IMGS];
#pragma unroll
    for (int p = 0; p < IMGS; ++p) {
        const float* img = dy + (size_t)min(g * IMGS + p, N - 1) * O * HoWo;
#pragma unroll
        for (int t = 0; t < T; ++t) rows[t][p] = img + (ohb - t) * Wo + owb;
    }

    float acc[IMGS][C] = {};
    const int ochunk = WTAPS / KHW;
    for (int o0 = 0; o0 < O; o0 += ochunk) {
        const int oc = min(ochunk, O - o0);
        __syncthreads();  // everyone is done with the previous chunk
        for (int i = threadIdx.x; i < oc * KHW; i += THREADS) {
            const int ol = i / KHW;
            const float* src = w + (size_t)(o0 + ol) * C * KHW + (i - ol * KHW);
            float4 v = make_float4(__ldg(src), 0.0f, 0.0f, 0.0f);
            if (C > 1) v.y = __ldg(src + KHW);
            if (C > 2) v.z = __ldg(src + 2 * KHW);
            if (C > 3) v.w = __ldg(src + 3 * KHW);
            ws[i] = v;
        }
        __syncthreads();
        if (!active) continue;
        for (int o = 0; o < oc; ++o) {
            const float4* wo = ws + o * KHW;
#pragma unroll
            for (int t = 0; t < T; ++t) {
#pragma unroll
                for (int u = 0; u < T; ++u) {
                    if (!(live & (1u << (t * T + u)))) continue;
                    const float4 wv = wo[wrow[t] + SW * u];
                    const float wc[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
                    for (int p = 0; p < IMGS; ++p) {
                        const float d = __ldg(rows[t][p] - u);
#pragma unroll
                        for (int c = 0; c < C; ++c) acc[p][c] = fmaf(wc[c], d, acc[p][c]);
                    }
                }
#pragma unroll
                for (int p = 0; p < IMGS; ++p) rows[t][p] += HoWo;
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int p = 0; p < IMGS; ++p) {
        const int n = g * IMGS + p;
        if (n >= N) break;
        float* out = dx + ((size_t)n * C * H + ih) * W + iw;
#pragma unroll
        for (int c = 0; c < C; ++c) out[(size_t)c * H * W] = acc[p][c];
    }
}

}  // namespace narrow

// ---- entry points ------------------------------------------------------------------------------------------
// dx [N, C, H, W] from dy [N, O, Ho, Wo] and w [O, C, KH, KW]; one entry per channel count C (the C argument
// must equal it: the size arguments are those of every conv.cu kernel) and per tap bound T (_t2: ceil(KH/SH)
// and ceil(KW/SW) <= 2, e.g. 4x4 stride 2; _t4: <= 4). Launch: blockDim = 256, a 1-D grid of
// ceil(SH*SW * ceil(P / 32) / 8) blocks for P = ceil(N / 4) * ceil(H / SH) * ceil(W / SW) positions; requires
// KH*KW <= 1024. Writes every element of dx.

extern "C" __global__ void conv2d_bwd_data_narrow_c1_t2_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<1, 2>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c2_t2_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<2, 2>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c3_t2_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<3, 2>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c4_t2_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<4, 2>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c1_t4_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<1, 4>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c2_t4_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<2, 4>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c3_t4_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<3, 4>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}

extern "C" __global__ void conv2d_bwd_data_narrow_c4_t4_f32(
    const float* dy, const float* w, float* dx, int N, int C, int H, int W, int O, int KH, int KW, int Ho, int Wo,
    int SH, int SW, int PH, int PW) {
    narrow::bwd_data<4, 4>(dy, w, dx, N, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW);
}
