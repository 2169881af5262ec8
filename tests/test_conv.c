/* Convolution kernels of the CPU backend against direct loops in double precision, on shapes
 * that reach every path of src/backend/cpu/conv.c: grouped and single-sample GEMMs, the 1x1
 * direct path, strides, padding, non-square kernels, 1-D windows, a batch of one, Cin = 1.
 * Also: the weight gradient accumulates (+=), thread counts 1 and 2 agree, and finite
 * differences of L = sum(y * r) match the backward kernels. */
#include "testutil.h"

/* A case: rank, n, cin, cout, h (ignored for rank 1), w, kernel, stride, pad (rank entries). */
typedef struct conv_case {
    int rank, n, cin, cout, h, w;
    int k[2], s[2], p[2];
} conv_case;

static const conv_case cases[] = {
    {2, 3, 4, 5, 7, 6, {3, 3}, {1, 1}, {1, 1}},     /* odd sizes, same padding */
    {2, 2, 3, 6, 9, 9, {3, 3}, {2, 2}, {1, 1}},     /* stride 2 */
    {2, 2, 3, 8, 13, 11, {7, 7}, {2, 2}, {3, 3}},   /* stem-like 7x7/2 */
    {2, 3, 5, 7, 5, 4, {1, 1}, {1, 1}, {0, 0}},     /* 1x1 direct path */
    {2, 3, 6, 4, 7, 7, {1, 1}, {2, 2}, {0, 0}},     /* 1x1/2 downsample */
    {2, 2, 3, 4, 8, 7, {3, 2}, {2, 1}, {1, 0}},     /* non-square kernel, stride, pad */
    {1, 3, 4, 6, 1, 17, {5}, {2}, {2}},             /* 1-D */
    {1, 2, 3, 5, 1, 9, {1}, {1}, {0}},              /* 1-D pointwise */
    {2, 1, 1, 3, 6, 6, {3, 3}, {1, 1}, {0, 0}},     /* batch 1, Cin 1 */
    {2, 7, 8, 16, 2, 2, {3, 3}, {1, 1}, {1, 1}},    /* tiny planes: many samples per group */
    {2, 5, 16, 8, 12, 12, {3, 3}, {1, 1}, {1, 1}},  /* groups of two, uneven split */
    {2, 3, 2, 3, 5, 6, {2, 2}, {1, 1}, {1, 1}},     /* padding wider than half the kernel */
    {2, 4, 3, 5, 5, 5, {5, 5}, {1, 1}, {0, 0}},     /* window covers the input: OHW = 1 */
    {2, 9, 20, 24, 20, 20, {3, 3}, {2, 2}, {1, 1}}, /* a larger stride-2 layer */
};
#define NCASES (sizeof cases / sizeof cases[0])

static vr_window window_of(const conv_case *c)
{
    vr_window d;
    vr_status s = vr_window_init(&d, c->rank, c->n, c->cin, c->cout, c->h, c->w, c->k, c->s, c->p);
    CU_ASSERT_EQUAL_FATAL(s, VR_OK);
    return d;
}

static size_t x_count(const vr_window *d) { return (size_t)d->n * d->c_in * d->h_in * d->w_in; }
static size_t y_count(const vr_window *d) { return (size_t)d->n * d->c_out * d->h_out * d->w_out; }
static size_t w_count(const vr_window *d) { return (size_t)d->c_out * d->c_in * d->kh * d->kw; }

/* The input position of output (oh, ow) and kernel tap (ki, kj), or -1 in the padding. */
static long tap(const vr_window *d, int oh, int ow, int ki, int kj)
{
    int ih = oh * d->sh - d->ph + ki, iw = ow * d->sw - d->pw + kj;
    if (ih < 0 || ih >= d->h_in || iw < 0 || iw >= d->w_in) return -1;
    return (long)ih * d->w_in + iw;
}

