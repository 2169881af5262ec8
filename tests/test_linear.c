/* The linear layer of the CPU backend, y (N,out) = x (N,in) w^T + b with w (out,in), against a
 * naive double-precision loop and against finite differences of L = sum(y * r); the backward's
 * accumulation (dw, db +=), overwrite (dx) and optional outputs. Tolerances are
 * |got - ref| <= atol + rtol*|ref|. */
#include "testutil.h"

typedef struct lin_shape {
    int n, in, out;
} lin_shape;

/* N = 2 smallest; odd sizes; out = 300 spans two bias-gradient tiles */
static const lin_shape shapes[] = {{2, 3, 5}, {7, 13, 300}, {33, 64, 17}, {1, 1, 1}};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

typedef struct lin_case {
    vr_backend *be;
    int n, in, out, bias;
    float *x, *w, *b, *y;       /* (N,in) (out,in) (out) (N,out) */
    float *dy, *dx, *dw, *db;   /* (N,out) (N,in) (out,in) (out) */
} lin_case;

static float *alloc_f(size_t count)
{
    float *p = calloc(count, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static void case_init(lin_case *k, vr_backend *be, lin_shape sh, int bias, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    *k = (lin_case){be, sh.n, sh.in, sh.out, bias, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nx = (size_t)sh.n * sh.in, nw = (size_t)sh.out * sh.in, ny = (size_t)sh.n * sh.out;
    k->x = alloc_f(nx);
    k->w = alloc_f(nw);
    k->b = alloc_f((size_t)sh.out);
    k->y = alloc_f(ny);
    k->dy = alloc_f(ny);
    k->dx = alloc_f(nx);
    k->dw = alloc_f(nw);
    k->db = alloc_f((size_t)sh.out);
    tu_fill(k->x, nx, &r, -1.0f, 1.0f);
    tu_fill(k->w, nw, &r, -1.0f, 1.0f);
    tu_fill(k->b, (size_t)sh.out, &r, -1.0f, 1.0f);
    tu_fill(k->dy, ny, &r, -1.0f, 1.0f);
    /* dx is overwritten: start from garbage; dw, db accumulate: start non-zero */
    tu_fill(k->dx, nx, &r, 100.0f, 200.0f);
    tu_fill(k->dw, nw, &r, -1.0f, 1.0f);
    tu_fill(k->db, (size_t)sh.out, &r, -1.0f, 1.0f);
}

static void case_free(lin_case *k)
{
    free(k->x), free(k->w), free(k->b), free(k->y);
    free(k->dy), free(k->dx), free(k->dw), free(k->db);
}

static vr_status run_forward(lin_case *k)
{
    return k->be->linear_forward(k->be, k->n, k->in, k->out, k->x, k->w, k->bias ? k->b : NULL,
                                 k->y);
}

static void test_forward(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++)
        for (int bias = 0; bias < 2; bias++) {
            lin_case k;
            case_init(&k, be, shapes[si], bias, 10 + si * 2 + bias);
            /* NaN in y must not leak through when there is no bias (beta = 0) */
            for (size_t i = 0; i < (size_t)k.n * k.out; i++) k.y[i] = NAN;
            TU_OK(run_forward(&k));
            float *ref = alloc_f((size_t)k.n * k.out);
            for (int i = 0; i < k.n; i++)
                for (int o = 0; o < k.out; o++) {
                    double v = bias ? k.b[o] : 0.0;
                    for (int j = 0; j < k.in; j++)
                        v += (double)k.x[(size_t)i * k.in + j] * k.w[(size_t)o * k.in + j];
                    ref[(size_t)i * k.out + o] = (float)v;
                }
            char what[80];
            snprintf(what, sizeof what, "forward (%d,%d,%d) bias %d", k.n, k.in, k.out, bias);
            CU_ASSERT(tu_close(k.y, ref, (size_t)k.n * k.out, 1e-5, 1e-5, what));
            free(ref);
            case_free(&k);
        }
    vr_backend_destroy(be);
}

static void test_backward(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++) {
        lin_case k;
        case_init(&k, be, shapes[si], 1, 20 + si);
        size_t nx = (size_t)k.n * k.in, nw = (size_t)k.out * k.in;
        float *dx = alloc_f(nx), *dw = alloc_f(nw), *db = alloc_f((size_t)k.out);
        float *dw0 = alloc_f(nw);
        memcpy(dw0, k.dw, nw * sizeof *dw0);
        memcpy(dw, k.dw, nw * sizeof *dw);
        memcpy(db, k.db, (size_t)k.out * sizeof *db);
        for (int i = 0; i < k.n; i++)
            for (int j = 0; j < k.in; j++) {
                double v = 0.0;
                for (int o = 0; o < k.out; o++)
                    v += (double)k.dy[(size_t)i * k.out + o] * k.w[(size_t)o * k.in + j];
                dx[(size_t)i * k.in + j] = (float)v;
            }
        for (int o = 0; o < k.out; o++) {
            double sb = db[o];
            for (int i = 0; i < k.n; i++) sb += k.dy[(size_t)i * k.out + o];
            db[o] = (float)sb;
            for (int j = 0; j < k.in; j++) {
                double v = dw[(size_t)o * k.in + j];
                for (int i = 0; i < k.n; i++)
                    v += (double)k.dy[(size_t)i * k.out + o] * k.x[(size_t)i * k.in + j];
                dw[(size_t)o * k.in + j] = (float)v;
            }
        }
        TU_OK(be->linear_backward(be, k.n, k.in, k.out, k.dy, k.x, k.w, k.dx, k.dw, k.db));
        char what[80];
        snprintf(what, sizeof what, "backward dx (%d,%d,%d)", k.n, k.in, k.out);
        CU_ASSERT(tu_close(k.dx, dx, nx, 1e-5, 1e-5, what));
        CU_ASSERT(tu_close(k.dw, dw, nw, 1e-5, 1e-5, "backward dw"));
        CU_ASSERT(tu_close(k.db, db, (size_t)k.out, 1e-5, 1e-5, "backward db"));
        /* without dx and db: dw gains dy^T x once more (the reference's increment, dw - dw0),
         * dx and db are left alone */
        float *keep_dx = alloc_f(nx), *keep_db = alloc_f((size_t)k.out);
        memcpy(keep_dx, k.dx, nx * sizeof *keep_dx);
        memcpy(keep_db, k.db, (size_t)k.out * sizeof *keep_db);
        for (size_t i = 0; i < nw; i++) dw[i] = k.dw[i] + (dw[i] - dw0[i]);
        TU_OK(be->linear_backward(be, k.n, k.in, k.out, k.dy, k.x, k.w, NULL, k.dw, NULL));
        CU_ASSERT(memcmp(k.dx, keep_dx, nx * sizeof *keep_dx) == 0);
        CU_ASSERT(memcmp(k.db, keep_db, (size_t)k.out * sizeof *keep_db) == 0);
        CU_ASSERT(tu_close(k.dw, dw, nw, 1e-5, 1e-5, "backward dw, second accumulation"));
        free(keep_dx), free(keep_db), free(dw0);
        free(dx), free(dw), free(db);
        case_free(&k);
    }
    vr_backend_destroy(be);
}

/* L = sum(y * r) through the kernel's forward, accumulated in double */
static double linear_loss(void *ctx)
{
    lin_case *k = ctx;
    CU_ASSERT_EQUAL(run_forward(k), VR_OK);
    double l = 0.0;
    for (size_t i = 0; i < (size_t)k->n * k->out; i++) l += (double)k->y[i] * k->dy[i];
    return l;
}

static void test_finite_differences(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(2, &be));
    for (int si = 0; si < NSHAPES; si++) {
        lin_case k;
        case_init(&k, be, shapes[si], 1, 30 + si);
        size_t nx = (size_t)k.n * k.in, nw = (size_t)k.out * k.in;
        memset(k.dw, 0, nw * sizeof *k.dw);
        memset(k.db, 0, (size_t)k.out * sizeof *k.db);
        TU_OK(be->linear_backward(be, k.n, k.in, k.out, k.dy, k.x, k.w, k.dx, k.dw, k.db));
        char what[80];
        snprintf(what, sizeof what, "fd dx (%d,%d,%d)", k.n, k.in, k.out);
        CU_ASSERT(tu_fd_check(linear_loss, &k, k.x, nx, k.dx, 24, 1e-2f, 1e-3, 1e-3, what));
        snprintf(what, sizeof what, "fd dw (%d,%d,%d)", k.n, k.in, k.out);
        CU_ASSERT(tu_fd_check(linear_loss, &k, k.w, nw, k.dw, 24, 1e-2f, 1e-3, 1e-3, what));
        snprintf(what, sizeof what, "fd db (%d,%d,%d)", k.n, k.in, k.out);
        CU_ASSERT(tu_fd_check(linear_loss, &k, k.b, (size_t)k.out, k.db, 24, 1e-2f, 1e-3, 1e-3,
                              what));
        case_free(&k);
    }
    vr_backend_destroy(be);
}

static void test_bad_shapes(void)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    float v[4] = {0};
    CU_ASSERT_EQUAL(be->linear_forward(be, 0, 2, 2, v, v, NULL, v), VR_ERR_SHAPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "linear"));
    CU_ASSERT_EQUAL(be->linear_backward(be, 2, -1, 2, v, v, v, v, v, v), VR_ERR_SHAPE);
    vr_backend_destroy(be);
}

int main(void)
{
    static const tu_test tests[] = {
        {"forward vs reference, with and without bias", test_forward},
        {"backward vs reference, accumulation and optional outputs", test_backward},
        {"backward vs finite differences", test_finite_differences},
        {"bad shapes", test_bad_shapes},
        {NULL, NULL},
    };
    return tu_main("linear", tests);
}
