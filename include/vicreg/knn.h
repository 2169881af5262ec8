/* k-nearest-neighbour classification on frozen representations: the weighted k-NN protocol of
 * Wu et al. (InstDisc, 2018) that VICReg reports as "20-NN". Features are L2-normalised; each
 * query takes its k most cosine-similar training samples, each votes for its label with weight
 * exp(similarity / temperature) (k 20, temperature 0.07), and the classes are ranked by their
 * summed weights. Similarities come from cblas_sgemm over blocks of queries x training samples,
 * so memory stays bounded whatever the set sizes. */
#ifndef VICREG_KNN_H
#define VICREG_KNN_H

#include <stdint.h>

#include "vicreg/gray_views.h"
#include "vicreg/model.h"

typedef struct vr_knn_config {
    int k;             /* neighbours: 20 */
    float temperature; /* 0.07 */
} vr_knn_config;

typedef struct vr_knn_result {
    double top1, top5; /* fractions of queries in [0, 1] */
    int nqueries, ntrain, nclasses;
} vr_knn_result;

/* Scales each row of x (N,D) to unit L2 norm; an all-zero row stays zero. */
void vr_l2_normalise_rows(float *x, int n, int d);

/* train (Nt,D), query (Nq,D), both already normalised. For every query: idx (Nq,k) the k
 * training rows of highest dot product, best first, ties to the lower index; sim (Nq,k) their
 * similarities. k <= Nt. */
vr_status vr_knn_search(const float *train, int nt, const float *query, int nq, int d, int k,
                        int *idx, float *sim);

/* Normalises train (Nt,D) and test (Nq,D) IN PLACE, then classifies every test row against
 * the training rows; labels are 0..nclasses-1 (nclasses = the largest label + 1). */
vr_status vr_knn_evaluate(float *train, const int *train_labels, int nt, float *test,
                          const int *test_labels, int nq, int d, const vr_knn_config *c,
                          vr_knn_result *res);

/* Representations (N, out_dim) of the encoder of branch `branch`, in evaluation mode (running
 * BatchNorm statistics), of images (N,H,W) 0..255 prepared by vr_gray_center_batch with views'
 * size and normalisation. Runs in batches of the branch's planned size; the plan's input side
 * must be views->size. out is host memory. */
vr_status vr_represent_gray(vr_model *m, int branch, const vr_gray_views_config *views,
                            const uint8_t *images, int n, int h, int w, int threads, float *out);

#endif