/* y = conv(x, w) + b, straight from the definition, in double */
static void ref_forward(const vr_window *d, const float *x, const float *w, const float *b,
                        float *y)
{
    int hw = d->h_in * d->w_in;
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->c_out; co++)
            for (int oh = 0; oh < d->h_out; oh++)
                for (int ow = 0; ow < d->w_out; ow++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < d->c_in; ci++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                long at = tap(d, oh, ow, ki, kj);
                                if (at < 0) continue;
                                acc += (double)x[((size_t)n * d->c_in + ci) * hw + at] *
                                       w[((co * d->c_in + ci) * d->kh + ki) * d->kw + kj];
                            }
                    y[(((size_t)n * d->c_out + co) * d->h_out + oh) * d->w_out + ow] = (float)acc;
                }
}

/* dx, dw, db of L = sum(y * dy), each in double; dw and db are overwritten here */
static void ref_backward(const vr_window *d, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db)
{
    int hw = d->h_in * d->w_in;
    size_t nx = x_count(d), nw = w_count(d);
    double *gx = calloc(nx, sizeof *gx), *gw = calloc(nw, sizeof *gw);
    double *gb = calloc((size_t)d->c_out, sizeof *gb);
    CU_ASSERT_FATAL(gx && gw && gb);
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->c_out; co++)
            for (int oh = 0; oh < d->h_out; oh++)
                for (int ow = 0; ow < d->w_out; ow++) {
                    double g = dy[(((size_t)n * d->c_out + co) * d->h_out + oh) * d->w_out + ow];
                    gb[co] += g;
                    for (int ci = 0; ci < d->c_in; ci++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                long at = tap(d, oh, ow, ki, kj);
                                if (at < 0) continue;
                                size_t xi = ((size_t)n * d->c_in + ci) * hw + at;
                                size_t wi = (size_t)((co * d->c_in + ci) * d->kh + ki) * d->kw + kj;
                                gx[xi] += g * w[wi];
                                gw[wi] += g * x[xi];
                            }
                }
    for (size_t i = 0; i < nx; i++) dx[i] = (float)gx[i];
    for (size_t i = 0; i < nw; i++) dw[i] = (float)gw[i];
    for (int i = 0; i < d->c_out; i++) db[i] = (float)gb[i];
    free(gx);
    free(gw);
    free(gb);
}

/* Inputs of one case, drawn from a seeded stream. */
typedef struct conv_data {
    vr_window d;
    float *x, *w, *b, *dy;
} conv_data;

static conv_data make_data(const conv_case *c, uint64_t seed)
{
    conv_data t = {.d = window_of(c)};
    vr_rng r;
    vr_rng_seed(&r, seed);
    t.x = malloc(x_count(&t.d) * sizeof(float));
    t.w = malloc(w_count(&t.d) * sizeof(float));
    t.b = malloc((size_t)t.d.c_out * sizeof(float));
    t.dy = malloc(y_count(&t.d) * sizeof(float));
    CU_ASSERT_FATAL(t.x && t.w && t.b && t.dy);
    tu_fill(t.x, x_count(&t.d), &r, -1.0f, 1.0f);
    tu_fill(t.w, w_count(&t.d), &r, -1.0f, 1.0f);
    tu_fill(t.b, (size_t)t.d.c_out, &r, -1.0f, 1.0f);
    tu_fill(t.dy, y_count(&t.d), &r, -1.0f, 1.0f);
    return t;
}

static void free_data(conv_data *t)
{
    free(t->x);
    free(t->w);
    free(t->b);
    free(t->dy);
}

/* Float sums of up to a few hundred products of values in [-1, 1] against double sums: errors
 * grow with the reduction length, so the absolute tolerance scales with it. */
/* Every convolution this build has (im2col + sgemm, and oneDNN where built) at 1 and 2
 * threads: variant v is implementation v / 2 with 1 + v % 2 threads. */
static int n_variants(void)
{
#ifdef VR_HAVE_DNNL
    return 4;
#else
    return 2;
#endif
}

static vr_status make_variant(int v, vr_backend **be)
{
    return vr_cpu_backend_create_conv(1 + v % 2, v / 2 ? VR_CPU_CONV_ONEDNN : VR_CPU_CONV_IM2COL, be);
}

