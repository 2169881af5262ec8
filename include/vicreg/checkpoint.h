/* Checkpoints: safetensors files named as PyTorch's state_dict ("backbone.layer1.0.conv1.weight",
 * "projector.0.weight", running statistics and num_batches_tracked included), so weights move
 * both ways between this toolkit and torchvision; the optimiser state ("optimizer.<slot>.<name>"),
 * the step and the RNG state ride along so a resumed run continues exactly. Written to a
 * temporary file and renamed: a kill never leaves half a checkpoint in place of a good one. */
#ifndef VICREG_CHECKPOINT_H
#define VICREG_CHECKPOINT_H

#include "vicreg/model.h"
#include "vicreg/optim.h"
#include "vicreg/rng.h"
#include "vicreg/safetensors.h"

typedef struct vr_run_state {
    long step;        /* completed training steps */
    vr_rng rng;       /* the run's generator after that step */
} vr_run_state;

/* optim and run may be NULL (weights only); recipe (may be NULL) is stored as metadata. A
 * model whose parameters or buffers hold a NaN or an Inf is refused (VR_ERR_NUMERIC naming
 * the first such tensor; nothing written): a checkpoint is what a failed run falls back to. */
vr_status vr_checkpoint_save(const char *path, const vr_model *m, const vr_optim *optim,
                             const vr_run_state *run, const char *recipe);
/* Loads every parameter and buffer of m (each must be present with its shape); optim and run
 * when not NULL (then the file must hold them, for the same optimizer kind). */
vr_status vr_checkpoint_load(const char *path, vr_model *m, vr_optim *optim, vr_run_state *run);

/* Every parameter and buffer of m from a checkpoint already open as st (its metadata read, so
 * the file is read once); path names it in messages. Tensors m does not have are ignored, so
 * one branch can be loaded from a two-branch checkpoint. */
vr_status vr_checkpoint_load_weights(const vr_safetensors *st, const char *path, vr_model *m);

#endif
