/* Pooling kernels of the CPU backend: max pooling (PyTorch's semantics: padding is -inf, the
 * first maximum in row-major order wins, NaN propagates) against a direct loop written another
 * way, its backward against a scatter in double, global average pooling against double sums,
 * bit-identical results for 1 and 2 threads, and finite differences of L = sum(y * r). */
#include "testutil.h"

typedef struct pool_case {
    int rank, n, c, h, w;
    int k[2], s[2], p[2];
} pool_case;

static const pool_case cases[] = {
    {2, 2, 3, 9, 9, {3, 3}, {2, 2}, {1, 1}},   /* the ResNet stem pool, odd size */
    {2, 3, 2, 8, 8, {2, 2}, {2, 2}, {0, 0}},   /* non-overlapping */
    {2, 2, 2, 7, 6, {3, 3}, {1, 1}, {1, 1}},   /* heavy overlap: backward sums */
    {2, 2, 3, 8, 7, {3, 2}, {2, 1}, {1, 0}},   /* non-square kernel, stride, pad */
    {1, 3, 4, 1, 11, {3}, {2}, {1}},           /* 1-D */
    {2, 1, 1, 5, 5, {5, 5}, {1, 1}, {2, 2}},   /* batch 1, one channel, large window */
    {2, 4, 5, 32, 32, {3, 3}, {2, 2}, {1, 1}}, /* enough planes to split over threads */
};
#define NCASES (sizeof cases / sizeof cases[0])

static vr_window window_of(const pool_case *c)
{
    vr_window d;
    vr_status s = vr_window_init(&d, c->rank, c->n, c->c, c->c, c->h, c->w, c->k, c->s, c->p);
    CU_ASSERT_EQUAL_FATAL(s, VR_OK);
    return d;
}

static size_t x_count(const vr_window *d) { return (size_t)d->n * d->c_in * d->h_in * d->w_in; }
static size_t y_count(const vr_window *d) { return (size_t)d->n * d->c_in * d->h_out * d->w_out; }

/* Starts from the first real element of the window and replaces it by any later element that
 * is strictly larger or NaN: PyTorch's rule, written without the -inf initial value. */
static void ref_maxpool(const vr_window *d, const float *x, float *y, int32_t *argmax)
{
    size_t planes = (size_t)d->n * d->c_in, hw = (size_t)d->h_in * d->w_in;
    for (size_t pl = 0; pl < planes; pl++)
        for (int oh = 0; oh < d->h_out; oh++)
            for (int ow = 0; ow < d->w_out; ow++) {
                int at = -1;
                float best = 0.0f;
                for (int i = 0; i < d->kh; i++)
                    for (int j = 0; j < d->kw; j++) {
                        int ih = oh * d->sh - d->ph + i, iw = ow * d->sw - d->pw + j;
                        if (ih < 0 || ih >= d->h_in || iw < 0 || iw >= d->w_in) continue;
                        float v = x[pl * hw + (size_t)ih * d->w_in + iw];
                        if (at < 0 || v > best || isnan(v)) {
                            best = v;
                            at = ih * d->w_in + iw;
                        }
                    }
                size_t o = (pl * d->h_out + oh) * d->w_out + ow;
                y[o] = best;
                argmax[o] = at;
            }
}

/* dx = dy scattered to the argmax of each window, summed in double */
static void ref_maxpool_backward(const vr_window *d, const float *dy, const int32_t *argmax,
                                 float *dx)
{
    size_t planes = (size_t)d->n * d->c_in, hw = (size_t)d->h_in * d->w_in;
    size_t ohw = (size_t)d->h_out * d->w_out;
    double *acc = calloc(x_count(d), sizeof *acc);
    CU_ASSERT_FATAL(acc != NULL);
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t o = 0; o < ohw; o++) acc[pl * hw + argmax[pl * ohw + o]] += dy[pl * ohw + o];
    for (size_t i = 0; i < x_count(d); i++) dx[i] = (float)acc[i];
    free(acc);
}

/* x on a grid of 1/1024 with every value distinct, so windows have unique maxima and a step
 * of 1/8192 moves no argmax (and is exact in float) */
static void fill_distinct(float *x, size_t n, vr_rng *r)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)i - (double)n / 2) / 1024.0f;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)vr_rng_below(r, i);
        float t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
}