static double atol_for(size_t terms) { return 2e-6 * (double)terms + 1e-6; }
static const double RTOL = 1e-5;

static void test_forward(void)
{
    for (size_t ci = 0; ci < NCASES; ci++) {
        conv_data t = make_data(&cases[ci], 100 + ci);
        size_t ny = y_count(&t.d);
        float *ref = malloc(ny * sizeof *ref), *got = malloc(ny * sizeof *got);
        CU_ASSERT_FATAL(ref && got);
        double atol = atol_for(w_count(&t.d) / (size_t)t.d.c_out + 1);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *b = with_bias ? t.b : NULL;
            ref_forward(&t.d, t.x, t.w, b, ref);
            for (int v = 0; v < n_variants(); v++) {
                int threads = 1 + v % 2;
                vr_backend *be;
                TU_OK(make_variant(v, &be));
                memset(got, 0xff, ny * sizeof *got); /* NaN: every element must be written */
                TU_OK(be->conv_forward(be, &t.d, t.x, t.w, b, got));
                char what[64];
                snprintf(what, sizeof what, "%s forward case %zu bias %d threads %d", be->name, ci, with_bias,
                         threads);
                CU_ASSERT(tu_close(got, ref, ny, atol, RTOL, what));
                vr_backend_destroy(be);
            }
        }
        free(ref);
        free(got);
        free_data(&t);
    }
}

static void test_backward_data(void)
{
    for (size_t ci = 0; ci < NCASES; ci++) {
        conv_data t = make_data(&cases[ci], 200 + ci);
        size_t nx = x_count(&t.d), nw = w_count(&t.d);
        float *ref = malloc(nx * sizeof *ref), *got = malloc(nx * sizeof *got);
        float *rw = malloc(nw * sizeof *rw), *rb = malloc((size_t)t.d.c_out * sizeof *rb);
        CU_ASSERT_FATAL(ref && got && rw && rb);
        ref_backward(&t.d, t.x, t.w, t.dy, ref, rw, rb);
        double atol = atol_for((size_t)t.d.c_out * t.d.kh * t.d.kw);
        for (int v = 0; v < n_variants(); v++) {
            int threads = 1 + v % 2;
            vr_backend *be;
            TU_OK(make_variant(v, &be));
            memset(got, 0xff, nx * sizeof *got); /* dx is overwritten, never accumulated */
            TU_OK(be->conv_backward_data(be, &t.d, t.dy, t.w, got));
            char what[64];
            snprintf(what, sizeof what, "%s backward data case %zu threads %d", be->name, ci, threads);
            CU_ASSERT(tu_close(got, ref, nx, atol, RTOL, what));
            vr_backend_destroy(be);
        }
        free(ref);
        free(got);
        free(rw);
        free(rb);
        free_data(&t);
    }
}

