/* Optimiser steps (LARS, SGD, AdamW) against naive double-precision loops written from the
 * reference code (main_vicreg.py LARS, torch 1.13 SGD and AdamW), hand-computed branch cases,
 * thread-count independence, and the warm-up + cosine learning-rate schedule. */
#include "testutil.h"

#include "vicreg/schedule.h"

static vr_backend *make_backend(int threads)
{
    vr_backend *be = NULL;
    vr_status s = vr_cpu_backend_create(threads, &be);
    CU_ASSERT_EQUAL_FATAL(s, VR_OK);
    return be;
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static int close_fd(const float *got, const double *ref, size_t n, double atol, double rtol,
                    const char *what)
{
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)ref[i];
    int ok = tu_close(got, f, n, atol, rtol, what);
    free(f);
    return ok;
}

/* -------------------------------------------------------------- LARS */

/* main_vicreg.py LARS.step for one tensor, in double */
static void ref_lars(size_t n, double *w, const double *g, double *mu, double lr, double wd,
                     double momentum, double eta, int trust)
{
    double *dp = malloc(n * sizeof *dp);
    double pn = 0.0, un = 0.0;
    for (size_t i = 0; i < n; i++) {
        dp[i] = g[i] + wd * w[i];
        pn += w[i] * w[i];
        un += dp[i] * dp[i];
    }
    pn = sqrt(pn), un = sqrt(un);
    double q = 1.0;
    if (trust && pn > 0.0 && un > 0.0) q = eta * pn / un;
    for (size_t i = 0; i < n; i++) {
        mu[i] = momentum * mu[i] + q * dp[i];
        w[i] -= lr * mu[i];
    }
    free(dp);
}

static void lars_vs_reference(vr_backend *be, size_t n, int trust, float wd, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    float *w = malloc(n * sizeof *w), *g = malloc(n * sizeof *g), *mu = calloc(n, sizeof *mu);
    tu_fill_normal(w, n, &r, 0.05f);
    double *rw = to_double(w, n), *rmu = calloc(n, sizeof *rmu);
    for (int step = 0; step < 5; step++) {
        tu_fill_normal(g, n, &r, 0.01f);
        double *rg = to_double(g, n);
        float lr = 0.3f + 0.1f * step;
        TU_OK(be->lars_step(be, n, w, g, mu, lr, wd, 0.9f, 0.001f, trust));
        ref_lars(n, rw, rg, rmu, lr, wd, 0.9, 0.001, trust);
        free(rg);
    }
    char what[64];
    snprintf(what, sizeof what, "lars w (n %zu trust %d)", n, trust);
    CU_ASSERT(close_fd(w, rw, n, 1e-7, 1e-5, what));
    snprintf(what, sizeof what, "lars mu (n %zu trust %d)", n, trust);
    CU_ASSERT(close_fd(mu, rmu, n, 1e-9, 1e-4, what));
    free(w), free(g), free(mu), free(rw), free(rmu);
}

static void test_lars_reference(void)
{
    vr_backend *be = make_backend(2);
    lars_vs_reference(be, 1000, 1, 1e-6f, 1);
    lars_vs_reference(be, 1000, 1, 0.05f, 2); /* a decay large enough to matter */
    lars_vs_reference(be, 1000, 0, 0.05f, 3);
    lars_vs_reference(be, 7, 1, 1e-6f, 4);
    lars_vs_reference(be, (1u << 20) + 3, 1, 1e-6f, 5); /* threaded, many norm blocks */
    be->destroy(be);
}

