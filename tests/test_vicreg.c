/* The VICReg loss kernel: against PyTorch's float64 values (fixtures/golden_vicreg.json, written
 * by shared/bench/torch_peer.py golden), against a naive double-precision chain rule written
 * out loop by loop here, and against finite differences of that double-precision loss. */
#include "testutil.h"

#include <cjson/cJSON.h>

static const vr_vicreg_coeffs k_default = {25.0f, 25.0f, 1.0f};

/* -------------------------------------------------------------- naive double reference */

/* One view: adds the variance and covariance terms to *var, *cov and, when g, their gradients
 * to g (N,D), applying the whole chain rule including the centring's backward. */
static void ref_view(int n, int d, const float *z, vr_vicreg_coeffs k, double *var, double *cov,
                     double *g)
{
    double *zc = calloc((size_t)n * d, sizeof *zc);
    double *c = calloc((size_t)d * d, sizeof *c);
    double *std = calloc((size_t)d, sizeof *std);
    double *gc = calloc((size_t)n * d, sizeof *gc); /* d loss / d Zc */
    for (int j = 0; j < d; j++) {
        double m = 0.0;
        for (int i = 0; i < n; i++) m += z[(size_t)i * d + j];
        m /= n;
        double v = 0.0;
        for (int i = 0; i < n; i++) {
            double e = z[(size_t)i * d + j] - m;
            zc[(size_t)i * d + j] = e;
            v += e * e;
        }
        std[j] = sqrt(v / (n - 1) + 1e-4);
        *var += (std[j] < 1.0 ? 1.0 - std[j] : 0.0) / (2.0 * d);
    }
    /* C (D,D), full, upper triangle computed and mirrored */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double a = zc[(size_t)i * d + j];
            double *cr = c + (size_t)j * d;
            const double *zr = zc + (size_t)i * d;
            for (int q = j; q < d; q++) cr[q] += a * zr[q];
        }
    double off = 0.0;
    for (int j = 0; j < d; j++)
        for (int q = j; q < d; q++) {
            double v = c[(size_t)j * d + q] / (n - 1);
            c[(size_t)j * d + q] = c[(size_t)q * d + j] = v;
            if (q != j) off += 2.0 * v * v;
        }
    *cov += off / d;
    if (g) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) {
                /* d/dZc_ij of the variance: -1/(2D) * 1/(2 std) * 2 Zc_ij/(N-1) where std < 1 */
                double gv = std[j] < 1.0 ? -zc[(size_t)i * d + j] / (2.0 * d * std[j] * (n - 1)) : 0.0;
                /* of the covariance: sum over the pairs (j,q), q != j, of 2 C_jq/D * dC_jq/dZc_ij,
                 * each pair appearing as (j,q) and (q,j) */
                double s = 0.0;
                for (int q = 0; q < d; q++)
                    if (q != j) s += c[(size_t)j * d + q] * zc[(size_t)i * d + q];
                gc[(size_t)i * d + j] = k.std * gv + k.cov * 2.0 * 2.0 * s / ((double)d * (n - 1));
            }
        /* centring backward: dZ = dZc - colmean(dZc) */
        for (int j = 0; j < d; j++) {
            double m = 0.0;
            for (int i = 0; i < n; i++) m += gc[(size_t)i * d + j];
            m /= n;
            for (int i = 0; i < n; i++) g[(size_t)i * d + j] += gc[(size_t)i * d + j] - m;
        }
    }
    free(zc);
    free(c);
    free(std);
    free(gc);
}

static void ref_loss(int n, int d, const float *z1, const float *z2, vr_vicreg_coeffs k,
                     vr_vicreg_terms *t, double *g1, double *g2)
{
    double inv = 0.0, nd = (double)n * d;
    for (size_t i = 0; i < (size_t)n * d; i++) {
        double e = (double)z1[i] - z2[i];
        inv += e * e;
        if (g1) g1[i] = k.sim * 2.0 * e / nd;
        if (g2) g2[i] = -k.sim * 2.0 * e / nd;
    }
    t->invariance = inv / nd;
    t->variance = t->covariance = 0.0;
    ref_view(n, d, z1, k, &t->variance, &t->covariance, g1);
    ref_view(n, d, z2, k, &t->variance, &t->covariance, g2);
    t->loss = k.sim * t->invariance + k.std * t->variance + k.cov * t->covariance;
}

