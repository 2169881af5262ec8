/* Elementwise kernels of the CPU backend (relu forward and backward, add, accumulate, fill, sum
 * of squares) against naive loops, on counts below and above the threshold where the kernels
 * start using threads, with the aliasing the table allows; relu backward against finite
 * differences. Tolerances are |got - ref| <= atol + rtol*|ref|. */
#include "testutil.h"

/* odd counts on both sides of the 32768-element threading threshold */
static const size_t counts[] = {1, 7, 1001, 32768, 32769, 200003};
#define NCOUNTS (sizeof counts / sizeof counts[0])

static float *alloc_f(size_t count)
{
    float *p = calloc(count, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static vr_backend *make_backend(int threads)
{
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(threads, &be));
    return be;
}

static void test_relu(void)
{
    vr_backend *be = make_backend(2);
    vr_rng r;
    vr_rng_seed(&r, 1);
    for (size_t ci = 0; ci < NCOUNTS; ci++) {
        size_t n = counts[ci];
        float *x = alloc_f(n), *y = alloc_f(n), *dy = alloc_f(n), *dx = alloc_f(n);
        float *ref = alloc_f(n);
        tu_fill(x, n, &r, -1.0f, 1.0f);
        tu_fill(dy, n, &r, -1.0f, 1.0f);
        TU_OK(be->relu_forward(be, n, x, y));
        for (size_t i = 0; i < n; i++) ref[i] = x[i] > 0.0f ? x[i] : 0.0f;
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "relu forward"));
        TU_OK(be->relu_backward(be, n, dy, y, dx));
        for (size_t i = 0; i < n; i++) ref[i] = x[i] > 0.0f ? dy[i] : 0.0f;
        CU_ASSERT(tu_close(dx, ref, n, 0.0, 0.0, "relu backward"));
        /* in place: dx is dy */
        TU_OK(be->relu_backward(be, n, dy, y, dy));
        CU_ASSERT(tu_close(dy, ref, n, 0.0, 0.0, "relu backward in place"));
        free(x), free(y), free(dy), free(dx), free(ref);
    }
    vr_backend_destroy(be);
}

/* A NaN must survive the relu (as torch.relu), so a diverging run shows it. */
static void test_relu_nan(void)
{
    vr_backend *be = make_backend(1);
    float x[3] = {NAN, -1.0f, 2.0f}, y[3];
    TU_OK(be->relu_forward(be, 3, x, y));
    CU_ASSERT(isnan(y[0]));
    CU_ASSERT_EQUAL(y[1], 0.0f);
    CU_ASSERT_EQUAL(y[2], 2.0f);
    vr_backend_destroy(be);
}

typedef struct relu_fd {
    vr_backend *be;
    size_t n;
    float *x, *y, *r;
} relu_fd;

/* L = sum(relu(x) * r) through the kernel, accumulated in double */
static double relu_loss(void *ctx)
{
    relu_fd *c = ctx;
    CU_ASSERT_EQUAL(c->be->relu_forward(c->be, c->n, c->x, c->y), VR_OK);
    double l = 0.0;
    for (size_t i = 0; i < c->n; i++) l += (double)c->y[i] * c->r[i];
    return l;
}

static void test_relu_finite_differences(void)
{
    vr_backend *be = make_backend(2);
    vr_rng r;
    vr_rng_seed(&r, 2);
    const size_t n = 257;
    relu_fd c = {be, n, alloc_f(n), alloc_f(n), alloc_f(n)};
    float *dx = alloc_f(n);
    /* |x| >= 0.1 keeps the differences (eps 1e-3) off the kink */
    for (size_t i = 0; i < n; i++) {
        float u = vr_rng_range(&r, 0.1f, 1.0f);
        c.x[i] = vr_rng_uniform(&r) < 0.5f ? -u : u;
    }
    tu_fill(c.r, n, &r, -1.0f, 1.0f);
    TU_OK(be->relu_forward(be, n, c.x, c.y));
    TU_OK(be->relu_backward(be, n, c.r, c.y, dx));
    CU_ASSERT(tu_fd_check(relu_loss, &c, c.x, n, dx, 64, 1e-3f, 1e-4, 1e-3, "relu fd dx"));
    free(c.x), free(c.y), free(c.r), free(dx);
    vr_backend_destroy(be);
}

