/* Exact k-nearest-neighbour search of query rows among base rows, by inner product or by
 * squared L2 distance.
 *
 * Ranking: by inner product the highest score comes first; by L2 the lowest squared distance
 * ||q - b||^2 (computed as ||q||^2 + ||b||^2 - 2 q.b and clamped at 0, as FAISS does). Equal
 * scores rank the lower base row first, so an answer is one total order's first k rows.
 *
 * A search context is made once for a base and reused for every batch of queries: it holds
 * the base rows' squared norms (L2) and one similarity tile per thread, so a call allocates
 * nothing once it has seen its largest batch. Queries go in blocks of rows, the base in blocks
 * of rows; one sgemm per pair of blocks fills a thread's tile and each query keeps its k best
 * candidates in a heap. The work is cut into units of a query block and a shard of the base
 * (about four units per thread, however few the queries), each with its own heaps, merged at
 * the end. The blocks depend only on the sizes, never on the thread count, and the answer is
 * the first k of one total order, so every score and every id is the same at any thread count;
 * a query in another batch may land in another block and differ in the last bits of its scores. */
#ifndef VICREG_SEARCH_H
#define VICREG_SEARCH_H

#include <stdint.h>

#include "vicreg/status.h"

typedef enum vr_metric {
    VR_METRIC_IP = 0, /* inner product, higher is better */
    VR_METRIC_L2 = 1  /* squared Euclidean distance, lower is better */
} vr_metric;

/* "ip" or "l2" */
const char *vr_metric_name(vr_metric m);
/* "ip" / "l2" -> *m; VR_ERR_ARG naming the string otherwise. */
vr_status vr_metric_parse(const char *name, vr_metric *m);

typedef struct vr_search vr_search;

/* A context over base (n, d), which is NOT copied and must outlive the context. Every value
 * must be finite (VR_ERR_NUMERIC naming the row otherwise). threads <= 0: omp_get_max_threads(). */
vr_status vr_search_create(const float *base, int64_t n, int d, vr_metric metric, int threads,
                           vr_search **out);
void vr_search_free(vr_search *s);

int vr_search_threads(const vr_search *s);

/* The k best base rows for each of queries (nq, d): ids (nq, k) and scores (nq, k), best
 * first. When k > n the last k - n places of each row hold id -1 and the worst possible score
 * (-inf by inner product, +inf by L2). k >= 1, nq >= 0, queries finite. */
vr_status vr_search_run(vr_search *s, const float *queries, int64_t nq, int k, float *scores,
                        int64_t *ids);

#endif
