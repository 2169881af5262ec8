/* Linear probe: a linear classifier trained on frozen features (N,D) with labels 0..C-1 and
 * scored top-1 / top-5 on test features. Two protocols:
 *
 *  VR_PROBE_ADAM, the audio peer's (shared/bench/peer_learn.py linear()): features
 *    standardised with the training mean and unbiased std (+1e-6); head initialised as
 *    torch.nn.Linear (w and b uniform in +-1/sqrt(D)); full-batch Adam as torch.optim.Adam
 *    (weight decay added to the gradient, betas 0.9/0.999, eps 1e-8), lr 1e-2, weight decay
 *    1e-4, 300 epochs of one step.
 *  VR_PROBE_SGD, the VICReg linear evaluation (shared/SPEC.md) on precomputed features, so
 *    without augmentation: head w ~ N(0, 0.01^2), b = 0; SGD as torch.optim.SGD, momentum 0.9,
 *    weight decay 1e-6, batch 256 (the last batch of an epoch may be smaller), 100 epochs,
 *    lr 0.02 on a cosine per epoch (CosineAnnealingLR(T_max = epochs)): epoch e uses
 *    lr * (1 + cos(pi e / epochs)) / 2; the training rows are shuffled every epoch from the
 *    seed.
 *
 * Both minimise the mean cross entropy over the (mini-)batch; weight decay applies to w and b.
 * After every epoch the test rows are scored: a row is a top-k hit when its class is among the
 * k highest logits, ties going to the lower class (torch's argmax). The protocol's published
 * figure is the last epoch's for the peer and the best epoch's for VICReg; both are reported.
 * Matrix products go through cblas_sgemm; everything else runs in a fixed order, so a seed
 * gives the same head on every run. */
#ifndef VICREG_PROBE_H
#define VICREG_PROBE_H

#include <stdint.h>

#include "vicreg/status.h"

typedef enum vr_probe_protocol { VR_PROBE_ADAM, VR_PROBE_SGD } vr_probe_protocol;

typedef struct vr_probe_config {
    vr_probe_protocol protocol;
    int epochs;              /* ADAM 300 (one full-batch step each); SGD 100 */
    float lr;                /* ADAM: constant 1e-2; SGD: 0.02 at epoch 0, cosine to 0 */
    float weight_decay;      /* added to the gradient: ADAM 1e-4; SGD 1e-6 */
    int standardise;         /* 1: x <- (x - training mean) / (training std + 1e-6);
                              * ADAM 1, SGD 0 */
    int batch;               /* SGD: rows per step, 256 */
    float momentum;          /* SGD: 0.9 */
    float beta1, beta2, eps; /* ADAM: 0.9, 0.999, 1e-8 */
    uint64_t seed;           /* the head's initialisation; SGD: the shuffles too */
} vr_probe_config;

/* The head: w (C,D), b (C), PyTorch's nn.Linear layout. With standardise, it applies to
 * standardised features. */
typedef struct vr_probe_head {
    float *w;
    float *b;
} vr_probe_head;

typedef struct vr_probe_result {
    double top1, top5;           /* test rows, head after the last epoch; fractions in [0, 1] */
    double best_top1, best_top5; /* the best of each over the scores after every epoch */
    double train_loss;           /* mean cross entropy of the last epoch's steps, each at the
                                  * weights it was computed with (ADAM: before its last step) */
    int ntrain, ntest, nclasses;
} vr_probe_result;

/* The defaults of protocol p listed above, seed 0. */
void vr_probe_config_default(vr_probe_config *c, vr_probe_protocol p);

/* The seeded initial head of c's protocol for D features and C classes: w (C,D), b (C). */
void vr_probe_init(const vr_probe_config *c, int d, int nclasses, float *w, float *b);

/* perm (N): the order of the training rows in SGD epoch `epoch`, a Fisher-Yates shuffle seeded
 * from (seed, epoch). */
void vr_probe_order(int *perm, int n, uint64_t seed, int epoch);

/* The mean cross entropy of the head (w, b) on rows x (N,D) with labels y in 0..C-1, written
 * to *loss, and its gradient: dw (C,D) and db (C) overwritten. logits (N,C) is scratch. Log-sum-
 * exp after subtracting the row's largest logit, so no logit overflows. VR_ERR_NUMERIC when
 * the loss is not finite. */
vr_status vr_probe_loss_grad(const float *x, const int *y, int n, int d, int nclasses,
                             const float *w, const float *b, float *logits, float *dw, float *db,
                             double *loss);

/* Trains a head on train (Nt,D) with train_labels (Nt) and scores it on test (Nq,D) with
 * test_labels (Nq); labels lie in 0..nclasses-1. init: the starting head, or NULL for
 * vr_probe_init's. trained: receives the final head, or NULL. Inputs are not modified. All
 * memory is one allocation per call: a standardised copy of both sets when standardising, the
 * logits of one step (ADAM: Nt x C floats) and the head's parameters, gradient and state. */
vr_status vr_linear_probe(const float *train, const int *train_labels, int nt, const float *test,
                          const int *test_labels, int nq, int d, int nclasses,
                          const vr_probe_config *c, const vr_probe_head *init,
                          vr_probe_head *trained, vr_probe_result *res);

#endif