/* -------------------------------------------------------------- helpers */

static int close_d(double got, double ref, double atol, double rtol, const char *what)
{
    if (fabs(got - ref) <= atol + rtol * fabs(ref)) return 1;
    fprintf(stderr, "\n  %s: got %.12g want %.12g\n", what, got, ref);
    return 0;
}

static int close_terms(const vr_vicreg_terms *a, const vr_vicreg_terms *r, double atol, double rtol)
{
    int ok = close_d(a->invariance, r->invariance, atol, rtol, "invariance");
    ok &= close_d(a->variance, r->variance, atol, rtol, "variance");
    ok &= close_d(a->covariance, r->covariance, atol, rtol, "covariance");
    ok &= close_d(a->loss, r->loss, atol, rtol, "loss");
    return ok;
}

static float *to_float(const double *x, size_t n)
{
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static double max_abs(const double *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* Two views with per-column scales in [lo, hi], so that the batch std of some columns is above
 * 1 and of others below; z2 = 0.6 z1 + 0.5 s_j noise, correlated with z1 as real views are. */
static void make_views(int n, int d, uint64_t seed, float lo, float hi, float *z1, float *z2)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    for (int j = 0; j < d; j++) {
        float s = vr_rng_range(&r, lo, hi);
        for (int i = 0; i < n; i++) {
            float a = s * vr_rng_normal(&r);
            z1[(size_t)i * d + j] = a + 0.1f * (float)j / d;
            z2[(size_t)i * d + j] = 0.6f * a + 0.5f * s * vr_rng_normal(&r) - 0.2f;
        }
    }
}

/* number of columns of z (N,D) with batch std (as the loss defines it) below and above 1,
 * and the smallest distance of any std to 1 */
static void count_std(int n, int d, const float *z, int *below, int *above, double *closest)
{
    *below = *above = 0;
    *closest = INFINITY;
    for (int j = 0; j < d; j++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < n; i++) m += z[(size_t)i * d + j];
        m /= n;
        for (int i = 0; i < n; i++) v += (z[(size_t)i * d + j] - m) * (z[(size_t)i * d + j] - m);
        double s = sqrt(v / (n - 1) + 1e-4);
        if (s < 1.0) ++*below; else ++*above;
        *closest = fmin(*closest, fabs(s - 1.0));
    }
}

/* Runs the kernel and the reference on one case; gradients within
 * atol = gatol * max|ref grad| and rtol grtol, terms within rtol trtol (atol 1e-12). */
static void check_case(vr_backend *be, int n, int d, const float *z1, const float *z2,
                       vr_vicreg_coeffs k, double trtol, double gatol, double grtol)
{
    size_t nd = (size_t)n * d;
    float *dz1 = malloc(nd * sizeof *dz1), *dz2 = malloc(nd * sizeof *dz2);
    double *g1 = malloc(nd * sizeof *g1), *g2 = malloc(nd * sizeof *g2);
    vr_vicreg_terms t, r;
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k, &t, dz1, dz2));
    ref_loss(n, d, z1, z2, k, &r, g1, g2);
    char what[96];
    snprintf(what, sizeof what, "terms n %d d %d", n, d);
    CU_ASSERT(close_terms(&t, &r, 1e-12, trtol));
    double scale = fmax(max_abs(g1, nd), max_abs(g2, nd));
    float *f1 = to_float(g1, nd), *f2 = to_float(g2, nd);
    snprintf(what, sizeof what, "dz1 n %d d %d", n, d);
    CU_ASSERT(tu_close(dz1, f1, nd, gatol * scale, grtol, what));
    snprintf(what, sizeof what, "dz2 n %d d %d", n, d);
    CU_ASSERT(tu_close(dz2, f2, nd, gatol * scale, grtol, what));
    free(dz1), free(dz2), free(g1), free(g2), free(f1), free(f2);
}

static vr_backend *make_backend(void)
{
    vr_backend *be = NULL;
    vr_status s = vr_cpu_backend_create(2, &be);
    CU_ASSERT_EQUAL_FATAL(s, VR_OK);
    return be;
}

/* -------------------------------------------------------------- golden (PyTorch float64) */