static void test_backward_weight(void)
{
    for (size_t ci = 0; ci < NCASES; ci++) {
        conv_data t = make_data(&cases[ci], 300 + ci);
        size_t nx = x_count(&t.d), nw = w_count(&t.d), nb = (size_t)t.d.c_out;
        float *rx = malloc(nx * sizeof *rx), *ref = malloc(nw * sizeof *ref);
        float *rb = malloc(nb * sizeof *rb), *got = malloc(nw * sizeof *got);
        float *gb = malloc(nb * sizeof *gb), *pre = malloc(nw * sizeof *pre);
        float *preb = malloc(nb * sizeof *preb);
        CU_ASSERT_FATAL(rx && ref && rb && got && gb && pre && preb);
        ref_backward(&t.d, t.x, t.w, t.dy, rx, ref, rb);
        /* gradients accumulate: start from known values and expect them added to */
        vr_rng r;
        vr_rng_seed(&r, 400 + ci);
        tu_fill(pre, nw, &r, -1.0f, 1.0f);
        tu_fill(preb, nb, &r, -1.0f, 1.0f);
        for (size_t i = 0; i < nw; i++) ref[i] += pre[i];
        for (size_t i = 0; i < nb; i++) rb[i] += preb[i];
        size_t terms = (size_t)t.d.n * t.d.h_out * t.d.w_out;
        for (int v = 0; v < n_variants(); v++) {
            int threads = 1 + v % 2;
            vr_backend *be;
            TU_OK(make_variant(v, &be));
            memcpy(got, pre, nw * sizeof *got);
            memcpy(gb, preb, nb * sizeof *gb);
            TU_OK(be->conv_backward_weight(be, &t.d, t.x, t.dy, got, gb));
            char what[64];
            snprintf(what, sizeof what, "%s backward weight case %zu threads %d", be->name, ci, threads);
            CU_ASSERT(tu_close(got, ref, nw, atol_for(terms), RTOL, what));
            snprintf(what, sizeof what, "backward bias case %zu threads %d", ci, threads);
            CU_ASSERT(tu_close(gb, rb, nb, atol_for(terms), RTOL, what));
            /* db is optional */
            memcpy(got, pre, nw * sizeof *got);
            TU_OK(be->conv_backward_weight(be, &t.d, t.x, t.dy, got, NULL));
            snprintf(what, sizeof what, "backward weight (no bias) case %zu threads %d", ci,
                     threads);
            CU_ASSERT(tu_close(got, ref, nw, atol_for(terms), RTOL, what));
            vr_backend_destroy(be);
        }
        free(rx);
        free(ref);
        free(rb);
        free(got);
        free(gb);
        free(pre);
        free(preb);
        free_data(&t);
    }
}

/* Runs all three kernels with `threads` threads into fresh buffers (dw, db from zero). */
static void run_all(const conv_data *t, int threads, float *y, float *dx, float *dw, float *db)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(threads, &be));
    memset(dw, 0, w_count(&t->d) * sizeof *dw);
    memset(db, 0, (size_t)t->d.c_out * sizeof *db);
    TU_OK(be->conv_forward(be, &t->d, t->x, t->w, t->b, y));
    TU_OK(be->conv_backward_data(be, &t->d, t->dy, t->w, dx));
    TU_OK(be->conv_backward_weight(be, &t->d, t->x, t->dy, dw, db));
    vr_backend_destroy(be);
}

/* Bits repeat for a given thread count. Across thread counts only db (summed per channel) is
 * bit-identical: a thread's share of the batch changes the GEMM widths, and OpenBLAS computes
 * the last (N mod 8) columns of a product with another kernel and summation order, so y, dx
 * and dw (which also adds per-thread partial sums) agree to rounding only. */
static void test_threads(void)
{
    for (size_t ci = 0; ci < NCASES; ci++) {
        conv_data t = make_data(&cases[ci], 500 + ci);
        size_t nx = x_count(&t.d), ny = y_count(&t.d), nw = w_count(&t.d), nb = (size_t)t.d.c_out;
        float *y[3], *dx[3], *dw[3], *db[3];
        for (int k = 0; k < 3; k++) {
            y[k] = malloc(ny * sizeof(float));
            dx[k] = malloc(nx * sizeof(float));
            dw[k] = malloc(nw * sizeof(float));
            db[k] = malloc(nb * sizeof(float));
            CU_ASSERT_FATAL(y[k] && dx[k] && dw[k] && db[k]);
        }
        run_all(&t, 2, y[0], dx[0], dw[0], db[0]);
        run_all(&t, 2, y[1], dx[1], dw[1], db[1]);
        run_all(&t, 1, y[2], dx[2], dw[2], db[2]);
        CU_ASSERT(memcmp(y[0], y[1], ny * sizeof(float)) == 0);
        CU_ASSERT(memcmp(dx[0], dx[1], nx * sizeof(float)) == 0);
        CU_ASSERT(memcmp(dw[0], dw[1], nw * sizeof(float)) == 0);
        CU_ASSERT(memcmp(db[0], db[1], nb * sizeof(float)) == 0);
        CU_ASSERT(memcmp(db[0], db[2], nb * sizeof(float)) == 0);
        double kw = (double)t.d.kh * t.d.kw;
        CU_ASSERT(tu_close(y[2], y[0], ny, atol_for((size_t)(kw * t.d.c_in)), RTOL, "y 1 vs 2 threads"));
        CU_ASSERT(tu_close(dx[2], dx[0], nx, atol_for((size_t)(kw * t.d.c_out)), RTOL,
                           "dx 1 vs 2 threads"));
        size_t terms = (size_t)t.d.n * t.d.h_out * t.d.w_out;
        CU_ASSERT(tu_close(dw[2], dw[0], nw, atol_for(terms), RTOL, "dw 1 vs 2 threads"));
        for (int k = 0; k < 3; k++) {
            free(y[k]);
            free(dx[k]);
            free(dw[k]);
            free(db[k]);
        }
        free_data(&t);
    }
}