static void test_lars_branches(void)
{
    vr_backend *be = make_backend(2);
    /* trust ratio by hand: |w| = 5, g' = g = (6, 8), |g'| = 10: q = 0.001 * 5 / 10 */
    float w[2] = {3, 4}, g[2] = {6, 8}, mu[2] = {0, 0};
    TU_OK(be->lars_step(be, 2, w, g, mu, 2.0f, 0.0f, 0.9f, 0.001f, 1));
    CU_ASSERT(tu_close(mu, (float[]){3e-3f, 4e-3f}, 2, 0, 1e-6, "lars q by hand, mu"));
    CU_ASSERT(tu_close(w, (float[]){3 - 6e-3f, 4 - 8e-3f}, 2, 0, 1e-6, "lars q by hand, w"));

    /* zero gradient and no decay: |g'| = 0, q = 1 (not 0/0): only momentum moves w */
    float w1[3] = {1, -2, 3}, g1[3] = {0, 0, 0}, mu1[3] = {1, 2, -1};
    TU_OK(be->lars_step(be, 3, w1, g1, mu1, 0.5f, 0.0f, 0.9f, 0.001f, 1));
    CU_ASSERT(tu_close(mu1, (float[]){0.9f, 1.8f, -0.9f}, 3, 0, 1e-6, "lars zero grad, mu"));
    CU_ASSERT(tu_close(w1, (float[]){0.55f, -2.9f, 3.45f}, 3, 0, 1e-6, "lars zero grad, w"));

    /* zero weights: |w| = 0, q = 1 (not 0): mu = g, w = -lr g */
    float w2[3] = {0, 0, 0}, g2[3] = {1, -2, 0.5f}, mu2[3] = {0, 0, 0};
    TU_OK(be->lars_step(be, 3, w2, g2, mu2, 0.1f, 1e-6f, 0.9f, 0.001f, 1));
    CU_ASSERT(tu_close(mu2, g2, 3, 0, 1e-7, "lars zero weights, mu"));
    CU_ASSERT(tu_close(w2, (float[]){-0.1f, 0.2f, -0.05f}, 3, 0, 1e-6, "lars zero weights, w"));

    /* trust 0: q = 1 whatever the norms, decay still added */
    float w3[2] = {3, 4}, g3[2] = {6, 8}, mu3[2] = {1, 1};
    TU_OK(be->lars_step(be, 2, w3, g3, mu3, 0.1f, 0.5f, 0.9f, 0.001f, 0));
    CU_ASSERT(tu_close(mu3, (float[]){0.9f + 7.5f, 0.9f + 10.0f}, 2, 0, 1e-6, "lars trust 0, mu"));
    CU_ASSERT(tu_close(w3, (float[]){3 - 0.84f, 4 - 1.09f}, 2, 0, 1e-6, "lars trust 0, w"));
    CU_ASSERT_EQUAL(be->lars_step(be, 0, NULL, NULL, NULL, 0.1f, 0, 0.9f, 0.001f, 1), VR_OK);
    CU_ASSERT_EQUAL(be->lars_step(be, 2, w3, NULL, mu3, 0.1f, 0, 0.9f, 0.001f, 1), VR_ERR_ARG);
    be->destroy(be);
}

