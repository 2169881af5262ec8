/* Backend parity (ggml's test-backend-ops is the model): every op of the backend table on a
 * backend under test against the CPU backend ("cpu", the reference), forward and backward, on
 * several shapes, and one full training step of ResNet-18 + expander + VICReg + LARS on both.
 * The same host inputs go to both backends; their outputs come back and are compared.
 *
 * Error of an output: e = max|dut - ref| / max(max|ref|, floor), the largest deviation against
 * the tensor's scale, so a wrong window, index or reduction shows as e of order 1 even in one
 * element (a mean-squared measure would dilute it); floor is 1e-30 except in the training step
 * (below). Limits per op (FP32 / TF32 / BF16 math of the backend under test):
 *   relu, add, accumulate, fill, max pool (values, argmax, gradient),
 *   average pool backward                                   0 (bit for bit)
 *   average pool forward, optimiser steps (w and state)      1e-6
 *   batch norm (train, eval, backward, running statistics;
 *   also with SyncBN over two ranks holding the same batch)  1e-5
 *   input copies (copy_start / join / wait)                  0
 *   VICReg terms (relative) and gradients                    1e-5
 *   sum of squares (relative)                                1e-12
 *   convolution, linear (y, dx, dw)                          1e-4 / 4e-3 / 3e-2
 *   bias gradients (float32 in every mode)                   1e-5
 * Where the backend under test keeps activations in bfloat16 (cuda-bf16; backend.h), the ops
 * on activations take them through act_import and act_export, their float32 inputs are
 * rounded to bfloat16 first for both backends (so the comparison measures the op, not the
 * input's rounding), and an activation output may differ by its own rounding: at most
 * LIM_ACT_BF16 = 8e-3 (twice bfloat16's unit roundoff 2^-8: a result that lands near a
 * rounding midpoint may round the other way after the other backend's float arithmetic)
 * wherever the limit above is smaller.
 * "activation storage" checks act_import's bits and layout (bfloat16 channels last) directly.
 * The float32 limit of the products leaves room for cuDNN's FFT and Winograd algorithms
 * (accurate to about 1e-5 of the largest output); the TF32 and BF16 ones are 5x and 7x the
 * errors of the same cases run on emulations of those roundings (below).
 *
 * The training step starts from the same parameters and inputs (structured_views) and
 * compares the loss terms (relative), the embeddings, the running statistics, the gradient
 * (relative L2 over the whole model; in FP32 also every tensor, against a floor of 1e-3 of the
 * largest gradient, since some are zero in exact arithmetic) and the parameters after the
 * LARS update (every tensor, same floor). Limits: STEP_* below. They are loose next to the
 * ops' because a step is discontinuous: where rounding moves an activation across 0 at a
 * ReLU, or changes the winner of a max-pool window, the gradient of that element moves
 * wholesale, so two correct backends part by roughly the square root of their rounding error
 * (measured here: 3e-4 to 5e-3 relative L2 between the two CPU convolutions, 0.13 to 0.19 and
 * 0.49 to 0.58 under TF32 and bfloat16 rounding). A wiring error (a wrong buffer, group or
 * layout) still gives errors of order 1.
 *
 * Backends under test: "cuda", "cuda-tf32", "cuda-bf16" where a device is present. Without one
 * the suite prints "no CUDA device: <reason>; skipping" for them (VR_PARITY_REQUIRE_CUDA=1
 * makes that a failure) and, as in every run, checks the harness itself on the CPU:
 * "cpu-im2col" against "cpu" at the float32 limits; CPU backends whose convolutions and linear
 * layers round their operands to TF32 (truncation, the worst case) or to bfloat16, the latter
 * also keeping its activations as cuda-bf16 does (bfloat16 channels last, every activation
 * output rounded), at the TF32 and BF16 limits; and a backend with a one-element fault in its
 * convolution, which must be caught. VR_PARITY_VERBOSE=1 prints every
 * error measured. The CPU backends use OMP_NUM_THREADS threads (all cores when unset). */
#include "testutil.h"

enum { P_FP32, P_TF32, P_BF16 };

typedef struct config {
    const char *name;
    vr_backend *dut;
    int prec;
} config;

static vr_backend *ref_be;      /* the CPU reference */
static const config *cur;       /* the backend under test of the running suite */
static int verbose;

/* ------------------------------------------------------------------ limits */
static double lim_mm(void) /* convolution and linear products */
{
    static const double l[] = {1e-4, 4e-3, 3e-2};
    return l[cur->prec];
}
#define LIM_EXACT 0.0
#define LIM_POOL 1e-6
#define LIM_OPTIM 1e-6
#define LIM_BN 1e-5
#define LIM_LOSS 1e-5
#define LIM_BIAS 1e-5
#define LIM_SUMSQ 1e-12
#define LIM_ACT_BF16 8e-3
/* the training step, per precision */
static const double STEP_TERMS[] = {1e-4, 1e-2, 3e-2};
static const double STEP_Z[] = {1e-3, 3e-2, 2.5e-1};
static const double STEP_BUF[] = {1e-4, 1e-2, 5e-2};
static const double STEP_GRAD_L2[] = {5e-2, 5e-1, 9e-1};
static const double STEP_PARAM[] = {5e-2, 2e-1, 5e-1};
#define STEP_GRAD_FP32 2e-1

/* ------------------------------------------------------------------ comparison */
/* 1 when e = max|got - ref| / max(max|ref|, floor) <= limit; otherwise (and always when
 * verbose) prints the measure, and returns 0 on failure. NaN fails. */
static int near(const char *what, const float *got, const float *ref, size_t n, double limit,
                double floor)
{
    double scale = floor, worst = 0.0;
    size_t at = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)ref[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (isnan(d)) nan = 1;
        if (d > worst || (isnan(d) && !isnan(worst))) worst = d, at = i;
    }
    double e = nan ? NAN : worst / scale;
    int ok = !nan && e <= limit;
    if (!ok || verbose)
        fprintf(stderr, "\n  %s %s: e %.3g (limit %.3g), worst at %zu of %zu: %.9g vs %.9g",
                ok ? "ok" : "FAILED", what, e, limit, at, n, n ? (double)got[at] : 0.0,
                n ? (double)ref[at] : 0.0);
    return ok;
}

/* relative difference of two numbers */
static int near_scalar(const char *what, double got, double ref, double limit)
{
    double e = fabs(got - ref) / fmax(fabs(ref), 1e-300);
    int ok = e <= limit;
    if (!ok || verbose)
        fprintf(stderr, "\n  %s %s: %.12g vs %.12g, relative %.3g (limit %.3g)",
                ok ? "ok" : "FAILED", what, got, ref, e, limit);
    return ok;
}

/* the backend under test keeps activations in bfloat16 */
static int act_bf16(void) { return cur->dut->act == VR_ACT_BF16_NHWC; }

/* limit of an activation output */
static double lim_act(double limit) { return act_bf16() ? fmax(limit, LIM_ACT_BF16) : limit; }

