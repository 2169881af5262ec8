/* Linear probe on frozen features: the peer's full-batch Adam protocol and VICReg's mini-batch
 * SGD protocol (see include/vicreg/probe.h).
 *
 * The head's parameters live in one vector p = [w (C,D), b (C)], and its gradient and the
 * optimiser's state in vectors of the same layout, so an update is one flat loop. Everything a
 * run needs is cut from one arena allocated at the start. */
#include "vicreg/probe.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "vicreg/rng.h"
#include "vicreg/schedule.h"
#include "vicreg/tensor.h"

/* Test rows scored per sgemm: the logits scratch needs no more than EVAL_BLOCK x C floats. */
#define EVAL_BLOCK 1024
/* Added to the std, as the peer does, so a constant feature becomes 0 rather than NaN. */
#define STD_EPS 1e-6f
/* The arena's rounding of every piece (tensor.c's alignment). */
#define PIECE_ALIGN 64

void vr_probe_config_default(vr_probe_config *c, vr_probe_protocol p)
{
    if (p == VR_PROBE_ADAM)
        *c = (vr_probe_config){.protocol = VR_PROBE_ADAM, .epochs = 300, .lr = 1e-2f,
                               .weight_decay = 1e-4f, .standardise = 1, .beta1 = 0.9f,
                               .beta2 = 0.999f, .eps = 1e-8f};
    else
        *c = (vr_probe_config){.protocol = VR_PROBE_SGD, .epochs = 100, .lr = 0.02f,
                               .weight_decay = 1e-6f, .batch = 256, .momentum = 0.9f};
}

void vr_probe_init(const vr_probe_config *c, int d, int nclasses, float *w, float *b)
{
    vr_rng r;
    vr_rng_seed_stream(&r, c->seed, 0);
    size_t nw = (size_t)nclasses * d;
    if (c->protocol == VR_PROBE_ADAM) {
        /* nn.Linear.reset_parameters: kaiming_uniform_(a = sqrt 5) bounds w by 1/sqrt(fan_in),
         * and b has the same bound */
        float bound = 1.0f / sqrtf((float)d);
        for (size_t i = 0; i < nw; i++) w[i] = vr_rng_range(&r, -bound, bound);
        for (int i = 0; i < nclasses; i++) b[i] = vr_rng_range(&r, -bound, bound);
    } else {
        for (size_t i = 0; i < nw; i++) w[i] = 0.01f * vr_rng_normal(&r);
        for (int i = 0; i < nclasses; i++) b[i] = 0.0f;
    }
}

void vr_probe_order(int *perm, int n, uint64_t seed, int epoch)
{
    vr_rng r;
    vr_rng_seed_stream(&r, seed, 1 + (uint64_t)epoch); /* stream 0 is the initialisation's */
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)vr_rng_below(&r, (uint64_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

vr_status vr_probe_loss_grad(const float *x, const int *y, int n, int d, int nclasses,
                             const float *w, const float *b, float *logits, float *dw, float *db,
                             double *loss)
{
    if (n < 1 || d < 1 || nclasses < 1)
        return vr_fail(VR_ERR_SHAPE, "probe", "cross entropy of %d rows, %d features, %d classes",
                       n, d, nclasses);
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= nclasses)
            return vr_fail(VR_ERR_ARG, "probe", "label %d of row %d is outside 0..%d", y[i], i,
                           nclasses - 1);
    int nc = nclasses;
    /* logits (N,C) = x (N,D) . w^T (D,C) + b */
    for (int i = 0; i < n; i++) memcpy(logits + (size_t)i * nc, b, (size_t)nc * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nc, d, 1.0f, x, d, w, d, 1.0f, logits,
                nc);
    /* each row becomes d loss / d logits = (softmax - onehot) / N */
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float *row = logits + (size_t)i * nc;
        float top = row[0];
        for (int c = 1; c < nc; c++) top = row[c] > top ? row[c] : top;
        sum += top - row[y[i]];
        double z = 0.0;
        for (int c = 0; c < nc; c++) {
            double e = exp((double)row[c] - top);
            z += e;
            row[c] = (float)e;
        }
        sum += log(z);
        for (int c = 0; c < nc; c++) row[c] = (float)((row[c] / z - (c == y[i])) / n);
    }
    *loss = sum / n;
    if (!isfinite(*loss))
        return vr_fail(VR_ERR_NUMERIC, "probe", "cross entropy over %d rows is %g", n, *loss);
    /* dw (C,D) = dlogits^T (C,N) . x (N,D); db (C) = column sums of dlogits, in row order */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, d, n, 1.0f, logits, nc, x, d, 0.0f,
                dw, d);
    for (int c = 0; c < nc; c++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += logits[(size_t)i * nc + c];
        db[c] = (float)s;
    }
    return VR_OK;
}

