/* The data of a recipe, one split of it, and what the model is fed from it: the views of a
 * training step and the plain inputs of an evaluation. Three kinds:
 *
 *   idx    grayscale images; one shared branch fed (2N,1,S,S), view 1 of every sample first
 *   audio  labelled clips; branch 0 is fed the waveform views (N,1,L) and branch 1 log-mel
 *          spectrograms (N,1,M,T), then masked, of the same views or, with [audio_views]
 *          independent, of views drawn on their own (another seed: crop, gain, noise)
 *   folder an ImageFolder of JPEGs and PNGs, listed at open and decoded on demand; one shared
 *          branch fed (2N,3,S,S) by the loader threads of vicreg/image_loader.h
 *
 * Evaluation inputs are deterministic: the whole image resized to S x S (idx), the reference's
 * resize and centre crop (folder: vr_image_eval_file), or the clip's centre crop of the
 * training crop length and its unmasked spectrogram. A folder's file that cannot be decoded is
 * marked bad in s->folder and its input left zero; vr_features_compute drops its row. A limit
 * on a folder split keeps samples spread over the listing (vr_image_folder_keep_spread), since
 * the first ones would all be of the first classes. */
#ifndef VR_CLI_SOURCE_H
#define VR_CLI_SOURCE_H

#include "vicreg/audio_dataset.h"
#include "vicreg/idx.h"
#include "vicreg/image_folder.h"
#include "vicreg/image_loader.h"
#include "vicreg/spectrogram.h"
#include "recipe.h"

typedef enum vr_split { VR_SPLIT_TRAIN, VR_SPLIT_TEST } vr_split;

typedef struct vr_source {
    vr_data_kind kind;
    int n;                              /* samples */
    int nclasses;
    int nbranches;                      /* inputs per step: 1 shared or 2 */
    int in_c[VR_MAX_BRANCHES], in_h[VR_MAX_BRANCHES], in_w[VR_MAX_BRANCHES]; /* one pass's input of each branch */
    size_t step_floats[VR_MAX_BRANCHES]; /* a training step's input of each branch */
    int *labels;                        /* (n) */
    vr_gray_dataset gray;
    vr_audio_dataset audio;
    vr_spectrogram *sp;
    float *wave2;                       /* (N, L) the spectrogram branch's own views, when independent */
    vr_image_folder folder;             /* folder: the listing, its bad files and skip list */
    int assumed;                        /* folder, dry run: n is [data] assumed_train_size */
    vr_image_loader *loader;            /* folder, training: the batches */
    long refills;                       /* folder: slots the stopped loader refilled */
    vr_image_views_work **eval_work;    /* folder: one per OpenMP thread, for evaluation inputs */
    int eval_nwork;
    int skips_reported;                 /* records of the skip list a program has reported */
} vr_source;

/* Opens split of r's data (limit > 0: its first `limit` samples) and reads it into memory.
 * Audio files that cannot be read are skipped; their names and reasons stay in
 * s->audio.skipped for the caller to report. */
vr_status vr_source_open(vr_source *s, const vr_recipe *r, vr_split split, int limit);
/* The training split's sample count, classes and input shapes, without reading any data beyond
 * headers and manifests (the dry run). Free with vr_source_free. */
vr_status vr_source_peek(vr_source *s, const vr_recipe *r);
/* The data in words, for the run's plan. */
void vr_source_describe(const vr_source *s, const vr_recipe *r, char *what, size_t what_len);
void vr_source_free(vr_source *s);

/* The views of samples index (N) into out[b] (s->step_floats[b] floats, host), the sample at
 * position i drawing from (seed, first + i). Not for the folder kind, whose views come from
 * its loader (VR_ERR_UNSUPPORTED). */
vr_status vr_source_views(vr_source *s, const vr_recipe *r, const int *index, int n,
                          uint64_t seed, int64_t first, float *const *out);

/* Folder kind: starts the loader threads on the batches of steps [first_step, end_step) of
 * batch [train] batch, in the order of vicreg/image_loader.h for shuffle_seed and views_seed.
 * In a data-parallel run of `ranks` processes this rank's batch is its share of each step:
 * pairs [rank * batch/ranks, (rank + 1) * batch/ranks) (one process: ranks 1, rank 0). */
vr_status vr_source_start_loader(vr_source *s, const vr_recipe *r, int rank, int ranks,
                                 long first_step, long end_step, uint64_t shuffle_seed,
                                 uint64_t views_seed);
/* The next batch, which must be step `step`: host[0] receives its inputs (2N,3,S,S) in the
 * loader's buffer, valid until the next call. */
vr_status vr_source_loader_batch(vr_source *s, long step, const float **host);
/* Stops the loader threads and frees their buffers; s->refills keeps their count. */
void vr_source_stop_loader(vr_source *s);
/* Record i of the split's list of skipped files (its reason, naming the file) into buf: 1, or
 * 0 when there is no record i. Safe while the loader runs. */
int vr_source_skip_reason(vr_source *s, int i, char *buf, size_t len);
/* The evaluation inputs of samples [i0, i0 + n) into out[b] (host; n samples of one pass of
 * branch b: in_h * in_w floats each). */
vr_status vr_source_eval_inputs(vr_source *s, const vr_recipe *r, int i0, int n, float *const *out);

#endif