/* ------------------------------------------------------------------ buffers */
static float *hbuf(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* A device copy of host data on be (n may be 0). */
static float *to_dev(vr_backend *be, const float *h, size_t n)
{
    float *d = NULL;
    TU_OK(be->alloc(be, (n ? n : 1) * sizeof(float), &d));
    if (n) TU_OK(be->upload(be, d, h, n));
    return d;
}

/* A host copy of device data of be; frees the device buffer. */
static float *to_host(vr_backend *be, float *d, size_t n)
{
    float *h = hbuf(n);
    if (n) TU_OK(be->download(be, h, d, n));
    be->free(be, d);
    return h;
}

/* v rounded to bfloat16 (nearest even) */
static float bf16_round(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* an activation input: rounded to bfloat16 in place where the backend under test stores
 * activations so */
static void act_input(float *x, size_t n)
{
    if (act_bf16())
        for (size_t i = 0; i < n; i++) x[i] = bf16_round(x[i]);
}

/* A device activation of be from host float32 (N,C,S). */
static float *act_dev(vr_backend *be, const float *h, int n, int c, size_t s)
{
    size_t count = (size_t)n * c * s;
    if (be->act == VR_ACT_F32) return to_dev(be, h, count);
    float *tmp = to_dev(be, h, count), *d = NULL;
    TU_OK(be->alloc(be, (count ? count : 1) * sizeof(float), &d));
    if (count) TU_OK(be->act_import(be, n, c, (int)s, tmp, d));
    be->free(be, tmp);
    return d;
}

/* A host float32 (N,C,S) copy of a device activation of be; frees the device buffer. */
static float *act_host(vr_backend *be, float *d, int n, int c, size_t s)
{
    size_t count = (size_t)n * c * s;
    if (be->act == VR_ACT_F32) return to_host(be, d, count);
    float *tmp = NULL;
    TU_OK(be->alloc(be, (count ? count : 1) * sizeof(float), &tmp));
    if (count) TU_OK(be->act_export(be, n, c, (int)s, d, tmp));
    be->free(be, d);
    return to_host(be, tmp, count);
}

static float *rand_buf(size_t n, vr_rng *r, float lo, float hi)
{
    float *p = hbuf(n);
    tu_fill(p, n, r, lo, hi);
    return p;
}

/* ------------------------------------------------------------------ convolution */
typedef struct conv_case {
    int rank, n, cin, cout, h, w;
    int k[2], s[2], p[2];
    int bias;
} conv_case;

static const conv_case conv_cases[] = {
    {2, 3, 4, 5, 7, 6, {3, 3}, {1, 1}, {1, 1}, 0},       /* odd sizes, same padding */
    {2, 2, 3, 16, 17, 15, {7, 7}, {2, 2}, {3, 3}, 0},    /* stem-like 7x7/2 on odd planes */
    {2, 4, 16, 32, 9, 9, {3, 3}, {2, 2}, {1, 1}, 1},     /* stride 2, bias */
    {2, 3, 16, 8, 8, 8, {1, 1}, {2, 2}, {0, 0}, 0},      /* 1x1/2 downsample */
    {2, 2, 3, 4, 8, 7, {3, 2}, {2, 1}, {1, 0}, 1},       /* non-square kernel, stride, pad */
    {2, 1, 1, 3, 6, 6, {3, 3}, {1, 1}, {0, 0}, 0},       /* batch 1, Cin 1 */
    {2, 4, 3, 5, 5, 5, {5, 5}, {1, 1}, {0, 0}, 0},       /* window covers the input */
    {2, 8, 64, 64, 14, 14, {3, 3}, {1, 1}, {1, 1}, 0},   /* tensor-core friendly widths */
    {1, 3, 1, 8, 1, 403, {80}, {4}, {38}, 0},            /* 1-D audio stem */
    {1, 3, 4, 6, 1, 17, {5}, {2}, {2}, 1},               /* 1-D, stride, bias */
    {1, 2, 8, 8, 1, 33, {3}, {1}, {1}, 0},               /* 1-D same padding */
};
#define NCONV (int)(sizeof conv_cases / sizeof conv_cases[0])

typedef struct conv_io {
    float *y, *dx, *dw, *db;
} conv_io;

/* Forward, backward data and backward weight of window d on be; dw and db start from dw0, db0
 * (they accumulate). */
static void conv_run(vr_backend *be, const vr_window *d, const float *x, const float *w,
                     const float *b, const float *dy, const float *dw0, const float *db0,
                     conv_io *o)
{
    size_t nx = (size_t)d->n * d->c_in * d->h_in * d->w_in;
    size_t ny = (size_t)d->n * d->c_out * d->h_out * d->w_out;
    size_t nw = (size_t)d->c_out * d->c_in * d->kh * d->kw, nb = (size_t)d->c_out;
    const size_t in = (size_t)d->h_in * d->w_in, out = (size_t)d->h_out * d->w_out;
    float *X = act_dev(be, x, d->n, d->c_in, in), *W = to_dev(be, w, nw);
    float *B = b ? to_dev(be, b, nb) : NULL;
    float *DY = act_dev(be, dy, d->n, d->c_out, out), *DW = to_dev(be, dw0, nw);
    float *DB = b ? to_dev(be, db0, nb) : NULL;
    float *Y, *DX;
    TU_OK(be->alloc(be, ny * sizeof(float), &Y));
    TU_OK(be->alloc(be, nx * sizeof(float), &DX));
    TU_OK(be->conv_forward(be, d, X, W, B, Y));
    TU_OK(be->conv_backward_data(be, d, DY, W, DX));
    TU_OK(be->conv_backward_weight(be, d, X, DY, DW, DB));
    o->y = act_host(be, Y, d->n, d->c_out, out);
    o->dx = act_host(be, DX, d->n, d->c_in, in);
    o->dw = to_host(be, DW, nw);
    o->db = b ? to_host(be, DB, nb) : NULL;
    be->free(be, X);
    be->free(be, W);
    be->free(be, DY);
    if (B) be->free(be, B);
}

static void conv_io_free(conv_io *o)
{
    free(o->y);
    free(o->dx);
    free(o->dw);
    free(o->db);
}

/* One case on (ref, dut) at limit lim; 1 when every output is near. */
static int conv_parity(vr_backend *ref, vr_backend *dut, const conv_case *c, int idx, double lim)
{
    vr_window d;
    TU_OK(vr_window_init(&d, c->rank, c->n, c->cin, c->cout, c->h, c->w, c->k, c->s, c->p));
    vr_rng r;
    vr_rng_seed(&r, 100 + (uint64_t)idx);
    size_t nx = (size_t)d.n * d.c_in * d.h_in * d.w_in;
    size_t ny = (size_t)d.n * d.c_out * d.h_out * d.w_out;
    size_t nw = (size_t)d.c_out * d.c_in * d.kh * d.kw;
    float *x = rand_buf(nx, &r, -1, 1), *w = rand_buf(nw, &r, -0.5f, 0.5f);
    float *b = c->bias ? rand_buf((size_t)d.c_out, &r, -1, 1) : NULL;
    float *dy = rand_buf(ny, &r, -1, 1), *dw0 = rand_buf(nw, &r, -1, 1);
    float *db0 = rand_buf((size_t)d.c_out, &r, -1, 1);
    act_input(x, nx);
    act_input(dy, ny);
    conv_io a, e;
    conv_run(ref, &d, x, w, b, dy, dw0, db0, &a);
    conv_run(dut, &d, x, w, b, dy, dw0, db0, &e);
    char what[96];
    int ok = 1;
    snprintf(what, sizeof what, "conv %d y", idx);
    ok &= near(what, e.y, a.y, ny, lim, 1e-30);
    snprintf(what, sizeof what, "conv %d dx", idx);
    ok &= near(what, e.dx, a.dx, nx, lim, 1e-30);
    snprintf(what, sizeof what, "conv %d dw", idx);
    ok &= near(what, e.dw, a.dw, nw, lim, 1e-30);
    if (b) {
        snprintf(what, sizeof what, "conv %d db", idx);
        ok &= near(what, e.db, a.db, (size_t)d.c_out, LIM_BIAS, 1e-30);
    }
    conv_io_free(&a);
    conv_io_free(&e);
    free(x), free(w), free(b), free(dy), free(dw0), free(db0);
    return ok;
}

static void test_conv(void)
{
    for (int i = 0; i < NCONV; i++) CU_ASSERT(conv_parity(ref_be, cur->dut, &conv_cases[i], i, lim_mm()));
}

/* ------------------------------------------------------------------ batch norm */
typedef struct bn_case {
    int n, c, s;
} bn_case;

/* S = 1 (BatchNorm1d: one, several channel tiles), S > 1 with short and long runs, and
 * channels of 20000 and 80000 values (several reduction chunks on the GPU) */
static const bn_case bn_cases[] = {{2, 3, 1},  {8, 40, 1},  {7, 600, 1}, {2, 5, 7},
                                   {3, 4, 13}, {4, 16, 67}, {4, 3, 5000}, {2, 2, 40000}};
#define NBN (int)(sizeof bn_cases / sizeof bn_cases[0])

typedef struct bn_io {
    float *y, *mean, *invstd, *rm, *rv, *y_eval, *dx, *dgamma, *dbeta, *dres;
} bn_io;

typedef struct bn_in {
    int n, c, s, res, relu;
    int act; /* the act_bn_* entries, over activations; else bn_* over float32 */
    const float *x, *r, *gamma, *beta, *rm, *rv, *dy, *dgamma, *dbeta;
    const vr_bn_sync *sync;
} bn_in;

/* SyncBN as two ranks that hold the same batch see it: the gather answers this rank's
 * statistics twice, the reduce doubles the sums (so the outputs are the local ones, the
 * running variance that of twice the values). */
static vr_status twin_gather(void *ctx, const double *mine, size_t count, double *all)
{
    (void)ctx;
    memcpy(all, mine, count * sizeof *all);
    memcpy(all + count, mine, count * sizeof *all);
    return VR_OK;
}

static vr_status twin_reduce(void *ctx, double *sums, size_t count)
{
    (void)ctx;
    for (size_t i = 0; i < count; i++) sums[i] *= 2.0;
    return VR_OK;
}

static const vr_bn_sync twin_sync = {NULL, 2, twin_gather, twin_reduce};

static void bn_run(vr_backend *be, const bn_in *in, bn_io *o)
{
    size_t cnt = (size_t)in->n * in->c * in->s, c = (size_t)in->c;
    const int act = in->act && be->act != VR_ACT_F32;
    /* an activation of the case's shape: to the device and back */
#define BN_DEV(h) (act ? act_dev(be, (h), in->n, in->c, (size_t)in->s) : to_dev(be, (h), cnt))
#define BN_HOST(d) (act ? act_host(be, (d), in->n, in->c, (size_t)in->s) : to_host(be, (d), cnt))
    float *X = BN_DEV(in->x), *R = in->res ? BN_DEV(in->r) : NULL;
    float *G = to_dev(be, in->gamma, c), *B = to_dev(be, in->beta, c);
    float *RM = to_dev(be, in->rm, c), *RV = to_dev(be, in->rv, c);
    float *DY = BN_DEV(in->dy), *DG = to_dev(be, in->dgamma, c), *DB = to_dev(be, in->dbeta, c);
    float *Y, *YE, *M, *IS, *DX, *DR = NULL;
    TU_OK(be->alloc(be, cnt * sizeof(float), &Y));
    TU_OK(be->alloc(be, cnt * sizeof(float), &YE));
    TU_OK(be->alloc(be, c * sizeof(float), &M));
    TU_OK(be->alloc(be, c * sizeof(float), &IS));
    TU_OK(be->alloc(be, cnt * sizeof(float), &DX));
    if (in->res) TU_OK(be->alloc(be, cnt * sizeof(float), &DR));
    /* evaluation first: it reads the running statistics before training updates them */
    TU_OK((in->act ? be->act_bn_forward_eval : be->bn_forward_eval)(
        be, in->n, in->c, in->s, X, G, B, R, in->relu, YE, RM, RV, 1e-5f));
    TU_OK((in->act ? be->act_bn_forward_train : be->bn_forward_train)(
        be, in->sync, in->n, in->c, in->s, X, G, B, R, in->relu, Y, M, IS, RM, RV, 0.1f, 1e-5f));
    TU_OK((in->act ? be->act_bn_backward : be->bn_backward)(
        be, in->sync, in->n, in->c, in->s, DY, in->relu ? Y : NULL, X, G, M, IS, DX, DG, DB, DR));
    o->y = BN_HOST(Y);
    o->y_eval = BN_HOST(YE);
    o->mean = to_host(be, M, c);
    o->invstd = to_host(be, IS, c);
    o->rm = to_host(be, RM, c);
    o->rv = to_host(be, RV, c);
    o->dx = BN_HOST(DX);
    o->dgamma = to_host(be, DG, c);
    o->dbeta = to_host(be, DB, c);
    o->dres = in->res ? BN_HOST(DR) : NULL;
#undef BN_DEV
#undef BN_HOST
    be->free(be, X);
    if (R) be->free(be, R);
    be->free(be, G), be->free(be, B), be->free(be, DY);
}

static void bn_io_free(bn_io *o)
{
    float *all[] = {o->y, o->mean, o->invstd, o->rm, o->rv, o->y_eval, o->dx, o->dgamma,
                    o->dbeta, o->dres};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* Every case and fusion through bn_* (float32) and act_bn_* (activations). */
static void test_batchnorm(void)
{
    /* fusions: none, ReLU, residual + ReLU (a ResNet block's last BN) */
    static const int fuse[3][2] = {{0, 0}, {0, 1}, {1, 1}};
    for (int i = 0; i < NBN; i++)
        for (int f = 0; f < 12; f++) { /* f % 6 >= 3: with SyncBN (twin_sync); f >= 6: act_bn_* */
            const bn_case *k = &bn_cases[i];
            const int act = f >= 6, sync = f % 6 >= 3;
            size_t cnt = (size_t)k->n * k->c * k->s, c = (size_t)k->c;
            vr_rng r;
            vr_rng_seed(&r, 200 + (uint64_t)(3 * i + f % 6));
            /* channels with different means and spreads, a mean large against its spread
             * among them */
            float *x = hbuf(cnt);
            for (size_t j = 0; j < cnt; j++) {
                size_t ch = j / (size_t)k->s % c;
                x[j] = (float)(ch % 5) * 3.0f - 4.0f + (0.2f + (float)(ch % 3)) * vr_rng_normal(&r);
            }
            float *res = rand_buf(cnt, &r, -1, 1), *dy = rand_buf(cnt, &r, -1, 1);
            float *gamma = rand_buf(c, &r, 0.5f, 1.5f), *beta = rand_buf(c, &r, -0.5f, 0.5f);
            float *rm = rand_buf(c, &r, -1, 1), *rv = rand_buf(c, &r, 0.5f, 2.0f);
            float *dg = rand_buf(c, &r, -1, 1), *db = rand_buf(c, &r, -1, 1);
            if (act) {
                act_input(x, cnt);
                act_input(res, cnt);
                act_input(dy, cnt);
            }
            bn_in in = {k->n, k->c, k->s, fuse[f % 3][0], fuse[f % 3][1], act, x, res, gamma,
                        beta, rm, rv, dy, dg, db, sync ? &twin_sync : NULL};
            bn_io a, e;
            bn_run(ref_be, &in, &a);
            bn_run(cur->dut, &in, &e);
            /* activation outputs may carry their own rounding */
            const double lim_y = act ? lim_act(LIM_BN) : LIM_BN;
            char what[96];
#define BN_NEAR(field, count, limit)                                                       \
    do {                                                                                    \
        snprintf(what, sizeof what, "bn%s (%d,%d,%d) fuse %d %s", act ? " act" : "", k->n,  \
                 k->c, k->s, f % 6, #field);                                                \
        CU_ASSERT(near(what, e.field, a.field, (count), (limit), 1e-30));                   \
    } while (0)
            BN_NEAR(y, cnt, lim_y);
            BN_NEAR(y_eval, cnt, lim_y);
            BN_NEAR(mean, c, LIM_BN);
            BN_NEAR(invstd, c, LIM_BN);
            BN_NEAR(rm, c, LIM_BN);
            BN_NEAR(rv, c, LIM_BN);
            BN_NEAR(dx, cnt, lim_y);
            BN_NEAR(dgamma, c, LIM_BN);
            BN_NEAR(dbeta, c, LIM_BN);
            if (in.res) BN_NEAR(dres, cnt, LIM_BN);
#undef BN_NEAR
            bn_io_free(&a);
            bn_io_free(&e);
            free(x), free(res), free(dy), free(gamma), free(beta), free(rm), free(rv), free(dg),
                free(db);
        }
}

/* ------------------------------------------------------------------ elementwise */
static const size_t ew_counts[] = {1, 1000, 100003};
#define NEW (int)(sizeof ew_counts / sizeof ew_counts[0])

/* op 0 relu, 1 relu backward (in place, dx = dy), 2 add (y = a aliasing), 3 accumulate,
 * 4 fill; returns the op's output */
static float *ew_run(vr_backend *be, int op, size_t n, const float *a, const float *b)
{
    float *A = to_dev(be, a, n), *B = to_dev(be, b, n), *out = B;
    switch (op) {
    case 0: TU_OK(be->relu_forward(be, n, A, B)); break;
    case 1: TU_OK(be->relu_backward(be, n, B, A, B)); break;
    case 2: TU_OK(be->add(be, n, A, B, A)); out = A; break;
    case 3: TU_OK(be->accumulate(be, n, A, B)); break;
    default: TU_OK(be->fill(be, n, -2.5f, A)); out = A; break;
    }
    be->free(be, out == A ? B : A);
    return to_host(be, out, n);
}

/* y += a through act_accumulate over (1,1,n) activations; returns y */
static float *act_acc_run(vr_backend *be, size_t n, const float *a, const float *y)
{
    float *A = act_dev(be, a, 1, 1, n), *Y = act_dev(be, y, 1, 1, n);
    TU_OK(be->act_accumulate(be, n, A, Y));
    be->free(be, A);
    return act_host(be, Y, 1, 1, n);
}

static void test_elementwise(void)
{
    static const char *names[] = {"relu", "relu backward", "add", "accumulate", "fill"};
    for (int i = 0; i < NEW; i++) {
        size_t n = ew_counts[i];
        vr_rng r;
        vr_rng_seed(&r, 300 + (uint64_t)i);
        float *a = rand_buf(n, &r, -1, 1), *b = rand_buf(n, &r, -1, 1);
        a[0] = 0.0f; /* the boundary of ReLU */
        for (int op = 0; op < 5; op++) {
            float *ra = ew_run(ref_be, op, n, a, b), *da = ew_run(cur->dut, op, n, a, b);
            char what[64];
            snprintf(what, sizeof what, "%s n %zu", names[op], n);
            CU_ASSERT(near(what, da, ra, n, LIM_EXACT, 1e-30));
            free(ra), free(da);
        }
        /* act_accumulate over an activation of (1,1,n): the same order in every layout */
        float *ar = hbuf(n), *br = hbuf(n);
        memcpy(ar, a, n * sizeof(float));
        memcpy(br, b, n * sizeof(float));
        act_input(ar, n);
        act_input(br, n);
        float *ra = act_acc_run(ref_be, n, ar, br), *da = act_acc_run(cur->dut, n, ar, br);
        char awhat[64];
        snprintf(awhat, sizeof awhat, "act accumulate n %zu", n);
        CU_ASSERT(near(awhat, da, ra, n, lim_act(LIM_EXACT), 1e-30));
        free(ar), free(br), free(ra), free(da);
        double s1, s2;
        float *A = to_dev(ref_be, a, n);
        TU_OK(ref_be->sum_squares(ref_be, n, A, &s1));
        ref_be->free(ref_be, A);
        A = to_dev(cur->dut, a, n);
        TU_OK(cur->dut->sum_squares(cur->dut, n, A, &s2));
        cur->dut->free(cur->dut, A);
        char what[64];
        snprintf(what, sizeof what, "sum of squares n %zu", n);
        CU_ASSERT(near_scalar(what, s2, s1, LIM_SUMSQ));
        free(a), free(b);
    }
}

/* ------------------------------------------------------------------ activation storage */
/* act_import's bits: bfloat16 (nearest even) in (N,S,C) order, in the first half of the
 * buffer, for odd sizes; act_export gives the rounded float32 back exactly. */
static void test_act_storage(void)
{
    vr_backend *be = cur->dut;
    if (be->act == VR_ACT_F32) return;
    static const int shapes[][3] = {{2, 5, 7}, {3, 64, 9}, {1, 3, 1}};
    for (int t = 0; t < 3; t++) {
        int n = shapes[t][0], c = shapes[t][1], s = shapes[t][2];
        size_t count = (size_t)n * c * s;
        vr_rng r;
        vr_rng_seed(&r, 350 + (uint64_t)t);
        float *x = rand_buf(count, &r, -3, 3);
        uint16_t *want = calloc(count, sizeof *want);
        float *round = hbuf(count);
        CU_ASSERT_PTR_NOT_NULL_FATAL(want);
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < c; ch++)
                for (int p = 0; p < s; p++) {
                    size_t at = ((size_t)i * c + ch) * s + p;
                    float v = bf16_round(x[at]);
                    uint32_t u;
                    memcpy(&u, &v, sizeof u);
                    want[((size_t)i * s + p) * c + ch] = (uint16_t)(u >> 16);
                    round[at] = v;
                }
        float *D = act_dev(be, x, n, c, (size_t)s);
        size_t floats = vr_act_floats(be, count);
        float *raw = hbuf(floats);
        TU_OK(be->download(be, raw, D, floats));
        CU_ASSERT_EQUAL(memcmp(raw, want, count * sizeof *want), 0);
        float *back = act_host(be, D, n, c, (size_t)s);
        CU_ASSERT_EQUAL(memcmp(back, round, count * sizeof(float)), 0);
        free(x), free(want), free(round), free(raw), free(back);
    }
}

/* ------------------------------------------------------------------ pooling */
typedef struct pool_case {
    int rank, n, c, h, w, k[2], s[2], p[2];
} pool_case;

static const pool_case pool_cases[] = {
    {2, 2, 3, 11, 11, {3, 3}, {2, 2}, {1, 1}}, /* the ResNet stem's pool, odd plane */
    {2, 3, 2, 8, 9, {2, 3}, {2, 1}, {1, 1}},   /* non-square, overlapping */
    {2, 1, 4, 5, 5, {5, 5}, {1, 1}, {2, 2}},   /* every window overlaps many */
    {1, 2, 4, 1, 37, {4}, {4}, {0}},           /* 1-D, the audio stem's pool */
    {1, 3, 2, 1, 20, {3}, {2}, {1}},           /* 1-D overlapping */
};
#define NPOOL (int)(sizeof pool_cases / sizeof pool_cases[0])

/* The argmax of a backend with channels-last activations, (N,S,C) -> (N,C,S) order; frees a. */
static int32_t *argmax_nchw(int32_t *a, int n, int c, size_t s)
{
    int32_t *o = (int32_t *)hbuf((size_t)n * c * s);
    for (int i = 0; i < n; i++)
        for (size_t p = 0; p < s; p++)
            for (int ch = 0; ch < c; ch++)
                o[((size_t)i * c + ch) * s + p] = a[((size_t)i * s + p) * c + ch];
    free(a);
    return o;
}

/* y, dx host float32 (N,C,S); argmax in (N,C,OH,OW) order */
static void maxpool_run(vr_backend *be, const vr_window *d, const float *x, const float *dy,
                        float **y, int32_t **argmax, float **dx)
{
    size_t nx = (size_t)d->n * d->c_in * d->h_in * d->w_in;
    size_t ny = (size_t)d->n * d->c_in * d->h_out * d->w_out;
    const size_t in = (size_t)d->h_in * d->w_in, out = (size_t)d->h_out * d->w_out;
    float *X = act_dev(be, x, d->n, d->c_in, in), *DY = act_dev(be, dy, d->n, d->c_in, out);
    float *Y, *A, *DX;
    TU_OK(be->alloc(be, ny * sizeof(float), &Y));
    TU_OK(be->alloc(be, ny * sizeof(int32_t), &A));
    TU_OK(be->alloc(be, nx * sizeof(float), &DX));
    TU_OK(be->maxpool_forward(be, d, X, Y, (int32_t *)A));
    TU_OK(be->maxpool_backward(be, d, DY, (const int32_t *)A, DX));
    *y = act_host(be, Y, d->n, d->c_in, out);
    *argmax = (int32_t *)to_host(be, A, ny); /* int32 and float are both 4 bytes */
    if (be->act == VR_ACT_BF16_NHWC) *argmax = argmax_nchw(*argmax, d->n, d->c_in, out);
    *dx = act_host(be, DX, d->n, d->c_in, in);
    be->free(be, X);
    be->free(be, DY);
}

static void test_pool(void)
{
    for (int i = 0; i < NPOOL; i++) {
        const pool_case *k = &pool_cases[i];
        vr_window d;
        TU_OK(vr_window_init(&d, k->rank, k->n, k->c, k->c, k->h, k->w, k->k, k->s, k->p));
        vr_rng r;
        vr_rng_seed(&r, 400 + (uint64_t)i);
        size_t nx = (size_t)d.n * d.c_in * d.h_in * d.w_in;
        size_t ny = (size_t)d.n * d.c_in * d.h_out * d.w_out;
        /* few distinct values, so windows hold ties and the first maximum must win */
        float *x = hbuf(nx);
        for (size_t j = 0; j < nx; j++) x[j] = (float)(int)(4.0f * vr_rng_uniform(&r)) - 2.0f;
        float *dy = rand_buf(ny, &r, -1, 1);
        act_input(dy, ny); /* x is exact in bfloat16 */
        float *ya, *dxa, *ye, *dxe;
        int32_t *aa, *ae;
        maxpool_run(ref_be, &d, x, dy, &ya, &aa, &dxa);
        maxpool_run(cur->dut, &d, x, dy, &ye, &ae, &dxe);
        char what[64];
        snprintf(what, sizeof what, "maxpool %d y", i);
        CU_ASSERT(near(what, ye, ya, ny, LIM_EXACT, 1e-30));
        snprintf(what, sizeof what, "maxpool %d dx", i);
        CU_ASSERT(near(what, dxe, dxa, nx, lim_act(LIM_EXACT), 1e-30));
        CU_ASSERT_EQUAL(memcmp(ae, aa, ny * sizeof(int32_t)), 0);
        free(x), free(dy), free(ya), free(dxa), free(ye), free(dxe), free(aa), free(ae);
    }
    static const int avg[][3] = {{2, 3, 1}, {4, 5, 49}, {3, 7, 1000}};
    for (int i = 0; i < 3; i++) {
        int n = avg[i][0], c = avg[i][1], s = avg[i][2];
        size_t nx = (size_t)n * c * s, ny = (size_t)n * c;
        vr_rng r;
        vr_rng_seed(&r, 450 + (uint64_t)i);
        float *x = rand_buf(nx, &r, -1, 3), *dy = rand_buf(ny, &r, -1, 1);
        act_input(x, nx);
        float *out[2][2];
        vr_backend *bes[2] = {ref_be, cur->dut};
        for (int b = 0; b < 2; b++) {
            vr_backend *be = bes[b];
            float *X = act_dev(be, x, n, c, (size_t)s), *DY = to_dev(be, dy, ny), *Y, *DX;
            TU_OK(be->alloc(be, ny * sizeof(float), &Y));
            TU_OK(be->alloc(be, nx * sizeof(float), &DX));
            TU_OK(be->avgpool_forward(be, n, c, s, X, Y));
            TU_OK(be->avgpool_backward(be, n, c, s, DY, DX));
            out[b][0] = to_host(be, Y, ny);
            out[b][1] = act_host(be, DX, n, c, (size_t)s);
            be->free(be, X);
            be->free(be, DY);
        }
        char what[64];
        snprintf(what, sizeof what, "avgpool (%d,%d,%d) y", n, c, s);
        CU_ASSERT(near(what, out[1][0], out[0][0], ny, LIM_POOL, 1e-30));
        snprintf(what, sizeof what, "avgpool (%d,%d,%d) dx", n, c, s);
        CU_ASSERT(near(what, out[1][1], out[0][1], nx, lim_act(LIM_EXACT), 1e-30));
        free(x), free(dy);
        for (int b = 0; b < 2; b++) free(out[b][0]), free(out[b][1]);
    }
}

/* ------------------------------------------------------------------ linear */
static void test_linear(void)
{
    /* n, in, out, bias, dx wanted */
    static const int cases[][5] = {{8, 512, 1024, 1, 1}, {5, 7, 3, 1, 1}, {1, 1, 1, 0, 1},
                                   {16, 33, 65, 0, 0},   {64, 256, 128, 1, 1}};
    for (int i = 0; i < 5; i++) {
        int n = cases[i][0], in = cases[i][1], out = cases[i][2], bias = cases[i][3];
        int want_dx = cases[i][4];
        size_t nx = (size_t)n * in, ny = (size_t)n * out, nw = (size_t)out * in;
        vr_rng r;
        vr_rng_seed(&r, 500 + (uint64_t)i);
        float *x = rand_buf(nx, &r, -1, 1), *w = rand_buf(nw, &r, -0.1f, 0.1f);
        float *b = rand_buf((size_t)out, &r, -1, 1), *dy = rand_buf(ny, &r, -1, 1);
        float *dw0 = rand_buf(nw, &r, -1, 1), *db0 = rand_buf((size_t)out, &r, -1, 1);
        float *res[2][4];
        vr_backend *bes[2] = {ref_be, cur->dut};
        for (int k = 0; k < 2; k++) {
            vr_backend *be = bes[k];
            float *X = to_dev(be, x, nx), *W = to_dev(be, w, nw), *B = to_dev(be, b, (size_t)out);
            float *DY = to_dev(be, dy, ny), *DW = to_dev(be, dw0, nw);
            float *DB = to_dev(be, db0, (size_t)out), *Y, *DX = NULL;
            TU_OK(be->alloc(be, ny * sizeof(float), &Y));
            if (want_dx) TU_OK(be->alloc(be, nx * sizeof(float), &DX));
            TU_OK(be->linear_forward(be, n, in, out, X, W, bias ? B : NULL, Y));
            TU_OK(be->linear_backward(be, n, in, out, DY, X, W, DX, DW, bias ? DB : NULL));
            res[k][0] = to_host(be, Y, ny);
            res[k][1] = want_dx ? to_host(be, DX, nx) : NULL;
            res[k][2] = to_host(be, DW, nw);
            res[k][3] = to_host(be, DB, (size_t)out);
            be->free(be, X), be->free(be, W), be->free(be, B), be->free(be, DY);
        }
        char what[64];
        snprintf(what, sizeof what, "linear %d y", i);
        CU_ASSERT(near(what, res[1][0], res[0][0], ny, lim_mm(), 1e-30));
        if (want_dx) {
            snprintf(what, sizeof what, "linear %d dx", i);
            CU_ASSERT(near(what, res[1][1], res[0][1], nx, lim_mm(), 1e-30));
        }
        snprintf(what, sizeof what, "linear %d dw", i);
        CU_ASSERT(near(what, res[1][2], res[0][2], nw, lim_mm(), 1e-30));
        snprintf(what, sizeof what, "linear %d db", i);
        CU_ASSERT(near(what, res[1][3], res[0][3], (size_t)out, LIM_BIAS, 1e-30));
        free(x), free(w), free(b), free(dy), free(dw0), free(db0);
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 4; j++) free(res[k][j]);
    }
}

/* ------------------------------------------------------------------ VICReg loss */
static void test_vicreg(void)
{
    /* n, d, with gradients, coefficient set; the covariance through C where 2n > d, through
     * the Gram matrix where 2n <= d */
    static const int cases[][4] = {{2, 1, 1, 0}, {4, 3, 1, 0}, {8, 64, 1, 0}, {16, 1024, 1, 0},
                                   {8, 64, 0, 0}, {8, 64, 1, 1}, {8, 64, 1, 2}, {48, 64, 1, 0},
                                   {40, 64, 1, 2}};
    static const vr_vicreg_coeffs coeffs[] = {{25, 25, 1}, {25, 0, 1}, {25, 25, 0}};
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        int n = cases[i][0], d = cases[i][1], grads = cases[i][2];
        vr_vicreg_coeffs k = coeffs[cases[i][3]];
        size_t nd = (size_t)n * d;
        vr_rng r;
        vr_rng_seed(&r, 600 + (uint64_t)i);
        /* columns of different spreads (std above and below 1, so the hinge is active on
         * some) and z2 correlated with z1 */
        float *z1 = hbuf(nd), *z2 = hbuf(nd);
        for (size_t j = 0; j < nd; j++) {
            float spread = 0.3f + 1.5f * (float)(j % (size_t)d % 4) / 3.0f;
            z1[j] = spread * vr_rng_normal(&r) + 0.1f * (float)(j % 7);
            z2[j] = 0.6f * z1[j] + 0.5f * vr_rng_normal(&r);
        }
        vr_vicreg_terms t[2];
        float *dz[2][2] = {{NULL, NULL}, {NULL, NULL}};
        vr_backend *bes[2] = {ref_be, cur->dut};
        for (int b = 0; b < 2; b++) {
            vr_backend *be = bes[b];
            float *Z1 = to_dev(be, z1, nd), *Z2 = to_dev(be, z2, nd), *D1 = NULL, *D2 = NULL;
            if (grads) {
                TU_OK(be->alloc(be, nd * sizeof(float), &D1));
                TU_OK(be->alloc(be, nd * sizeof(float), &D2));
            }
            TU_OK(be->vicreg_loss(be, n, d, Z1, Z2, k, &t[b], D1, D2));
            if (grads) {
                dz[b][0] = to_host(be, D1, nd);
                dz[b][1] = to_host(be, D2, nd);
            }
            be->free(be, Z1), be->free(be, Z2);
        }
        char what[64];
#define LOSS_NEAR(field)                                                                    \
    do {                                                                                    \
        snprintf(what, sizeof what, "vicreg %d %s", i, #field);                             \
        CU_ASSERT(t[0].field == 0.0 ? t[1].field == 0.0                                     \
                                    : near_scalar(what, t[1].field, t[0].field, LIM_LOSS)); \
    } while (0)
        LOSS_NEAR(loss);
        LOSS_NEAR(invariance);
        LOSS_NEAR(variance);
        LOSS_NEAR(covariance);
#undef LOSS_NEAR
        if (grads) {
            snprintf(what, sizeof what, "vicreg %d dz1", i);
            CU_ASSERT(near(what, dz[1][0], dz[0][0], nd, LIM_LOSS, 1e-30));
            snprintf(what, sizeof what, "vicreg %d dz2", i);
            CU_ASSERT(near(what, dz[1][1], dz[0][1], nd, LIM_LOSS, 1e-30));
        }
        free(z1), free(z2);
        for (int b = 0; b < 2; b++) free(dz[b][0]), free(dz[b][1]);
    }
}

/* ------------------------------------------------------------------ optimisers */
/* One step of optimiser `kind` (0 LARS, 1 SGD, 2 AdamW) with variant v on be; returns w and
 * the state after it in out[0..2]. */
static void optim_run(vr_backend *be, int kind, int v, size_t n, const float *w, const float *g,
                      const float *s0, const float *s1, float *out[3])
{
    float *W = to_dev(be, w, n), *G = to_dev(be, g, n), *S0 = to_dev(be, s0, n);
    float *S1 = to_dev(be, s1, n);
    switch (kind) {
    case 0: /* v 0: a weight (decay, trust ratio); v 1: a 1-D tensor (neither) */
        TU_OK(be->lars_step(be, n, W, G, S0, 0.3f, v ? 0.0f : 1e-2f, 0.9f, 1e-3f, !v));
        break;
    case 1: /* v 0: first step; v 1: later step; v 2: no momentum, no buffer */
        TU_OK(be->sgd_step(be, n, W, G, v == 2 ? NULL : S0, 0.1f, 1e-2f, v == 2 ? 0.0f : 0.9f,
                           v == 0));
        break;
    default: /* v 0: step 1; v 1: step 5 */
        TU_OK(be->adamw_step(be, n, W, G, S0, S1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, v ? 5 : 1));
        break;
    }
    out[0] = to_host(be, W, n);
    out[1] = to_host(be, S0, n);
    out[2] = to_host(be, S1, n);
    be->free(be, G);
}

static void test_optim(void)
{
    static const char *names[] = {"lars", "sgd", "adamw"};
    static const int variants[] = {2, 3, 2};
    for (int i = 0; i < NEW; i++) {
        size_t n = ew_counts[i];
        vr_rng r;
        vr_rng_seed(&r, 700 + (uint64_t)i);
        float *w = rand_buf(n, &r, -1, 1), *g = rand_buf(n, &r, -0.1f, 0.1f);
        float *s0 = rand_buf(n, &r, -0.1f, 0.1f), *s1 = rand_buf(n, &r, 0, 0.01f);
        for (int kind = 0; kind < 3; kind++)
            for (int v = 0; v < variants[kind]; v++) {
                float *a[3], *e[3];
                optim_run(ref_be, kind, v, n, w, g, s0, s1, a);
                optim_run(cur->dut, kind, v, n, w, g, s0, s1, e);
                static const char *what_of[] = {"w", "state 0", "state 1"};
                for (int j = 0; j < 3; j++) {
                    char what[64];
                    snprintf(what, sizeof what, "%s variant %d n %zu %s", names[kind], v, n,
                             what_of[j]);
                    CU_ASSERT(near(what, e[j], a[j], n, LIM_OPTIM, 1e-30));
                    free(a[j]), free(e[j]);
                }
            }
        free(w), free(g), free(s0), free(s1);
    }
}

/* ------------------------------------------------------------------ a training step */
#define STEP_N 8   /* pairs */
#define STEP_HW 64 /* views of 3 x 64 x 64 */

typedef struct step_io {
    vr_vicreg_terms terms;
    float *z;           /* (2N, D): z1 then z2 */
    float *g, *p, *buf; /* after the step */
    size_t np, nbuf, nz;
} step_io;

/* Views (M,3,hw,hw) that differ from sample to sample as images do: a plane wave of its own
 * direction, phase and amplitude per sample and channel, plus noise. (Pure noise gives every
 * sample nearly the same pooled features; batch norm and the loss's centring then divide by a
 * spread that is tiny against the values, and rounding differences grow by that ratio.) */
static void structured_views(float *x, int m, int hw, vr_rng *r)
{
    for (int i = 0; i < m; i++)
        for (int ch = 0; ch < 3; ch++) {
            float fx = vr_rng_range(r, -0.5f, 0.5f), fy = vr_rng_range(r, -0.5f, 0.5f);
            float phase = vr_rng_range(r, 0.0f, 6.3f), amp = vr_rng_range(r, 0.5f, 2.0f);
            float *p = x + ((size_t)i * 3 + ch) * hw * hw;
            for (int u = 0; u < hw; u++)
                for (int v = 0; v < hw; v++)
                    p[u * hw + v] = amp * sinf(fx * u + fy * v + phase) + 0.3f * vr_rng_normal(r);
        }
}

/* One LARS step of ResNet-18 + expander 512-1024-1024-1024 on be from the same parameters and
 * inputs. The batch norm scales and shifts are drawn at random (gamma in [0.5, 1.5], beta in
 * [-0.5, 0.5]) instead of the initial 1 and 0 and zero_init_residual's 0: a zero gamma would
 * leave the residual branches without gradient, and a trained state is what the backends
 * meet. (A second step is not compared: from a step's update on, two float orders of the same
 * sums part ways far faster than either drifts from the exact answer.) */
static void step_run(vr_backend *be, vr_model *m, step_io *o)
{
    vr_branch_config bc;
    vr_branch_config_image(&bc, 18, "1024-1024-1024");
    TU_OK(vr_model_create(m, be, 1, &bc));
    TU_OK(vr_model_init(m, 11));
    o->np = m->params.total;
    o->nbuf = m->buffers.total;
    float *p = hbuf(o->np);
    TU_OK(be->download(be, p, m->p, o->np));
    vr_rng r;
    vr_rng_seed(&r, 801);
    for (int i = 0; i < m->params.count; i++) {
        const vr_param *t = &m->params.items[i];
        size_t len = strlen(t->name);
        int bn = t->ndim == 1 && !strncmp(t->name, "backbone.", 9);
        if (!bn && !strncmp(t->name, "projector.", 10) && t->ndim == 1)
            bn = t->name[10] != '0' && t->name[10] != '3'; /* projector.1, .4: BatchNorm1d */
        if (!bn) continue;
        int gamma = len > 7 && !strcmp(t->name + len - 7, ".weight");
        tu_fill(p + t->offset, t->count, &r, gamma ? 0.5f : -0.5f, gamma ? 1.5f : 0.5f);
    }
    TU_OK(be->upload(be, m->p, p, o->np));
    free(p);
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_LARS);
    vr_trainer t;
    int n = STEP_N, hw = STEP_HW;
    TU_OK(vr_trainer_create(&t, m, &oc, n, &hw, &hw));
    size_t nx = (size_t)2 * n * 3 * hw * hw;
    vr_rng_seed(&r, 800);
    float *x = hbuf(nx);
    structured_views(x, 2 * n, hw, &r);
    float *X = to_dev(be, x, nx);
    const float *inputs[1] = {X};
    TU_OK(vr_trainer_step(&t, inputs, 0.2f, &o->terms));
    be->free(be, X);
    const float *z1, *z2;
    vr_trainer_embeddings(&t, &z1, &z2);
    int d = m->branch[0].exp.dims[m->branch[0].exp.nlayers];
    o->nz = (size_t)2 * n * d;
    o->z = hbuf(o->nz);
    TU_OK(be->download(be, o->z, z1, (size_t)n * d));
    TU_OK(be->download(be, o->z + (size_t)n * d, z2, (size_t)n * d));
    o->g = hbuf(o->np);
    o->p = hbuf(o->np);
    o->buf = hbuf(o->nbuf);
    TU_OK(be->download(be, o->g, m->g, o->np));
    TU_OK(be->download(be, o->p, m->p, o->np));
    TU_OK(be->download(be, o->buf, m->buf, o->nbuf));
    free(x);
    vr_trainer_free(&t);
}

static float max_abs(const float *x, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* every tensor of set near, its floor frac of the largest |ref| of the whole block */
static int tensors_near(const char *kind, const vr_paramset *set, const float *got,
                        const float *ref, size_t total, double limit, double frac)
{
    double floor = frac * max_abs(ref, total);
    int ok = 1;
    for (int i = 0; i < set->count; i++) {
        const vr_param *t = &set->items[i];
        char what[160];
        snprintf(what, sizeof what, "step %s %s", kind, t->name);
        ok &= near(what, got + t->offset, ref + t->offset, t->count, limit, floor);
    }
    return ok;
}

/* ||got - ref|| / ||ref|| over n floats */
static int near_l2(const char *what, const float *got, const float *ref, size_t n, double limit)
{
    double dd = 0.0, rr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];
        dd += d * d;
        rr += (double)ref[i] * ref[i];
    }
    double e = sqrt(dd) / fmax(sqrt(rr), 1e-300);
    int ok = e <= limit;
    if (!ok || verbose)
        fprintf(stderr, "\n  %s %s: relative L2 %.3g (limit %.3g)", ok ? "ok" : "FAILED", what, e,
                limit);
    return ok;
}

