/* A model: one or two branches (encoder + optional expander) over one parameter block.
 *
 * The image setup has one branch whose weights both views share ("backbone.", "projector.");
 * the audio setup has two non-shared branches (a 1-D and a 2-D encoder, each with its own
 * expander). Parameters, gradients and BatchNorm buffers are single device allocations in the
 * layouts of `params` and `buffers`; activations live in one workspace sized by vr_model_plan. */
#ifndef VICREG_MODEL_H
#define VICREG_MODEL_H

#include "vicreg/nn.h"

#define VR_MAX_BRANCHES 2

typedef struct vr_branch_config {
    vr_resnet_config encoder;
    char encoder_prefix[32];  /* "backbone." */
    char expander[128];       /* "512-2048-2048-2048" (first width = encoder output); "" none */
    char expander_prefix[32]; /* "projector." */
} vr_branch_config;

typedef struct vr_branch {
    vr_resnet enc;
    vr_expander exp;
    int has_expander;
    int plan_n, plan_h, plan_w;
} vr_branch;

typedef struct vr_model {
    vr_backend *be;
    int nbranches;
    vr_branch branch[VR_MAX_BRANCHES];
    vr_branch_config cfg[VR_MAX_BRANCHES];
    vr_paramset params, buffers;
    vr_counters counts;
    float *p, *g, *buf; /* device: values, gradients (params layout), buffers */
    float *ws;          /* device activation workspace */
    size_t ws_floats;
} vr_model;

/* Declares every branch and allocates parameters, gradients and buffers (not initialised). */
vr_status vr_model_create(vr_model *m, vr_backend *be, int nbranches, const vr_branch_config *cfg);
/* Declares every branch only: names, shapes and counts, nothing allocated (a dry run's model,
 * whose parameters alone can take gigabytes to touch). Free with vr_model_free. */
vr_status vr_model_declare(vr_model *m, vr_backend *be, int nbranches, const vr_branch_config *cfg);
/* Initialises every parameter and buffer from seed (vr_resnet_init, vr_expander_init). */
vr_status vr_model_init(vr_model *m, uint64_t seed);
/* Sizes the workspace for batch n per pass of inputs (h, w) to branch b (h = 1 for 1-D).
 * Plans of all branches share one workspace; planning again reallocates. */
vr_status vr_model_plan(vr_model *m, const int *n, const int *h, const int *w);
/* The plan alone, for a model without a workspace: layer offsets and m->ws_floats for these
 * inputs, nothing allocated. What a dry run reports of a batch whose activations would not fit
 * in this machine's memory. */
vr_status vr_model_plan_size(vr_model *m, const int *n, const int *h, const int *w);
void vr_model_free(vr_model *m);

/* The context to run branch layers with. */
vr_ctx vr_model_ctx(const vr_model *m, int n, int groups, int train);
vr_status vr_model_zero_grad(vr_model *m);

/* Convenience: default image branch ("backbone." ResNet-depth on 3 channels, "projector." expander) */
void vr_branch_config_image(vr_branch_config *c, int depth, const char *expander_tail);

/* The audio recipe's two NON-shared branches: "wave." (1-D ResNet-18, 48..384 -> 384) and
 * "spec." (2-D ResNet-18 on a 1-channel spectrogram -> 512), each with its own expander. */
void vr_branch_config_wave(vr_branch_config *c, const char *expander_tail);
void vr_branch_config_spec(vr_branch_config *c, const char *expander_tail);

/* Bytes of host/device memory the model holds (parameters, gradients, buffers, workspace). */
size_t vr_model_bytes(const vr_model *m);

#endif