static float *json_matrix(const cJSON *root, const char *key, int n, int d)
{
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(rows) || cJSON_GetArraySize(rows) != n) return NULL;
    float *out = malloc((size_t)n * d * sizeof *out);
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(rows, i);
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != d) {
            free(out);
            return NULL;
        }
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = (float)cJSON_GetArrayItem(row, j)->valuedouble;
    }
    return out;
}

static cJSON *load_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static void test_golden(void)
{
    cJSON *root = load_json(VR_FIXTURE_DIR "/golden_vicreg.json");
    if (!root) fprintf(stderr, "\n  cannot read %s\n", VR_FIXTURE_DIR "/golden_vicreg.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    int n = cJSON_GetObjectItemCaseSensitive(root, "N")->valueint;
    int d = cJSON_GetObjectItemCaseSensitive(root, "D")->valueint;
    float *x = json_matrix(root, "x", n, d), *y = json_matrix(root, "y", n, d);
    float *gx = json_matrix(root, "dloss_dx", n, d), *gy = json_matrix(root, "dloss_dy", n, d);
    CU_ASSERT_FATAL(x && y && gx && gy);
    vr_vicreg_terms want = {
        .loss = cJSON_GetObjectItemCaseSensitive(root, "loss")->valuedouble,
        .invariance = cJSON_GetObjectItemCaseSensitive(root, "inv")->valuedouble,
        .variance = cJSON_GetObjectItemCaseSensitive(root, "std")->valuedouble,
        .covariance = cJSON_GetObjectItemCaseSensitive(root, "cov")->valuedouble,
    };
    vr_backend *be = make_backend();
    size_t nd = (size_t)n * d;
    float *dx = malloc(nd * sizeof *dx), *dy = malloc(nd * sizeof *dy);
    vr_vicreg_terms got;
    TU_OK(be->vicreg_loss(be, n, d, x, y, k_default, &got, dx, dy));
    /* inputs rounded to float move the terms by ~1e-7 relative; the float GEMM adds ~1e-6 */
    CU_ASSERT(close_terms(&got, &want, 1e-7, 2e-5));
    CU_ASSERT(tu_close(dx, gx, nd, 2e-6, 1e-4, "golden dloss/dx"));
    CU_ASSERT(tu_close(dy, gy, nd, 2e-6, 1e-4, "golden dloss/dy"));
    /* the fixture must exercise both sides of the relu */
    int below, above;
    double closest;
    count_std(n, d, x, &below, &above, &closest);
    int b2, a2;
    count_std(n, d, y, &b2, &a2, &closest);
    CU_ASSERT(below + b2 > 0 && above + a2 > 0);
    be->destroy(be);
    free(x), free(y), free(gx), free(gy), free(dx), free(dy);
    cJSON_Delete(root);
}

/* -------------------------------------------------------------- naive reference */

static void test_reference_small(void)
{
    static const int shapes[][2] = {{2, 1}, {2, 5}, {3, 7}, {4, 2}, {17, 300}, {9, 33}, {64, 65}};
    vr_backend *be = make_backend();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], d = shapes[s][1];
        size_t nd = (size_t)n * d;
        float *z1 = malloc(nd * sizeof *z1), *z2 = malloc(nd * sizeof *z2);
        make_views(n, d, 100 + s, 0.3f, 2.0f, z1, z2);
        check_case(be, n, d, z1, z2, k_default, 2e-5, 1e-5, 1e-4);
        free(z1), free(z2);
    }
    be->destroy(be);
}

static void test_reference_mixed_std(void)
{
    /* d = 300, n = 17 with column scales straddling 1: both relu branches must be present */
    int n = 17, d = 300;
    size_t nd = (size_t)n * d;
    float *z1 = malloc(nd * sizeof *z1), *z2 = malloc(nd * sizeof *z2);
    make_views(n, d, 7, 0.2f, 2.5f, z1, z2);
    int below, above;
    double closest;
    count_std(n, d, z1, &below, &above, &closest);
    CU_ASSERT(below > 20 && above > 20);
    count_std(n, d, z2, &below, &above, &closest);
    CU_ASSERT(below > 20 && above > 20);
    vr_backend *be = make_backend();
    check_case(be, n, d, z1, z2, k_default, 2e-5, 1e-5, 1e-4);
    /* other coefficients, including a zero covariance and a zero variance coefficient (the
     * kernel skips those gradient products) */
    check_case(be, n, d, z1, z2, (vr_vicreg_coeffs){3.0f, 7.0f, 0.5f}, 2e-5, 1e-5, 1e-4);
    check_case(be, n, d, z1, z2, (vr_vicreg_coeffs){25.0f, 25.0f, 0.0f}, 2e-5, 1e-5, 1e-4);
    check_case(be, n, d, z1, z2, (vr_vicreg_coeffs){0.0f, 0.0f, 1.0f}, 2e-5, 1e-5, 1e-4);
    be->destroy(be);
    free(z1), free(z2);
}