static vr_status check_config(const vr_probe_config *c)
{
    if (c->protocol != VR_PROBE_ADAM && c->protocol != VR_PROBE_SGD)
        return vr_fail(VR_ERR_ARG, "probe", "unknown protocol %d", (int)c->protocol);
    if (c->epochs < 1) return vr_fail(VR_ERR_ARG, "probe", "epochs %d", c->epochs);
    if (!(c->lr > 0.0f) || !isfinite(c->lr)) return vr_fail(VR_ERR_ARG, "probe", "lr %g", c->lr);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return vr_fail(VR_ERR_ARG, "probe", "weight decay %g", c->weight_decay);
    if (c->protocol == VR_PROBE_SGD) {
        if (c->batch < 1) return vr_fail(VR_ERR_ARG, "probe", "batch %d", c->batch);
        if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
            return vr_fail(VR_ERR_ARG, "probe", "momentum %g", c->momentum);
    } else {
        if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f && c->beta2 >= 0.0f && c->beta2 < 1.0f))
            return vr_fail(VR_ERR_ARG, "probe", "betas %g, %g", c->beta1, c->beta2);
        if (!(c->eps > 0.0f)) return vr_fail(VR_ERR_ARG, "probe", "eps %g", c->eps);
    }
    return VR_OK;
}

static vr_status check_rows(const float *x, const int *y, int n, int d, int nclasses,
                            const char *what)
{
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= nclasses)
            return vr_fail(VR_ERR_ARG, "probe", "%s label %d of row %d is outside 0..%d", what,
                           y[i], i, nclasses - 1);
    for (size_t i = 0; i < (size_t)n * d; i++)
        if (!isfinite(x[i]))
            return vr_fail(VR_ERR_NUMERIC, "probe", "%s row %zu holds %g", what, i / (size_t)d,
                           (double)x[i]);
    return VR_OK;
}

/* mean (D) and unbiased std + STD_EPS (D) of the columns of x (N,D), N >= 2, accumulated in
 * double over acc (D) */
static void moments(const float *x, int n, int d, double *acc, float *mean, float *sd)
{
    for (int j = 0; j < d; j++) acc[j] = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) acc[j] += x[(size_t)i * d + j];
    for (int j = 0; j < d; j++) {
        mean[j] = (float)(acc[j] / n);
        acc[j] = 0.0;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double dev = (double)x[(size_t)i * d + j] - mean[j];
            acc[j] += dev * dev;
        }
    for (int j = 0; j < d; j++) sd[j] = (float)sqrt(acc[j] / (n - 1)) + STD_EPS;
}

/* out (N,D) = (x - mean) / sd */
static void standardise(const float *x, int n, int d, const float *mean, const float *sd,
                        float *out)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            out[(size_t)i * d + j] = (x[(size_t)i * d + j] - mean[j]) / sd[j];
}

/* Top-1 and top-5 hits of the head p on x (N,D) with labels y; logits (EVAL_BLOCK,C) scratch.
 * The true class's rank counts the classes with a higher logit, or an equal one and a lower
 * index. */
static void score(const float *x, const int *y, int n, int d, int nc, const float *p,
                  float *logits, long *hit1, long *hit5)
{
    const float *w = p, *b = p + (size_t)nc * d;
    *hit1 = *hit5 = 0;
    for (int r0 = 0; r0 < n; r0 += EVAL_BLOCK) {
        int rows = n - r0 < EVAL_BLOCK ? n - r0 : EVAL_BLOCK;
        for (int i = 0; i < rows; i++)
            memcpy(logits + (size_t)i * nc, b, (size_t)nc * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nc, d, 1.0f,
                    x + (size_t)r0 * d, d, w, d, 1.0f, logits, nc);
        for (int i = 0; i < rows; i++) {
            const float *row = logits + (size_t)i * nc;
            int label = y[r0 + i], rank = 0;
            for (int c = 0; c < nc; c++)
                rank += row[c] > row[label] || (row[c] == row[label] && c < label);
            *hit1 += rank == 0;
            *hit5 += rank < 5;
        }
    }
}

