/* Recipes: every choice of a run (data, views, model, loss, optimiser, schedule, batch, seed,
 * run directory, evaluation) as an INI file, parsed with inih. Resolution order: built-in
 * defaults, then the file, then each --set section.key=value. The resolved recipe is written
 * back in one canonical form (every key, one per line), which is what the run directory and
 * the checkpoints keep. Errors name the file, the line and the key. */
#ifndef VR_CLI_RECIPE_H
#define VR_CLI_RECIPE_H

#include <stdint.h>

#include "vicreg/backend.h"
#include "vicreg/gray_views.h"
#include "vicreg/model.h"
#include "vicreg/optim.h"
#include "vicreg/schedule.h"

#define VR_RECIPE_PATH 512

typedef struct vr_recipe {
    /* [data] */
    char train_images[VR_RECIPE_PATH], train_labels[VR_RECIPE_PATH];
    char test_images[VR_RECIPE_PATH], test_labels[VR_RECIPE_PATH];
    int train_limit;             /* first N training samples; 0: all */
    /* [views] */
    vr_gray_views_config views;
    /* [model] */
    int depth, widths[4];
    int stem_kernel, stem_stride, stem_pad;
    int pool_kernel, pool_stride, pool_pad; /* pool_kernel 0: no max pool */
    int zero_init_residual;
    char expander[128];          /* full spec, first width = encoder output; "" none */
    /* [loss] */
    vr_vicreg_coeffs coeffs;
    /* [optim] */
    vr_optim_config optim;
    float base_lr;               /* scaled by batch / 256 */
    float warmup_epochs, final_lr_ratio;
    /* [train] */
    int epochs, batch;           /* batch: pairs per step */
    uint64_t seed;
    int threads;                 /* 0: every core */
    char backend[16];
    char run_dir[VR_RECIPE_PATH];
    long checkpoint_every;       /* steps; 0: only at the end */
    int log_every;               /* steps between metrics lines */
    /* [eval] */
    int eval_k;
    float eval_temperature;
    int eval_train_limit, eval_test_limit; /* 0: the whole split */
    int eval_batch;
} vr_recipe;

/* Defaults, then the file at path (NULL: defaults only), then the overrides
 * ("section.key=value", n_sets of them). VR_ERR_ARG (or VR_ERR_IO) with a message naming the
 * file, line and key, or the --set argument. */
vr_status vr_recipe_load(vr_recipe *r, const char *path, const char *const *sets, int n_sets);
/* As vr_recipe_load over recipe text; `name` names it in errors. */
vr_status vr_recipe_load_text(vr_recipe *r, const char *text, const char *name,
                              const char *const *sets, int n_sets);

/* The canonical text of a resolved recipe (malloc'd, caller frees); NULL when out of memory. */
char *vr_recipe_format(const vr_recipe *r);

/* The model the recipe describes: one shared image branch on 1-channel input. */
void vr_recipe_branch(const vr_recipe *r, vr_branch_config *bc);
/* The learning-rate schedule for steps_per_epoch. */
vr_lr_schedule vr_recipe_schedule(const vr_recipe *r, long steps_per_epoch);

#endif