static void test_maxpool_forward(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (size_t ci = 0; ci < NCASES; ci++) {
        vr_window d = window_of(&cases[ci]);
        size_t nx = x_count(&d), ny = y_count(&d);
        float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y), *ry = malloc(ny * sizeof *ry);
        int32_t *a = malloc(ny * sizeof *a), *ra = malloc(ny * sizeof *ra);
        CU_ASSERT_FATAL(x && y && ry && a && ra);
        vr_rng r;
        vr_rng_seed(&r, 10 + ci);
        /* twice: continuous values, then values from {-2..2} full of ties */
        for (int ties = 0; ties < 2; ties++) {
            for (size_t i = 0; i < nx; i++)
                x[i] = ties ? (float)((int)vr_rng_below(&r, 5) - 2) : vr_rng_range(&r, -1.0f, 1.0f);
            ref_maxpool(&d, x, ry, ra);
            TU_OK(be->maxpool_forward(be, &d, x, y, a));
            char what[64];
            snprintf(what, sizeof what, "maxpool case %zu ties %d", ci, ties);
            CU_ASSERT(tu_close(y, ry, ny, 0.0, 0.0, what)); /* a maximum is exact */
            CU_ASSERT(memcmp(a, ra, ny * sizeof *a) == 0);
        }
        free(x);
        free(y);
        free(ry);
        free(a);
        free(ra);
    }
    vr_backend_destroy(be);
}

/* NaN wins its windows; -inf inputs still give an argmax inside the plane. */
static void test_maxpool_special_values(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    vr_window d = window_of(&cases[0]); /* 3x3/2 pad 1 on 9x9 */
    size_t nx = x_count(&d), ny = y_count(&d);
    float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y);
    int32_t *a = malloc(ny * sizeof *a);
    CU_ASSERT_FATAL(x && y && a);
    for (size_t i = 0; i < nx; i++) x[i] = -INFINITY;
    TU_OK(be->maxpool_forward(be, &d, x, y, a));
    for (size_t i = 0; i < ny; i++) {
        CU_ASSERT(isinf(y[i]) && y[i] < 0);
        CU_ASSERT(a[i] >= 0 && a[i] < d.h_in * d.w_in);
    }
    for (size_t i = 0; i < nx; i++) x[i] = (float)i;
    x[4 * 9 + 4] = NAN; /* plane 0, (4,4): inside the windows of outputs (2,2), (2,1), ... */
    TU_OK(be->maxpool_forward(be, &d, x, y, a));
    CU_ASSERT(isnan(y[2 * d.w_out + 2]));
    CU_ASSERT_EQUAL(a[2 * d.w_out + 2], 4 * 9 + 4);
    CU_ASSERT(!isnan(y[0]));
    free(x);
    free(y);
    free(a);
    vr_backend_destroy(be);
}

/* PyTorch rejects padding over half the kernel, and so do we (a window could hold only
 * padding), as well as a channel count that changes. */
static void test_maxpool_rejects(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    vr_window d;
    int k[2] = {2, 2}, s[2] = {1, 1}, p[2] = {2, 2};
    TU_OK(vr_window_init(&d, 2, 1, 1, 1, 4, 4, k, s, p));
    float x[16] = {0}, y[49];
    int32_t a[49];
    CU_ASSERT_EQUAL(be->maxpool_forward(be, &d, x, y, a), VR_ERR_SHAPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "maxpool"));
    CU_ASSERT_EQUAL(be->maxpool_backward(be, &d, y, a, x), VR_ERR_SHAPE);
    p[0] = p[1] = 1;
    TU_OK(vr_window_init(&d, 2, 1, 1, 2, 4, 4, k, s, p));
    CU_ASSERT_EQUAL(be->maxpool_forward(be, &d, x, y, a), VR_ERR_SHAPE);
    vr_backend_destroy(be);
}

