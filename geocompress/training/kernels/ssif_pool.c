/* SSIF-AM's pooling branch, fused: out = x + avgpool3(x) + maxpool3(x) (3 x 3 windows, stride 1,
 * padding 1; the average over the window's pixels inside the image, the maximum ignoring padding)
 * on channels-last float32 tensors, and its backward written as a gather so that it vectorizes
 * over channels.
 *
 * PyTorch's CPU pooling kernels, forward and backward, and the additions between them cost
 * SSIF-AM more than its seven depthwise convolutions (catalogs/benchmarks.md). The forward keeps
 * the winning offset of each maximum as one byte (0..8, row-major in the window, the first
 * maximum on ties, as PyTorch's max pooling); images are independent, so the result does not
 * depend on the thread count.
 */
#include <math.h>
#include <stdint.h>

static inline long valid(long i, long n) { return (i > 0) + 1 + (i < n - 1); } /* window extent */

#define BLOCK 256 /* channels per pass: fixed-size scratch on the stack, whatever C is */

void ssif_pool_forward(const float *x, float *out, uint8_t *arg, long N, long H, long W, long C,
                       int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++) {
        const float *xn = x + n * H * W * C;
        float mx[BLOCK], sm[BLOCK];
        for (long h = 0; h < H; h++)
            for (long w = 0; w < W; w++)
                for (long c0 = 0; c0 < C; c0 += BLOCK) {
                    long nc = C - c0 < BLOCK ? C - c0 : BLOCK;
                    long at = (h * W + w) * C + c0;
                    float *restrict o = out + n * H * W * C + at;
                    uint8_t *restrict a = arg + n * H * W * C + at;
                    const float *restrict xc = xn + at;
                    float inv = 1.0f / (float)(valid(h, H) * valid(w, W));
                    for (long c = 0; c < nc; c++) { mx[c] = -INFINITY; sm[c] = 0.0f; a[c] = 4; }
                    for (int k = 0; k < 9; k++) {
                        long hh = h + k / 3 - 1, ww = w + k % 3 - 1;
                        if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                        const float *restrict xp = xn + (hh * W + ww) * C + c0;
#pragma omp simd
                        for (long c = 0; c < nc; c++) {
                            /* NaN wins, as in PyTorch's max pooling (its gradient goes there) */
                            mx[c] = (xp[c] > mx[c] || xp[c] != xp[c]) ? xp[c] : mx[c];
                            sm[c] += xp[c];
                        }
                    }
                    /* the first offset in the window that holds the maximum: scan backwards */
                    for (int k = 8; k >= 0; k--) {
                        long hh = h + k / 3 - 1, ww = w + k % 3 - 1;
                        if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                        const float *restrict xp = xn + (hh * W + ww) * C + c0;
#pragma omp simd
                        for (long c = 0; c < nc; c++)
                            a[c] = (xp[c] == mx[c] || (xp[c] != xp[c] && mx[c] != mx[c])) ? (uint8_t)k : a[c];
                    }
#pragma omp simd
                    for (long c = 0; c < nc; c++) o[c] = xc[c] + sm[c] * inv + mx[c];
                }
    }
}

void ssif_pool_backward(const float *go, const uint8_t *arg, float *gx, long N, long H, long W,
                        long C, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++)
        for (long h = 0; h < H; h++)
            for (long w = 0; w < W; w++) {
                float *restrict g = gx + ((n * H + h) * W + w) * C;
                const float *restrict gc = go + ((n * H + h) * W + w) * C;
                for (long c = 0; c < C; c++) g[c] = gc[c];
                /* the output at (ho, wo) = (h - dh, w - dw) saw this input at its offset k */
                for (int k = 0; k < 9; k++) {
                    long ho = h - (k / 3 - 1), wo = w - (k % 3 - 1);
                    if (ho < 0 || ho >= H || wo < 0 || wo >= W) continue;
                    const float *restrict gp = go + ((n * H + ho) * W + wo) * C;
                    const uint8_t *restrict ap = arg + ((n * H + ho) * W + wo) * C;
                    float inv = 1.0f / (float)(valid(ho, H) * valid(wo, W));
#pragma omp simd
                    for (long c = 0; c < C; c++) g[c] += gp[c] * inv + (ap[c] == k ? gp[c] : 0.0f);
                }
            }
}