/* torch.optim.Adam at step t >= 1: g' = g + wd p; m, v moments; bias corrections in double as
 * the reference's Python floats */
static void adam_step(const vr_probe_config *c, size_t count, float *p, const float *g, float *m,
                      float *v, long t)
{
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    float step_size = (float)(c->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = c->beta1, b2 = c->beta2, wd = c->weight_decay;
    float one_b1 = (float)(1.0 - b1), one_b2 = (float)(1.0 - b2);
    for (size_t i = 0; i < count; i++) {
        float gi = g[i] + wd * p[i];
        m[i] = m[i] * b1 + one_b1 * gi;
        v[i] = v[i] * b2 + one_b2 * gi * gi;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + c->eps);
    }
}

/* torch.optim.SGD: g' = g + wd p; mu = momentum mu + g' (g' on the first step); p -= lr mu */
static void sgd_step(const vr_probe_config *c, size_t count, float *p, const float *g, float *mu,
                     float lr, int first)
{
    float wd = c->weight_decay, mom = c->momentum;
    for (size_t i = 0; i < count; i++) {
        float gi = g[i] + wd * p[i];
        mu[i] = first ? gi : mom * mu[i] + gi;
        p[i] -= lr * mu[i];
    }
}

/* bytes rounded as the arena rounds them */
static size_t piece(size_t bytes) { return (bytes + PIECE_ALIGN - 1) / PIECE_ALIGN * PIECE_ALIGN; }

/* A piece of the arena sized by the same sum that sized the arena: running out is a bug. */
static void *take(vr_arena *a, size_t bytes)
{
    void *out = NULL;
    VR_ASSERT(vr_arena_take(a, bytes, &out) == VR_OK);
    return out;
}