/* the reference step, run once for every backend under test */
static vr_model ref_model;
static step_io ref_step;
static int ref_step_done;

static void test_train_step(void)
{
    if (!ref_step_done) {
        step_run(ref_be, &ref_model, &ref_step);
        ref_step_done = 1;
    }
    const vr_model *ma = &ref_model;
    const step_io a = ref_step;
    vr_model me;
    step_io e = {0};
    step_run(cur->dut, &me, &e);
    const int p = cur->prec;
    CU_ASSERT(near_scalar("step loss", e.terms.loss, a.terms.loss, STEP_TERMS[p]));
    CU_ASSERT(near_scalar("step invariance", e.terms.invariance, a.terms.invariance, STEP_TERMS[p]));
    CU_ASSERT(near_scalar("step variance", e.terms.variance, a.terms.variance, STEP_TERMS[p]));
    CU_ASSERT(near_scalar("step covariance", e.terms.covariance, a.terms.covariance, STEP_TERMS[p]));
    CU_ASSERT(near("step embeddings", e.z, a.z, a.nz, STEP_Z[p], 1e-30));
    CU_ASSERT(near_l2("step gradient (all)", e.g, a.g, a.np, STEP_GRAD_L2[p]));
    if (p == P_FP32)
        CU_ASSERT(tensors_near("gradient", &ma->params, e.g, a.g, a.np, STEP_GRAD_FP32, 1e-3));
    CU_ASSERT(tensors_near("parameter", &ma->params, e.p, a.p, a.np, STEP_PARAM[p], 1e-3));
    CU_ASSERT(tensors_near("buffer", &ma->buffers, e.buf, a.buf, a.nbuf, STEP_BUF[p], 1e-3));
    free(e.z), free(e.g), free(e.p), free(e.buf);
    vr_model_free(&me);
}