static void test_maxpool_backward(void)
{
    for (size_t ci = 0; ci < NCASES; ci++) {
        vr_window d = window_of(&cases[ci]);
        size_t nx = x_count(&d), ny = y_count(&d);
        float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y), *dy = malloc(ny * sizeof *dy);
        float *dx = malloc(nx * sizeof *dx), *ref = malloc(nx * sizeof *ref);
        float *dx1 = malloc(nx * sizeof *dx1), *y1 = malloc(ny * sizeof *y1);
        int32_t *a = malloc(ny * sizeof *a), *a1 = malloc(ny * sizeof *a1);
        CU_ASSERT_FATAL(x && y && dy && dx && ref && dx1 && y1 && a && a1);
        vr_rng r;
        vr_rng_seed(&r, 20 + ci);
        tu_fill(x, nx, &r, -1.0f, 1.0f);
        tu_fill(dy, ny, &r, -1.0f, 1.0f);
        vr_backend *be1, *be2;
        TU_OK(vr_cpu_backend_create(1, &be1));
        TU_OK(vr_cpu_backend_create(2, &be2));
        TU_OK(be2->maxpool_forward(be2, &d, x, y, a));
        memset(dx, 0xff, nx * sizeof *dx); /* NaN: dx is overwritten, never accumulated */
        TU_OK(be2->maxpool_backward(be2, &d, dy, a, dx));
        ref_maxpool_backward(&d, dy, a, ref);
        char what[64];
        /* at most kh*kw windows add into one input: float sums of a handful of terms */
        snprintf(what, sizeof what, "maxpool backward case %zu", ci);
        CU_ASSERT(tu_close(dx, ref, nx, 1e-6, 1e-6, what));
        /* planes are whole per thread: any thread count gives the same bits */
        TU_OK(be1->maxpool_forward(be1, &d, x, y1, a1));
        TU_OK(be1->maxpool_backward(be1, &d, dy, a1, dx1));
        CU_ASSERT(memcmp(y, y1, ny * sizeof *y) == 0);
        CU_ASSERT(memcmp(a, a1, ny * sizeof *a) == 0);
        CU_ASSERT(memcmp(dx, dx1, nx * sizeof *dx) == 0);
        vr_backend_destroy(be1);
        vr_backend_destroy(be2);
        free(x);
        free(y);
        free(dy);
        free(dx);
        free(ref);
        free(dx1);
        free(y1);
        free(a);
        free(a1);
    }
}

/* L = sum(y * r) through the forward of the pooling under test, accumulated in double. */
typedef struct fd_ctx {
    vr_backend *be;
    const vr_window *d; /* max pool; NULL for the average pool */
    int n, c, s;        /* average pool */
    float *x, *y, *r;
    int32_t *argmax;
} fd_ctx;

static double fd_loss(void *p)
{
    fd_ctx *c = p;
    size_t ny;
    if (c->d) {
        CU_ASSERT_EQUAL(c->be->maxpool_forward(c->be, c->d, c->x, c->y, c->argmax), VR_OK);
        ny = y_count(c->d);
    } else {
        CU_ASSERT_EQUAL(c->be->avgpool_forward(c->be, c->n, c->c, c->s, c->x, c->y), VR_OK);
        ny = (size_t)c->n * c->c;
    }
    double l = 0.0;
    for (size_t i = 0; i < ny; i++) l += (double)c->y[i] * c->r[i];
    return l;
}

static void test_maxpool_finite_differences(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (size_t ci = 0; ci < NCASES; ci++) {
        vr_window d = window_of(&cases[ci]);
        size_t nx = x_count(&d), ny = y_count(&d);
        float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y), *r = malloc(ny * sizeof *r);
        float *dx = malloc(nx * sizeof *dx);
        int32_t *a = malloc(ny * sizeof *a);
        CU_ASSERT_FATAL(x && y && r && dx && a);
        vr_rng g;
        vr_rng_seed(&g, 30 + ci);
        fill_distinct(x, nx, &g);
        tu_fill(r, ny, &g, -1.0f, 1.0f);
        TU_OK(be->maxpool_forward(be, &d, x, y, a));
        TU_OK(be->maxpool_backward(be, &d, r, a, dx));
        fd_ctx c = {.be = be, .d = &d, .x = x, .y = y, .r = r, .argmax = a};
        char what[64];
        snprintf(what, sizeof what, "maxpool case %zu dL/dx", ci);
        /* every coordinate: most have zero gradient, the rest must pick up their windows */
        CU_ASSERT(tu_fd_check(fd_loss, &c, x, nx, dx, (int)nx, 1.0f / 8192, 1e-5, 1e-5, what));
        free(x);
        free(y);
        free(r);
        free(dx);
        free(a);
    }
    vr_backend_destroy(be);
}