/* the norms are summed over fixed blocks in a fixed order: 1 and 2 threads give the same bits */
static void test_thread_independence(void)
{
    size_t n = (1u << 20) + 77;
    vr_rng r;
    vr_rng_seed(&r, 9);
    float *w0 = malloc(n * sizeof *w0), *g = malloc(n * sizeof *g), *m0 = malloc(n * sizeof *m0);
    tu_fill_normal(w0, n, &r, 0.05f);
    tu_fill_normal(g, n, &r, 0.01f);
    tu_fill_normal(m0, n, &r, 0.01f);
    float *w[2], *mu[2], *v[2];
    for (int t = 0; t < 2; t++) {
        vr_backend *be = make_backend(t + 1);
        w[t] = malloc(n * sizeof(float)), mu[t] = malloc(n * sizeof(float));
        v[t] = malloc(n * sizeof(float));
        memcpy(w[t], w0, n * sizeof(float));
        memcpy(mu[t], m0, n * sizeof(float));
        for (size_t i = 0; i < n; i++) v[t][i] = m0[i] * m0[i];
        TU_OK(be->lars_step(be, n, w[t], g, mu[t], 0.2f, 1e-6f, 0.9f, 0.001f, 1));
        TU_OK(be->sgd_step(be, n, w[t], g, mu[t], 0.2f, 1e-6f, 0.9f, 0));
        TU_OK(be->adamw_step(be, n, w[t], g, mu[t], v[t], 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 3));
        be->destroy(be);
    }
    CU_ASSERT(memcmp(w[0], w[1], n * sizeof(float)) == 0);
    CU_ASSERT(memcmp(mu[0], mu[1], n * sizeof(float)) == 0);
    CU_ASSERT(memcmp(v[0], v[1], n * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++) free(w[t]), free(mu[t]), free(v[t]);
    free(w0), free(g), free(m0);
}

/* -------------------------------------------------------------- SGD */

/* torch.optim.SGD, dampening 0, nesterov off, for one tensor, in double */
static void ref_sgd(size_t n, double *w, const double *g, double *mu, double lr, double wd,
                    double momentum, int first)
{
    for (size_t i = 0; i < n; i++) {
        double dp = g[i] + wd * w[i];
        if (momentum != 0.0) {
            mu[i] = first ? dp : momentum * mu[i] + dp;
            dp = mu[i];
        }
        w[i] -= lr * dp;
    }
}

static void sgd_vs_reference(vr_backend *be, size_t n, float momentum, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    float *w = malloc(n * sizeof *w), *g = malloc(n * sizeof *g), *mu = malloc(n * sizeof *mu);
    tu_fill_normal(w, n, &r, 0.5f);
    /* the buffer's old contents must not be read on the first step */
    for (size_t i = 0; i < n; i++) mu[i] = NAN;
    double *rw = to_double(w, n), *rmu = calloc(n, sizeof *rmu);
    for (int step = 0; step < 4; step++) {
        tu_fill_normal(g, n, &r, 0.1f);
        double *rg = to_double(g, n);
        TU_OK(be->sgd_step(be, n, w, g, momentum != 0.0f ? mu : NULL, 0.05f, 1e-2f, momentum,
                           step == 0));
        ref_sgd(n, rw, rg, rmu, 0.05, 1e-2, momentum, step == 0);
        if (step == 0 && momentum != 0.0f) {
            /* first step: buf = g' exactly (a clone), w -= lr g' */
            float *gp = malloc(n * sizeof *gp);
            for (size_t i = 0; i < n; i++) gp[i] = (float)rmu[i];
            CU_ASSERT(tu_close(mu, gp, n, 1e-9, 1e-6, "sgd first step buffer"));
            free(gp);
        }
        free(rg);
    }
    CU_ASSERT(close_fd(w, rw, n, 1e-7, 1e-5, "sgd w"));
    /* mu cancels to small values: atol at the rounding of its terms (~0.3) */
    if (momentum != 0.0f) CU_ASSERT(close_fd(mu, rmu, n, 1e-7, 1e-5, "sgd mu"));
    free(w), free(g), free(mu), free(rw), free(rmu);
}

static void test_sgd(void)
{
    vr_backend *be = make_backend(2);
    sgd_vs_reference(be, 1000, 0.9f, 21);
    sgd_vs_reference(be, 1000, 0.0f, 22); /* plain SGD, no buffer */
    sgd_vs_reference(be, (1u << 18) + 5, 0.9f, 23);
    /* by hand: w 1, g 2, wd 0.5: g' = 2.5; first step buf = 2.5, w = 1 - 0.1*2.5 = 0.75;
     * second step g' = 2 + 0.375 = 2.375, buf = 0.9*2.5 + 2.375 = 4.625, w = 0.75 - 0.4625 */
    float w = 1.0f, g = 2.0f, mu = 123.0f;
    TU_OK(be->sgd_step(be, 1, &w, &g, &mu, 0.1f, 0.5f, 0.9f, 1));
    CU_ASSERT(tu_close(&mu, (float[]){2.5f}, 1, 0, 1e-7, "sgd by hand, buffer 1"));
    CU_ASSERT(tu_close(&w, (float[]){0.75f}, 1, 0, 1e-7, "sgd by hand, w 1"));
    TU_OK(be->sgd_step(be, 1, &w, &g, &mu, 0.1f, 0.5f, 0.9f, 0));
    CU_ASSERT(tu_close(&mu, (float[]){4.625f}, 1, 0, 1e-6, "sgd by hand, buffer 2"));
    CU_ASSERT(tu_close(&w, (float[]){0.2875f}, 1, 0, 1e-6, "sgd by hand, w 2"));
    CU_ASSERT_EQUAL(be->sgd_step(be, 1, &w, &g, NULL, 0.1f, 0.0f, 0.9f, 0), VR_ERR_ARG);
    be->destroy(be);
}

/* -------------------------------------------------------------- AdamW */

/* torch 1.13 _single_tensor_adamw for one tensor, in double */
static void ref_adamw(size_t n, double *w, const double *g, double *m, double *v, double lr,
                      double b1, double b2, double eps, double wd, long t)
{
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    for (size_t i = 0; i < n; i++) {
        w[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        double denom = sqrt(v[i]) / sqrt(bc2) + eps;
        w[i] -= lr / bc1 * m[i] / denom;
    }
}

static void adamw_vs_reference(vr_backend *be, size_t n, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    float *w = malloc(n * sizeof *w), *g = malloc(n * sizeof *g);
    float *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    tu_fill_normal(w, n, &r, 0.5f);
    double *rw = to_double(w, n), *rm = calloc(n, sizeof *rm), *rv = calloc(n, sizeof *rv);
    /* the reference takes the float hyper-parameters as passed (0.9f is not 0.9) */
    const float lr = 5e-4f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
    for (long t = 1; t <= 3; t++) {
        tu_fill_normal(g, n, &r, 0.1f);
        double *rg = to_double(g, n);
        TU_OK(be->adamw_step(be, n, w, g, m, v, lr, b1, b2, eps, wd, t));
        ref_adamw(n, rw, rg, rm, rv, lr, b1, b2, eps, wd, t);
        char what[64];
        snprintf(what, sizeof what, "adamw w at step %ld", t);
        CU_ASSERT(close_fd(w, rw, n, 1e-7, 1e-5, what));
        /* m cancels (b1 m + (1-b1) g): atol at the rounding of its terms (~0.05) */
        snprintf(what, sizeof what, "adamw m at step %ld", t);
        CU_ASSERT(close_fd(m, rm, n, 1e-8, 1e-5, what));
        snprintf(what, sizeof what, "adamw v at step %ld", t);
        CU_ASSERT(close_fd(v, rv, n, 1e-12, 1e-5, what));
        free(rg);
    }
    free(w), free(g), free(m), free(v), free(rw), free(rm), free(rv);
}

static void test_adamw(void)
{
    vr_backend *be = make_backend(2);
    adamw_vs_reference(be, 1000, 31);
    adamw_vs_reference(be, (1u << 18) + 9, 32);
    /* step 1 in closed form: mhat = g, vhat = g^2 (bias correction exact), so
     * w = w0 (1 - lr wd) - lr g / (|g| + eps): a step of lr against the sign of g */
    float w[3] = {1.0f, -1.0f, 0.5f}, g[3] = {0.3f, -2.0f, 1e-3f}, m[3] = {0}, v[3] = {0};
    TU_OK(be->adamw_step(be, 3, w, g, m, v, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1));
    float want[3];
    for (int i = 0; i < 3; i++) {
        double w0 = i == 0 ? 1.0 : i == 1 ? -1.0 : 0.5;
        want[i] = (float)(w0 * (1 - 0.001) - 0.01 * g[i] / (fabs(g[i]) + 1e-8));
    }
    CU_ASSERT(tu_close(w, want, 3, 0, 1e-6, "adamw step 1 closed form"));
    CU_ASSERT_EQUAL(be->adamw_step(be, 3, w, g, m, v, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 0), VR_ERR_ARG);
    CU_ASSERT_EQUAL(be->adamw_step(be, 3, w, g, NULL, v, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 2), VR_ERR_ARG);
    be->destroy(be);
}

/* -------------------------------------------------------------- schedule */

static int close_lr(float got, double want, const char *what)
{
    if (fabs(got - want) <= 1e-7 + 1e-6 * fabs(want)) return 1;
    fprintf(stderr, "\n  %s: lr %.9g, want %.9g\n", what, (double)got, want);
    return 0;
}

static void test_schedule(void)
{
    /* main_vicreg.py adjust_learning_rate with warm-up 10, total 110, end = base * 0.001 */
    vr_lr_schedule s = {.base = 2.0f, .warmup_steps = 10, .total_steps = 110, .final_ratio = 0.001f};
    double end = 2.0 * (double)0.001f;
    CU_ASSERT(close_lr(vr_lr_at(&s, 0), 0.0, "step 0"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 3), 0.6, "warm-up step 3"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 9), 1.8, "last warm-up step"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 10), 2.0, "warm-up end"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 60), 0.5 * 2.0 + 0.5 * end, "midpoint"));
    double q = 0.5 * (1.0 + cos(M_PI * 99.0 / 100.0));
    CU_ASSERT(close_lr(vr_lr_at(&s, 109), 2.0 * q + end * (1.0 - q), "last step"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 110), end, "total"));
    CU_ASSERT(close_lr(vr_lr_at(&s, 5000), end, "past the total"));
    CU_ASSERT(close_lr(vr_lr_at(&s, -4), 0.0, "negative step"));
    /* decreasing after the warm-up */
    for (long t = 10; t < 110; t++) CU_ASSERT(vr_lr_at(&s, t + 1) <= vr_lr_at(&s, t));
    /* no warm-up: the first step runs at the base rate */
    vr_lr_schedule s0 = {.base = 0.5f, .warmup_steps = 0, .total_steps = 100, .final_ratio = 0.0f};
    CU_ASSERT(close_lr(vr_lr_at(&s0, 0), 0.5, "no warm-up, step 0"));
    CU_ASSERT(close_lr(vr_lr_at(&s0, 50), 0.25, "no warm-up, midpoint"));
    /* linear scaling: 0.2 at batch 2048 and 0.3 at 512 (the paper's two recipes) */
    CU_ASSERT(close_lr(vr_lr_scaled_base(0.2f, 2048), 8.0 * (double)0.2f, "scaled 0.2 x 2048"));
    CU_ASSERT(close_lr(vr_lr_scaled_base(0.3f, 512), 2.0 * (double)0.3f, "scaled 0.3 x 512"));
    CU_ASSERT(close_lr(vr_lr_scaled_base(0.5f, 256), 0.5, "scaled 0.5 x 256"));
}

int main(void)
{
    static const tu_test tests[] = {
        {"LARS against the reference loop", test_lars_reference},
        {"LARS trust-ratio branches by hand", test_lars_branches},
        {"same bits with 1 and 2 threads", test_thread_independence},
        {"SGD first step, momentum, no momentum", test_sgd},
        {"AdamW bias correction at steps 1..3", test_adamw},
        {"warm-up + cosine schedule", test_schedule},
        {NULL, NULL},
    };
    return tu_main("optim", tests);
}