/* ------------------------------------------------------------------ emulated precisions
 * A CPU backend whose convolutions and linear layers round their operands as a tensor-core
 * mode does: TF32 truncates them to 10 mantissa bits; BF16 rounds them to bfloat16 (nearest
 * even) and keeps its activations as cuda-bf16 does, in bfloat16 channels last (host memory),
 * every op on them computing in float32 on an exported copy and rounding its outputs on
 * import. Biases stay float32. FAULT adds an error of 1e-3 of the largest |y| to one output of
 * every convolution. */
enum { EMU_TF32, EMU_BF16, EMU_FAULT };

typedef struct emu_backend {
    vr_backend be;   /* first: the kernels receive &emu->be and find the rest here */
    vr_backend *cpu; /* the CPU backend whose table and context are used */
    int mode;
} emu_backend;

static float round_to(float v, int mode)
{
    if (mode == EMU_BF16) return bf16_round(v);
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u &= 0xffffe000u;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* a rounded host copy (NULL stays NULL) */
static float *rounded(const float *x, size_t n, int mode)
{
    if (!x) return NULL;
    float *r = hbuf(n);
    for (size_t i = 0; i < n; i++) r[i] = round_to(x[i], mode);
    return r;
}

static void round_in_place(float *x, size_t n, int mode)
{
    for (size_t i = 0; i < n; i++) x[i] = round_to(x[i], mode);
}

static emu_backend *emu_of(vr_backend *be) { return (emu_backend *)be; }

/* bfloat16 (N,S,C) activations <-> float32 (N,C,S) */
static vr_status emu_act_import(vr_backend *be, int n, int c, int s, const float *src, float *dst)
{
    (void)be;
    uint16_t *o = (uint16_t *)(void *)dst;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < s; p++) {
                float v = bf16_round(src[((size_t)i * c + ch) * s + p]);
                uint32_t u;
                memcpy(&u, &v, sizeof u);
                o[((size_t)i * s + p) * c + ch] = (uint16_t)(u >> 16);
            }
    return VR_OK;
}

