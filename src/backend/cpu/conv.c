/* Convolution on the CPU: im2col + sgemm, threaded over the batch.
 *
 * Each of the backend's T threads takes a contiguous, static share of the samples and walks it
 * in groups of up to g samples, unfolded together into one column matrix col (K, OHW*gs) with
 * K = Cin*KH*KW, so that one sgemm sees N = OHW*gs columns: the late ResNet layers (OHW = 16,
 * 4) would starve a per-sample GEMM, whose cost there is the packing of the weights. The sgemm
 * is OpenBLAS's single-threaded path (inside an active OpenMP region it runs in the calling
 * thread), so threads never wait on each other.
 *
 *   forward       Y_g (Cout, OHW*gs) = W (Cout, K) @ col, scattered into NCHW
 *   backward data dcol (K, OHW*gs) = W^T @ dY_g, folded back (col2im) into dx
 *   backward w.   dW (Cout, K) += dY_g @ col^T; thread 0 accumulates straight into dw, the
 *                 others into private buffers added afterwards in thread order, so a given
 *                 thread count always gives the same bits.
 *
 * Inside a group the sample is the fastest index: column (oh*OW + ow)*gs + s. Each input plane
 * is first copied, zero-padded, into a (Hp, Wp, gs) buffer, and then every im2col row segment
 * of a stride-1 layer is one contiguous run of OW*gs floats instead of gs runs of OW floats:
 * the late layers' rows are 2 or 4 floats wide, too short to copy efficiently one by one.
 *
 * A group of one sample needs no interleaving and its GEMM reads dy and writes y in place; a
 * 1x1, stride-1, unpadded convolution uses x (Cin, HW) itself as col. All buffers come from
 * the backend's scratch, sized once for the largest layer. */
#include "cpu.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Smallest GEMM width (OHW*g) worth aiming for: below it the weight packing and the kernel's
 * edge handling cost more than the copies that grouping adds. Measured on ResNet-18 shapes
 * (tests/bench/conv_bench.c). */
#ifndef VR_CONV_MIN_COLS
#define VR_CONV_MIN_COLS 256
#endif

/* How the work of one convolution is cut; every size in floats. */
typedef struct conv_plan {
    int k;            /* Cin*KH*KW: rows of col */
    int ohw, hw;      /* output and input plane sizes */
    int hp, wq;       /* padded input rows; padded columns per phase, ceil(Wp / sw) */
    int g;            /* samples per group, at most */
    int direct;       /* 1x1, stride 1, no padding: x (Cin, HW) of one sample already is col */
    size_t plane;     /* one padded, interleaved input plane (Hp, sw, Wq, g) */
    size_t col, grp;  /* col (K, OHW*g) and the gathered Y or dY (Cout, OHW*g) */
    size_t per_thread;
    size_t priv;      /* private dW (Cout, K) of threads 1.. (backward weight only) */
} conv_plan;

static size_t round16(size_t n) { return (n + 15) / 16 * 16; } /* keeps each part 64-byte aligned */

static conv_plan plan_conv(const vr_window *d, int threads, int with_priv)
{
    conv_plan p;
    p.k = d->c_in * d->kh * d->kw;
    p.ohw = d->h_out * d->w_out;
    p.hw = d->h_in * d->w_in;
    p.hp = d->h_in + 2 * d->ph;
    p.wq = (d->w_in + 2 * d->pw + d->sw - 1) / d->sw;
    p.direct = d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
    int share = (d->n + threads - 1) / threads;
    int g = (VR_CONV_MIN_COLS + p.ohw - 1) / p.ohw;
    p.g = g < share ? g : share;
    size_t cols = (size_t)p.ohw * p.g;
    p.plane = round16((size_t)p.hp * d->sw * p.wq * p.g);
    p.col = p.direct && p.g == 1 ? 0 : round16((size_t)p.k * cols);
    p.grp = p.g == 1 ? 0 : round16((size_t)d->c_out * cols);
    p.per_thread = p.plane + p.col + p.grp;
    p.priv = with_priv ? round16((size_t)d->c_out * p.k) : 0;
    return p;
}

/* The samples of thread t, [*s0, *s1), and the number of groups that cover them. */
static int thread_share(const vr_window *d, const conv_plan *p, int t, int threads, int *s0,
                        int *s1)
{
    *s0 = (int)((long)d->n * t / threads);
    *s1 = (int)((long)d->n * (t + 1) / threads);
    return (*s1 - *s0 + p->g - 1) / p->g;
}

/* Group j of `groups` over [s_begin, s_end): its first sample, and its size in *gs. Sizes
 * differ by at most one, so no thread ends on a tiny, inefficient group. */
