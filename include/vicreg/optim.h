/* Optimisers over a whole parameter layout: LARS (shared/SPEC.md), SGD with momentum, AdamW.
 *
 * Parameter groups follow the reference: tensors with one dimension (biases, BatchNorm gamma
 * and beta) get no weight decay and, for LARS, no trust ratio. State lives in blocks with the
 * layout of the parameters (LARS and SGD: momentum; AdamW: first and second moments). */
#ifndef VICREG_OPTIM_H
#define VICREG_OPTIM_H

#include "vicreg/backend.h"
#include "vicreg/params.h"

typedef enum vr_optim_kind { VR_OPTIM_LARS, VR_OPTIM_SGD, VR_OPTIM_ADAMW } vr_optim_kind;

typedef struct vr_optim_config {
    vr_optim_kind kind;
    float weight_decay; /* LARS 1e-6; SGD; AdamW (decoupled) */
    float momentum;     /* LARS, SGD: 0.9 */
    float eta;          /* LARS trust coefficient: 0.001 */
    float beta1, beta2, eps; /* AdamW: 0.9, 0.999, 1e-8 */
    int exclude_1d;     /* 1-D tensors: no weight decay, no trust ratio (default 1) */
} vr_optim_config;

typedef struct vr_optim {
    vr_optim_config cfg;
    vr_backend *be;
    const vr_paramset *params;
    float *state[2];    /* device, params layout; state[1] only for AdamW */
    int nstate;
    long step;          /* updates done so far */
} vr_optim;

/* Defaults of the reference for kind (LARS: wd 1e-6, momentum 0.9, eta 0.001; SGD: wd 1e-6,
 * momentum 0.9; AdamW: wd 0.05, betas 0.9/0.999, eps 1e-8). */
void vr_optim_config_default(vr_optim_config *c, vr_optim_kind kind);
/* "lars", "sgd", "adamw" */
vr_status vr_optim_kind_parse(const char *name, vr_optim_kind *kind);
const char *vr_optim_kind_name(vr_optim_kind kind);

/* State zeroed. */
vr_status vr_optim_create(vr_optim *o, const vr_optim_config *cfg, vr_backend *be,
                          const vr_paramset *params);
/* One update of every parameter with learning rate lr. */
vr_status vr_optim_step(vr_optim *o, float *p, const float *g, float lr);
void vr_optim_free(vr_optim *o);

#endif
