/* The evaluation library: the linear probe (include/vicreg/probe.h) and the retrieval metrics
 * (include/vicreg/retrieval_metrics.h).
 *
 * References and tolerances, each |got - ref| <= atol + rtol*|ref|:
 *  - probe gradient: central finite differences of the loss (atol 1e-4, rtol 1e-3; float32
 *    logits put noise of about 1e-5 into a difference over 2e-2);
 *  - cross entropy at logits of +-1000: the analytic loss and gradient (atol 1e-6, rtol 1e-6);
 *  - Adam protocol: the audio peer's linear() run by PyTorch in float64 from the same head
 *    (tests/reference/make_probe_fixtures.py): final head (|w| up to 1.3) atol 5e-6 + rtol
 *    1e-5, accuracies exactly, loss atol 1e-7 + rtol 1e-5. A float32 run lands within 1e-6 of
 *    it (PyTorch's and this one alike); one epoch fewer, or no weight decay, is 1e-3 away;
 *  - SGD protocol: a naive double-precision loop over the same order and head: head atol
 *    2e-6*max|ref| + rtol 1e-5 (float32 lands within 1e-6 of |w| 2), loss rtol 1e-6,
 *    accuracies exactly;
 *  - retrieval: a naive double-precision ranking (full sort) on rows whose products are exact in
 *    float, with ties and classes of one row (1e-12); hand-worked cases (1e-12); the peer's
 *    label_retrieval and xmodal in float64 (tests/reference/make_retrieval_fixtures.py, 1e-6). */
#include <omp.h>

#include "testutil.h"
#include "vicreg/knn.h"
#include "vicreg/probe.h"
#include "vicreg/retrieval_metrics.h"

static const double pi = 3.14159265358979323846;