static int group_at(int s_begin, int s_end, int groups, int j, int *gs)
{
    int share = s_end - s_begin;
    int s0 = s_begin + (int)((long)share * j / groups);
    *gs = s_begin + (int)((long)share * (j + 1) / groups) - s0;
    return s0;
}

/* The columns j of phase r (padded column j*sw + r) that hold input, [*lo, *hi). */
static void phase_cols(const vr_window *d, const conv_plan *p, int r, int *lo, int *hi)
{
    int first = d->pw - r, end = d->pw + d->w_in - r; /* j*sw in [first, end) */
    int l = first <= 0 ? 0 : (first + d->sw - 1) / d->sw;
    int h = end <= 0 ? 0 : (end + d->sw - 1) / d->sw;
    *lo = l < p->wq ? l : p->wq;
    *hi = h < p->wq ? h : p->wq;
}

/* Copies channel ci of samples [s0, s0+gs) of x into xi (Hp, sw, Wq, gs): zero-padded, the
 * padded columns split by phase (column c at c % sw, c / sw), the sample fastest. Writes every
 * element of xi. */
static void interleave(const vr_window *d, const conv_plan *p, const float *x, int s0, int gs,
                       int ci, float *xi)
{
    const size_t phase = (size_t)p->wq * gs, row = phase * d->sw;
    for (int hr = 0; hr < p->hp; hr++) {
        float *dst = xi + hr * row;
        int ih = hr - d->ph;
        if (ih < 0 || ih >= d->h_in) {
            memset(dst, 0, row * sizeof *dst);
            continue;
        }
        for (int r = 0; r < d->sw; r++) {
            float *ph = dst + r * phase;
            int lo, hi;
            phase_cols(d, p, r, &lo, &hi);
            memset(ph, 0, (size_t)lo * gs * sizeof *ph);
            memset(ph + (size_t)hi * gs, 0, (size_t)(p->wq - hi) * gs * sizeof *ph);
            int off = lo * d->sw + r - d->pw; /* input column of j = lo */
            for (int s = 0; s < gs && lo < hi; s++) {
                const float *src = x + ((size_t)(s0 + s) * d->c_in + ci) * p->hw +
                                   (size_t)ih * d->w_in + off;
                float *o = ph + (size_t)lo * gs + s;
                for (int j = 0; j < hi - lo; j++) o[(size_t)j * gs] = src[j * d->sw];
            }
        }
    }
}

/* Where tap (ki, kj) of output row oh starts in xi: the run of OW*gs floats it reads, since
 * output column ow reads padded column ow*sw + kj, i.e. phase kj % sw, column ow + kj / sw. */
static size_t tap_at(const vr_window *d, const conv_plan *p, int gs, int oh, int ki, int kj)
{
    return (((size_t)(oh * d->sh + ki) * d->sw + kj % d->sw) * p->wq + kj / d->sw) * gs;
}

/* The rows k = (ci*KH + ki)*KW + kj of col (leading dimension OHW*gs) of channel ci, from its
 * interleaved plane xi: col[k][(oh*OW + ow)*gs + s] = x[s][ci][oh*sh-ph+ki][ow*sw-pw+kj]. Every
 * row segment is one contiguous copy, whatever the stride. */
static void unfold_channel(const vr_window *d, const conv_plan *p, const float *xi, int gs,
                           int ci, float *col)
{
    const size_t ld = (size_t)p->ohw * gs, run = (size_t)d->w_out * gs;
    for (int ki = 0; ki < d->kh; ki++)
        for (int kj = 0; kj < d->kw; kj++) {
            float *row = col + (size_t)((ci * d->kh + ki) * d->kw + kj) * ld;
            for (int oh = 0; oh < d->h_out; oh++) {
                const float *src = xi + tap_at(d, p, gs, oh, ki, kj);
                float *dst = row + (size_t)oh * run;
                for (size_t e = 0; e < run; e++) dst[e] = src[e];
            }
        }
}

/* The adjoint of unfold_channel: xi = sum of the col rows of channel ci at the positions they
 * were copied from (overwritten). */
static void fold_channel(const vr_window *d, const conv_plan *p, const float *col, int gs, int ci,
                         float *xi)
{
    const size_t ld = (size_t)p->ohw * gs, run = (size_t)d->w_out * gs;
    memset(xi, 0, (size_t)p->hp * d->sw * p->wq * gs * sizeof *xi);
    for (int ki = 0; ki < d->kh; ki++)
        for (int kj = 0; kj < d->kw; kj++) {
            const float *row = col + (size_t)((ci * d->kh + ki) * d->kw + kj) * ld;
            for (int oh = 0; oh < d->h_out; oh++) {
                float *dst = xi + tap_at(d, p, gs, oh, ki, kj);
                const float *src = row + (size_t)oh * run;
                for (size_t e = 0; e < run; e++) dst[e] += src[e];
            }
        }
}

