/* Shared helpers of the CUnit suites: random fills, tolerance checks of the form
 * |got - ref| <= atol + rtol * |ref|, finite differences, and a main() that exits non-zero on
 * any failure. Header-only: each test program includes it once. */
#ifndef VR_TESTUTIL_H
#define VR_TESTUTIL_H

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/vicreg.h"

#ifndef VR_FIXTURE_DIR
#define VR_FIXTURE_DIR "tests/fixtures"
#endif

/* The whole file at path, NUL-terminated (malloc'd; its length in *len when len is not NULL),
 * or NULL when it cannot be read. */
static inline char *tu_read_file(const char *path, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = '\0';
    if (b && len) *len = n;
    return b;
}

/* The committed fixture `file` under VR_FIXTURE_DIR, opened; NULL (and the reason printed)
 * when it cannot be. */
static inline vr_safetensors *tu_open_fixture(const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", VR_FIXTURE_DIR, file);
    vr_safetensors *st = NULL;
    vr_status s = vr_st_open(path, &st);
    if (s) fprintf(stderr, "\n  %s\n", vr_last_error());
    return st;
}

static inline void tu_fill(float *x, size_t n, vr_rng *r, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = vr_rng_range(r, lo, hi);
}

static inline void tu_fill_normal(float *x, size_t n, vr_rng *r, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * vr_rng_normal(r);
}

/* 1 when every element satisfies |got - ref| <= atol + rtol*|ref|; otherwise prints the worst
 * element with `what` and returns 0. NaN anywhere fails. */
static inline int tu_close(const float *got, const float *ref, size_t n, double atol, double rtol,
                           const char *what)
{
    size_t worst = 0;
    double worst_excess = -1.0, worst_err = 0.0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - (double)ref[i]);
        double allowed = atol + rtol * fabs((double)ref[i]);
        if (!(err <= allowed)) ok = 0; /* also catches NaN */
        double excess = isnan(err) ? INFINITY : err - allowed;
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
            worst_err = err;
        }
    }
    if (!ok)
        fprintf(stderr, "\n  %s: element %zu of %zu: got %.9g want %.9g (|err| %.3g > %.3g + %.3g*|ref|)\n",
                what, worst, n, (double)got[worst], (double)ref[worst], worst_err, atol, rtol);
    return ok;
}

/* Central finite differences of a scalar function f(ctx) with respect to `count` entries of x,
 * compared with the analytic gradient `grad` on `samples` coordinates spread over x. The check
 * is |fd - an| <= atol + rtol * max(|fd|, |an|). f is evaluated in whatever precision it
 * likes; a double accumulation keeps the difference meaningful. Returns 1 on success. */
static inline int tu_fd_check(double (*f)(void *ctx), void *ctx, float *x, size_t count,
                              const float *grad, int samples, float eps, double atol,
                              double rtol, const char *what)
{
    int ok = 1;
    size_t step = count / (size_t)samples;
    if (step == 0) step = 1;
    for (size_t i = 0; i < count && samples-- > 0; i += step) {
        float keep = x[i];
        x[i] = keep + eps;
        double fp = f(ctx);
        x[i] = keep - eps;
        double fm = f(ctx);
        x[i] = keep;
        double fd = (fp - fm) / (2.0 * (double)eps);
        double an = grad[i];
        double allowed = atol + rtol * fmax(fabs(fd), fabs(an));
        if (!(fabs(fd - an) <= allowed)) {
            fprintf(stderr, "\n  %s: d/dx[%zu]: finite difference %.7g, analytic %.7g (allowed %.3g)\n",
                    what, i, fd, an, allowed);
            ok = 0;
        }
    }
    return ok;
}

typedef struct tu_test {
    const char *name;
    void (*fn)(void);
} tu_test;

/* Runs one suite; the process exit status is non-zero when any assertion failed. */
static inline int tu_main(const char *suite_name, const tu_test *tests)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite(suite_name, NULL, NULL);
    if (!s) return 2;
    for (const tu_test *t = tests; t->name; t++)
        if (!CU_add_test(s, t->name, t->fn)) return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (run == 0) return 3;
    return failed ? 1 : 0;
}

/* CU_ASSERT on a vr_status, printing the library's message when it fails. */
#define TU_OK(expr)                                                                           \
    do {                                                                                      \
        vr_status tu_s_ = (expr);                                                             \
        if (tu_s_ != VR_OK)                                                                   \
            fprintf(stderr, "\n  %s -> %s: %s\n", #expr, vr_status_str(tu_s_), vr_last_error()); \
        CU_ASSERT_EQUAL_FATAL(tu_s_, VR_OK);                                                  \
    } while (0)

#endif
