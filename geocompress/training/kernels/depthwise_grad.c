/* Weight gradient of a depthwise, stride-1, "same"-padded convolution on channels-last float32
 * tensors:  dw[c][a][b] = sum over n, h, w of  go[n][h][w][c] * x[n][h + a - ph][w + b - pw][c].
 *
 * oneDNN's CPU kernel for this is several times slower than the whole bf16 forward of the dense
 * layers around it (catalogs/models/mgssnet-training.md). Here each block of 16 channels keeps
 * its KH x KW accumulators in vector registers (the kernel sizes MGSSNet uses are compiled as
 * constants) and streams the images once. Every image is reduced into its own partial sum and
 * the partial sums are added in image order, so the result does not depend on the thread count.
 */
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

#define LOAD(p) (*(const v16 *)(p))

static inline __attribute__((always_inline)) void
block(const float *restrict x, const float *restrict go, float *restrict acc, long H, long W,
      long C, long c0, const long KH, const long KW, long ph, long pw) {
    v16 s[KH * KW], gsum = {0};
    for (long t = 0; t < KH * KW; t++) s[t] = (v16){0};
    for (long h = 0; h < H; h++) {
        for (long w = 0; w < W; w++) {
            v16 g = LOAD(go + (h * W + w) * C + c0);
            gsum += g;
            for (long a = 0; a < KH; a++) {
                long hh = h + a - ph;
                if (hh < 0 || hh >= H) continue;
                for (long b = 0; b < KW; b++) {
                    long ww = w + b - pw;
                    if (ww < 0 || ww >= W) continue;
                    s[a * KW + b] += g * LOAD(x + (hh * W + ww) * C + c0);
                }
            }
        }
    }
    for (long t = 0; t < KH * KW; t++)
        for (int i = 0; i < 16; i++) acc[t * C + c0 + i] = s[t][i];
    for (int i = 0; i < 16; i++) acc[KH * KW * C + c0 + i] = gsum[i];
}

#define SPECIAL(kh, kw)                                                                         \
    static void image_##kh##x##kw(const float *x, const float *go, float *acc, long H, long W,  \
                                  long C, long ph, long pw) {                                  \
        for (long c0 = 0; c0 < C; c0 += 16) block(x, go, acc, H, W, C, c0, kh, kw, ph, pw);     \
    }
SPECIAL(1, 5) SPECIAL(5, 1) SPECIAL(1, 7) SPECIAL(7, 1) SPECIAL(1, 9) SPECIAL(9, 1)
SPECIAL(3, 3) SPECIAL(5, 5)

/* any other size: accumulators in memory, vectorized over channels */
static void image_generic(const float *restrict x, const float *restrict go, float *restrict acc,
                          long H, long W, long C, long KH, long KW, long ph, long pw) {
    for (long h = 0; h < H; h++)
        for (long w = 0; w < W; w++) {
            const float *restrict g = go + (h * W + w) * C;
            for (long c = 0; c < C; c++) acc[KH * KW * C + c] += g[c];
            for (long a = 0; a < KH; a++) {
                long hh = h + a - ph;
                if (hh < 0 || hh >= H) continue;
                for (long b = 0; b < KW; b++) {
                    long ww = w + b - pw;
                    if (ww < 0 || ww >= W) continue;
                    const float *restrict xp = x + (hh * W + ww) * C;
                    float *restrict ac = acc + (a * KW + b) * C;
                    for (long c = 0; c < C; c++) ac[c] += g[c] * xp[c];
                }
            }
        }
}

/* out: C x KH x KW (a depthwise Conv2d weight's layout); bias_out: C, the sum of go over positions.
 * Returns 0, or -1 when out of memory. */
int depthwise_weight_grad(const float *x, const float *go, float *out, float *bias_out, long N,
                          long H, long W, long C, long KH, long KW, long ph, long pw, int threads) {
    long taps = KH * KW, slots = taps + 1; /* the last slot of each image holds its bias sum */
    float *part = calloc((size_t)(N * slots * C), sizeof(float));
    if (!part) return -1;
    int special = C % 16 == 0;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++) {
        const float *xn = x + n * H * W * C, *gn = go + n * H * W * C;
        float *acc = part + n * slots * C;
#define CASE(kh, kw) \
        if (special && KH == kh && KW == kw) { image_##kh##x##kw(xn, gn, acc, H, W, C, ph, pw); continue; }
        CASE(1, 5) CASE(5, 1) CASE(1, 7) CASE(7, 1) CASE(1, 9) CASE(9, 1) CASE(3, 3) CASE(5, 5)
        image_generic(xn, gn, acc, H, W, C, KH, KW, ph, pw);
    }
    for (long c = 0; c < C; c++)
        for (long t = 0; t < slots; t++) {
            float s = 0.0f;
            for (long n = 0; n < N; n++) s += part[(n * slots + t) * C + c];
            if (t < taps) out[c * taps + t] = s;
            else bias_out[c] = s;
        }
    free(part);
    return 0;
}
