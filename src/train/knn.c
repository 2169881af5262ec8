/* Weighted k-NN evaluation of frozen representations (see include/vicreg/knn.h). */
#include "vicreg/knn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "vicreg/tensor.h"

/* A similarity tile of QUERY_BLOCK x TRAIN_BLOCK floats is 4 MiB: large enough for sgemm to
 * run near its peak, small enough to stay in a modest cache and bound memory. */
#define QUERY_BLOCK 256
#define TRAIN_BLOCK 4096

void vr_l2_normalise_rows(float *x, int n, int d)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)row[j] * row[j];
        if (ss > 0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (int j = 0; j < d; j++) row[j] *= inv;
        }
    }
}

/* Offers candidate (s, j) to a best-first list of k. Candidates arrive in increasing j, so a
 * tie never displaces an earlier entry: ties go to the lower index. NaN never enters. */
static inline void offer(float *sim, int *idx, int k, float s, int j)
{
    if (!(s > sim[k - 1])) return;
    int p = k - 1;
    while (p > 0 && sim[p - 1] < s) {
        sim[p] = sim[p - 1];
        idx[p] = idx[p - 1];
        p--;
    }
    sim[p] = s;
    idx[p] = j;
}

vr_status vr_knn_search(const float *train, int nt, const float *query, int nq, int d, int k,
                        int *idx, float *sim)
{
    if (nt < 1 || nq < 1 || d < 1) return vr_fail(VR_ERR_ARG, "knn", "%d training, %d query rows of %d", nt, nq, d);
    if (k < 1 || k > nt) return vr_fail(VR_ERR_ARG, "knn", "k = %d with %d training samples", k, nt);
    float *tile = vr_alloc((size_t)QUERY_BLOCK * TRAIN_BLOCK * sizeof(float)); /* (QB, TB) */
    if (!tile) return vr_fail(VR_ERR_NOMEM, "knn", "cannot allocate the similarity tile");
    for (size_t i = 0; i < (size_t)nq * k; i++) {
        sim[i] = -INFINITY;
        idx[i] = -1;
    }
    for (int q0 = 0; q0 < nq; q0 += QUERY_BLOCK) {
        int qb = nq - q0 < QUERY_BLOCK ? nq - q0 : QUERY_BLOCK;
        for (int t0 = 0; t0 < nt; t0 += TRAIN_BLOCK) {
            int tb = nt - t0 < TRAIN_BLOCK ? nt - t0 : TRAIN_BLOCK;
            /* tile (qb, tb) = query rows (qb, d) . train rows (tb, d)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, tb, d, 1.0f,
                        query + (size_t)q0 * d, d, train + (size_t)t0 * d, d, 0.0f, tile, tb);
#pragma omp parallel for schedule(static)
            for (int i = 0; i < qb; i++) {
                float *s = sim + (size_t)(q0 + i) * k;
                int *x = idx + (size_t)(q0 + i) * k;
                const float *row = tile + (size_t)i * tb;
                for (int j = 0; j < tb; j++) offer(s, x, k, row[j], t0 + j);
            }
        }
    }
    vr_free(tile);
    return VR_OK;
}

/* Rank of `label` among the classes ordered by score, high first, ties to the lower class. */
static int class_rank(const double *score, int nclasses, int label)
{
    int rank = 0;
    for (int c = 0; c < nclasses; c++)
        if (score[c] > score[label] || (score[c] == score[label] && c < label)) rank++;
    return rank;
}

vr_status vr_knn_evaluate(float *train, const int *train_labels, int nt, float *test,
                          const int *test_labels, int nq, int d, const vr_knn_config *c,
                          vr_knn_result *res)
{
    memset(res, 0, sizeof *res);
    if (!(c->temperature > 0.0f)) return vr_fail(VR_ERR_ARG, "knn", "temperature %g", c->temperature);
    int nclasses = 0;
    for (int i = 0; i < nt; i++) {
        if (train_labels[i] < 0) return vr_fail(VR_ERR_ARG, "knn", "training label %d of row %d", train_labels[i], i);
        if (train_labels[i] >= nclasses) nclasses = train_labels[i] + 1;
    }
    for (int i = 0; i < nq; i++) {
        if (test_labels[i] < 0) return vr_fail(VR_ERR_ARG, "knn", "test label %d of row %d", test_labels[i], i);
        if (test_labels[i] >= nclasses) nclasses = test_labels[i] + 1;
    }
    vr_l2_normalise_rows(train, nt, d);
    vr_l2_normalise_rows(test, nq, d);
    int k = c->k;
    /* neighbours of one query block at a time: (QB, k) */
    int *idx = vr_alloc((size_t)QUERY_BLOCK * k * sizeof(int));
    float *sim = vr_alloc((size_t)QUERY_BLOCK * k * sizeof(float));
    double *score = vr_alloc((size_t)QUERY_BLOCK * nclasses * sizeof(double));
    if (!idx || !sim || !score) {
        vr_free(idx);
        vr_free(sim);
        vr_free(score);
        return vr_fail(VR_ERR_NOMEM, "knn", "cannot allocate neighbour lists");
    }
    long hit1 = 0, hit5 = 0;
    vr_status s = VR_OK;
    for (int q0 = 0; q0 < nq && s == VR_OK; q0 += QUERY_BLOCK) {
        int qb = nq - q0 < QUERY_BLOCK ? nq - q0 : QUERY_BLOCK;
        s = vr_knn_search(train, nt, test + (size_t)q0 * d, qb, d, k, idx, sim);
        if (s != VR_OK) break;
#pragma omp parallel for schedule(static) reduction(+ : hit1, hit5)
        for (int i = 0; i < qb; i++) {
            double *sc = score + (size_t)i * nclasses;
            for (int cl = 0; cl < nclasses; cl++) sc[cl] = 0;
            for (int j = 0; j < k; j++) {
                int t = idx[(size_t)i * k + j];
                if (t >= 0) sc[train_labels[t]] += exp((double)sim[(size_t)i * k + j] / c->temperature);
            }
            int rank = class_rank(sc, nclasses, test_labels[q0 + i]);
            hit1 += rank == 0;
            hit5 += rank < 5;
        }
    }
    vr_free(idx);
    vr_free(sim);
    vr_free(score);
    if (s != VR_OK) return s;
    res->top1 = (double)hit1 / nq;
    res->top5 = (double)hit5 / nq;
    res->nqueries = nq;
    res->ntrain = nt;
    res->nclasses = nclasses;
    return VR_OK;
}

vr_status vr_represent_gray(vr_model *m, int branch, const vr_gray_views_config *views,
                            const uint8_t *images, int n, int h, int w, int threads, float *out)
{
    if (branch < 0 || branch >= m->nbranches) return vr_fail(VR_ERR_ARG, "knn", "no branch %d", branch);
    vr_branch *br = &m->branch[branch];
    if (br->plan_n < 1 || br->plan_h != views->size || br->plan_w != views->size)
        return vr_fail(VR_ERR_SHAPE, "knn", "branch %d is planned for %dx%d inputs, the views are %dx%d",
                       branch, br->plan_h, br->plan_w, views->size, views->size);
    vr_backend *be = m->be;
    int bn = br->plan_n, dim = br->enc.out_dim;
    size_t plane = (size_t)views->size * views->size;
    float *host = vr_alloc((size_t)bn * plane * sizeof(float)); /* (bn,1,S,S) */
    float *dev = NULL;
    vr_status s = host ? be->alloc(be, (size_t)bn * plane * sizeof(float), &dev)
                       : vr_fail(VR_ERR_NOMEM, "knn", "cannot allocate an input batch");
    for (int i0 = 0; i0 < n && s == VR_OK; i0 += bn) {
        int b = n - i0 < bn ? n - i0 : bn;
        s = vr_gray_center_batch(views, images + (size_t)i0 * h * w, h, w, b, threads, host);
        if (s == VR_OK) s = be->upload(be, dev, host, (size_t)b * plane);
        vr_ctx ctx = vr_model_ctx(m, b, 1, 0);
        if (s == VR_OK) s = vr_resnet_forward(&br->enc, &ctx, dev);
        if (s == VR_OK) s = be->download(be, out + (size_t)i0 * dim, ctx.ws + br->enc.repr, (size_t)b * dim);
    }
    if (dev) be->free(be, dev);
    vr_free(host);
    return s;
}
