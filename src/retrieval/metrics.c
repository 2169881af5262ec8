/* Retrieval metrics: leave-one-out label retrieval and cross-modal recall (see
 * include/vicreg/retrieval_metrics.h).
 *
 * Neither metric needs a query's full ranking. Cross-modal recall needs the rank of one row:
 * the number of rows ranked before it, one comparison per row. Label retrieval needs the ranks
 * of the R relevant rows: they are sorted among themselves (R log R), and every other row finds
 * by binary search how many of them it precedes, so a query costs O(N log R) rather than the
 * O(N log N) of sorting everything. */
#include "vicreg/retrieval_metrics.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/tensor.h"

/* A thread's similarity tile holds at most TILE_FLOATS (4 MiB) and at most BLOCK_MAX queries:
 * enough rows for sgemm to run near its peak on a set of a few thousand, and one query a block
 * on a set of millions. */
#define TILE_FLOATS (1 << 20)
#define BLOCK_MAX 64

/* The rank order as one integer: a row of higher similarity, or of equal similarity and lower
 * index, gets the smaller key, so each comparison of the searches below is one integer compare
 * (a conditional move rather than an unpredictable branch). -0 becomes +0 first, so the two
 * tie as they do as floats. */
static inline uint64_t rank_key(float sim, int idx)
{
    float s = sim + 0.0f;
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    u ^= (uint32_t)((int32_t)u >> 31) | 0x80000000u; /* ascending floats -> ascending integers */
    return ((uint64_t)~u << 32) | (uint32_t)idx;
}

static int key_order(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a > b) - (a < b);
}

static vr_status check_args(const float *x, int n, int d, const int *ks, int nk,
                            const double *recall, const char *what)
{
    if (d < 1) return vr_fail(VR_ERR_SHAPE, "retrieval", "%s: %d columns", what, d);
    if (nk < 0 || (nk > 0 && (!ks || !recall)))
        return vr_fail(VR_ERR_ARG, "retrieval", "%s: %d recall cut-offs without both lists", what,
                       nk);
    for (int i = 0; i < nk; i++)
        if (ks[i] < 1)
            return vr_fail(VR_ERR_ARG, "retrieval", "%s: recall cut-off %d", what, ks[i]);
    for (size_t i = 0; i < (size_t)n * d; i++)
        if (!isfinite(x[i]))
            return vr_fail(VR_ERR_NUMERIC, "retrieval", "%s: row %zu holds %g", what, i / (size_t)d,
                           (double)x[i]);
    return VR_OK;
}

/* Query rows per block for candidate sets of n rows. */
static int block_rows(int n)
{
    int qb = TILE_FLOATS / n;
    return qb < 1 ? 1 : qb > BLOCK_MAX ? BLOCK_MAX : qb;
}

/* Threads for nblocks blocks: no more than there are blocks. */
static int team_size(int nblocks)
{
    int t = omp_get_max_threads();
    return t < nblocks ? t : nblocks;
}

/* The leave-one-out outcome of query q from its similarity row sim (N): *ap its average
 * precision, the return value the rank (1-based) of its best relevant row, INT_MAX if none.
 * rel (N) and before (N + 1) are scratch. */
static int label_query(const float *sim, const int *labels, int n, int q, uint64_t *rel,
                       int *before, double *ap)
{
    int nrel = 0;
    for (int j = 0; j < n; j++)
        if (j != q && labels[j] == labels[q]) rel[nrel++] = rank_key(sim[j], j);
    *ap = 0.0;
    if (nrel == 0) return INT_MAX;
    qsort(rel, (size_t)nrel, sizeof *rel, key_order);
    /* before[p]: irrelevant rows ranked after relevant row p - 1 and before relevant row p */
    for (int p = 0; p <= nrel; p++) before[p] = 0;
    for (int j = 0; j < n; j++) {
        if (j == q || labels[j] == labels[q]) continue;
        uint64_t key = rank_key(sim[j], j);
        const uint64_t *base = rel;
        for (int len = nrel; len > 1;) {
            int half = len / 2;
            base = base[half] < key ? base + half : base;
            len -= half;
        }
        before[(base - rel) + (*base < key)]++;
    }
    double sum = 0.0;
    long irrelevant = 0;
    for (int p = 0; p < nrel; p++) {
        irrelevant += before[p];
        sum += (double)(p + 1) / (double)(p + 1 + irrelevant);
    }
    *ap = sum / nrel;
    return 1 + before[0];
}

