/* Retrieval metrics on embeddings: label retrieval inside one set (leave-one-out recall@k and
 * mean average precision) and cross-modal recall@k between two sets of paired rows.
 *
 * The similarity of two rows is their inner product, so rows scaled to unit L2 norm
 * (vr_l2_normalise_rows) give cosine similarity. A query ranks candidates by similarity, high
 * first, ties to the lower row index: the first maximum, as torch.argmax in the audio peer's
 * xmodal (shared/bench/peer_learn.py); its label_retrieval leaves the order of ties to
 * argsort, and agrees wherever similarities differ.
 *
 * Queries run in blocks: one sgemm of a block of query rows against every candidate row into
 * a tile of the thread that owns the block (at most 4 MiB), with OpenMP over blocks.
 * Each query's outcome is a function of its own similarity row, and the outcomes are summed in
 * row order after the parallel part, so results are the same whatever the thread count. */
#ifndef VICREG_RETRIEVAL_METRICS_H
#define VICREG_RETRIEVAL_METRICS_H

#include "vicreg/status.h"

/* Leave-one-out label retrieval in x (N,D) with labels (N) (any integers; equal means
 * relevant), N >= 2. Every row queries the N - 1 others.
 * recall (nk): recall[i] = fraction of queries with a relevant row among their ks[i] best
 * (ks[i] >= 1); the peer's "R@1" is ks = {1}.
 * *map: mean over queries of AP = sum over the ranks r of relevant rows of
 * (relevant rows in the first r) / r, divided by the number of relevant rows; a query with no
 * relevant row has AP 0 (the peer's clamp_min(1)). map may be NULL, and recall when nk is 0. */
vr_status vr_label_retrieval(const float *x, const int *labels, int n, int d, const int *ks,
                             int nk, double *recall, double *map);

/* Cross-modal recall@k: row i of a (N,D) should find row i of b (N,D) among all N rows of b.
 * recall[i] = fraction of rows of a whose partner is among their ks[i] best rows of b; ks = {1}
 * is the peer's xmodal. */
vr_status vr_crossmodal_recall(const float *a, const float *b, int n, int d, const int *ks,
                               int nk, double *recall);

#endif