static void test_add_accumulate_fill(void)
{
    vr_backend *be = make_backend(2);
    vr_rng r;
    vr_rng_seed(&r, 3);
    for (size_t ci = 0; ci < NCOUNTS; ci++) {
        size_t n = counts[ci];
        float *a = alloc_f(n), *b = alloc_f(n), *y = alloc_f(n), *ref = alloc_f(n);
        tu_fill(a, n, &r, -1.0f, 1.0f);
        tu_fill(b, n, &r, -1.0f, 1.0f);
        for (size_t i = 0; i < n; i++) ref[i] = a[i] + b[i];
        TU_OK(be->add(be, n, a, b, y));
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "add"));
        /* y may be a or b */
        memcpy(y, a, n * sizeof *y);
        TU_OK(be->add(be, n, y, b, y));
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "add into a"));
        memcpy(y, b, n * sizeof *y);
        TU_OK(be->add(be, n, a, y, y));
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "add into b"));
        /* y += a */
        memcpy(y, b, n * sizeof *y);
        TU_OK(be->accumulate(be, n, a, y));
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "accumulate"));
        TU_OK(be->fill(be, n, -2.5f, y));
        for (size_t i = 0; i < n; i++) ref[i] = -2.5f;
        CU_ASSERT(tu_close(y, ref, n, 0.0, 0.0, "fill"));
        free(a), free(b), free(y), free(ref);
    }
    vr_backend_destroy(be);
}

/* Against a double loop; the same thread count gives the same bits every call, and 1 or 2
 * threads agree to rounding (their partial sums split differently). */
static void test_sum_squares(void)
{
    vr_backend *be1 = make_backend(1), *be2 = make_backend(2);
    vr_rng r;
    vr_rng_seed(&r, 4);
    for (size_t ci = 0; ci < NCOUNTS; ci++) {
        size_t n = counts[ci];
        float *x = alloc_f(n);
        tu_fill(x, n, &r, -3.0f, 3.0f);
        double ref = 0.0, s1, s2, again;
        for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
        TU_OK(be1->sum_squares(be1, n, x, &s1));
        TU_OK(be2->sum_squares(be2, n, x, &s2));
        TU_OK(be2->sum_squares(be2, n, x, &again));
        CU_ASSERT(fabs(s1 - ref) <= 1e-12 * ref);
        CU_ASSERT(fabs(s2 - ref) <= 1e-12 * ref);
        CU_ASSERT(memcmp(&s2, &again, sizeof s2) == 0);
        free(x);
    }
    double zero = -1.0;
    TU_OK(be2->sum_squares(be2, 0, NULL, &zero));
    CU_ASSERT_EQUAL(zero, 0.0);
    vr_backend_destroy(be1);
    vr_backend_destroy(be2);
}

/* Elementwise results do not depend on how the array is split. */
static void test_threads_identical(void)
{
    vr_backend *be[2] = {make_backend(1), make_backend(2)};
    const size_t n = 100003;
    vr_rng r;
    vr_rng_seed(&r, 5);
    float *x = alloc_f(n), *d = alloc_f(n), *out[2][4];
    tu_fill(x, n, &r, -1.0f, 1.0f);
    tu_fill(d, n, &r, -1.0f, 1.0f);
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < 4; k++) out[t][k] = alloc_f(n);
        TU_OK(be[t]->relu_forward(be[t], n, x, out[t][0]));
        TU_OK(be[t]->relu_backward(be[t], n, d, out[t][0], out[t][1]));
        TU_OK(be[t]->add(be[t], n, x, d, out[t][2]));
        memcpy(out[t][3], d, n * sizeof(float));
        TU_OK(be[t]->accumulate(be[t], n, x, out[t][3]));
    }
    for (int k = 0; k < 4; k++) CU_ASSERT(memcmp(out[0][k], out[1][k], n * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < 4; k++) free(out[t][k]);
        vr_backend_destroy(be[t]);
    }
    free(x), free(d);
}

int main(void)
{
    static const tu_test tests[] = {
        {"relu forward and backward vs reference", test_relu},
        {"relu keeps NaN", test_relu_nan},
        {"relu backward vs finite differences", test_relu_finite_differences},
        {"add, accumulate, fill vs reference", test_add_accumulate_fill},
        {"sum of squares", test_sum_squares},
        {"1 and 2 threads give identical bits", test_threads_identical},
        {NULL, NULL},
    };
    return tu_main("elementwise", tests);
}