static vr_status emu_act_export(vr_backend *be, int n, int c, int s, const float *src, float *dst)
{
    (void)be;
    const uint16_t *a = (const uint16_t *)(const void *)src;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < s; p++) {
                uint32_t u = (uint32_t)a[((size_t)i * s + p) * c + ch] << 16;
                memcpy(&dst[((size_t)i * c + ch) * s + p], &u, sizeof u);
            }
    return VR_OK;
}

/* a float32 (N,C,S) host copy of an activation of (n,c,s) (NULL stays NULL) */
static float *ex(const float *a, int n, int c, size_t s)
{
    if (!a) return NULL;
    float *f = hbuf((size_t)n * c * s);
    emu_act_export(NULL, n, c, (int)s, a, f);
    return f;
}

/* An operand of a product: an activation exported (BF16), or float32 rounded (TF32). */
static float *operand(const emu_backend *e, const float *x, int n, int c, size_t s)
{
    return e->mode == EMU_BF16 ? ex(x, n, c, s) : rounded(x, (size_t)n * c * s, e->mode);
}

/* A result y32 (N,C,S) into out: imported (BF16) or as it is; frees y32. */
static void result(const emu_backend *e, float *y32, int n, int c, size_t s, float *out)
{
    if (e->mode == EMU_BF16) emu_act_import(NULL, n, c, (int)s, y32, out);
    else memcpy(out, y32, (size_t)n * c * s * sizeof(float));
    free(y32);
}