vr_status vr_label_retrieval(const float *x, const int *labels, int n, int d, const int *ks,
                             int nk, double *recall, double *map)
{
    if (n < 2) return vr_fail(VR_ERR_SHAPE, "retrieval", "label retrieval: %d rows, needs 2", n);
    VR_TRY(check_args(x, n, d, ks, nk, recall, "label retrieval"));
    int qb = block_rows(n), nblocks = (n + qb - 1) / qb, nthreads = team_size(nblocks);
    size_t tile_floats = (size_t)qb * n;
    float *tile = vr_alloc((size_t)nthreads * tile_floats * sizeof(float)); /* (T, qb, N) */
    uint64_t *rel = vr_alloc((size_t)nthreads * n * sizeof(uint64_t));       /* (T, N) */
    int *before = vr_alloc((size_t)nthreads * (n + 1) * sizeof(int));        /* (T, N + 1) */
    double *ap = vr_alloc((size_t)n * sizeof(double));                      /* (N) */
    int *first = vr_alloc((size_t)n * sizeof(int));                         /* (N) */
    vr_status s = VR_OK;
    if (!tile || !rel || !before || !ap || !first) {
        s = vr_fail(VR_ERR_NOMEM, "retrieval", "label retrieval: no scratch for %d rows", n);
        goto done;
    }
#pragma omp parallel num_threads(nthreads)
    {
        int t = omp_get_thread_num();
        float *my_tile = tile + (size_t)t * tile_floats;
        uint64_t *my_rel = rel + (size_t)t * n;
        int *my_before = before + (size_t)t * (n + 1);
#pragma omp for schedule(dynamic)
        for (int blk = 0; blk < nblocks; blk++) {
            int q0 = blk * qb, rows = n - q0 < qb ? n - q0 : qb;
            /* my_tile (rows, N) = x[q0 : q0 + rows] (rows, D) . x (N, D)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, 1.0f,
                        x + (size_t)q0 * d, d, x, d, 0.0f, my_tile, n);
            for (int i = 0; i < rows; i++)
                first[q0 + i] = label_query(my_tile + (size_t)i * n, labels, n, q0 + i, my_rel,
                                            my_before, &ap[q0 + i]);
        }
    }
    for (int k = 0; k < nk; k++) {
        long hits = 0;
        for (int q = 0; q < n; q++) hits += first[q] <= ks[k];
        recall[k] = (double)hits / n;
    }
    if (map) {
        double sum = 0.0;
        for (int q = 0; q < n; q++) sum += ap[q];
        *map = sum / n;
    }
done:
    vr_free(tile);
    vr_free(rel);
    vr_free(before);
    vr_free(ap);
    vr_free(first);
    return s;
}

vr_status vr_crossmodal_recall(const float *a, const float *b, int n, int d, const int *ks,
                               int nk, double *recall)
{
    if (n < 1) return vr_fail(VR_ERR_SHAPE, "retrieval", "cross-modal recall: %d rows", n);
    VR_TRY(check_args(a, n, d, ks, nk, recall, "cross-modal recall: queries"));
    VR_TRY(check_args(b, n, d, ks, nk, recall, "cross-modal recall: targets"));
    int qb = block_rows(n), nblocks = (n + qb - 1) / qb, nthreads = team_size(nblocks);
    size_t tile_floats = (size_t)qb * n;
    float *tile = vr_alloc((size_t)nthreads * tile_floats * sizeof(float)); /* (T, qb, N) */
    int *rank = vr_alloc((size_t)n * sizeof(int));                          /* (N), 0-based */
    if (!tile || !rank) {
        vr_free(tile);
        vr_free(rank);
        return vr_fail(VR_ERR_NOMEM, "retrieval", "cross-modal recall: no scratch for %d rows", n);
    }
#pragma omp parallel num_threads(nthreads)
    {
        float *my_tile = tile + (size_t)omp_get_thread_num() * tile_floats;
#pragma omp for schedule(dynamic)
        for (int blk = 0; blk < nblocks; blk++) {
            int q0 = blk * qb, rows = n - q0 < qb ? n - q0 : qb;
            /* my_tile (rows, N) = a[q0 : q0 + rows] (rows, D) . b (N, D)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, 1.0f,
                        a + (size_t)q0 * d, d, b, d, 0.0f, my_tile, n);
            for (int i = 0; i < rows; i++) {
                const float *sim = my_tile + (size_t)i * n;
                int q = q0 + i, r = 0;
                uint64_t key = rank_key(sim[q], q);
                for (int j = 0; j < n; j++) r += rank_key(sim[j], j) < key;
                rank[q] = r;
            }
        }
    }
    for (int k = 0; k < nk; k++) {
        long hits = 0;
        for (int q = 0; q < n; q++) hits += rank[q] < ks[k];
        recall[k] = (double)hits / n;
    }
    vr_free(tile);
    vr_free(rank);
    return VR_OK;
}
