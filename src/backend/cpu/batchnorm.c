/* Batch normalisation over (N,C,S) on the CPU: the training and evaluation forwards and the
 * backward, with the fusions of ResNet blocks (residual added after the affine step, then ReLU).
 *
 * The arithmetic follows PyTorch's CPU kernel (aten/src/ATen/native/Normalization.cpp):
 * statistics accumulate in double, running statistics take the unbiased variance, and the
 * output is one multiply-add per element, y = (x - mean)*alpha + shift with alpha =
 * gamma*invstd. Unlike PyTorch's x*alpha + (beta - mean*alpha), subtracting the (float) mean
 * first is exact near the mean, so a channel whose mean is large against its spread keeps its
 * precision; shift = beta + (float mean - exact mean)*alpha absorbs the mean's rounding.
 *
 * Two layouts of the same loops, both memory-bound, each reading its input from memory once
 * for the statistics and once more (often from cache) for the output:
 *  - S > 1: a channel is N rows of S contiguous floats, C*S apart. One thread owns a channel and
 *    vectorises along S. A channel of (64,64,32,32) is 256 KiB, so the second pass finds it in
 *    L2 rather than in memory.
 *  - S == 1 (BatchNorm1d on (N,C)): channels are contiguous along a row, so one thread owns a
 *    tile of adjacent channels and vectorises across them, with per-channel accumulators in
 *    small arrays on its stack.
 * In both, the rows a thread walks lie C*S floats apart and the hardware prefetcher stops at
 * every 4 KiB page, so the first pass over a row prefetches the next one line by line; this
 * recovers the bandwidth of a sequential read.
 * Every channel is reduced in the same order whatever the thread count or tile width, so the
 * results are bitwise independent of the number of threads. */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* Widest channel tile of the S == 1 path: 1 KiB per row, while the accumulators (a few KiB)
 * stay in L1. */
#define BN_TILE 256

/* Rows per block of the S == 1 statistics: a block of a tile (at most 8 KiB) stays in cache
 * between its two passes even when the row stride is a multiple of the cache's way size. */
#define BN_BLOCK 8

/* The run reductions keep BN_LANES independent partial sums (four AVX2 vectors of doubles):
 * one accumulator would wait on the add latency every 4 elements and make the passes
 * compute-bound. Partials are combined in a fixed order. BN_LANES floats are also one 64-byte
 * line, the unit of prefetching. */
#define BN_LANES 16

static vr_status bn_check(int n, int c, int s, int train)
{
    if (n <= 0 || c <= 0 || s <= 0)
        return vr_fail(VR_ERR_SHAPE, "batchnorm", "bad shape (%d,%d,%d)", n, c, s);
    /* as PyTorch's "Expected more than 1 value per channel when training" */
    if (train && (long long)n * s < 2)
        return vr_fail(VR_ERR_SHAPE, "batchnorm",
                       "training needs more than 1 value per channel, got (%d,%d,%d)", n, c, s);
    return VR_OK;
}

/* Channels per tile of the S == 1 path: a tile for every thread where C allows, in whole
 * 64-byte lines (16 floats). */
static int bn_tile_width(int c, int threads)
{
    int w = (c + threads - 1) / threads;
    w = (w + 15) / 16 * 16;
    return w < BN_TILE ? w : BN_TILE;
}

static inline void bn_prefetch(const float *p) { __builtin_prefetch(p, 0, 3); }

/* Asks for the len floats at p, a line at a time. */
static inline void bn_prefetch_run(const float *p, size_t len)
{
    for (size_t j = 0; j < len; j += BN_LANES) bn_prefetch(p + j);
}

/* y (len) = relu?((x - m)*alpha + shift [+ res]) on a run of one channel; v < 0 ? 0 : v lets
 * NaN through, as torch.relu. */