vr_status vr_linear_probe(const float *train, const int *train_labels, int nt, const float *test,
                          const int *test_labels, int nq, int d, int nclasses,
                          const vr_probe_config *c, const vr_probe_head *init,
                          vr_probe_head *trained, vr_probe_result *res)
{
    memset(res, 0, sizeof *res);
    VR_TRY(check_config(c));
    if (nt < 1 || nq < 1 || d < 1 || nclasses < 1)
        return vr_fail(VR_ERR_SHAPE, "probe",
                       "%d training rows, %d test rows, %d features, %d classes", nt, nq, d,
                       nclasses);
    if (c->standardise && nt < 2)
        return vr_fail(VR_ERR_SHAPE, "probe", "standardising needs 2 training rows, got %d", nt);
    VR_TRY(check_rows(train, train_labels, nt, d, nclasses, "training"));
    VR_TRY(check_rows(test, test_labels, nq, d, nclasses, "test"));

    int sgd = c->protocol == VR_PROBE_SGD, nc = nclasses;
    int step_rows = sgd && c->batch < nt ? c->batch : nt;
    int eval_rows = nq < EVAL_BLOCK ? nq : EVAL_BLOCK;
    int logit_rows = step_rows > eval_rows ? step_rows : eval_rows;
    size_t nw = (size_t)nc * d, np = nw + nc;
    size_t xs_bytes = c->standardise ? (size_t)(nt + nq) * d * sizeof(float) : 0;
    size_t batch_bytes = sgd ? (size_t)step_rows * d * sizeof(float) : 0;
    size_t label_bytes = sgd ? (size_t)step_rows * sizeof(int) : 0;
    size_t perm_bytes = sgd ? (size_t)nt * sizeof(int) : 0;
    size_t moment_bytes = c->standardise ? 2 * piece((size_t)d * sizeof(float)) +
                                               piece((size_t)d * sizeof(double))
                                         : 0;
    size_t total = piece(xs_bytes) + moment_bytes + piece(batch_bytes) + piece(label_bytes) +
                   piece(perm_bytes) + piece((size_t)logit_rows * nc * sizeof(float)) +
                   (sgd ? 3 : 4) * piece(np * sizeof(float));
    vr_arena a;
    VR_TRY(vr_arena_init(&a, total));

    const float *xtr = train, *xte = test;
    if (c->standardise) {
        float *xs = take(&a, xs_bytes); /* (Nt + Nq, D) */
        float *mean = take(&a, (size_t)d * sizeof(float));
        float *sd = take(&a, (size_t)d * sizeof(float));
        moments(train, nt, d, take(&a, (size_t)d * sizeof(double)), mean, sd);
        standardise(train, nt, d, mean, sd, xs);
        standardise(test, nq, d, mean, sd, xs + (size_t)nt * d);
        xtr = xs;
        xte = xs + (size_t)nt * d;
    }
    float *xb = sgd ? take(&a, batch_bytes) : NULL; /* (B,D) the rows of one SGD step */
    int *yb = sgd ? take(&a, label_bytes) : NULL;   /* (B) their labels */
    int *perm = sgd ? take(&a, perm_bytes) : NULL;  /* (Nt) */
    float *logits = take(&a, (size_t)logit_rows * nc * sizeof(float));
    float *p = take(&a, np * sizeof(float));  /* [w (C,D), b (C)] */
    float *g = take(&a, np * sizeof(float));  /* its gradient */
    float *s1 = take(&a, np * sizeof(float)); /* SGD momentum; Adam first moment */
    float *s2 = sgd ? NULL : take(&a, np * sizeof(float)); /* Adam second moment */

    if (init) {
        memcpy(p, init->w, nw * sizeof(float));
        memcpy(p + nw, init->b, (size_t)nc * sizeof(float));
    } else {
        vr_probe_init(c, d, nc, p, p + nw);
    }

    vr_lr_schedule cosine = {.base = c->lr, .warmup_steps = 0, .total_steps = c->epochs,
                             .final_ratio = 0.0f};
    vr_status s = VR_OK;
    long steps = 0, hit1 = 0, hit5 = 0;
    for (int e = 0; e < c->epochs; e++) {
        double loss = 0.0;
        if (sgd) {
            float lr = vr_lr_at(&cosine, e);
            double sum = 0.0;
            vr_probe_order(perm, nt, c->seed, e);
            for (int r0 = 0; r0 < nt; r0 += c->batch) {
                int rows = nt - r0 < c->batch ? nt - r0 : c->batch;
                for (int i = 0; i < rows; i++) {
                    memcpy(xb + (size_t)i * d, xtr + (size_t)perm[r0 + i] * d,
                           (size_t)d * sizeof(float));
                    yb[i] = train_labels[perm[r0 + i]];
                }
                s = vr_probe_loss_grad(xb, yb, rows, d, nc, p, p + nw, logits, g, g + nw, &loss);
                if (s != VR_OK) break;
                sgd_step(c, np, p, g, s1, lr, steps == 0);
                steps++;
                sum += loss * rows;
            }
            loss = sum / nt;
        } else {
            s = vr_probe_loss_grad(xtr, train_labels, nt, d, nc, p, p + nw, logits, g, g + nw,
                                   &loss);
            if (s == VR_OK) adam_step(c, np, p, g, s1, s2, ++steps);
        }
        if (s != VR_OK) break;
        score(xte, test_labels, nq, d, nc, p, logits, &hit1, &hit5);
        res->train_loss = loss;
        res->top1 = (double)hit1 / nq;
        res->top5 = (double)hit5 / nq;
        res->best_top1 = res->top1 > res->best_top1 ? res->top1 : res->best_top1;
        res->best_top5 = res->top5 > res->best_top5 ? res->top5 : res->best_top5;
    }
    if (s == VR_OK && trained) {
        memcpy(trained->w, p, nw * sizeof(float));
        memcpy(trained->b, p + nw, (size_t)nc * sizeof(float));
    }
    vr_arena_free(&a);
    if (s != VR_OK) {
        memset(res, 0, sizeof *res);
        return s;
    }
    res->ntrain = nt;
    res->ntest = nq;
    res->nclasses = nc;
    return VR_OK;
}