static void test_reference_large(void)
{
    /* sizes where OpenBLAS blocks and threads its kernels: n 256, d 2048 through the Gram
     * matrix (2N <= D), n 384, d 512 through C */
    int n = 384, d = 2048;
    size_t nd = (size_t)n * d;
    float *z1 = malloc(nd * sizeof *z1), *z2 = malloc(nd * sizeof *z2);
    make_views(256, d, 99, 0.3f, 2.0f, z1, z2);
    vr_backend *be = make_backend();
    check_case(be, 256, d, z1, z2, k_default, 1e-4, 1e-5, 1e-3);
    make_views(n, 512, 98, 0.3f, 2.0f, z1, z2);
    check_case(be, n, 512, z1, z2, k_default, 1e-4, 1e-5, 1e-3);
    /* a later, smaller call reuses the (larger) scratch */
    check_case(be, 5, 11, z1, z2, k_default, 2e-5, 1e-5, 1e-4);
    be->destroy(be);
    free(z1), free(z2);
}

/* -------------------------------------------------------------- finite differences */

typedef struct fd_ctx {
    int n, d;
    float *z1, *z2;
    vr_vicreg_coeffs k;
} fd_ctx;

static double fd_loss(void *p)
{
    fd_ctx *c = p;
    vr_vicreg_terms t;
    ref_loss(c->n, c->d, c->z1, c->z2, c->k, &t, NULL, NULL);
    return t.loss;
}

static void fd_case(int n, int d, uint64_t seed, vr_vicreg_coeffs k)
{
    size_t nd = (size_t)n * d;
    float *z1 = malloc(nd * sizeof *z1), *z2 = malloc(nd * sizeof *z2);
    float *dz1 = malloc(nd * sizeof *dz1), *dz2 = malloc(nd * sizeof *dz2);
    make_views(n, d, seed, 0.3f, 2.0f, z1, z2);
    /* a perturbation of 1e-3 moves a std by at most ~1e-3: keep every std clear of the kink */
    int below, above;
    double c1, c2;
    count_std(n, d, z1, &below, &above, &c1);
    CU_ASSERT(below > 0 && above > 0);
    count_std(n, d, z2, &below, &above, &c2);
    CU_ASSERT_FATAL(fmin(c1, c2) > 5e-3);
    vr_backend *be = make_backend();
    vr_vicreg_terms t;
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k, &t, dz1, dz2));
    double scale = 0.0;
    for (size_t i = 0; i < nd; i++) scale = fmax(scale, fmax(fabs(dz1[i]), fabs(dz2[i])));
    fd_ctx c = {n, d, z1, z2, k};
    /* eps 1e-3 (rounded into float: the step is exact to ~1e-4 relative); the loss is a
     * polynomial of degree 4 away from the kink, so the O(eps^2) error is tiny */
    CU_ASSERT(tu_fd_check(fd_loss, &c, z1, nd, dz1, 60, 1e-3f, 1e-4 * scale, 2e-3, "fd dz1"));
    CU_ASSERT(tu_fd_check(fd_loss, &c, z2, nd, dz2, 60, 1e-3f, 1e-4 * scale, 2e-3, "fd dz2"));
    be->destroy(be);
    free(z1), free(z2), free(dz1), free(dz2);
}

static void test_finite_differences(void)
{
    fd_case(6, 9, 11, k_default);
    fd_case(17, 33, 12, k_default);
    fd_case(3, 4, 13, (vr_vicreg_coeffs){1.0f, 2.0f, 5.0f});
    fd_case(5, 23, 14, (vr_vicreg_coeffs){1.0f, 2.0f, 5.0f}); /* through the Gram matrix */
}

/* -------------------------------------------------------------- paths and edge cases */