static inline void bn_apply_row(float *y, const float *x, const float *res, size_t len, float m,
                                float alpha, float shift, int relu)
{
    if (res) {
#pragma omp simd
        for (size_t j = 0; j < len; j++) {
            float v = fmaf(x[j] - m, alpha, shift) + res[j];
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    } else {
#pragma omp simd
        for (size_t j = 0; j < len; j++) {
            float v = fmaf(x[j] - m, alpha, shift);
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* The same across a tile of w channels: m, alpha, shift (w) per channel. */
static inline void bn_apply_tile(float *y, const float *x, const float *res, int w,
                                 const float *m, const float *alpha, const float *shift, int relu)
{
    if (res) {
#pragma omp simd
        for (int j = 0; j < w; j++) {
            float v = fmaf(x[j] - m[j], alpha[j], shift[j]) + res[j];
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    } else {
#pragma omp simd
        for (int j = 0; j < w; j++) {
            float v = fmaf(x[j] - m[j], alpha[j], shift[j]);
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* The output pass of a tile: n rows of w channels, `stride` apart, from its per-channel m,
 * alpha, shift (w). */
static void bn_apply_tile_rows(float *y, const float *x, const float *res, size_t n,
                               size_t stride, int w, const float *m, const float *alpha,
                               const float *shift, int relu)
{
    for (size_t i = 0; i < n; i++) {
        size_t o = i * stride;
        if (i + 1 < n) {
            bn_prefetch_run(x + o + stride, (size_t)w);
            if (res) bn_prefetch_run(res + o + stride, (size_t)w);
        }
        bn_apply_tile(y + o, x + o, res ? res + o : NULL, w, m, alpha, shift, relu);
    }
}

/* What the training forward reads and writes per channel besides x and y. */
typedef struct bn_train {
    const float *gamma, *beta;                            /* (C) */
    float *mean, *invstd, *running_mean, *running_var;    /* (C) */
    double momentum, eps, count;                          /* count = N*S */
} bn_train;

/* Finishes channel ch from its mean and sum of squared deviations m2: saves mean and invstd for
 * the backward, updates the running statistics, and gives the affine coefficients around the
 * saved mean. */
static void bn_finish(const bn_train *p, int ch, double mean, double m2, float *alpha,
                      float *shift)
{
    double invstd = 1.0 / sqrt(m2 / p->count + p->eps);
    double unbiased = m2 / (p->count - 1.0);
    p->mean[ch] = (float)mean;
    p->invstd[ch] = (float)invstd;
    p->running_mean[ch] = (float)((1.0 - p->momentum) * p->running_mean[ch] + p->momentum * mean);
    p->running_var[ch] = (float)((1.0 - p->momentum) * p->running_var[ch] + p->momentum * unbiased);
    double a = (double)p->gamma[ch] * invstd;
    *alpha = (float)a;
    *shift = (float)(p->beta[ch] + ((double)p->mean[ch] - mean) * a);
}

/* sum of r (len) in double, prefetching the run `ahead` floats on, line by line (ahead = 0 on
 * a channel's last row, which then prefetches itself: harmless) */
static inline double bn_sum_run(const float *r, size_t len, size_t ahead)
{
    double acc[BN_LANES] = {0}, s = 0.0;
    size_t j = 0;
    for (; j + BN_LANES <= len; j += BN_LANES) {
        bn_prefetch(r + ahead + j);
#pragma omp simd
        for (int k = 0; k < BN_LANES; k++) acc[k] += r[j + k];
    }
    for (; j < len; j++) s += r[j];
    for (int k = 0; k < BN_LANES; k++) s += acc[k];
    return s;
}

/* sum of (r - mu)^2 over r (len) in double */
static inline double bn_dev_run(const float *r, size_t len, double mu)
{
    double acc[BN_LANES] = {0}, s = 0.0;
    size_t j = 0;
    for (; j + BN_LANES <= len; j += BN_LANES) {
#pragma omp simd
        for (int k = 0; k < BN_LANES; k++) {
            double d = r[j + k] - mu;
            acc[k] += d * d;
        }
    }
    for (; j < len; j++) s += (r[j] - mu) * (r[j] - mu);
    for (int k = 0; k < BN_LANES; k++) s += acc[k];
    return s;
}

/* Mean and sum of squared deviations m2 of one channel: n rows of s floats, `stride` apart.
 * Each row is reduced in two passes while it sits in L1, and rows are merged with the pairwise
 * update of Chan, Golub and LeVeque; so memory is read once and no large sum of squares is
 * subtracted from another. */
static void bn_channel_stats(const float *x, size_t n, size_t stride, size_t s, double *mean,
                             double *m2)
{
    double mu = 0.0, q = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * stride;
        double mu_row = bn_sum_run(r, s, i + 1 < n ? stride : 0) / (double)s;
        double dev = bn_dev_run(r, s, mu_row);
        /* merging i rows (i*s values) with one more row (s values) */
        double delta = mu_row - mu;
        mu += delta / (double)(i + 1);
        q += dev + delta * delta * (double)s * (double)i / (double)(i + 1);
    }
    *mean = mu;
    *m2 = q;
}

/* Mean and sum of squared deviations m2 (w) of the w adjacent channels of a tile: n rows of w
 * floats, `stride` apart. As bn_channel_stats, but blocks of BN_BLOCK rows take the place of
 * rows: each block is reduced in two passes while in cache, then merged (Chan et al.) across
 * the tile, vectorised across channels. */
static void bn_tile_stats(const float *x, size_t n, size_t stride, int w, double *mean,
                          double *m2)
{
    double bm[BN_TILE], bq[BN_TILE];
    for (int j = 0; j < w; j++) mean[j] = m2[j] = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += BN_BLOCK) {
        const size_t nb = n - i0 < BN_BLOCK ? n - i0 : BN_BLOCK;
        const float *blk = x + i0 * stride;
        for (int j = 0; j < w; j++) bm[j] = bq[j] = 0.0;
        for (size_t i = 0; i < nb; i++) {
            const float *r = blk + i * stride;
            if (i0 + BN_BLOCK + i < n) bn_prefetch_run(r + BN_BLOCK * stride, (size_t)w);
#pragma omp simd
            for (int j = 0; j < w; j++) bm[j] += r[j];
        }
        for (int j = 0; j < w; j++) bm[j] /= (double)nb;
        for (size_t i = 0; i < nb; i++) {
            const float *r = blk + i * stride;
#pragma omp simd
            for (int j = 0; j < w; j++) {
                double d = r[j] - bm[j];
                bq[j] += d * d;
            }
        }
        /* merging i0 values with nb more */
        const double f = (double)nb / (double)(i0 + nb), g = (double)i0 * f;
#pragma omp simd
        for (int j = 0; j < w; j++) {
            double delta = bm[j] - mean[j];
            mean[j] += delta * f;
            m2[j] += bq[j] + delta * delta * g;
        }
    }
}

vr_status vr_cpu_bn_forward_train(vr_backend *be, int n, int c, int s, const float *x,
                                  const float *gamma, const float *beta, const float *residual,
                                  int relu, float *y, float *mean, float *invstd,
                                  float *running_mean, float *running_var, float momentum,
                                  float eps)
{
    VR_TRY(bn_check(n, c, s, 1));
    const int nt = vr_cpu_threads(be);
    const bn_train p = {gamma, beta, mean, invstd, running_mean, running_var,
                        momentum, eps, (double)n * s};
    const size_t cs = (size_t)c * s;

    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            double sum[BN_TILE], dev[BN_TILE];
            float alpha[BN_TILE], shift[BN_TILE];
            bn_tile_stats(x + c0, (size_t)n, cs, w, sum, dev);
            for (int j = 0; j < w; j++) bn_finish(&p, c0 + j, sum[j], dev[j], &alpha[j], &shift[j]);
            bn_apply_tile_rows(y + c0, x + c0, residual ? residual + c0 : NULL, (size_t)n, cs, w,
                               mean + c0, alpha, shift, relu);
        }
        return VR_OK;
    }

#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++) {
        const size_t base = (size_t)ch * s;
        double mu, m2;
        float alpha, shift;
        bn_channel_stats(x + base, (size_t)n, cs, (size_t)s, &mu, &m2);
        bn_finish(&p, ch, mu, m2, &alpha, &shift);
        for (size_t i = 0; i < (size_t)n; i++) {
            size_t o = i * cs + base;
            bn_apply_row(y + o, x + o, residual ? residual + o : NULL, (size_t)s, mean[ch], alpha,
                         shift, relu);
        }
    }
    return VR_OK;
}

/* alpha = gamma / sqrt(running_var + eps) of channel ch; the shift is beta itself, since the
 * running mean is held exactly. */
static float bn_eval_alpha(int ch, const float *gamma, const float *rvar, float eps)
{
    return (float)(gamma[ch] / sqrt((double)rvar[ch] + eps));
}

vr_status vr_cpu_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                 const float *gamma, const float *beta, const float *residual,
                                 int relu, float *y, const float *running_mean,
                                 const float *running_var, float eps)
{
    VR_TRY(bn_check(n, c, s, 0));
    const int nt = vr_cpu_threads(be);
    const size_t cs = (size_t)c * s;

    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            float alpha[BN_TILE];
            for (int j = 0; j < w; j++) alpha[j] = bn_eval_alpha(c0 + j, gamma, running_var, eps);
            bn_apply_tile_rows(y + c0, x + c0, residual ? residual + c0 : NULL, (size_t)n, cs, w,
                               running_mean + c0, alpha, beta + c0, relu);
        }
        return VR_OK;
    }

#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++) {
        const float alpha = bn_eval_alpha(ch, gamma, running_var, eps);
        for (size_t i = 0; i < (size_t)n; i++) {
            size_t o = i * cs + (size_t)ch * s;
            bn_apply_row(y + o, x + o, residual ? residual + o : NULL, (size_t)s,
                         running_mean[ch], alpha, beta[ch], relu);
        }
    }
    return VR_OK;
}