/* b (C) added to y (N,C,S) */
static void add_bias(float *y, const float *b, int n, int c, size_t s)
{
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (size_t j = 0; j < s; j++) y[((size_t)i * c + ch) * s + j] += b[ch];
}

static vr_status emu_conv_forward(vr_backend *be, const vr_window *d, const float *x,
                                  const float *w, const float *b, float *y)
{
    emu_backend *e = emu_of(be);
    size_t nw = (size_t)d->c_out * d->c_in * d->kh * d->kw;
    size_t in = (size_t)d->h_in * d->w_in, s = (size_t)d->h_out * d->w_out;
    size_t ny = (size_t)d->n * d->c_out * s;
    if (e->mode == EMU_FAULT) {
        VR_TRY(e->cpu->conv_forward(be, d, x, w, b, y));
        y[ny / 2] += 1e-3f * max_abs(y, ny);
        return VR_OK;
    }
    float *xr = operand(e, x, d->n, d->c_in, in), *wr = rounded(w, nw, e->mode), *y32 = hbuf(ny);
    vr_status st = e->cpu->conv_forward(be, d, xr, wr, NULL, y32);
    if (e->mode == EMU_BF16) round_in_place(y32, ny, e->mode); /* cuDNN's bfloat16 output */
    if (b) add_bias(y32, b, d->n, d->c_out, s);
    result(e, y32, d->n, d->c_out, s, y);
    free(xr), free(wr);
    return st;
}

