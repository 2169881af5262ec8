/* Exact k-nearest-neighbour search on sgemm tiles (see include/vicreg/search.h).
 *
 * Every candidate gets a cost, lower is better: the negated inner product, or the squared
 * distance. A query's k best so far sit in a max-heap ordered by (cost, id), the worst at the
 * root, so a candidate is one compare against the root in the common case that it loses. */
#include "vicreg/search.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/tensor.h"

/* Query rows and base rows per block. sgemm packs the base block anew for every query block,
 * a pass over memory that 256 query rows make small beside the arithmetic (at 64 rows it took
 * a third of the time); the tile of 256 x 1024 floats (1 MiB) stays in cache between the
 * sgemm that writes it and the scan that reads it. */
#define QB 256
#define NB 1024

typedef struct hit {
    float cost;
    int64_t id;
} hit;

/* The place of a k < n answer that no row filled: it loses to every real candidate. */
static const hit sentinel = {INFINITY, INT64_MAX};

struct vr_search {
    const float *base; /* (n, d), the caller's */
    int64_t n;
    int d;
    vr_metric metric;
    int threads;
    float *norms;    /* (n) squared norms of the base rows, L2 only */
    float *tiles;    /* (threads, QB, NB) */
    float *qnorms;   /* (threads, QB) squared norms of a block's queries, L2 only */
    hit *work;       /* (nq, shards, k) heaps of the last call, grown to the largest */
    size_t work_cap; /* entries */
};

const char *vr_metric_name(vr_metric m) { return m == VR_METRIC_L2 ? "l2" : "ip"; }

vr_status vr_metric_parse(const char *name, vr_metric *m)
{
    if (name && !strcmp(name, "ip")) *m = VR_METRIC_IP;
    else if (name && !strcmp(name, "l2")) *m = VR_METRIC_L2;
    else return vr_fail(VR_ERR_ARG, "search", "metric '%s': expected ip or l2", name ? name : "(null)");
    return VR_OK;
}

/* 1 when a ranks after b */
static inline int worse(hit a, hit b) { return a.cost > b.cost || (a.cost == b.cost && a.id > b.id); }

