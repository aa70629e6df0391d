/* 3 x 3 max pooling, stride 1, padding 1 (SSIF-AM's), on channels-last float32 tensors, with a
 * backward written as a gather so that it vectorizes over channels.
 *
 * PyTorch's CPU max_pool2d_with_indices forward + backward cost SSIF-AM more than its seven
 * depthwise convolutions together (catalogs/models/mgssnet-training.md). Here the forward keeps
 * the winning offset of each output as one byte (0..8, row-major in the window, the first maximum
 * on ties) and the backward gathers, for each input position, the gradients of the outputs whose
 * window it won. Images are independent, so the result does not depend on the thread count.
 */
#include <math.h>
#include <stdint.h>

void max_pool3_forward(const float *x, float *out, uint8_t *arg, long N, long H, long W, long C,
                       int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++) {
        const float *xn = x + n * H * W * C;
        for (long h = 0; h < H; h++)
            for (long w = 0; w < W; w++) {
                float *restrict o = out + ((n * H + h) * W + w) * C;
                uint8_t *restrict a = arg + ((n * H + h) * W + w) * C;
                for (long c = 0; c < C; c++) { o[c] = -INFINITY; a[c] = 4; }
                for (int k = 0; k < 9; k++) {
                    long hh = h + k / 3 - 1, ww = w + k % 3 - 1;
                    if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                    const float *restrict xp = xn + (hh * W + ww) * C;
#pragma omp simd
                    for (long c = 0; c < C; c++) o[c] = xp[c] > o[c] ? xp[c] : o[c];
                }
                /* the first offset in the window that holds the maximum: scan backwards */
                for (int k = 8; k >= 0; k--) {
                    long hh = h + k / 3 - 1, ww = w + k % 3 - 1;
                    if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                    const float *restrict xp = xn + (hh * W + ww) * C;
#pragma omp simd
                    for (long c = 0; c < C; c++) a[c] = xp[c] == o[c] ? (uint8_t)k : a[c];
                }
            }
    }
}

void max_pool3_backward(const float *go, const uint8_t *arg, float *gx, long N, long H, long W,
                        long C, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++)
        for (long h = 0; h < H; h++)
            for (long w = 0; w < W; w++) {
                float *restrict g = gx + ((n * H + h) * W + w) * C;
                for (long c = 0; c < C; c++) g[c] = 0.0f;
                /* the output at (h - dh, w - dw) took this input if its offset was (dh + 1, dw + 1) */
                for (int k = 0; k < 9; k++) {
                    long ho = h - (k / 3 - 1), wo = w - (k % 3 - 1);
                    if (ho < 0 || ho >= H || wo < 0 || wo >= W) continue;
                    const float *restrict gp = go + ((n * H + ho) * W + wo) * C;
                    const uint8_t *restrict ap = arg + ((n * H + ho) * W + wo) * C;
#pragma omp simd
                    for (long c = 0; c < C; c++) g[c] += ap[c] == k ? gp[c] : 0.0f;
                }
            }
}