static vr_status emu_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                        const float *w, float *dx)
{
    emu_backend *e = emu_of(be);
    size_t nw = (size_t)d->c_out * d->c_in * d->kh * d->kw;
    size_t in = (size_t)d->h_in * d->w_in, out = (size_t)d->h_out * d->w_out;
    float *dyr = operand(e, dy, d->n, d->c_out, out), *wr = rounded(w, nw, e->mode);
    float *dx32 = hbuf((size_t)d->n * d->c_in * in);
    vr_status st = e->cpu->conv_backward_data(be, d, dyr, wr, dx32);
    result(e, dx32, d->n, d->c_in, in, dx);
    free(dyr), free(wr);
    return st;
}

static vr_status emu_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                          const float *dy, float *dw, float *db)
{
    emu_backend *e = emu_of(be);
    size_t nw = (size_t)d->c_out * d->c_in * d->kh * d->kw;
    size_t in = (size_t)d->h_in * d->w_in, s = (size_t)d->h_out * d->w_out;
    float *xr = operand(e, x, d->n, d->c_in, in), *dyr = operand(e, dy, d->n, d->c_out, s);
    float *part = hbuf(nw);
    vr_status st = e->cpu->conv_backward_weight(be, d, xr, dyr, part, NULL);
    if (e->mode == EMU_BF16) round_in_place(part, nw, e->mode);
    for (size_t i = 0; i < nw; i++) dw[i] += part[i];
    if (db) { /* from dy as the backend holds it */
        float *dy32 = e->mode == EMU_BF16 ? ex(dy, d->n, d->c_out, s) : NULL;
        const float *g = dy32 ? dy32 : dy;
        for (int ch = 0; ch < d->c_out; ch++) {
            double sum = 0.0;
            for (int i = 0; i < d->n; i++)
                for (size_t j = 0; j < s; j++) sum += g[((size_t)i * d->c_out + ch) * s + j];
            db[ch] += (float)sum;
        }
        free(dy32);
    }
    free(xr), free(dyr), free(part);
    return st;
}

/* The BF16 emulation's batch norms, pools and accumulation over its activations: the CPU's
 * kernels on float32 copies, the activation outputs rounded on import. */
static vr_status emu_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                      const float *x, const float *gamma, const float *beta,
                                      const float *residual, int relu, float *y, float *mean,
                                      float *invstd, float *running_mean, float *running_var,
                                      float momentum, float eps)
{
    emu_backend *e = emu_of(be);
    float *x32 = ex(x, n, c, (size_t)s), *r32 = ex(residual, n, c, (size_t)s);
    float *y32 = hbuf((size_t)n * c * s);
    vr_status st = e->cpu->bn_forward_train(be, sync, n, c, s, x32, gamma, beta, r32, relu, y32,
                                            mean, invstd, running_mean, running_var, momentum, eps);
    result(e, y32, n, c, (size_t)s, y);
    free(x32), free(r32);
    return st;
}

static vr_status emu_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                     const float *gamma, const float *beta, const float *residual,
                                     int relu, float *y, const float *running_mean,
                                     const float *running_var, float eps)
{
    emu_backend *e = emu_of(be);
    float *x32 = ex(x, n, c, (size_t)s), *r32 = ex(residual, n, c, (size_t)s);
    float *y32 = hbuf((size_t)n * c * s);
    vr_status st = e->cpu->bn_forward_eval(be, n, c, s, x32, gamma, beta, r32, relu, y32,
                                           running_mean, running_var, eps);
    result(e, y32, n, c, (size_t)s, y);
    free(x32), free(r32);
    return st;
}

static vr_status emu_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                 const float *dy, const float *y_relu, const float *x,
                                 const float *gamma, const float *mean, const float *invstd,
                                 float *dx, float *dgamma, float *dbeta, float *dres)
{
    emu_backend *e = emu_of(be);
    size_t cnt = (size_t)n * c * s;
    float *dy32 = ex(dy, n, c, (size_t)s), *yr32 = ex(y_relu, n, c, (size_t)s);
    float *x32 = ex(x, n, c, (size_t)s), *dx32 = hbuf(cnt), *dr32 = dres ? hbuf(cnt) : NULL;
    vr_status st = e->cpu->bn_backward(be, sync, n, c, s, dy32, yr32, x32, gamma, mean, invstd,
                                       dx32, dgamma, dbeta, dr32);
    result(e, dx32, n, c, (size_t)s, dx);
    if (dres) result(e, dr32, n, c, (size_t)s, dres);
    free(dy32), free(yr32), free(x32);
    return st;
}

static vr_status emu_act_accumulate(vr_backend *be, size_t count, const float *a, float *y)
{
    emu_backend *e = emu_of(be);
    float *a32 = ex(a, 1, 1, count), *y32 = ex(y, 1, 1, count);
    for (size_t i = 0; i < count; i++) y32[i] += a32[i];
    result(e, y32, 1, 1, count, y);
    free(a32);
    return VR_OK;
}

static vr_status emu_maxpool_forward(vr_backend *be, const vr_window *d, const float *x, float *y,
                                     int32_t *argmax)
{
    emu_backend *e = emu_of(be);
    size_t in = (size_t)d->h_in * d->w_in, out = (size_t)d->h_out * d->w_out;
    size_t ny = (size_t)d->n * d->c_in * out;
    float *x32 = ex(x, d->n, d->c_in, in), *y32 = hbuf(ny);
    int32_t *a32 = (int32_t *)hbuf(ny);
    vr_status st = e->cpu->maxpool_forward(be, d, x32, y32, a32);
    result(e, y32, d->n, d->c_in, out, y);
    for (int i = 0; i < d->n; i++) /* the argmax in (N,S,C) order, as the activations */
        for (int ch = 0; ch < d->c_in; ch++)
            for (size_t p = 0; p < out; p++)
                argmax[((size_t)i * out + p) * d->c_in + ch] = a32[((size_t)i * d->c_in + ch) * out + p];
    free(x32), free(a32);
    return st;
}

static vr_status emu_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy,
                                      const int32_t *argmax, float *dx)
{
    emu_backend *e = emu_of(be);
    size_t in = (size_t)d->h_in * d->w_in, out = (size_t)d->h_out * d->w_out;
    size_t ny = (size_t)d->n * d->c_in * out;
    int32_t *a32 = (int32_t *)hbuf(ny);
    for (int i = 0; i < d->n; i++)
        for (int ch = 0; ch < d->c_in; ch++)
            for (size_t p = 0; p < out; p++)
                a32[((size_t)i * d->c_in + ch) * out + p] = argmax[((size_t)i * out + p) * d->c_in + ch];
    float *dy32 = ex(dy, d->n, d->c_in, out), *dx32 = hbuf((size_t)d->n * d->c_in * in);
    vr_status st = e->cpu->maxpool_backward(be, d, dy32, a32, dx32);
    result(e, dx32, d->n, d->c_in, in, dx);
    free(a32), free(dy32);
    return st;
}

static vr_status emu_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x, float *y)
{
    emu_backend *e = emu_of(be);
    float *x32 = ex(x, n, c, (size_t)s);
    vr_status st = e->cpu->avgpool_forward(be, n, c, s, x32, y);
    free(x32);
    return st;
}

static vr_status emu_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy,
                                      float *dx)
{
    emu_backend *e = emu_of(be);
    float *dx32 = hbuf((size_t)n * c * s);
    vr_status st = e->cpu->avgpool_backward(be, n, c, s, dy, dx32);
    result(e, dx32, n, c, (size_t)s, dx);
    return st;
}

