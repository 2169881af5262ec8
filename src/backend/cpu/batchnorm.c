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

/* SyncBN's statistics: the ranks' (mean, m2) of channel ch, all (ranks,C,2), merged in rank
 * order (Chan et al.), every rank holding `count` values. */
static void bn_merge_ranks(const double *all, int ranks, int c, int ch, double count, double *mean,
                           double *m2)
{
    double mu = 0.0, q = 0.0;
    for (int r = 0; r < ranks; r++) {
        const double *o = all + ((size_t)r * c + ch) * 2;
        double delta = o[0] - mu;
        mu += delta / (double)(r + 1);
        q += o[1] + delta * delta * count * (double)r / (double)(r + 1);
    }
    *mean = mu;
    *m2 = q;
}

/* The training forward with SyncBN: every channel's local statistics into st (C,2), gathered
 * over the ranks, merged, then the output pass (which reads x a second time from memory). */
static vr_status bn_forward_sync(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                 const float *x, const bn_train *p, const float *residual,
                                 int relu, float *y)
{
    const int nt = vr_cpu_threads(be), ranks = sync->ranks;
    const size_t cs = (size_t)c * s;
    float *scratch;
    /* st (C,2) | all (ranks,C,2) | alpha (C) | shift (C) as floats */
    VR_TRY(vr_cpu_scratch(be, ((size_t)ranks + 2) * 2 * c * sizeof(double), &scratch));
    double *st = (double *)scratch, *all = st + 2 * (size_t)c;
    float *alpha = (float *)(all + 2 * (size_t)ranks * c), *shift = alpha + c;
    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            double mean[BN_TILE], m2[BN_TILE];
            bn_tile_stats(x + c0, (size_t)n, cs, w, mean, m2);
            for (int j = 0; j < w; j++) {
                st[2 * (c0 + j)] = mean[j];
                st[2 * (c0 + j) + 1] = m2[j];
            }
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int ch = 0; ch < c; ch++)
            bn_channel_stats(x + (size_t)ch * s, (size_t)n, cs, (size_t)s, &st[2 * ch], &st[2 * ch + 1]);
    }
    VR_TRY(sync->gather(sync->ctx, st, 2 * (size_t)c, all));
    for (int ch = 0; ch < c; ch++) {
        double mu, m2;
        bn_merge_ranks(all, ranks, c, ch, (double)n * s, &mu, &m2);
        bn_finish(p, ch, mu, m2, &alpha[ch], &shift[ch]);
    }
    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            bn_apply_tile_rows(y + c0, x + c0, residual ? residual + c0 : NULL, (size_t)n, cs, w,
                               p->mean + c0, alpha + c0, shift + c0, relu);
        }
        return VR_OK;
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++)
        for (size_t i = 0; i < (size_t)n; i++) {
            size_t o = i * cs + (size_t)ch * s;
            bn_apply_row(y + o, x + o, residual ? residual + o : NULL, (size_t)s, p->mean[ch],
                         alpha[ch], shift[ch], relu);
        }
    return VR_OK;
}

