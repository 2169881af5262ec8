/* Frozen features of a data split: every branch's representation (encoder output) and
 * embedding (expander output) of every sample's evaluation input, in evaluation mode (running
 * BatchNorm statistics). The input of evaluation and retrieval. */
#ifndef VR_CLI_FEATURIZE_H
#define VR_CLI_FEATURIZE_H

#include "source.h"

typedef struct vr_features {
    int n, nbranches;
    int *labels;                  /* (N) the source's labels of the rows kept */
    int dropped;                  /* folder: samples left out because their file did not decode */
    int repr_dim[VR_MAX_BRANCHES], emb_dim[VR_MAX_BRANCHES];
    float *repr[VR_MAX_BRANCHES]; /* (N, repr_dim), host */
    float *emb[VR_MAX_BRANCHES];  /* (N, emb_dim), host; NULL without an expander or when not asked */
    int logmel_dim;               /* audio: n_mels; 0 otherwise */
    float *logmel;                /* audio: (N, n_mels) each clip's log-mel averaged over time, the
                                     baseline feature that involves no training */
} vr_features;

/* The features of s's first n samples (all of them when n <= 0 or n > s->n); embeddings too
 * when `embeddings`. Rows of a folder's files that do not decode are dropped (f->dropped), so
 * f->n may be below n. m must be planned for s's input shapes (as the trainer plans it, or by
 * vr_features_plan). */
vr_status vr_features_compute(vr_model *m, vr_source *s, const vr_recipe *r, int n, int embeddings,
                              vr_features *f);
/* Plans m for evaluation passes of `batch` samples of s's inputs. */
vr_status vr_features_plan(vr_model *m, const vr_source *s, int batch);
void vr_features_free(vr_features *f);

#endif