/* The input positions of xi back into channel ci of samples [s0, s0+gs) of dx; the inverse of
 * interleave on them. */
static void deinterleave(const vr_window *d, const conv_plan *p, const float *xi, int s0, int gs,
                         int ci, float *dx)
{
    const size_t phase = (size_t)p->wq * gs, row = phase * d->sw;
    for (int ih = 0; ih < d->h_in; ih++)
        for (int r = 0; r < d->sw; r++) {
            const float *ph = xi + (size_t)(ih + d->ph) * row + r * phase;
            int lo, hi;
            phase_cols(d, p, r, &lo, &hi);
            int off = lo * d->sw + r - d->pw;
            for (int s = 0; s < gs && lo < hi; s++) {
                float *dst = dx + ((size_t)(s0 + s) * d->c_in + ci) * p->hw +
                             (size_t)ih * d->w_in + off;
                const float *i = ph + (size_t)lo * gs + s;
                for (int j = 0; j < hi - lo; j++) dst[j * d->sw] = i[(size_t)j * gs];
            }
        }
}

/* col (K, OHW*gs) of samples [s0, s0+gs), through the per-channel buffer xi. */
static void im2col_group(const vr_window *d, const conv_plan *p, const float *x, int s0, int gs,
                         float *xi, float *col)
{
    for (int ci = 0; ci < d->c_in; ci++) {
        interleave(d, p, x, s0, gs, ci, xi);
        unfold_channel(d, p, xi, gs, ci, col);
    }
}

/* dx of samples [s0, s0+gs) (overwritten) from dcol (K, OHW*gs), through xi. */
static void col2im_group(const vr_window *d, const conv_plan *p, const float *dcol, int s0,
                         int gs, float *xi, float *dx)
{
    for (int ci = 0; ci < d->c_in; ci++) {
        fold_channel(d, p, dcol, gs, ci, xi);
        deinterleave(d, p, xi, s0, gs, ci, dx);
    }
}

/* dyg (Cout, OHW*gs) = dy of samples [s0, s0+gs), sample fastest. */
static void gather_group(const vr_window *d, const conv_plan *p, const float *dy, int s0, int gs,
                         float *dyg)
{
    const size_t ld = (size_t)p->ohw * gs;
    for (int s = 0; s < gs; s++)
        for (int co = 0; co < d->c_out; co++) {
            const float *src = dy + ((size_t)(s0 + s) * d->c_out + co) * p->ohw;
            float *dst = dyg + co * ld + s;
            for (int i = 0; i < p->ohw; i++) dst[(size_t)i * gs] = src[i];
        }
}

vr_status vr_cpu_conv_forward(vr_backend *be, const vr_window *d, const float *x, const float *w,
                              const float *b, float *y)
{
    int threads = vr_cpu_threads(be);
    conv_plan p = plan_conv(d, threads, 0);
    float *scratch;
    VR_TRY(vr_cpu_scratch(be, (p.per_thread * threads + 1) * sizeof(float), &scratch));

#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), s_begin, s_end;
        int groups = thread_share(d, &p, t, threads, &s_begin, &s_end);
        float *xi = scratch + p.per_thread * t; /* (Hp, sw, Wq, g) */
        float *col = xi + p.plane;              /* (K, OHW*g) */
        float *yg = col + p.col;                /* (Cout, OHW*g) */
        for (int j = 0; j < groups; j++) {
            int gs, s0 = group_at(s_begin, s_end, groups, j, &gs);
            int cols = p.ohw * gs;
            const float *bm = col;
            if (p.direct && gs == 1)
                bm = x + (size_t)s0 * d->c_in * p.hw;
            else
                im2col_group(d, &p, x, s0, gs, xi, col);
            float *ys = y + (size_t)s0 * d->c_out * p.ohw;
            float *out = gs == 1 ? ys : yg;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->c_out, cols, p.k, 1.0f, w,
                        p.k, bm, cols, 0.0f, out, cols);
            if (gs == 1 && !b) continue;
            /* y[s][co][i] = out[co][i*gs + s] + b[co]: in place for a single sample */
            for (int s = 0; s < gs; s++)
                for (int co = 0; co < d->c_out; co++) {
                    float *dst = ys + ((size_t)s * d->c_out + co) * p.ohw;
                    const float *src = out + (size_t)co * cols + s;
                    float bias = b ? b[co] : 0.0f;
                    for (int i = 0; i < p.ohw; i++) dst[i] = src[(size_t)i * gs] + bias;
                }
        }
    }
    return VR_OK;
}