/* The gradient g reaching the affine step on one run of len floats: dy masked by the ReLU
 * (written into dx, which the second pass overwrites anyway, so no scratch is needed) and
 * copied to dres for the residual branch. Returns where g now is. */
static inline const float *bn_grad_row(const float *dy, const float *y_relu, float *dx,
                                       float *dres, size_t len)
{
    const float *g = dy;
    if (y_relu) {
#pragma omp simd
        for (size_t j = 0; j < len; j++) dx[j] = y_relu[j] > 0.0f ? dy[j] : 0.0f;
        g = dx;
    }
    if (dres) memcpy(dres, g, len * sizeof *dres);
    return g;
}

/* Pass 1 of the backward on one run of a channel, a line at a time: bn_grad_row, then
 * sg += sum g and sgx += sum g*(x - m) in double, prefetching the runs of dy, y_relu and x
 * `ahead` floats on. */
static inline void bn_grad_run(const float *dy, const float *y_relu, const float *x, float *dx,
                               float *dres, size_t len, double m, size_t ahead, double *sg,
                               double *sgx)
{
    double a[BN_LANES] = {0}, b[BN_LANES] = {0}, s = 0.0, t = 0.0;
    size_t j = 0;
    for (; j + BN_LANES <= len; j += BN_LANES) {
        bn_prefetch(dy + ahead + j);
        bn_prefetch(x + ahead + j);
        if (y_relu) bn_prefetch(y_relu + ahead + j);
        const float *g = bn_grad_row(dy + j, y_relu ? y_relu + j : NULL, dx + j,
                                     dres ? dres + j : NULL, BN_LANES);
#pragma omp simd
        for (int k = 0; k < BN_LANES; k++) {
            a[k] += g[k];
            b[k] += (double)g[k] * (x[j + k] - m);
        }
    }
    if (j < len) {
        const float *g = bn_grad_row(dy + j, y_relu ? y_relu + j : NULL, dx + j,
                                     dres ? dres + j : NULL, len - j);
        for (size_t k = 0; j + k < len; k++) {
            s += g[k];
            t += (double)g[k] * (x[j + k] - m);
        }
    }
    for (int k = 0; k < BN_LANES; k++) {
        s += a[k];
        t += b[k];
    }
    *sg += s;
    *sgx += t;
}

