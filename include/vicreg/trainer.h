/* One VICReg training step: forward both views, the loss, backward, optimiser update.
 *
 * Two set-ups share this code: a single branch whose weights both views share (the image
 * setup: the two views travel as one batch of 2N, view 1 first, with BatchNorm statistics per
 * view) and two non-shared branches, each fed its own input (the audio setup). */
#ifndef VICREG_TRAINER_H
#define VICREG_TRAINER_H

#include "vicreg/comm.h"
#include "vicreg/model.h"
#include "vicreg/optim.h"

typedef struct vr_trainer {
    vr_model *model;
    vr_optim optim;
    vr_vicreg_coeffs coeffs;
    int n;            /* pairs per step */
    int shared;       /* one branch for both views */
    float *dz;        /* device (2N, D): d loss / d embeddings of view 1 then view 2 */
    float *drepr[VR_MAX_BRANCHES]; /* device, per branch (rows, encoder dim) */
    long step;        /* completed steps */
    /* a data-parallel run (vr_trainer_distribute); NULL: this process alone */
    vr_comm *comm;
    int gather;       /* the loss over the global batch (the ranks' embeddings gathered) */
    int sync_bn;      /* batch norm statistics over the global batch */
    vr_bn_sync bn_sync;
    float *zg, *dzg;  /* device (2, ranks*N, D): gathered embeddings of both views, gradients */
    /* the gradient sum over the ranks, in buckets started during the backward */
    size_t bucket;    /* floats per bucket (25 MB; any size > 0 gives the same sums) */
    size_t lo[VR_MAX_BRANCHES], hi[VR_MAX_BRANCHES]; /* each branch's parameter offsets */
    size_t next[VR_MAX_BRANCHES]; /* the end of the branch's next bucket; lo: all started */
    int current;      /* the branch in its backward */
    int buckets, buckets_overlapped; /* last step: its buckets; those started while the
                                         backward still ran */
    double comm_seconds; /* last step: wall time waiting for the sums after the backward */
} vr_trainer;

/* Plans the model for n pairs of inputs (h, w) per branch (index 0 only when shared) and
 * allocates the loss gradients. The optimiser state starts at zero. */
vr_status vr_trainer_create(vr_trainer *t, vr_model *m, const vr_optim_config *opt, int n,
                            const int *h, const int *w);
/* x[0]: (2N,C,H,W) both views when shared; else x[0], x[1] per branch (N,...). On a NaN or
 * Inf loss nothing is updated and VR_ERR_NUMERIC names the step and the term. */
vr_status vr_trainer_step(vr_trainer *t, const float *const *x, float lr, vr_vicreg_terms *terms);
/* Makes the step data-parallel over comm's ranks, each holding n pairs of a global batch of
 * ranks*n (shared/SPEC.md):
 *  - gather: the embeddings of every rank are all-gathered and the loss is taken over the
 *    global batch on every rank; each keeps the gradient of its own rows (the sum over the
 *    ranks of the gather's backward, divided by the ranks as the gradient average does);
 *    without it each rank's loss is over its own batch and the gradients are averaged;
 *  - sync_bn: batch norm normalises with the statistics of the global batch (SyncBN);
 *  - the parameter gradients are summed over the ranks in buckets of `bucket` floats, each
 *    started as soon as the backward has finished it (the last parameters first) so that the
 *    sums run beside the rest of the backward where the comm can (MPI on the CPU backend's
 *    host memory, NCCL on a side stream), and waited for before the update, so every rank
 *    takes the same step: the one a single process with the global batch would take.
 * Loss terms reported on every rank are those of the global batch (the mean of the ranks'
 * without the gather). comm must outlive the trainer. */
vr_status vr_trainer_distribute(vr_trainer *t, vr_comm *comm, int gather, int sync_bn);
/* Makes every rank's parameters, buffers, counters, optimiser state and step rank 0's. */
vr_status vr_trainer_broadcast(vr_trainer *t);
/* The embeddings of the last step: view 1 and view 2 (N, D), device pointers. */
void vr_trainer_embeddings(const vr_trainer *t, const float **z1, const float **z2);
void vr_trainer_free(vr_trainer *t);

#endif