static void sift_down(hit *h, int k, int i)
{
    hit x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && worse(h[c + 1], h[c])) c++;
        if (!worse(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* A max-heap of k into ascending order: best first. */
static void heap_sort(hit *h, int k)
{
    for (int end = k - 1; end > 0; end--) {
        hit t = h[0];
        h[0] = h[end];
        h[end] = t;
        sift_down(h, end, 0);
    }
}

static inline void offer(hit *h, int k, float cost, int64_t id)
{
    hit c = {cost, id};
    if (!worse(h[0], c)) return;
    h[0] = c;
    sift_down(h, k, 0);
}

/* Offers one tile row sim (nb) of similarities to base rows b0 .. b0 + nb - 1. */
static void offer_ip(hit *h, int k, const float *sim, int nb, int64_t b0)
{
    for (int j = 0; j < nb; j++) {
        float cost = -sim[j];
        if (cost <= h[0].cost) offer(h, k, cost, b0 + j);
    }
}

static void offer_l2(hit *h, int k, const float *sim, int nb, int64_t b0, float qnorm, const float *bnorm)
{
    for (int j = 0; j < nb; j++) {
        float cost = fmaxf(qnorm + bnorm[j] - 2.0f * sim[j], 0.0f);
        if (cost <= h[0].cost) offer(h, k, cost, b0 + j);
    }
}

static vr_status check_finite(const float *x, int64_t n, int d, const char *what)
{
    for (size_t i = 0; i < (size_t)n * (size_t)d; i++)
        if (!isfinite(x[i]))
            return vr_fail(VR_ERR_NUMERIC, "search", "%s: row %zu holds %g", what, i / (size_t)d, (double)x[i]);
    return VR_OK;
}

static float squared_norm(const float *x, int d)
{
    double s = 0.0;
    for (int j = 0; j < d; j++) s += (double)x[j] * x[j];
    return (float)s;
}

vr_status vr_search_create(const float *base, int64_t n, int d, vr_metric metric, int threads,
                           vr_search **out)
{
    *out = NULL;
    if (n < 1 || d < 1 || !base)
        return vr_fail(VR_ERR_SHAPE, "search", "base of %lld rows of %d columns", (long long)n, d);
    if (metric != VR_METRIC_IP && metric != VR_METRIC_L2)
        return vr_fail(VR_ERR_ARG, "search", "unknown metric %d", (int)metric);
    VR_TRY(check_finite(base, n, d, "base"));
    vr_search *s = calloc(1, sizeof *s);
    if (!s) return vr_fail(VR_ERR_NOMEM, "search", "out of memory");
    s->base = base;
    s->n = n;
    s->d = d;
    s->metric = metric;
    s->threads = threads > 0 ? threads : omp_get_max_threads();
    s->tiles = vr_alloc((size_t)s->threads * QB * NB * sizeof(float));
    s->qnorms = vr_alloc((size_t)s->threads * QB * sizeof(float));
    if (metric == VR_METRIC_L2) s->norms = vr_alloc((size_t)n * sizeof(float));
    if (!s->tiles || !s->qnorms || (metric == VR_METRIC_L2 && !s->norms)) {
        int t = s->threads;
        vr_search_free(s);
        return vr_fail(VR_ERR_NOMEM, "search", "no tiles for %d threads over %lld rows", t, (long long)n);
    }
    if (s->norms)
        for (int64_t i = 0; i < n; i++) s->norms[i] = squared_norm(base + i * d, d);
    *out = s;
    return VR_OK;
}

void vr_search_free(vr_search *s)
{
    if (!s) return;
    vr_free(s->norms);
    vr_free(s->tiles);
    vr_free(s->qnorms);
    vr_free(s->work);
    free(s);
}

int vr_search_threads(const vr_search *s) { return s->threads; }

/* The k best of `lists` sorted lists of k (list i at h + i * k) into scores and ids (k). */
static void merge(const hit *h, int lists, int k, vr_metric metric, float *scores, int64_t *ids)
{
    int at[64] = {0};
    for (int r = 0; r < k; r++) {
        int best = 0;
        for (int i = 1; i < lists; i++)
            if (worse(h[best * k + at[best]], h[i * k + at[i]])) best = i;
        hit b = h[best * k + at[best]++];
        ids[r] = b.id == INT64_MAX ? -1 : b.id;
        scores[r] = metric == VR_METRIC_IP ? -b.cost : b.cost;
    }
}

vr_status vr_search_run(vr_search *s, const float *queries, int64_t nq, int k, float *scores,
                        int64_t *ids)
{
    if (k < 1) return vr_fail(VR_ERR_ARG, "search", "k = %d, must be at least 1", k);
    if (nq < 0) return vr_fail(VR_ERR_ARG, "search", "%lld queries", (long long)nq);
    if (nq == 0) return VR_OK;
    VR_TRY(check_finite(queries, nq, s->d, "queries"));
    const int64_t n = s->n, nqb = (nq + QB - 1) / QB, nbb = (n + NB - 1) / NB;
    /* The base is split into shards of whole blocks too, so that there are about four units
     * of work per thread whatever the batch (one query included) and a thread slowed by other
     * work on its core holds up little; at most 64 shards, the merge's fan-in. */
    int64_t shards = (4 * (int64_t)s->threads + nqb - 1) / nqb;
    if (shards > nbb) shards = nbb;
    if (shards > 64) shards = 64;
    if ((size_t)nq > SIZE_MAX / sizeof(hit) / (size_t)shards / (size_t)k)
        return vr_fail(VR_ERR_NOMEM, "search", "%lld queries of k = %d", (long long)nq, k);
    size_t need = (size_t)nq * (size_t)shards * (size_t)k;
    if (need > s->work_cap) {
        hit *w = vr_alloc(need * sizeof(hit));
        if (!w) return vr_fail(VR_ERR_NOMEM, "search", "no room for %lld queries of k = %d", (long long)nq, k);
        vr_free(s->work);
        s->work = w;
        s->work_cap = need;
    }
    const int64_t units = nqb * shards;
    const int d = s->d;
#pragma omp parallel num_threads(s->threads)
    {
        /* sgemm on one thread inside this team, whatever OpenBLAS would choose on its own;
         * this sets the calling task's own value only */
        omp_set_num_threads(1);
        int t = omp_get_thread_num();
        float *tile = s->tiles + (size_t)t * QB * NB; /* (rows, nb) */
        float *qnorm = s->qnorms + (size_t)t * QB;    /* (rows) */
#pragma omp for schedule(dynamic)
        for (int64_t u = 0; u < units; u++) {
            int64_t q0 = u / shards * QB, shard = u % shards;
            int rows = nq - q0 < QB ? (int)(nq - q0) : QB;
            int64_t blk0 = nbb * shard / shards, blk1 = nbb * (shard + 1) / shards;
            for (int r = 0; r < rows; r++) {
                hit *h = s->work + ((size_t)(q0 + r) * shards + shard) * k;
                for (int i = 0; i < k; i++) h[i] = sentinel;
                if (s->metric == VR_METRIC_L2) qnorm[r] = squared_norm(queries + (q0 + r) * d, d);
            }
            for (int64_t blk = blk0; blk < blk1; blk++) {
                int64_t b0 = blk * NB;
                int nb = n - b0 < NB ? (int)(n - b0) : NB;
                /* tile (rows, nb) = queries[q0 : q0 + rows] (rows, d) . base[b0 : b0 + nb] (nb, d)^T;
                 * a single row by sgemv, which reads the base once instead of packing it first */
                if (rows == 1)
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, nb, d, 1.0f, s->base + b0 * d, d, queries + q0 * d, 1,
                                0.0f, tile, 1);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nb, d, 1.0f, queries + q0 * d, d,
                                s->base + b0 * d, d, 0.0f, tile, nb);
                for (int r = 0; r < rows; r++) {
                    hit *h = s->work + ((size_t)(q0 + r) * shards + shard) * k;
                    if (s->metric == VR_METRIC_IP) offer_ip(h, k, tile + (size_t)r * nb, nb, b0);
                    else offer_l2(h, k, tile + (size_t)r * nb, nb, b0, qnorm[r], s->norms + b0);
                }
            }
            for (int r = 0; r < rows; r++) heap_sort(s->work + ((size_t)(q0 + r) * shards + shard) * k, k);
        }
    }
    for (int64_t q = 0; q < nq; q++)
        merge(s->work + (size_t)q * shards * k, (int)shards, k, s->metric, scores + q * k, ids + q * k);
    return VR_OK;
}