vr_status vr_cpu_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                  const float *x, const float *gamma, const float *beta,
                                  const float *residual, int relu, float *y, float *mean,
                                  float *invstd, float *running_mean, float *running_var,
                                  float momentum, float eps)
{
    VR_TRY(bn_check(n, c, s, 1));
    const int nt = vr_cpu_threads(be);
    const int ranks = sync ? sync->ranks : 1;
    const bn_train p = {gamma, beta, mean, invstd, running_mean, running_var,
                        momentum, eps, (double)n * s * ranks};
    const size_t cs = (size_t)c * s;
    if (sync) return bn_forward_sync(be, sync, n, c, s, x, &p, residual, relu, y);

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

/* Pass 1 of the backward on a tile of w adjacent channels (S == 1): n rows `stride` apart;
 * sg, sgx (w) = sum g, sum g*(x - m) in double. */
static void bn_tile_grad_sums(const float *dy, const float *y_relu, const float *x, float *dx,
                              float *dres, size_t n, size_t stride, int w, const float *m,
                              double *sg, double *sgx)
{
    for (int j = 0; j < w; j++) sg[j] = sgx[j] = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t o = i * stride;
        if (i + 1 < n) {
            bn_prefetch_run(dy + o + stride, (size_t)w);
            bn_prefetch_run(x + o + stride, (size_t)w);
            if (y_relu) bn_prefetch_run(y_relu + o + stride, (size_t)w);
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
}

/* Pass 2 on a tile: dx = a*(g - ((x - m)*k + gm)) per channel, g read from gsrc. */
static void bn_tile_grad_apply(const float *gsrc, const float *x, float *dx, size_t n,
                               size_t stride, int w, const float *m, const float *a,
                               const float *gm, const float *k)
{
    for (size_t i = 0; i < n; i++) {
        size_t o = i * stride;
        if (i + 1 < n) {
            bn_prefetch_run(gsrc + o + stride, (size_t)w);
            bn_prefetch_run(x + o + stride, (size_t)w);
        }
        const float *g = gsrc + o, *xr = x + o;
        float *d = dx + o;
#pragma omp simd
        for (int j = 0; j < w; j++) d[j] = a[j] * (g[j] - fmaf(xr[j] - m[j], k[j], gm[j]));
    }
}

/* Pass 1 on one channel (S > 1): n rows of s floats, `stride` apart. */
static void bn_channel_grad_sums(const float *dy, const float *y_relu, const float *x, float *dx,
                                 float *dres, size_t n, size_t stride, size_t s, float m,
                                 double *sg, double *sgx)
{
    *sg = *sgx = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t o = i * stride;
        bn_grad_run(dy + o, y_relu ? y_relu + o : NULL, x + o, dx + o, dres ? dres + o : NULL, s,
                    m, i + 1 < n ? stride : 0, sg, sgx);
    }
}

/* Pass 2 on one channel. */
static void bn_channel_grad_apply(const float *gsrc, const float *x, float *dx, size_t n,
                                  size_t stride, size_t s, float m, float a, float gm, float k)
{
    for (size_t i = 0; i < n; i++) {
        size_t o = i * stride;
        const float *g = gsrc + o, *xr = x + o;
        float *d = dx + o;
#pragma omp simd
        for (size_t j = 0; j < s; j++) d[j] = a * (g[j] - fmaf(xr[j] - m, k, gm));
    }
}

/* The backward's per-channel step between the passes: dbeta += sg, dgamma += invstd*sgx of
 * this process's values; the coefficients of dx from the sums over the whole batch (gsg, gsgx
 * of `count` values: this process's, or every rank's under SyncBN). */
static void bn_grad_coef(double sg, double sgx, double gsg, double gsgx, double count, float gamma,
                         double is, float *dgamma, float *dbeta, float *a, float *gm, float *k)
{
    *dbeta += (float)sg;
    *dgamma += (float)(sgx * is);
    *a = (float)(gamma * is);
    *gm = (float)(gsg / count);
    *k = (float)(gsgx * is * is / count);
}

/* The backward with SyncBN: pass 1 over every channel into loc (C,2), the sums over the ranks
 * into glob (C,2), then pass 2. */
static vr_status bn_backward_sync(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                  const float *dy, const float *y_relu, const float *x,
                                  const float *gamma, const float *mean, const float *invstd,
                                  float *dx, float *dgamma, float *dbeta, float *dres)
{
    const int nt = vr_cpu_threads(be);
    const size_t cs = (size_t)c * s;
    const double count = (double)n * s * sync->ranks;
    const float *gsrc = y_relu ? dx : dy;
    float *scratch;
    /* loc (C,2) | glob (C,2) | a, gm, k (C,3) as floats */
    VR_TRY(vr_cpu_scratch(be, (size_t)c * (4 * sizeof(double) + 3 * sizeof(float)), &scratch));
    double *loc = (double *)scratch, *glob = loc + 2 * (size_t)c;
    float *coef = (float *)(glob + 2 * (size_t)c);
    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            double sg[BN_TILE], sgx[BN_TILE];
            bn_tile_grad_sums(dy + c0, y_relu ? y_relu + c0 : NULL, x + c0, dx + c0,
                              dres ? dres + c0 : NULL, (size_t)n, cs, w, mean + c0, sg, sgx);
            for (int j = 0; j < w; j++) {
                loc[2 * (c0 + j)] = sg[j];
                loc[2 * (c0 + j) + 1] = sgx[j];
            }
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int ch = 0; ch < c; ch++) {
            const size_t b = (size_t)ch * s;
            bn_channel_grad_sums(dy + b, y_relu ? y_relu + b : NULL, x + b, dx + b,
                                 dres ? dres + b : NULL, (size_t)n, cs, (size_t)s, mean[ch],
                                 &loc[2 * ch], &loc[2 * ch + 1]);
        }
    }
    memcpy(glob, loc, 2 * (size_t)c * sizeof *glob);
    VR_TRY(sync->reduce(sync->ctx, glob, 2 * (size_t)c));
    float *a = coef, *gm = coef + c, *k = coef + 2 * (size_t)c;
    for (int ch = 0; ch < c; ch++)
        bn_grad_coef(loc[2 * ch], loc[2 * ch + 1], glob[2 * ch], glob[2 * ch + 1], count, gamma[ch],
                     invstd[ch], &dgamma[ch], &dbeta[ch], &a[ch], &gm[ch], &k[ch]);
    if (s == 1) {
        const int tw = bn_tile_width(c, nt), tiles = (c + tw - 1) / tw;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * tw, w = c - c0 < tw ? c - c0 : tw;
            bn_tile_grad_apply(gsrc + c0, x + c0, dx + c0, (size_t)n, cs, w, mean + c0, a + c0,
                               gm + c0, k + c0);
        }
        return VR_OK;
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++) {
        const size_t b = (size_t)ch * s;
        bn_channel_grad_apply(gsrc + b, x + b, dx + b, (size_t)n, cs, (size_t)s, mean[ch], a[ch],
                              gm[ch], k[ch]);
    }
    return VR_OK;
}

