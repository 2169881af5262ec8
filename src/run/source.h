/* The data of a recipe, one split of it, and what the model is fed from it: the views of a
 * training step and the plain inputs of an evaluation. Two kinds:
 *
 *   idx    grayscale images; one shared branch fed (2N,1,S,S), view 1 of every sample first
 *   audio  labelled clips; branch 0 is fed the waveform views (N,1,L) and branch 1 log-mel
 *          spectrograms (N,1,M,T), then masked, of the same views or, with [audio_views]
 *          independent, of views drawn on their own (another seed: crop, gain, noise)
 *
 * Evaluation inputs are deterministic: the whole image resized to S x S, or the clip's centre
 * crop of the training crop length and its unmasked spectrogram. */
#ifndef VR_CLI_SOURCE_H
#define VR_CLI_SOURCE_H

#include "vicreg/audio_dataset.h"
#include "vicreg/idx.h"
#include "vicreg/spectrogram.h"
#include "recipe.h"

typedef enum vr_split { VR_SPLIT_TRAIN, VR_SPLIT_TEST } vr_split;

typedef struct vr_source {
    vr_data_kind kind;
    int n;                              /* samples */
    int nclasses;
    int nbranches;                      /* inputs per step: 1 shared or 2 */
    int in_h[VR_MAX_BRANCHES], in_w[VR_MAX_BRANCHES]; /* one pass's input of each branch */
    size_t step_floats[VR_MAX_BRANCHES]; /* a training step's input of each branch */
    int *labels;                        /* (n) */
    vr_gray_dataset gray;
    vr_audio_dataset audio;
    vr_spectrogram *sp;
    float *wave2;                       /* (N, L) the spectrogram branch's own views, when independent */
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
 * position i drawing from (seed, first + i). */
vr_status vr_source_views(vr_source *s, const vr_recipe *r, const int *index, int n,
                          uint64_t seed, int64_t first, float *const *out);
/* The evaluation inputs of samples [i0, i0 + n) into out[b] (host; n samples of one pass of
 * branch b: in_h * in_w floats each). */
vr_status vr_source_eval_inputs(vr_source *s, const vr_recipe *r, int i0, int n, float *const *out);

#endif
