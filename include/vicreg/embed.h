/* Embedding audio in-process: open one branch of a trained checkpoint, hand it PCM, get rows.
 *
 * A checkpoint carries its resolved recipe, so a handle knows the network, the sample rate,
 * the window the network was trained on (the recipe's crop) and the front end (the log-mel
 * spectrogram of the spectrogram branch). PCM at any rate, mono or interleaved channels, is
 * mixed to mono (mean of channels) and resampled to the model's rate (libsoxr), exactly as the
 * data sets of training are read.
 *
 * Windows: a signal of L samples and a window of W samples with hop H gives
 *   L <= W: one window, the signal centred in W zeros (as evaluation centres its crop);
 *   L >  W: windows starting at 0, H, 2H, ... while start + W <= L, plus one last window ending
 *           at L when the signal's tail is not yet covered.
 * vr_embedder_embed_pcm gives one row per window, or with pooling one row: the mean of the
 * window rows. Rows are the encoder's representation or the expander's embedding, scaled to
 * unit L2 norm when asked (after pooling).
 *
 * Threads: a handle is used by one thread at a time; any number of handles may run at once
 * (one per thread), each with its own buffers. A handle runs its own passes on the number of
 * threads it was opened with (1 by default), so N handles on N threads keep N cores busy.
 *
 * Passes run on the CPU. Opening reads the checkpoint once and builds the chosen branch alone.
 *
 * Every function returns a vr_status; on failure vr_last_error() (status.h) names the file or
 * argument and what is wrong. Nothing here prints or exits. */
#ifndef VICREG_EMBED_H
#define VICREG_EMBED_H

#include <stdint.h>

#include "vicreg/status.h"

typedef struct vr_embedder vr_embedder;

typedef enum vr_embed_output {
    VR_EMBED_REPR = 0,      /* the encoder's output (the representation, e.g. 512-d) */
    VR_EMBED_EMBEDDING = 1, /* the expander's output (the space the VICReg loss saw) */
} vr_embed_output;

typedef struct vr_embedder_config {
    /* "wave" or "spec" for an audio checkpoint; "logmel" is the baseline that involves no
     * network: the spectrogram branch's log-mel input averaged over time (n_mels values). */
    const char *branch;
    vr_embed_output output;
    int normalize;           /* 1: rows scaled to unit L2 norm */
    int pool;                /* 1: one row per signal, the mean of its windows */
    double window_seconds;   /* <= 0: the recipe's crop (the length the network was trained on) */
    double hop_seconds;      /* <= 0: the window */
    int random_init;         /* 1: the recipe's network at its seeded initialisation instead of
                                the checkpoint's weights (the untrained baseline) */
    int batch;               /* windows per forward pass; <= 0: 32 */
    int threads;             /* threads of this handle's passes; <= 0: 1 */
} vr_embedder_config;

/* The defaults: branch "wave", representation, not normalised, not pooled, the recipe's
 * window, hop = window, trained weights, batch 32, 1 thread. */
vr_embedder_config vr_embedder_defaults(void);

/* Opens cfg->branch of the checkpoint at path (cfg NULL: the defaults). VR_ERR_IO or
 * VR_ERR_FORMAT for a file that is not a readable checkpoint, VR_ERR_NOT_FOUND when it holds no
 * recipe, VR_ERR_UNSUPPORTED for an image recipe, VR_ERR_ARG for an unknown branch, the
 * embedding of a branch without an expander, or a window too short for the front end. The
 * log-mel baseline ignores output and random_init. */
vr_status vr_embedder_open(const char *checkpoint, const vr_embedder_config *cfg, vr_embedder **out);
void vr_embedder_close(vr_embedder *e);

/* Columns of every row. */
int vr_embedder_dim(const vr_embedder *e);
/* The model's sample rate, Hz. */
int vr_embedder_rate_hz(const vr_embedder *e);
/* The window and hop in samples at the model's rate. */
int64_t vr_embedder_window_samples(const vr_embedder *e);
int64_t vr_embedder_hop_samples(const vr_embedder *e);

/* Rows that vr_embedder_embed_pcm gives for `frames` frames at rate_hz: 1 when pooling; 0 for
 * frames < 1 or rate_hz < 1. */
int64_t vr_embedder_rows(const vr_embedder *e, int64_t frames, int rate_hz);

/* pcm (frames, channels) interleaved, in [-1, 1], at rate_hz -> out (rows, dim) with rows =
 * vr_embedder_rows(e, frames, rate_hz); out must hold max_rows rows (VR_ERR_ARG when fewer).
 * starts (may be NULL, rows entries) receives each row's window start in seconds of the
 * input (0 when pooling). frames >= 1, channels >= 1. */
vr_status vr_embedder_embed_pcm(vr_embedder *e, const float *pcm, int64_t frames, int channels,
                                int rate_hz, float *out, int64_t max_rows, double *starts);

/* The same for an audio file any installed libsndfile reads (the whole file, every channel
 * mixed): *rows (nrows, dim) and *starts (nrows) point into the handle and stay valid until its
 * next call; duration_seconds (may be NULL) receives the file's length. */
vr_status vr_embedder_embed_file(vr_embedder *e, const char *path, const float **rows, int64_t *nrows,
                                 const double **starts, double *duration_seconds);

#endif