vr_status vr_cpu_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                    const float *w, float *dx)
{
    int threads = vr_cpu_threads(be);
    conv_plan p = plan_conv(d, threads, 0);
    float *scratch;
    VR_TRY(vr_cpu_scratch(be, (p.per_thread * threads + 1) * sizeof(float), &scratch));

#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), s_begin, s_end;
        int groups = thread_share(d, &p, t, threads, &s_begin, &s_end);
        float *xi = scratch + p.per_thread * t; /* (Hp, sw, Wq, g) */
        float *dcol = xi + p.plane;             /* (K, OHW*g) */
        float *dyg = dcol + p.col;              /* (Cout, OHW*g) */
        for (int j = 0; j < groups; j++) {
            int gs, s0 = group_at(s_begin, s_end, groups, j, &gs);
            int cols = p.ohw * gs;
            const float *am = dyg;
            if (gs == 1)
                am = dy + (size_t)s0 * d->c_out * p.ohw;
            else
                gather_group(d, &p, dy, s0, gs, dyg);
            if (p.direct && gs == 1) {
                /* dx (Cin, HW) = W^T (Cin, Cout) @ dy (Cout, HW): nothing to fold */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.k, cols, d->c_out, 1.0f,
                            w, p.k, am, cols, 0.0f, dx + (size_t)s0 * d->c_in * p.hw, cols);
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.k, cols, d->c_out, 1.0f, w,
                        p.k, am, cols, 0.0f, dcol, cols);
            col2im_group(d, &p, dcol, s0, gs, xi, dx);
        }
    }
    return VR_OK;
}

vr_status vr_cpu_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                      const float *dy, float *dw, float *db)
{
    int threads = vr_cpu_threads(be);
    conv_plan p = plan_conv(d, threads, 1);
    float *scratch;
    size_t floats = p.per_thread * threads + p.priv * (threads - 1) + 1;
    VR_TRY(vr_cpu_scratch(be, floats * sizeof(float), &scratch));
    float *priv = scratch + p.per_thread * threads; /* threads-1 of (Cout, K) */
    size_t wsize = (size_t)d->c_out * p.k;

#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), s_begin, s_end;
        int groups = thread_share(d, &p, t, threads, &s_begin, &s_end);
        float *xi = scratch + p.per_thread * t;                     /* (Hp, sw, Wq, g) */
        float *col = xi + p.plane;                                  /* (K, OHW*g) */
        float *dyg = col + p.col;                                   /* (Cout, OHW*g) */
        float *acc = t == 0 ? dw : priv + p.priv * (size_t)(t - 1); /* (Cout, K) */
        if (t > 0 && groups == 0) memset(acc, 0, wsize * sizeof *acc);
        for (int j = 0; j < groups; j++) {
            int gs, s0 = group_at(s_begin, s_end, groups, j, &gs);
            int cols = p.ohw * gs;
            const float *bm = col, *am = dyg;
            if (p.direct && gs == 1)
                bm = x + (size_t)s0 * d->c_in * p.hw;
            else
                im2col_group(d, &p, x, s0, gs, xi, col);
            if (gs == 1)
                am = dy + (size_t)s0 * d->c_out * p.ohw;
            else
                gather_group(d, &p, dy, s0, gs, dyg);
            /* the private sums start from the first group's product, dw from its contents */
            float beta = t > 0 && j == 0 ? 0.0f : 1.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->c_out, p.k, cols, 1.0f, am,
                        cols, bm, cols, beta, acc, p.k);
        }
#pragma omp barrier
        /* dw += private sums of threads 1.., in thread order, split over dw's elements */
        size_t i0 = wsize * t / threads, i1 = wsize * (t + 1) / threads;
        for (int u = 1; u < threads; u++) {
            const float *pu = priv + p.priv * (size_t)(u - 1);
            for (size_t i = i0; i < i1; i++) dw[i] += pu[i];
        }
        if (db) {
            /* db[co] += its sum over samples and positions, whole channels per thread */
#pragma omp for schedule(static)
            for (int co = 0; co < d->c_out; co++) {
                double sum = 0.0;
                for (int n = 0; n < d->n; n++) {
                    const float *r = dy + ((size_t)n * d->c_out + co) * p.ohw;
                    for (int i = 0; i < p.ohw; i++) sum += r[i];
                }
                db[co] += (float)sum;
            }
        }
    }
    return VR_OK;
}