/* L = sum(y * r) evaluated through the backend's forward, accumulated in double. */
typedef struct fd_ctx {
    vr_backend *be;
    conv_data *t;
    float *y;
} fd_ctx;

static double fd_loss(void *p)
{
    fd_ctx *c = p;
    vr_status s = c->be->conv_forward(c->be, &c->t->d, c->t->x, c->t->w, c->t->b, c->y);
    CU_ASSERT_EQUAL(s, VR_OK);
    double l = 0.0;
    for (size_t i = 0, n = y_count(&c->t->d); i < n; i++) l += (double)c->y[i] * c->t->dy[i];
    return l;
}

/* L is linear in each of x, w, b, so a large step has no truncation error and keeps the float
 * rounding of the forward small relative to the difference. Both implementations, 2 threads. */
static void test_finite_differences(void)
{
    for (int v = 1; v < n_variants(); v += 2) {
        vr_backend *be;
        TU_OK(make_variant(v, &be));
        for (size_t ci = 0; ci < NCASES; ci++) {
            conv_data t = make_data(&cases[ci], 600 + ci);
            size_t nx = x_count(&t.d), ny = y_count(&t.d), nw = w_count(&t.d), nb = (size_t)t.d.c_out;
            float *y = malloc(ny * sizeof *y), *dx = malloc(nx * sizeof *dx);
            float *dw = calloc(nw, sizeof *dw), *db = calloc(nb, sizeof *db);
            CU_ASSERT_FATAL(y && dx && dw && db);
            TU_OK(be->conv_backward_data(be, &t.d, t.dy, t.w, dx));
            TU_OK(be->conv_backward_weight(be, &t.d, t.x, t.dy, dw, db));
            fd_ctx c = {be, &t, y};
            char what[64];
            snprintf(what, sizeof what, "%s case %zu dL/dx", be->name, ci);
            CU_ASSERT(tu_fd_check(fd_loss, &c, t.x, nx, dx, 40, 0.25f, 1e-3, 1e-3, what));
            snprintf(what, sizeof what, "%s case %zu dL/dw", be->name, ci);
            CU_ASSERT(tu_fd_check(fd_loss, &c, t.w, nw, dw, 40, 0.25f, 1e-3, 1e-3, what));
            snprintf(what, sizeof what, "%s case %zu dL/db", be->name, ci);
            CU_ASSERT(tu_fd_check(fd_loss, &c, t.b, nb, db, 40, 0.25f, 1e-3, 1e-3, what));
            free(y);
            free(dx);
            free(dw);
            free(db);
            free_data(&t);
        }
        vr_backend_destroy(be);
    }
}

int main(void)
{
    static const tu_test tests[] = {
        {"forward vs direct loops", test_forward},
        {"backward data vs direct loops", test_backward_data},
        {"backward weight accumulates, vs direct loops", test_backward_weight},
        {"repeatable bits; 1 and 2 threads agree", test_threads},
        {"finite differences of sum(y*r)", test_finite_differences},
        {NULL, NULL},
    };
    return tu_main("conv", tests);
}