static vr_status emu_linear_forward(vr_backend *be, int n, int in, int out, const float *x,
                                    const float *w, const float *b, float *y)
{
    emu_backend *e = emu_of(be);
    float *xr = rounded(x, (size_t)n * in, e->mode), *wr = rounded(w, (size_t)out * in, e->mode);
    vr_status st = e->cpu->linear_forward(be, n, in, out, xr, wr, b, y);
    free(xr), free(wr);
    return st;
}

static vr_status emu_linear_backward(vr_backend *be, int n, int in, int out, const float *dy,
                                     const float *x, const float *w, float *dx, float *dw,
                                     float *db)
{
    emu_backend *e = emu_of(be);
    float *dyr = rounded(dy, (size_t)n * out, e->mode), *xr = rounded(x, (size_t)n * in, e->mode);
    float *wr = rounded(w, (size_t)out * in, e->mode);
    vr_status st = e->cpu->linear_backward(be, n, in, out, dyr, xr, wr, dx, dw, NULL);
    if (db)
        for (int j = 0; j < out; j++) {
            double sum = 0.0;
            for (int i = 0; i < n; i++) sum += dy[(size_t)i * out + j];
            db[j] += (float)sum;
        }
    free(dyr), free(xr), free(wr);
    return st;
}

static void emu_destroy(vr_backend *be)
{
    emu_backend *e = emu_of(be);
    vr_backend_destroy(e->cpu);
    free(e);
}

static vr_status emu_create(int mode, vr_backend **out)
{
    emu_backend *e = calloc(1, sizeof *e);
    *out = NULL;
    if (!e) return vr_fail(VR_ERR_NOMEM, "test", "emulated backend");
    vr_status s = vr_cpu_backend_create(0, &e->cpu);
    if (s != VR_OK) {
        free(e);
        return s;
    }
    e->mode = mode;
    e->be = *e->cpu;
    e->be.name = mode == EMU_TF32 ? "cpu-tf32-emulated" : mode == EMU_BF16 ? "cpu-bf16-emulated"
                                                                           : "cpu-faulty";
    e->be.destroy = emu_destroy;
    e->be.conv_forward = emu_conv_forward;
    if (mode != EMU_FAULT) {
        e->be.conv_backward_data = emu_conv_backward_data;
        e->be.conv_backward_weight = emu_conv_backward_weight;
        e->be.linear_forward = emu_linear_forward;
        e->be.linear_backward = emu_linear_backward;
    }
    if (mode == EMU_BF16) {
        e->be.act = VR_ACT_BF16_NHWC;
        e->be.act_import = emu_act_import;
        e->be.act_export = emu_act_export;
        e->be.act_bn_forward_train = emu_bn_forward_train;
        e->be.act_bn_forward_eval = emu_bn_forward_eval;
        e->be.act_bn_backward = emu_bn_backward;
        e->be.act_accumulate = emu_act_accumulate;
        e->be.maxpool_forward = emu_maxpool_forward;
        e->be.maxpool_backward = emu_maxpool_backward;
        e->be.avgpool_forward = emu_avgpool_forward;
        e->be.avgpool_backward = emu_avgpool_backward;
    }
    *out = &e->be;
    return VR_OK;
}

/* The harness catches a one-element error in a convolution that is otherwise right. */
static void test_fault_is_caught(void)
{
    vr_backend *faulty = NULL;
    TU_OK(emu_create(EMU_FAULT, &faulty));
    int saved = verbose;
    verbose = 0;
    fprintf(stderr, "\n  (a FAILED line for conv 0 y is expected here)");
    CU_ASSERT_FALSE(conv_parity(ref_be, faulty, &conv_cases[0], 0, 1e-4));
    verbose = saved;
    vr_backend_destroy(faulty);
}

/* ------------------------------------------------------------------ input copies */
/* Four batches through the two copy slots from pinned memory, the host buffer rewritten as soon
 * as copy_wait allows, each batch added into a sum on the compute stream after copy_join: the
 * sum must hold every batch exactly (small integers). Backends whose device is the host have
 * no copies to test. */
static void test_copies(void)
{
    vr_backend *be = cur->dut;
    if (!be->copy_start) return;
    const size_t n = (size_t)1 << 20;
    float *host = vr_alloc(n * sizeof(float)), *want = calloc(n, sizeof(float)), *D[2], *acc;
    CU_ASSERT_PTR_NOT_NULL_FATAL(host);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    TU_OK(be->pin(be, host, n * sizeof(float)));
    for (int s = 0; s < 2; s++) TU_OK(be->alloc(be, n * sizeof(float), &D[s]));
    TU_OK(be->alloc(be, n * sizeof(float), &acc));
    TU_OK(be->fill(be, n, 0.0f, acc));
    for (int k = 0; k < 4; k++) {
        int slot = k & 1;
        for (size_t i = 0; i < n; i++) {
            host[i] = (float)((i * 7 + (size_t)k * 13) % 1000);
            want[i] += host[i];
        }
        TU_OK(be->copy_start(be, slot, D[slot], host, n));
        TU_OK(be->copy_join(be, slot));
        TU_OK(be->copy_wait(be, slot));
        TU_OK(be->accumulate(be, n, D[slot], acc));
    }
    float *got = to_host(be, acc, n);
    CU_ASSERT(memcmp(got, want, n * sizeof(float)) == 0);
    be->unpin(be, host);
    for (int s = 0; s < 2; s++) be->free(be, D[s]);
    be->free(be, acc);
    vr_free(host);
    free(want);
    free(got);
}

/* ------------------------------------------------------------------ main */
static const tu_test op_tests[] = {
    {"convolution (1-D, 2-D; forward, data, weight, bias)", test_conv},
    {"batch norm (train, eval, backward; residual, ReLU)", test_batchnorm},
    {"activation storage (act_import, act_export)", test_act_storage},
    {"elementwise and sum of squares", test_elementwise},
    {"max and average pooling", test_pool},
    {"linear", test_linear},
    {"VICReg loss and gradient", test_vicreg},
    {"LARS, SGD, AdamW steps", test_optim},
    {"two training steps: ResNet-18 + expander + VICReg + LARS", test_train_step},
    {"input copies through two slots (CUDA)", test_copies},
    {NULL, NULL},
};

/* Runs the op tests with `c` under test as a suite named after it; returns the failures. */
static unsigned run_suite(const char *name, const tu_test *tests, const config *c)
{
    cur = c;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite(name, NULL, NULL);
    if (!s) return 1;
    for (const tu_test *t = tests; t->name; t++)
        if (!CU_add_test(s, t->name, t->fn)) return 1;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return run == 0 ? 1 : failed;
}

/* The CUDA backends to test, or the reason there are none: 1 when the suite may go on. */
static int open_cuda(config *cfgs, int *count)
{
    static const char *names[] = {"cuda", "cuda-tf32", "cuda-bf16"};
    for (int i = 0; i < 3; i++) {
        vr_backend *be;
        vr_status s = vr_backend_create(names[i], 0, &be);
        if (s == VR_OK) {
            cfgs[(*count)++] = (config){names[i], be, i};
            continue;
        }
        const char *msg = vr_last_error(), *why = strstr(msg, "no CUDA device: ");
        int absent = (s == VR_ERR_DEVICE && why) ||
                     (s == VR_ERR_UNSUPPORTED && strstr(msg, "has no CUDA backend"));
        if (!absent) {
            fprintf(stderr, "%s: %s (%s)\n", names[i], msg, vr_status_str(s));
            return 0;
        }
        printf("no CUDA device: %s; skipping\n", why ? why + strlen("no CUDA device: ") : msg);
        const char *req = getenv("VR_PARITY_REQUIRE_CUDA");
        return !(req && *req && strcmp(req, "0"));
    }
    return 1;
}

int main(void)
{
    const char *v = getenv("VR_PARITY_VERBOSE");
    verbose = v && *v && strcmp(v, "0");
    vr_status s = vr_cpu_backend_create(0, &ref_be);
    if (s != VR_OK) {
        fprintf(stderr, "cpu backend: %s\n", vr_last_error());
        return 2;
    }
    config cfgs[6];
    int count = 0;
    if (!open_cuda(cfgs, &count)) return 1;
    vr_backend *harness[3];
    if (vr_backend_create("cpu-im2col", 0, &harness[0]) || emu_create(EMU_TF32, &harness[1]) ||
        emu_create(EMU_BF16, &harness[2])) {
        fprintf(stderr, "harness backends: %s\n", vr_last_error());
        return 2;
    }
    cfgs[count++] = (config){"harness: cpu-im2col", harness[0], P_FP32};
    cfgs[count++] = (config){"harness: cpu, TF32-rounded products", harness[1], P_TF32};
    cfgs[count++] = (config){"harness: cpu, bfloat16 activations and products", harness[2], P_BF16};

    unsigned failed = 0;
    for (int i = 0; i < count; i++) {
        char name[96];
        snprintf(name, sizeof name, "parity of %s against cpu", cfgs[i].name);
        failed += run_suite(name, op_tests, &cfgs[i]);
    }
    static const tu_test self[] = {{"a one-element convolution fault is caught", test_fault_is_caught},
                                   {NULL, NULL}};
    failed += run_suite("parity harness", self, &cfgs[0]);
    for (int i = 0; i < count; i++) vr_backend_destroy(cfgs[i].dut);
    if (ref_step_done) {
        free(ref_step.z), free(ref_step.g), free(ref_step.p), free(ref_step.buf);
        vr_model_free(&ref_model);
    }
    vr_backend_destroy(ref_be);
    return failed ? 1 : 0;
}