/* Global average pooling over (n, c, s) shapes: s = 1 (a no-op), the ResNet 2x2 and 7x7
 * planes, and a long plane. */
static const int avg_shapes[][3] = {{3, 5, 1}, {4, 8, 4}, {2, 3, 49}, {2, 2, 1000}, {1, 1, 7}};
#define NAVG (sizeof avg_shapes / sizeof avg_shapes[0])

static void test_avgpool(void)
{
    vr_backend *be1, *be2;
    TU_OK(vr_cpu_backend_create(1, &be1));
    TU_OK(vr_cpu_backend_create(2, &be2));
    for (size_t k = 0; k < NAVG; k++) {
        int n = avg_shapes[k][0], c = avg_shapes[k][1], s = avg_shapes[k][2];
        size_t nx = (size_t)n * c * s, ny = (size_t)n * c;
        float *x = malloc(nx * sizeof *x), *dx = malloc(nx * sizeof *dx);
        float *dx1 = malloc(nx * sizeof *dx1), *rdx = malloc(nx * sizeof *rdx);
        float *y = malloc(ny * sizeof *y), *y1 = malloc(ny * sizeof *y1);
        float *ry = malloc(ny * sizeof *ry), *dy = malloc(ny * sizeof *dy);
        CU_ASSERT_FATAL(x && dx && dx1 && rdx && y && y1 && ry && dy);
        vr_rng r;
        vr_rng_seed(&r, 40 + k);
        tu_fill(x, nx, &r, -1.0f, 1.0f);
        tu_fill(dy, ny, &r, -1.0f, 1.0f);
        for (size_t pl = 0; pl < ny; pl++) {
            double sum = 0.0;
            for (int i = 0; i < s; i++) sum += x[pl * s + i];
            ry[pl] = (float)(sum / s);
            for (int i = 0; i < s; i++) rdx[pl * s + i] = (float)((double)dy[pl] / s);
        }
        TU_OK(be2->avgpool_forward(be2, n, c, s, x, y));
        memset(dx, 0xff, nx * sizeof *dx); /* NaN: dx is overwritten */
        TU_OK(be2->avgpool_backward(be2, n, c, s, dy, dx));
        char what[64];
        snprintf(what, sizeof what, "avgpool forward %dx%dx%d", n, c, s);
        CU_ASSERT(tu_close(y, ry, ny, 1e-7, 1e-6, what));
        snprintf(what, sizeof what, "avgpool backward %dx%dx%d", n, c, s);
        CU_ASSERT(tu_close(dx, rdx, nx, 1e-7, 1e-6, what));
        TU_OK(be1->avgpool_forward(be1, n, c, s, x, y1));
        TU_OK(be1->avgpool_backward(be1, n, c, s, dy, dx1));
        CU_ASSERT(memcmp(y, y1, ny * sizeof *y) == 0);
        CU_ASSERT(memcmp(dx, dx1, nx * sizeof *dx) == 0);
        /* L is linear in x: a large step is exact but for float rounding */
        fd_ctx fc = {.be = be2, .n = n, .c = c, .s = s, .x = x, .y = y1, .r = dy};
        snprintf(what, sizeof what, "avgpool %dx%dx%d dL/dx", n, c, s);
        CU_ASSERT(tu_fd_check(fd_loss, &fc, x, nx, dx, 50, 0.25f, 1e-5, 1e-3, what));
        free(x);
        free(dx);
        free(dx1);
        free(rdx);
        free(y);
        free(y1);
        free(ry);
        free(dy);
    }
    vr_backend_destroy(be1);
    vr_backend_destroy(be2);
}

int main(void)
{
    static const tu_test tests[] = {
        {"maxpool forward vs direct loop, with ties", test_maxpool_forward},
        {"maxpool NaN and -inf", test_maxpool_special_values},
        {"maxpool rejects bad windows", test_maxpool_rejects},
        {"maxpool backward vs scatter; 1 and 2 threads", test_maxpool_backward},
        {"maxpool finite differences of sum(y*r)", test_maxpool_finite_differences},
        {"avgpool forward, backward, threads, finite differences", test_avgpool},
        {NULL, NULL},
    };
    return tu_main("pool", tests);
}