/* Backward, in two passes per channel (x-mean is xhat/invstd):
 *   pass 1: g = masked dy; sums sg = sum g and sgx = sum g*(x-mean), in double;
 *   pass 2: dx = gamma*invstd * (g - sg/M - (x-mean) * sgx*invstd^2/M),
 * which is invstd*gamma/M * (M*g - sum g - xhat * sum g*xhat) written around x-mean, as PyTorch,
 * to keep the cancellation small. dgamma += invstd*sgx, dbeta += sg. */
vr_status vr_cpu_bn_backward(vr_backend *be, int n, int c, int s, const float *dy,
                             const float *y_relu, const float *x, const float *gamma,
                             const float *mean, const float *invstd, float *dx, float *dgamma,
                             float *dbeta, float *dres)
{
    VR_TRY(bn_check(n, c, s, 1));
    const int nt = vr_cpu_threads(be);
    const double count = (double)n * s;
    const size_t cs = (size_t)c * s;
    /* where pass 2 finds g: dx after masking, else dy itself */
    const float *gsrc = y_relu ? dx : dy;

    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            const float *m = mean + c0;
            double sg[BN_TILE], sgx[BN_TILE];
            float a[BN_TILE], gm[BN_TILE], k[BN_TILE];
            for (int j = 0; j < w; j++) sg[j] = sgx[j] = 0.0;
            for (size_t i = 0; i < (size_t)n; i++) {
                size_t o = i * cs + c0;
                if (i + 1 < (size_t)n) {
                    bn_prefetch_run(dy + o + cs, (size_t)w);
                    bn_prefetch_run(x + o + cs, (size_t)w);
                    if (y_relu) bn_prefetch_run(y_relu + o + cs, (size_t)w);
                }
                const float *g = bn_grad_row(dy + o, y_relu ? y_relu + o : NULL, dx + o,
                                             dres ? dres + o : NULL, (size_t)w);
                const float *xr = x + o;
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    sg[j] += g[j];
                    sgx[j] += (double)g[j] * ((double)xr[j] - m[j]);
                }
            }
            for (int j = 0; j < w; j++) {
                double is = invstd[c0 + j];
                dbeta[c0 + j] += (float)sg[j];
                dgamma[c0 + j] += (float)(sgx[j] * is);
                a[j] = (float)(gamma[c0 + j] * is);
                gm[j] = (float)(sg[j] / count);
                k[j] = (float)(sgx[j] * is * is / count);
            }
            for (size_t i = 0; i < (size_t)n; i++) {
                size_t o = i * cs + c0;
                if (i + 1 < (size_t)n) {
                    bn_prefetch_run(gsrc + o + cs, (size_t)w);
                    bn_prefetch_run(x + o + cs, (size_t)w);
                }
                const float *g = gsrc + o, *xr = x + o;
                float *d = dx + o;
#pragma omp simd
                for (int j = 0; j < w; j++) d[j] = a[j] * (g[j] - fmaf(xr[j] - m[j], k[j], gm[j]));
            }
        }
        return VR_OK;
    }

#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++) {
        const size_t base = (size_t)ch * s;
        const float m = mean[ch];
        double sg = 0.0, sgx = 0.0;
        for (size_t i = 0; i < (size_t)n; i++) {
            size_t o = i * cs + base;
            bn_grad_run(dy + o, y_relu ? y_relu + o : NULL, x + o, dx + o, dres ? dres + o : NULL,
                        (size_t)s, m, i + 1 < (size_t)n ? cs : 0, &sg, &sgx);
        }
        const double is = invstd[ch];
        dbeta[ch] += (float)sg;
        dgamma[ch] += (float)(sgx * is);
        const float a = (float)(gamma[ch] * is), gm = (float)(sg / count),
                    k = (float)(sgx * is * is / count);
        for (size_t i = 0; i < (size_t)n; i++) {
            size_t o = i * cs + base;
            const float *g = gsrc + o, *xr = x + o;
            float *d = dx + o;
#pragma omp simd
            for (size_t j = 0; j < (size_t)s; j++) d[j] = a * (g[j] - fmaf(xr[j] - m, k, gm));
        }
    }
    return VR_OK;
}