static void test_null_gradients(void)
{
    int n = 12, d = 40;
    size_t nd = (size_t)n * d;
    float *z1 = malloc(nd * sizeof *z1), *z2 = malloc(nd * sizeof *z2);
    float *a1 = malloc(nd * sizeof *a1), *a2 = malloc(nd * sizeof *a2);
    float *b = malloc(nd * sizeof *b);
    make_views(n, d, 5, 0.3f, 2.0f, z1, z2);
    vr_backend *be = make_backend();
    vr_vicreg_terms full, none, one;
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k_default, &full, a1, a2));
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k_default, &none, NULL, NULL));
    CU_ASSERT(memcmp(&full, &none, sizeof full) == 0);
    for (size_t i = 0; i < nd; i++) b[i] = NAN; /* overwritten, never read */
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k_default, &one, b, NULL));
    CU_ASSERT(memcmp(&full, &one, sizeof full) == 0);
    CU_ASSERT(memcmp(a1, b, nd * sizeof *b) == 0);
    for (size_t i = 0; i < nd; i++) b[i] = NAN;
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k_default, &one, NULL, b));
    CU_ASSERT(memcmp(&full, &one, sizeof full) == 0);
    CU_ASSERT(memcmp(a2, b, nd * sizeof *b) == 0);
    /* the same call twice gives the same bits */
    TU_OK(be->vicreg_loss(be, n, d, z1, z2, k_default, &one, b, NULL));
    CU_ASSERT(memcmp(a1, b, nd * sizeof *b) == 0);
    be->destroy(be);
    free(z1), free(z2), free(a1), free(a2), free(b);
}

static void test_collapse(void)
{
    /* every row the same vector in both views: invariance 0, each std = sqrt(1e-4) = 0.01 so
     * variance = 2 * (1 - 0.01)/2 = 0.99, covariance 0, and every gradient 0 */
    int n = 8, d = 6;
    float z[48], dz1[48], dz2[48];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) z[i * d + j] = 0.5f * j - 1.0f;
    vr_backend *be = make_backend();
    vr_vicreg_terms t;
    TU_OK(be->vicreg_loss(be, n, d, z, z, k_default, &t, dz1, dz2));
    CU_ASSERT(close_d(t.invariance, 0.0, 1e-15, 0, "invariance"));
    CU_ASSERT(close_d(t.variance, 0.99, 1e-12, 0, "variance"));
    CU_ASSERT(close_d(t.covariance, 0.0, 1e-15, 0, "covariance"));
    CU_ASSERT(close_d(t.loss, 25.0 * 0.99, 1e-10, 0, "loss"));
    float zero[48] = {0};
    CU_ASSERT(tu_close(dz1, zero, 48, 1e-12, 0, "collapsed dz1"));
    CU_ASSERT(tu_close(dz2, zero, 48, 1e-12, 0, "collapsed dz2"));
    be->destroy(be);
}

static void test_bad_arguments(void)
{
    float z[4] = {1, 2, 3, 4};
    vr_vicreg_terms t;
    vr_backend *be = make_backend();
    CU_ASSERT_EQUAL(be->vicreg_loss(be, 1, 4, z, z, k_default, &t, NULL, NULL), VR_ERR_SHAPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "vicreg"));
    CU_ASSERT_EQUAL(be->vicreg_loss(be, 2, 0, z, z, k_default, &t, NULL, NULL), VR_ERR_SHAPE);
    CU_ASSERT_EQUAL(be->vicreg_loss(be, 2, 2, NULL, z, k_default, &t, NULL, NULL), VR_ERR_ARG);
    CU_ASSERT_EQUAL(be->vicreg_loss(be, 2, 2, z, z, k_default, NULL, NULL, NULL), VR_ERR_ARG);
    be->destroy(be);
}

int main(void)
{
    static const tu_test tests[] = {
        {"golden values from PyTorch", test_golden},
        {"naive reference, small and odd shapes", test_reference_small},
        {"naive reference, std on both sides of 1, coefficients", test_reference_mixed_std},
        {"naive reference, n 256 d 2048 through G, n 384 d 512 through C (BLAS)", test_reference_large},
        {"finite differences w.r.t. z1 and z2", test_finite_differences},
        {"NULL gradients and repeatability", test_null_gradients},
        {"collapsed embeddings", test_collapse},
        {"bad arguments", test_bad_arguments},
        {NULL, NULL},
    };
    return tu_main("vicreg", tests);
}