/* Backward, in two passes per channel (x-mean is xhat/invstd):
 *   pass 1: g = masked dy; sums sg = sum g and sgx = sum g*(x-mean), in double;
 *   pass 2: dx = gamma*invstd * (g - sg/M - (x-mean) * sgx*invstd^2/M),
 * which is invstd*gamma/M * (M*g - sum g - xhat * sum g*xhat) written around x-mean, as PyTorch,
 * to keep the cancellation small. dgamma += invstd*sgx, dbeta += sg. Without SyncBN the two
 * passes of a channel (or tile) run back to back, while its data is still in cache. */
vr_status vr_cpu_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                             const float *dy, const float *y_relu, const float *x,
                             const float *gamma, const float *mean, const float *invstd,
                             float *dx, float *dgamma, float *dbeta, float *dres)
{
    VR_TRY(bn_check(n, c, s, 1));
    if (sync)
        return bn_backward_sync(be, sync, n, c, s, dy, y_relu, x, gamma, mean, invstd, dx, dgamma,
                                dbeta, dres);
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
            double sg[BN_TILE], sgx[BN_TILE];
            float a[BN_TILE], gm[BN_TILE], k[BN_TILE];
            bn_tile_grad_sums(dy + c0, y_relu ? y_relu + c0 : NULL, x + c0, dx + c0,
                              dres ? dres + c0 : NULL, (size_t)n, cs, w, mean + c0, sg, sgx);
            for (int j = 0; j < w; j++)
                bn_grad_coef(sg[j], sgx[j], sg[j], sgx[j], count, gamma[c0 + j], invstd[c0 + j],
                             &dgamma[c0 + j], &dbeta[c0 + j], &a[j], &gm[j], &k[j]);
            bn_tile_grad_apply(gsrc + c0, x + c0, dx + c0, (size_t)n, cs, w, mean + c0, a, gm, k);
        }
        return VR_OK;
    }

#pragma omp parallel for schedule(static) num_threads(nt)
    for (int ch = 0; ch < c; ch++) {
        const size_t b = (size_t)ch * s;
        double sg, sgx;
        float a, gm, k;
        bn_channel_grad_sums(dy + b, y_relu ? y_relu + b : NULL, x + b, dx + b,
                             dres ? dres + b : NULL, (size_t)n, cs, (size_t)s, mean[ch], &sg, &sgx);
        bn_grad_coef(sg, sgx, sg, sgx, count, gamma[ch], invstd[ch], &dgamma[ch], &dbeta[ch], &a,
                     &gm, &k);
        bn_channel_grad_apply(gsrc + b, x + b, dx + b, (size_t)n, cs, (size_t)s, mean[ch], a, gm, k);
    }
    return VR_OK;
}
