/* Recipes: every choice of a run (data, views, model, loss, optimiser, schedule, batch, seed,
 * run directory, evaluation) as an INI file, parsed with inih. Resolution order: built-in
 * defaults, then the file, then each --set section.key=value. The resolved recipe is written
 * back in one canonical form (every key, one per line), which is what the run directory and
 * the checkpoints keep. Errors name the file, the line and the key. */
#ifndef VR_CLI_RECIPE_H
#define VR_CLI_RECIPE_H

#include <stdint.h>

#include "vicreg/audio_views.h"
#include "vicreg/backend.h"
#include "vicreg/gray_views.h"
#include "vicreg/image_views.h"
#include "vicreg/spectrogram.h"
#include "vicreg/model.h"
#include "vicreg/optim.h"
#include "vicreg/schedule.h"

#define VR_RECIPE_PATH 512

/* What a recipe trains on: grayscale IDX images with one shared image branch, labelled audio
 * clips with a waveform and a spectrogram branch, or an ImageFolder of JPEG/PNG files (RGB)
 * with one shared image branch. */
typedef enum vr_data_kind { VR_DATA_IDX, VR_DATA_AUDIO, VR_DATA_FOLDER } vr_data_kind;

/* One ResNet encoder and its expander, as a recipe section describes it. */
typedef struct vr_recipe_encoder {
    int depth, widths[4];
    int stem_kernel, stem_stride, stem_pad;
    int pool_kernel, pool_stride, pool_pad; /* pool_kernel 0: no max pool */
    int zero_init_residual;
    char expander[128];          /* full spec, first width = encoder output; "" none */
} vr_recipe_encoder;

typedef struct vr_recipe {
    /* [data] */
    vr_data_kind kind;
    char train_images[VR_RECIPE_PATH], train_labels[VR_RECIPE_PATH];
    char test_images[VR_RECIPE_PATH], test_labels[VR_RECIPE_PATH];
    int train_limit;             /* first N training samples; 0: all */
    /* [data] of audio: a labels.csv-style manifest and the selections of the two splits */
    char manifest[VR_RECIPE_PATH], audio_root[VR_RECIPE_PATH];
    char train_folder[VR_RECIPE_PATH], test_folder[VR_RECIPE_PATH]; /* or class-per-folder sets */
    /* [data] of folder: the loader, and what the dry run assumes without the data */
    int loader_threads;          /* worker threads; 0: [train] threads (every core when 0) */
    int prefetch;                /* batches in flight: 2 double buffering, 3 triple */
    int assumed_train_size;      /* the dry run's sample count when train_folder is absent; 0: none */
    char path_column[32], label_column[32], select_column[32];
    char train_select[64], test_select[64];
    int rate_hz;
    float clip_seconds;          /* every clip cropped or padded to this */
    /* [views] */
    vr_gray_views_config views;
    /* [image_views]: size, mean and std are set on view 1 and copied to view 2 and eval */
    vr_image_views_config image_views;
    vr_image_eval_config image_eval;
    /* [audio_views] */
    vr_audio_views_config audio_views;
    float crop_seconds;
    int independent_views;       /* 1: each branch draws its own crop, gain and noise */
    /* [spectrogram] */
    vr_spectrogram_config spec;
    /* [model]: the image branch, or the spectrogram branch of an audio recipe */
    vr_recipe_encoder model;
    /* [wave]: the waveform branch of an audio recipe */
    vr_recipe_encoder wave;
    /* [loss] */
    vr_vicreg_coeffs coeffs;
    /* [optim] */
    vr_optim_config optim;
    float base_lr;               /* scaled by batch / 256 when scale_lr */
    int scale_lr;
    float warmup_epochs, final_lr_ratio;
    /* [train] */
    int epochs, batch;           /* batch: pairs per step */
    uint64_t seed;
    int threads;                 /* 0: every core */
    char backend[16];
    char run_dir[VR_RECIPE_PATH];
    long checkpoint_every;       /* steps; 0: only at the end */
    int log_every;               /* steps between metrics lines */
    float max_minutes;           /* stop early after this much training time; 0: no limit */
    /* [dist]: data-parallel runs (mpirun -np N vicreg train); train.batch is the global batch */
    char comm[16];               /* auto, single, mpi, nccl */
    int gather, sync_bn;
    float comm_timeout_s;        /* 0: wait without limit */
    float bucket_mb;             /* gradient sum buckets, MB of float32 */
    /* [eval] */
    int eval_k;
    float eval_temperature;
    int eval_train_limit, eval_test_limit; /* 0: the whole split */
    int eval_batch;
    int eval_linear;             /* 0 none, 1 + vr_probe_protocol: the linear probe to run */
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

/* The model the recipe describes: one shared image branch on 1-channel (idx) or 3-channel
 * (folder) input, or the audio recipe's waveform (branch 0) and spectrogram (branch 1)
 * branches. Returns the branch count. */
int vr_recipe_branches(const vr_recipe *r, vr_branch_config bc[VR_MAX_BRANCHES]);
/* seconds of audio in samples at the recipe's rate */
int64_t vr_recipe_samples(const vr_recipe *r, float seconds);
/* The learning-rate schedule for steps_per_epoch. */
vr_lr_schedule vr_recipe_schedule(const vr_recipe *r, long steps_per_epoch);

#endif