static void *alloc_z(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* A fixture tensor of `count` elements of dtype t into a fresh buffer. */
static void *read_fixture(const vr_safetensors *st, const char *name, vr_dtype t, size_t count)
{
    void *p = alloc_z(count * vr_dtype_size(t));
    TU_OK(vr_st_read(st, name, t, p, count));
    return p;
}

static int close_d(double got, double ref, double atol, double rtol, const char *what)
{
    int ok = fabs(got - ref) <= atol + rtol * fabs(ref);
    if (!ok) fprintf(stderr, "\n  %s: got %.12g want %.12g\n", what, got, ref);
    return ok;
}

static float max_abs(const float *x, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* ============================================================== linear probe */

/* rows around one centre per class, with per-feature offsets so that standardising matters */
static void class_rows(float *x, int *y, int n, int d, int nclasses, const float *centres,
                       float noise, vr_rng *r)
{
    for (int i = 0; i < n; i++) {
        y[i] = (int)vr_rng_below(r, (uint64_t)nclasses);
        for (int j = 0; j < d; j++)
            x[(size_t)i * d + j] = centres[y[i] * d + j] + noise * vr_rng_normal(r) + 0.3f * j;
    }
}

typedef struct xent_ctx {
    const float *x;
    const int *y;
    int n, d, c;
    float *w, *b, *logits, *dw, *db;
} xent_ctx;

static double xent_loss(void *p)
{
    xent_ctx *k = p;
    double loss = NAN;
    vr_status s = vr_probe_loss_grad(k->x, k->y, k->n, k->d, k->c, k->w, k->b, k->logits, k->dw,
                                     k->db, &loss);
    return s == VR_OK ? loss : NAN;
}

static void test_probe_grad_fd(void)
{
    enum { N = 7, D = 5, C = 4 };
    float x[N * D], w[C * D], b[C], logits[N * C], dw[C * D], db[C], gw[C * D], gb[C];
    int y[N] = {0, 1, 2, 3, 1, 1, 2};
    vr_rng r;
    vr_rng_seed(&r, 3);
    tu_fill(x, N * D, &r, -1.5f, 1.5f);
    tu_fill(w, C * D, &r, -1.0f, 1.0f);
    tu_fill(b, C, &r, -0.5f, 0.5f);
    xent_ctx k = {x, y, N, D, C, w, b, logits, dw, db};
    double loss;
    TU_OK(vr_probe_loss_grad(x, y, N, D, C, w, b, logits, gw, gb, &loss));
    CU_ASSERT(loss > 0.0);
    CU_ASSERT(tu_fd_check(xent_loss, &k, w, C * D, gw, C * D, 1e-2f, 1e-4, 1e-3, "d loss / d w"));
    CU_ASSERT(tu_fd_check(xent_loss, &k, b, C, gb, C, 1e-2f, 1e-4, 1e-3, "d loss / d b"));
}

/* logits (1000, 0, -1000): the loss is log(1 + e^-1000 + e^-2000) = 0 for class 0 and 2000 for
 * class 2; the softmax is (1, 0, 0), so d loss / d logits = p - onehot */
static void test_probe_xent_stable(void)
{
    float x[2] = {1.0f, 0.0f}, w[3 * 2] = {1000.0f, 0, 0, 0, -1000.0f, 0}, b[3] = {0};
    float logits[3], dw[3 * 2], db[3];
    double loss;
    int y = 0;
    TU_OK(vr_probe_loss_grad(x, &y, 1, 2, 3, w, b, logits, dw, db, &loss));
    CU_ASSERT(close_d(loss, 0.0, 1e-6, 1e-6, "loss, class 0"));
    float zero[6] = {0};
    CU_ASSERT(tu_close(dw, zero, 6, 1e-6, 1e-6, "dw, class 0"));
    CU_ASSERT(tu_close(db, zero, 3, 1e-6, 1e-6, "db, class 0"));
    y = 2;
    TU_OK(vr_probe_loss_grad(x, &y, 1, 2, 3, w, b, logits, dw, db, &loss));
    CU_ASSERT(close_d(loss, 2000.0, 1e-6, 1e-6, "loss, class 2"));
    float dw_ref[6] = {1, 0, 0, 0, -1, 0}, db_ref[3] = {1, 0, -1};
    CU_ASSERT(tu_close(dw, dw_ref, 6, 1e-6, 1e-6, "dw, class 2"));
    CU_ASSERT(tu_close(db, db_ref, 3, 1e-6, 1e-6, "db, class 2"));
}

static void test_probe_adam_fixture(void)
{
    enum { NT = 200, NQ = 100, D = 16, C = 5 };
    vr_safetensors *st = tu_open_fixture("probe.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    float *xtr = read_fixture(st, "train.x", VR_DTYPE_F32, NT * D);
    float *xte = read_fixture(st, "test.x", VR_DTYPE_F32, NQ * D);
    int *ytr = read_fixture(st, "train.y", VR_DTYPE_I32, NT);
    int *yte = read_fixture(st, "test.y", VR_DTYPE_I32, NQ);
    float *w0 = read_fixture(st, "init.w", VR_DTYPE_F32, C * D);
    float *b0 = read_fixture(st, "init.b", VR_DTYPE_F32, C);
    float *w_ref = read_fixture(st, "final.w", VR_DTYPE_F32, C * D);
    float *b_ref = read_fixture(st, "final.b", VR_DTYPE_F32, C);
    double *top1 = read_fixture(st, "top1", VR_DTYPE_F64, 1);
    double *top5 = read_fixture(st, "top5", VR_DTYPE_F64, 1);
    double *loss = read_fixture(st, "loss", VR_DTYPE_F64, 1);
    float w[C * D], b[C];
    vr_probe_config c;
    vr_probe_config_default(&c, VR_PROBE_ADAM);
    vr_probe_head init = {w0, b0}, out = {w, b};
    vr_probe_result res;
    TU_OK(vr_linear_probe(xtr, ytr, NT, xte, yte, NQ, D, C, &c, &init, &out, &res));
    CU_ASSERT(tu_close(w, w_ref, C * D, 5e-6, 1e-5, "final w against PyTorch"));
    CU_ASSERT(tu_close(b, b_ref, C, 5e-6, 1e-5, "final b against PyTorch"));
    CU_ASSERT_DOUBLE_EQUAL(res.top1, *top1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(res.top5, *top5, 1e-12);
    CU_ASSERT(close_d(res.train_loss, *loss, 1e-7, 1e-5, "last cross entropy"));
    CU_ASSERT(res.best_top1 >= res.top1);
    CU_ASSERT_EQUAL(res.nclasses, C);
    /* the inputs are left as they were */
    float *xtr_again = read_fixture(st, "train.x", VR_DTYPE_F32, NT * D);
    CU_ASSERT(memcmp(xtr, xtr_again, sizeof(float) * NT * D) == 0);
    free(xtr_again);
    vr_st_close(st);
    free(xtr), free(xte), free(ytr), free(yte), free(w0), free(b0), free(w_ref), free(b_ref);
    free(top1), free(top5), free(loss);
}

/* Top-1 and top-5 hits of the head (w, b) on rows x, ties to the lower class, in double. */
static void naive_score(const double *x, const int *y, int n, int d, int nc, const double *w,
                        const double *b, long *hit1, long *hit5)
{
    double *logit = alloc_z(sizeof(double) * nc);
    *hit1 = *hit5 = 0;
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < nc; c++) {
            logit[c] = b[c];
            for (int j = 0; j < d; j++) logit[c] += w[c * d + j] * x[i * d + j];
        }
        int rank = 0;
        for (int c = 0; c < nc; c++)
            rank += logit[c] > logit[y[i]] || (logit[c] == logit[y[i]] && c < y[i]);
        *hit1 += rank == 0;
        *hit5 += rank < 5;
    }
    free(logit);
}

/* The SGD protocol written out in double: standardise, then per epoch a cosine lr, the
 * library's order, mini-batches of softmax cross entropy, SGD with momentum and weight decay. */
static void naive_sgd(const float *xtr_f, const int *ytr, int nt, const float *xte_f,
                      const int *yte, int nq, int d, int nc, const vr_probe_config *c,
                      const float *w0, const float *b0, double *w, double *b, vr_probe_result *res)
{
    double *xtr = alloc_z(sizeof(double) * nt * d), *xte = alloc_z(sizeof(double) * nq * d);
    for (int i = 0; i < nt * d; i++) xtr[i] = xtr_f[i];
    for (int i = 0; i < nq * d; i++) xte[i] = xte_f[i];
    if (c->standardise)
        for (int j = 0; j < d; j++) {
            double mean = 0, var = 0;
            for (int i = 0; i < nt; i++) mean += xtr[i * d + j] / nt;
            for (int i = 0; i < nt; i++) var += (xtr[i * d + j] - mean) * (xtr[i * d + j] - mean) / (nt - 1);
            double sd = sqrt(var) + 1e-6;
            for (int i = 0; i < nt; i++) xtr[i * d + j] = (xtr[i * d + j] - mean) / sd;
            for (int i = 0; i < nq; i++) xte[i * d + j] = (xte[i * d + j] - mean) / sd;
        }
    size_t np = (size_t)nc * d + nc;
    double *p = alloc_z(sizeof(double) * np), *g = alloc_z(sizeof(double) * np);
    double *mu = alloc_z(sizeof(double) * np), *prob = alloc_z(sizeof(double) * nc);
    int *perm = alloc_z(sizeof(int) * nt);
    for (int i = 0; i < nc * d; i++) p[i] = w0[i];
    for (int i = 0; i < nc; i++) p[nc * d + i] = b0[i];
    memset(res, 0, sizeof *res);
    int first = 1;
    for (int e = 0; e < c->epochs; e++) {
        double lr = (double)c->lr * 0.5 * (1.0 + cos(pi * e / c->epochs)), loss_sum = 0;
        vr_probe_order(perm, nt, c->seed, e);
        for (int r0 = 0; r0 < nt; r0 += c->batch) {
            int rows = nt - r0 < c->batch ? nt - r0 : c->batch;
            memset(g, 0, sizeof(double) * np);
            for (int i = 0; i < rows; i++) {
                const double *xi = xtr + (size_t)perm[r0 + i] * d;
                int yi = ytr[perm[r0 + i]];
                double z = 0;
                for (int k = 0; k < nc; k++) {
                    prob[k] = p[nc * d + k];
                    for (int j = 0; j < d; j++) prob[k] += p[k * d + j] * xi[j];
                }
                double top = prob[0];
                for (int k = 1; k < nc; k++) top = fmax(top, prob[k]);
                loss_sum += top - prob[yi];
                for (int k = 0; k < nc; k++) z += (prob[k] = exp(prob[k] - top));
                loss_sum += log(z);
                for (int k = 0; k < nc; k++) {
                    double dl = (prob[k] / z - (k == yi)) / rows;
                    for (int j = 0; j < d; j++) g[k * d + j] += dl * xi[j];
                    g[nc * d + k] += dl;
                }
            }
            for (size_t i = 0; i < np; i++) {
                double gi = g[i] + (double)c->weight_decay * p[i];
                mu[i] = first ? gi : (double)c->momentum * mu[i] + gi;
                p[i] -= lr * mu[i];
            }
            first = 0;
        }
        long h1, h5;
        naive_score(xte, yte, nq, d, nc, p, p + (size_t)nc * d, &h1, &h5);
        res->train_loss = loss_sum / nt;
        res->top1 = (double)h1 / nq;
        res->top5 = (double)h5 / nq;
        res->best_top1 = fmax(res->best_top1, res->top1);
        res->best_top5 = fmax(res->best_top5, res->top5);
    }
    memcpy(w, p, sizeof(double) * nc * d);
    memcpy(b, p + (size_t)nc * d, sizeof(double) * nc);
    free(xtr), free(xte), free(p), free(g), free(mu), free(prob), free(perm);
}

/* 53 training rows in batches of 16 (the last of 5), 7 classes so that top-5 is not trivial,
 * with and without standardising */
static void test_probe_sgd_naive(void)
{
    enum { NT = 53, NQ = 41, D = 6, C = 7 };
    float xtr[NT * D], xte[NQ * D], centres[C * D], w0[C * D], b0[C], w[C * D], b[C];
    float wr[C * D], br[C];
    double wd[C * D], bd[C];
    int ytr[NT], yte[NQ];
    vr_rng r;
    vr_rng_seed(&r, 5);
    tu_fill(centres, C * D, &r, -1.0f, 1.0f);
    class_rows(xtr, ytr, NT, D, C, centres, 0.6f, &r);
    class_rows(xte, yte, NQ, D, C, centres, 0.6f, &r);
    tu_fill(w0, C * D, &r, -0.3f, 0.3f);
    tu_fill(b0, C, &r, -0.3f, 0.3f);
    for (int standardise = 0; standardise < 2; standardise++) {
        vr_probe_config c;
        vr_probe_config_default(&c, VR_PROBE_SGD);
        c.epochs = 12;
        c.batch = 16;
        c.lr = 0.3f;
        c.weight_decay = 1e-2f;
        c.standardise = standardise;
        c.seed = 77;
        vr_probe_head init = {w0, b0}, out = {w, b};
        vr_probe_result res, ref;
        TU_OK(vr_linear_probe(xtr, ytr, NT, xte, yte, NQ, D, C, &c, &init, &out, &res));
        naive_sgd(xtr, ytr, NT, xte, yte, NQ, D, C, &c, w0, b0, wd, bd, &ref);
        for (int i = 0; i < C * D; i++) wr[i] = (float)wd[i];
        for (int i = 0; i < C; i++) br[i] = (float)bd[i];
        float scale = max_abs(wr, C * D);
        CU_ASSERT(tu_close(w, wr, C * D, 2e-6 * scale, 1e-5, "SGD w against the naive loop"));
        CU_ASSERT(tu_close(b, br, C, 2e-6 * scale, 1e-5, "SGD b against the naive loop"));
        CU_ASSERT(close_d(res.train_loss, ref.train_loss, 0, 1e-6, "SGD last epoch's loss"));
        CU_ASSERT_DOUBLE_EQUAL(res.top1, ref.top1, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(res.top5, ref.top5, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(res.best_top1, ref.best_top1, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(res.best_top5, ref.best_top5, 1e-12);
        /* the problem is learnt (chance is 1/7), and top-5 of 7 classes is not a given */
        CU_ASSERT(res.top1 > 0.35);
        CU_ASSERT(res.top5 > res.top1);
    }
}

static void test_probe_seeded_init(void)
{
    enum { D = 64, C = 40, NT = 30, NQ = 10 };
    static float w[C * D], b[C], w2[C * D], b2[C];
    vr_probe_config c;
    vr_probe_config_default(&c, VR_PROBE_ADAM);
    c.seed = 9;
    vr_probe_init(&c, D, C, w, b);
    /* nn.Linear: uniform in +-1/sqrt(D) = +-0.125, both ends reached */
    CU_ASSERT(max_abs(w, C * D) <= 0.125f && max_abs(b, C) <= 0.125f);
    float lo = 0, hi = 0;
    for (int i = 0; i < C * D; i++) lo = fminf(lo, w[i]), hi = fmaxf(hi, w[i]);
    CU_ASSERT(lo < -0.12f && hi > 0.12f);
    CU_ASSERT(max_abs(b, C) > 0.05f);
    c.seed = 10;
    vr_probe_init(&c, D, C, w2, b2);
    CU_ASSERT(memcmp(w, w2, sizeof w) != 0);

    /* VICReg: N(0, 0.01^2) and zero bias; the sample std of 2560 draws is within 5% (3 sigma
     * is 4.2%) */
    vr_probe_config_default(&c, VR_PROBE_SGD);
    vr_probe_init(&c, D, C, w, b);
    double s2 = 0, m = 0;
    for (int i = 0; i < C * D; i++) m += w[i] / (C * D);
    for (int i = 0; i < C * D; i++) s2 += (w[i] - m) * (w[i] - m) / (C * D - 1);
    CU_ASSERT(fabs(sqrt(s2) - 0.01) < 5e-4);
    CU_ASSERT(fabs(m) < 1e-3);
    CU_ASSERT_EQUAL(max_abs(b, C), 0.0f);

    /* a NULL head is the seeded one */
    float xtr[NT * D], xte[NQ * D], centres[C * D];
    int ytr[NT], yte[NQ];
    vr_rng r;
    vr_rng_seed(&r, 6);
    tu_fill(centres, C * D, &r, -1.0f, 1.0f);
    class_rows(xtr, ytr, NT, D, C, centres, 0.5f, &r);
    class_rows(xte, yte, NQ, D, C, centres, 0.5f, &r);
    for (int protocol = 0; protocol < 2; protocol++) {
        vr_probe_config_default(&c, (vr_probe_protocol)protocol);
        c.epochs = 3;
        c.batch = 8;
        c.seed = 4;
        vr_probe_result res;
        vr_probe_init(&c, D, C, w, b);
        vr_probe_head init = {w, b}, out = {w2, b2};
        TU_OK(vr_linear_probe(xtr, ytr, NT, xte, yte, NQ, D, C, &c, &init, &out, &res));
        float w3[C * D], b3[C];
        vr_probe_head out3 = {w3, b3};
        TU_OK(vr_linear_probe(xtr, ytr, NT, xte, yte, NQ, D, C, &c, NULL, &out3, &res));
        CU_ASSERT(memcmp(w2, w3, sizeof w3) == 0 && memcmp(b2, b3, sizeof b3) == 0);
        /* training moved the head */
        CU_ASSERT(memcmp(w, w3, sizeof w3) != 0);
    }
}

static void test_probe_order(void)
{
    enum { N = 100 };
    int a[N], b[N], seen[N] = {0};
    vr_probe_order(a, N, 3, 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(a[i] >= 0 && a[i] < N);
        seen[a[i]]++;
    }
    for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(seen[i], 1);
    vr_probe_order(b, N, 3, 0);
    CU_ASSERT(memcmp(a, b, sizeof a) == 0);
    vr_probe_order(b, N, 3, 1);
    CU_ASSERT(memcmp(a, b, sizeof a) != 0);
    vr_probe_order(b, N, 4, 0);
    CU_ASSERT(memcmp(a, b, sizeof a) != 0);
}

/* The status of a failing call and a message naming the probe. */
static void expect_fail(vr_status got, vr_status want, const char *needle)
{
    CU_ASSERT_EQUAL(got, want);
    const char *msg = vr_last_error();
    int ok = strncmp(msg, "probe: ", 7) == 0 && strstr(msg, needle) != NULL;
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", msg, needle);
    CU_ASSERT(ok);
}

static void test_probe_errors(void)
{
    enum { N = 4, D = 3, C = 2 };
    float x[N * D] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 3, 5}, w[C * D] = {0}, b[C] = {0};
    float logits[N * C], dw[C * D], db[C];
    int y[N] = {0, 1, 0, 1}, bad[N] = {0, 1, 2, 1}, neg[N] = {0, -1, 0, 1};
    vr_probe_config c;
    vr_probe_config_default(&c, VR_PROBE_SGD);
    vr_probe_result res;
    double loss;
    expect_fail(vr_linear_probe(x, bad, N, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_ARG,
                "training label 2 of row 2");
    expect_fail(vr_linear_probe(x, y, N, x, neg, N, D, C, &c, NULL, NULL, &res), VR_ERR_ARG,
                "test label -1 of row 1");
    expect_fail(vr_linear_probe(x, y, 0, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_SHAPE,
                "0 training rows");
    expect_fail(vr_linear_probe(x, y, N, x, y, N, 0, C, &c, NULL, NULL, &res), VR_ERR_SHAPE,
                "0 features");
    expect_fail(vr_probe_loss_grad(x, bad, N, D, C, w, b, logits, dw, db, &loss), VR_ERR_ARG,
                "label 2 of row 2");
    c.batch = 0;
    expect_fail(vr_linear_probe(x, y, N, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_ARG, "batch 0");
    vr_probe_config_default(&c, VR_PROBE_ADAM);
    expect_fail(vr_linear_probe(x, y, 1, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_SHAPE,
                "standardising needs 2 training rows");
    c.epochs = 0;
    expect_fail(vr_linear_probe(x, y, N, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_ARG, "epochs 0");
    vr_probe_config_default(&c, VR_PROBE_ADAM);
    x[7] = NAN;
    expect_fail(vr_linear_probe(x, y, N, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_NUMERIC,
                "training row 2 holds nan");
    CU_ASSERT_EQUAL(res.top1, 0.0);
    /* a step size that overflows the logits is reported, not returned as accuracy */
    x[7] = 8;
    vr_probe_config_default(&c, VR_PROBE_SGD);
    c.lr = 1e30f;
    expect_fail(vr_linear_probe(x, y, N, x, y, N, D, C, &c, NULL, NULL, &res), VR_ERR_NUMERIC,
                "cross entropy");
}

/* ============================================================== retrieval metrics */

typedef struct ranked {
    double sim;
    int idx;
} ranked;

static int ranked_order(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->sim != b->sim) return a->sim > b->sim ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static double dot_d(const float *a, const float *b, int d)
{
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)a[j] * b[j];
    return s;
}

/* Leave-one-out retrieval by sorting every other row, as the peer's label_retrieval. */
static void naive_label(const float *x, const int *y, int n, int d, const int *ks, int nk,
                        double *recall, double *map)
{
    ranked *list = alloc_z(sizeof(ranked) * n);
    long *hits = alloc_z(sizeof(long) * nk);
    double ap_sum = 0;
    for (int q = 0; q < n; q++) {
        int m = 0;
        for (int j = 0; j < n; j++)
            if (j != q) list[m++] = (ranked){dot_d(x + (size_t)q * d, x + (size_t)j * d, d), j};
        qsort(list, (size_t)m, sizeof *list, ranked_order);
        double found = 0, ap = 0;
        int first = -1;
        for (int r = 0; r < m; r++)
            if (y[list[r].idx] == y[q]) {
                found += 1;
                ap += found / (r + 1);
                if (first < 0) first = r;
            }
        ap_sum += ap / fmax(found, 1);
        for (int k = 0; k < nk; k++) hits[k] += first >= 0 && first < ks[k];
    }
    for (int k = 0; k < nk; k++) recall[k] = (double)hits[k] / n;
    *map = ap_sum / n;
    free(list), free(hits);
}

/* Row q of a finds row q of b: its position among all rows of b sorted. */
static void naive_xmodal(const float *a, const float *b, int n, int d, const int *ks, int nk,
                         double *recall)
{
    ranked *list = alloc_z(sizeof(ranked) * n);
    long *hits = alloc_z(sizeof(long) * nk);
    for (int q = 0; q < n; q++) {
        for (int j = 0; j < n; j++) list[j] = (ranked){dot_d(a + (size_t)q * d, b + (size_t)j * d, d), j};
        qsort(list, (size_t)n, sizeof *list, ranked_order);
        int pos = 0;
        while (list[pos].idx != q) pos++;
        for (int k = 0; k < nk; k++) hits[k] += pos < ks[k];
    }
    for (int k = 0; k < nk; k++) recall[k] = (double)hits[k] / n;
    free(list), free(hits);
}

/* Rows of multiples of 1/8 in -levels/8..levels/8 (levels <= 8): products of up to 32 terms are
 * exact in float, so float and double rank them identically and equal products tie exactly.
 * Few levels give many ties. */
static void exact_rows(float *x, int n, int d, int levels, vr_rng *r)
{
    for (int i = 0; i < n * d; i++) x[i] = (float)((int)vr_rng_below(r, 2 * levels + 1) - levels) / 8.0f;
}

static const int KS[] = {1, 2, 5, 10, 1000};
#define NKS (int)(sizeof KS / sizeof KS[0])

static void check_label_naive(const float *x, const int *y, int n, int d, const char *what)
{
    double recall[NKS], map, rref[NKS], mref;
    TU_OK(vr_label_retrieval(x, y, n, d, KS, NKS, recall, &map));
    naive_label(x, y, n, d, KS, NKS, rref, &mref);
    for (int k = 0; k < NKS; k++) CU_ASSERT(close_d(recall[k], rref[k], 1e-12, 0, what));
    CU_ASSERT(close_d(map, mref, 1e-12, 0, what));
}

/* 150 rows (three query blocks, the last partial) of 8 features in {-1/8, 0, 1/8}: many exact
 * ties; labels over 20 classes with rows 0, 75 and 149 in classes of their own */
static void test_label_retrieval_ties(void)
{
    enum { N = 150, D = 8 };
    static float x[N * D];
    int y[N];
    vr_rng r;
    vr_rng_seed(&r, 21);
    exact_rows(x, N, D, 1, &r);
    for (int i = 0; i < N; i++) y[i] = (int)vr_rng_below(&r, 20);
    y[0] = 100, y[75] = 101, y[149] = 102;
    check_label_naive(x, y, N, D, "label retrieval with ties");
    /* every row the same: each query ranks the others by index alone */
    for (int i = 0; i < N * D; i++) x[i] = i % D == 0 ? 1.0f : 0.0f;
    check_label_naive(x, y, N, D, "label retrieval, all rows equal");
}

/* 300 rows of 32 features spread over -1..1 in steps of 1/8, 30 classes */
static void test_label_retrieval_random(void)
{
    enum { N = 300, D = 32 };
    static float x[N * D];
    int y[N];
    vr_rng r;
    vr_rng_seed(&r, 22);
    exact_rows(x, N, D, 8, &r);
    for (int i = 0; i < N; i++) y[i] = (int)vr_rng_below(&r, 30);
    check_label_naive(x, y, N, D, "label retrieval, random rows");
}

/* Cross-modal pairs: b a noisy copy of a, with some rows of b duplicated before and after their
 * partner so that the partner ties with another row */
static void test_crossmodal_naive(void)
{
    enum { N = 130, D = 8 };
    static float a[N * D], b[N * D];
    vr_rng r;
    vr_rng_seed(&r, 23);
    exact_rows(a, N, D, 2, &r);
    exact_rows(b, N, D, 1, &r);
    for (int i = 0; i < N * D; i++) b[i] += a[i];
    for (int i = 0; i < 20; i++) {
        int src = (int)vr_rng_below(&r, N), dst = (int)vr_rng_below(&r, N);
        memcpy(b + (size_t)dst * D, b + (size_t)src * D, sizeof(float) * D);
    }
    double recall[NKS], rref[NKS];
    TU_OK(vr_crossmodal_recall(a, b, N, D, KS, NKS, recall));
    naive_xmodal(a, b, N, D, KS, NKS, rref);
    for (int k = 0; k < NKS; k++) CU_ASSERT(close_d(recall[k], rref[k], 1e-12, 0, "cross-modal recall"));
    CU_ASSERT(recall[0] > 0.1 && recall[0] < 0.9);
    CU_ASSERT_DOUBLE_EQUAL(recall[NKS - 1], 1.0, 0);
}

/* Worked by hand. Rows at 0, 36.87, 53.13 and 90 degrees, labels A B A B: cosines 0.8, 0.6, 0
 * from the first, 0.96 and 0.6 from the second, 0.8 from the third. The relevant row comes
 * second, third, third, second: AP 1/2, 1/3, 1/3, 1/2, mAP 5/12; recall@1 0, @2 1/2, @3 1.
 * Equal rows rank by index: three copies labelled A B A give AP 1/2, 0 (nothing relevant), 1,
 * mAP 1/2, recall@1 1/3; two copies as pairs give cross-modal recall@1 1/2 (row 1 loses the
 * tie to row 0), @2 1. */
static void test_retrieval_by_hand(void)
{
    float x[4 * 2] = {1, 0, 0.8f, 0.6f, 0.6f, 0.8f, 0, 1};
    int y[4] = {0, 1, 0, 1}, ks[3] = {1, 2, 3};
    double recall[3], map;
    TU_OK(vr_label_retrieval(x, y, 4, 2, ks, 3, recall, &map));
    CU_ASSERT(close_d(map, 5.0 / 12.0, 1e-12, 0, "mAP by hand"));
    CU_ASSERT(close_d(recall[0], 0.0, 1e-12, 0, "R@1 by hand"));
    CU_ASSERT(close_d(recall[1], 0.5, 1e-12, 0, "R@2 by hand"));
    CU_ASSERT(close_d(recall[2], 1.0, 1e-12, 0, "R@3 by hand"));
    TU_OK(vr_crossmodal_recall(x, x, 4, 2, ks, 1, recall));
    CU_ASSERT(close_d(recall[0], 1.0, 1e-12, 0, "cross-modal R@1 of a set with itself"));

    float same[3 * 2] = {1, 0, 1, 0, 1, 0};
    int y3[3] = {0, 1, 0};
    TU_OK(vr_label_retrieval(same, y3, 3, 2, ks, 2, recall, &map));
    CU_ASSERT(close_d(map, 0.5, 1e-12, 0, "mAP of equal rows"));
    CU_ASSERT(close_d(recall[0], 1.0 / 3.0, 1e-12, 0, "R@1 of equal rows"));
    CU_ASSERT(close_d(recall[1], 2.0 / 3.0, 1e-12, 0, "R@2 of equal rows"));
    TU_OK(vr_crossmodal_recall(same, same, 2, 2, ks, 2, recall));
    CU_ASSERT(close_d(recall[0], 0.5, 1e-12, 0, "cross-modal R@1 of a tie"));
    CU_ASSERT(close_d(recall[1], 1.0, 1e-12, 0, "cross-modal R@2 of a tie"));
}

/* Normalised float rows, where sgemm's rounding decides near-ties: the same answers bit for bit
 * with 1, 2 and 3 threads. */
static void test_retrieval_threads(void)
{
    enum { N = 500, D = 24 };
    static float a[N * D], b[N * D];
    int y[N];
    vr_rng r;
    vr_rng_seed(&r, 24);
    tu_fill_normal(a, N * D, &r, 1.0f);
    tu_fill_normal(b, N * D, &r, 1.0f);
    for (int i = 0; i < N * D; i++) b[i] += a[i];
    for (int i = 0; i < N; i++) y[i] = (int)vr_rng_below(&r, 25);
    vr_l2_normalise_rows(a, N, D);
    vr_l2_normalise_rows(b, N, D);
    int keep = omp_get_max_threads();
    double ref[NKS + 1], got[NKS + 1], xref[NKS], xgot[NKS];
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        double *out = t == 1 ? ref : got, *xout = t == 1 ? xref : xgot;
        TU_OK(vr_label_retrieval(a, y, N, D, KS, NKS, out, out + NKS));
        TU_OK(vr_crossmodal_recall(a, b, N, D, KS, NKS, xout));
        if (t > 1) {
            CU_ASSERT(memcmp(ref, got, sizeof ref) == 0);
            CU_ASSERT(memcmp(xref, xgot, sizeof xref) == 0);
        }
    }
    omp_set_num_threads(keep);
}

static void test_retrieval_fixture(void)
{
    enum { N = 80, M = 100, D = 16 };
    vr_safetensors *st = tu_open_fixture("retrieval.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    float *x = read_fixture(st, "label.x", VR_DTYPE_F32, N * D);
    int *y = read_fixture(st, "label.y", VR_DTYPE_I32, N);
    double *rref = read_fixture(st, "label.recall", VR_DTYPE_F64, 3);
    double *mref = read_fixture(st, "label.map", VR_DTYPE_F64, 1);
    float *a = read_fixture(st, "xmodal.a", VR_DTYPE_F32, M * D);
    float *b = read_fixture(st, "xmodal.b", VR_DTYPE_F32, M * D);
    double *xref = read_fixture(st, "xmodal.recall", VR_DTYPE_F64, 3);
    int ks[3] = {1, 5, 10};
    double recall[3], map;
    vr_l2_normalise_rows(x, N, D);
    vr_l2_normalise_rows(a, M, D);
    vr_l2_normalise_rows(b, M, D);
    TU_OK(vr_label_retrieval(x, y, N, D, ks, 3, recall, &map));
    for (int k = 0; k < 3; k++) CU_ASSERT(close_d(recall[k], rref[k], 1e-6, 0, "label recall against the peer"));
    CU_ASSERT(close_d(map, *mref, 1e-6, 0, "mAP against the peer"));
    TU_OK(vr_crossmodal_recall(a, b, M, D, ks, 3, recall));
    for (int k = 0; k < 3; k++) CU_ASSERT(close_d(recall[k], xref[k], 1e-6, 0, "cross-modal recall against the peer"));
    vr_st_close(st);
    free(x), free(y), free(rref), free(mref), free(a), free(b), free(xref);
}

static void test_retrieval_errors(void)
{
    float x[3 * 2] = {1, 0, 0, 1, 1, 1};
    int y[3] = {0, 0, 1}, ks[2] = {1, 0};
    double recall[2], map;
    CU_ASSERT_EQUAL(vr_label_retrieval(x, y, 1, 2, ks, 1, recall, &map), VR_ERR_SHAPE);
    CU_ASSERT(strstr(vr_last_error(), "retrieval: label retrieval: 1 rows") != NULL);
    CU_ASSERT_EQUAL(vr_label_retrieval(x, y, 3, 0, ks, 1, recall, &map), VR_ERR_SHAPE);
    CU_ASSERT_EQUAL(vr_label_retrieval(x, y, 3, 2, ks, 2, recall, &map), VR_ERR_ARG);
    CU_ASSERT(strstr(vr_last_error(), "recall cut-off 0") != NULL);
    CU_ASSERT_EQUAL(vr_crossmodal_recall(x, x, 0, 2, ks, 1, recall), VR_ERR_SHAPE);
    x[3] = INFINITY;
    CU_ASSERT_EQUAL(vr_crossmodal_recall(x, x, 3, 2, ks, 1, recall), VR_ERR_NUMERIC);
    CU_ASSERT(strstr(vr_last_error(), "queries: row 1 holds inf") != NULL);
    /* no cut-offs: mAP alone */
    x[3] = 1;
    TU_OK(vr_label_retrieval(x, y, 3, 2, NULL, 0, NULL, &map));
}

int main(void)
{
    static const tu_test tests[] = {
        {"probe: cross entropy gradient against finite differences", test_probe_grad_fd},
        {"probe: cross entropy at logits of +-1000", test_probe_xent_stable},
        {"probe: Adam protocol against the PyTorch peer", test_probe_adam_fixture},
        {"probe: SGD protocol against a naive double loop", test_probe_sgd_naive},
        {"probe: seeded initial heads", test_probe_seeded_init},
        {"probe: epoch orders", test_probe_order},
        {"probe: bad inputs named", test_probe_errors},
        {"retrieval: label retrieval with ties and singletons against a naive sort", test_label_retrieval_ties},
        {"retrieval: label retrieval on random rows against a naive sort", test_label_retrieval_random},
        {"retrieval: cross-modal recall with ties against a naive sort", test_crossmodal_naive},
        {"retrieval: cases worked by hand", test_retrieval_by_hand},
        {"retrieval: independent of the thread count", test_retrieval_threads},
        {"retrieval: against the peer's label_retrieval and xmodal", test_retrieval_fixture},
        {"retrieval: bad inputs", test_retrieval_errors},
        {NULL, NULL},
    };
    return tu_main("eval", tests);
}
