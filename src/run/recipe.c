/* Recipe parsing, overrides and the canonical text (see recipe.h). One table lists every key:
 * parsing, --set, validation and writing all walk it, so a key cannot exist in one and be
 * missing from another. */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vicreg/image_loader.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"
/* Longest string value: with its key it must fit one line of inih's 200-byte buffer, or the
 * resolved recipe could not be read back. */
#define MAX_STR_VALUE 160

typedef enum key_type {
    K_STR, K_INT, K_DEPTH, K_LONG, K_U64, K_FLOAT, K_FLOAT3, K_BOOL, K_WIDTHS, K_OPTIM, K_KIND, K_MELSCALE, K_SPECLOG,
    K_PROBE
} key_type;

typedef struct key_def {
    const char *section, *name;
    key_type type;
    size_t offset, size; /* size: buffer bytes for K_STR */
    double min, max;     /* inclusive range of numbers */
    const char *help;
} key_def;

#define OFF(m) offsetof(vr_recipe, m)
#define STR(sec, key, m, help) {sec, key, K_STR, OFF(m), sizeof(((vr_recipe *)0)->m), 0, 0, help}
#define NUM(sec, key, type, m, lo, hi, help) {sec, key, type, OFF(m), 0, lo, hi, help}

#define ENCODER_KEYS(sec, m)                                                                            \
    NUM(sec, "depth", K_DEPTH, m.depth, 18, 50, "ResNet depth: 18, 34 or 50"),                           \
    NUM(sec, "widths", K_WIDTHS, m.widths, 1, 8192, "planes of the four stages, comma-separated"),       \
    NUM(sec, "stem_kernel", K_INT, m.stem_kernel, 1, 255, "first convolution"),                          \
    NUM(sec, "stem_stride", K_INT, m.stem_stride, 1, 64, "first convolution"),                           \
    NUM(sec, "stem_pad", K_INT, m.stem_pad, 0, 127, "first convolution"),                                \
    NUM(sec, "pool_kernel", K_INT, m.pool_kernel, 0, 16, "max pool after the stem; 0: none"),            \
    NUM(sec, "pool_stride", K_INT, m.pool_stride, 1, 16, "max pool"),                                    \
    NUM(sec, "pool_pad", K_INT, m.pool_pad, 0, 8, "max pool"),                                           \
    NUM(sec, "zero_init_residual", K_BOOL, m.zero_init_residual, 0, 1, "last BN of each block starts at 0"), \
    STR(sec, "expander", m.expander, "e.g. 256-1024-1024-1024 (first = encoder output); empty: none")

/* The keys of one RGB view, named with the view's number (scale_min1, scale_min2, ...). */
#define IMAGE_VIEW_KEYS(num, v)                                                                             \
    NUM("image_views", "scale_min" num, K_FLOAT, image_views.view[v].scale_min, 1e-6, 1, "RandomResizedCrop area fraction"), \
    NUM("image_views", "scale_max" num, K_FLOAT, image_views.view[v].scale_max, 1e-6, 1, "RandomResizedCrop area fraction"), \
    NUM("image_views", "ratio_min" num, K_FLOAT, image_views.view[v].ratio_min, 1e-3, 1e3, "crop aspect ratio w/h"),  \
    NUM("image_views", "ratio_max" num, K_FLOAT, image_views.view[v].ratio_max, 1e-3, 1e3, "crop aspect ratio w/h"),  \
    NUM("image_views", "flip_p" num, K_FLOAT, image_views.view[v].flip_p, 0, 1, "horizontal flip probability"),    \
    NUM("image_views", "jitter_p" num, K_FLOAT, image_views.view[v].jitter_p, 0, 1, "colour jitter probability"),  \
    NUM("image_views", "brightness" num, K_FLOAT, image_views.view[v].brightness, 0, 10, "factor in 1 +- this"),   \
    NUM("image_views", "contrast" num, K_FLOAT, image_views.view[v].contrast, 0, 10, "factor in 1 +- this"),       \
    NUM("image_views", "saturation" num, K_FLOAT, image_views.view[v].saturation, 0, 10, "factor in 1 +- this"),   \
    NUM("image_views", "hue" num, K_FLOAT, image_views.view[v].hue, 0, 0.5, "hue shift in +- this"),               \
    NUM("image_views", "gray_p" num, K_FLOAT, image_views.view[v].gray_p, 0, 1, "grayscale probability"),          \
    NUM("image_views", "blur_p" num, K_FLOAT, image_views.view[v].blur_p, 0, 1, "Gaussian blur probability"),      \
    NUM("image_views", "blur_sigma_min" num, K_FLOAT, image_views.view[v].blur_sigma_min, 1e-3, 100, "blur sigma, output pixels"), \
    NUM("image_views", "blur_sigma_max" num, K_FLOAT, image_views.view[v].blur_sigma_max, 1e-3, 100, "blur sigma, output pixels"), \
    NUM("image_views", "solarize_p" num, K_FLOAT, image_views.view[v].solarize_p, 0, 1, "solarisation probability"), \
    NUM("image_views", "solarize_threshold" num, K_INT, image_views.view[v].solarize_threshold, 0, 256, "bytes >= this are inverted")

/* Optimiser values left NaN by the defaults take the chosen optimiser's own defaults. */
static const key_def keys[] = {
    NUM("data", "kind", K_KIND, kind, 0, 0, "idx (grayscale images), audio (waveform + spectrogram) or folder (RGB)"),
    STR("data", "train_images", train_images, "IDX images (N,H,W), gzip or plain"),
    STR("data", "train_labels", train_labels, "IDX labels (N)"),
    STR("data", "test_images", test_images, "IDX images of the k-NN test split"),
    STR("data", "test_labels", test_labels, "IDX labels of the k-NN test split"),
    NUM("data", "train_limit", K_INT, train_limit, 0, 1e9, "N training samples (folder: spread); 0: all"),
    STR("data", "manifest", manifest, "audio: CSV with a header row (path, label, split)"),
    STR("data", "train_folder", train_folder, "folder, or audio without a manifest: one sub-folder per class"),
    STR("data", "test_folder", test_folder, "folder, or audio without a manifest: the evaluation split"),
    NUM("data", "loader_threads", K_INT, loader_threads, 0, 1024, "folder: decoding threads; 0: [train] threads"),
    NUM("data", "prefetch", K_INT, prefetch, 2, VR_IMAGE_LOADER_MAX_DEPTH, "folder: batches in flight (2: double buffering)"),
    NUM("data", "assumed_train_size", K_INT, assumed_train_size, 0, 1e9,
        "folder: images the dry run assumes when train_folder is absent; 0: none"),
    STR("data", "audio_root", audio_root, "audio: relative paths start here; empty: the manifest's folder"),
    STR("data", "path_column", path_column, "audio: manifest column of file paths"),
    STR("data", "label_column", label_column, "audio: manifest column of labels"),
    STR("data", "select_column", select_column, "audio: column choosing the splits; empty: none"),
    STR("data", "train_select", train_select, "audio: its values for training, e.g. train or 1,2,3,4"),
    STR("data", "test_select", test_select, "audio: its values for evaluation"),
    NUM("data", "rate_hz", K_INT, rate_hz, 1000, 384000, "audio: sample rate clips are resampled to"),
    NUM("data", "clip_seconds", K_FLOAT, clip_seconds, 1e-3, 3600, "audio: clips cropped or padded to this"),

    NUM("views", "size", K_INT, views.size, 1, VR_VIEWS_MAX_SIZE, "output side S in pixels"),
    NUM("views", "scale_min", K_FLOAT, views.scale_min, 1e-6, 1, "RandomResizedCrop area fraction"),
    NUM("views", "scale_max", K_FLOAT, views.scale_max, 1e-6, 1, "RandomResizedCrop area fraction"),
    NUM("views", "ratio_min", K_FLOAT, views.ratio_min, 1e-3, 1e3, "crop aspect ratio w/h"),
    NUM("views", "ratio_max", K_FLOAT, views.ratio_max, 1e-3, 1e3, "crop aspect ratio w/h"),
    NUM("views", "flip_p", K_FLOAT, views.flip_p, 0, 1, "horizontal flip probability"),
    NUM("views", "jitter_p", K_FLOAT, views.jitter_p, 0, 1, "brightness/contrast jitter probability"),
    NUM("views", "brightness", K_FLOAT, views.brightness, 0, 10, "brightness factor in 1 +- this"),
    NUM("views", "contrast", K_FLOAT, views.contrast, 0, 10, "contrast factor in 1 +- this"),
    NUM("views", "blur_p1", K_FLOAT, views.blur_p[0], 0, 1, "Gaussian blur probability, view 1"),
    NUM("views", "blur_p2", K_FLOAT, views.blur_p[1], 0, 1, "Gaussian blur probability, view 2"),
    NUM("views", "blur_sigma_min", K_FLOAT, views.blur_sigma_min, 1e-3, 100, "blur sigma, pixels"),
    NUM("views", "blur_sigma_max", K_FLOAT, views.blur_sigma_max, 1e-3, 100, "blur sigma, pixels"),
    NUM("views", "solarize_p1", K_FLOAT, views.solarize_p[0], 0, 1, "solarisation probability, view 1"),
    NUM("views", "solarize_p2", K_FLOAT, views.solarize_p[1], 0, 1, "solarisation probability, view 2"),
    NUM("views", "solarize_threshold", K_FLOAT, views.solarize_threshold, 0, 1, "pixels >= this are inverted"),
    NUM("views", "mean", K_FLOAT, views.mean, -10, 10, "normalisation mean of [0, 1] pixels"),
    NUM("views", "std", K_FLOAT, views.std, 1e-6, 10, "normalisation std of [0, 1] pixels"),

    NUM("image_views", "size", K_INT, image_views.view[0].size, 1, VR_IMAGE_VIEW_MAX_SIZE, "output side S of both views and eval"),
    NUM("image_views", "mean", K_FLOAT3, image_views.view[0].mean, -10, 10, "normalisation mean of [0, 1] R,G,B"),
    NUM("image_views", "std", K_FLOAT3, image_views.view[0].std, 1e-6, 10, "normalisation std of [0, 1] R,G,B"),
    NUM("image_views", "dct_scaling", K_BOOL, image_views.dct_scaling, 0, 1, "decode large JPEGs at 1/2, 1/4, 1/8"),
    NUM("image_views", "eval_crop_fraction", K_FLOAT, image_eval.crop_fraction, 1e-3, 1,
        "eval: resize to S / this, centre crop S"),
    IMAGE_VIEW_KEYS("1", 0),
    IMAGE_VIEW_KEYS("2", 1),

    NUM("audio_views", "crop_seconds", K_FLOAT, crop_seconds, 1e-3, 3600, "random crop seen by both branches"),
    NUM("audio_views", "independent", K_BOOL, independent_views, 0, 1,
        "each branch its own crop, gain, noise; false: one view both see"),
    NUM("audio_views", "speed_min", K_FLOAT, audio_views.speed_min, 0.5, 2, "speed perturbation range (1: off)"),
    NUM("audio_views", "speed_max", K_FLOAT, audio_views.speed_max, 0.5, 2, "speed perturbation range (1: off)"),
    NUM("audio_views", "gain_db_min", K_FLOAT, audio_views.gain_db_min, -120, 120, "gain range, dB"),
    NUM("audio_views", "gain_db_max", K_FLOAT, audio_views.gain_db_max, -120, 120, "gain range, dB"),
    NUM("audio_views", "noise_p", K_FLOAT, audio_views.noise_p, 0, 1, "white noise probability"),
    NUM("audio_views", "snr_db_min", K_FLOAT, audio_views.snr_db_min, -120, 120, "noise SNR range, dB"),
    NUM("audio_views", "snr_db_max", K_FLOAT, audio_views.snr_db_max, -120, 120, "noise SNR range, dB"),
    NUM("audio_views", "freq_masks", K_INT, audio_views.freq_masks, 0, VR_AUDIO_MAX_MASKS, "spectrogram frequency masks"),
    NUM("audio_views", "freq_mask_bins", K_INT, audio_views.freq_mask_bins, 0, 1e4, "widest frequency mask, mel bins"),
    NUM("audio_views", "time_masks", K_INT, audio_views.time_masks, 0, VR_AUDIO_MAX_MASKS, "spectrogram time masks"),
    NUM("audio_views", "time_mask_frames", K_INT, audio_views.time_mask_frames, 0, 1e6, "widest time mask, frames"),

    NUM("spectrogram", "n_fft", K_INT, spec.n_fft, 2, 65536, "FFT size, samples"),
    NUM("spectrogram", "win_length", K_INT, spec.win_length, 1, 65536, "periodic Hann window, <= n_fft"),
    NUM("spectrogram", "hop_samples", K_INT, spec.hop_samples, 1, 65536, "frame step"),
    NUM("spectrogram", "center", K_BOOL, spec.center, 0, 1, "reflection padding of n_fft/2 (torch.stft)"),
    NUM("spectrogram", "power", K_INT, spec.power, 1, 2, "1 magnitude, 2 power"),
    NUM("spectrogram", "n_mels", K_INT, spec.n_mels, 1, 4096, "mel bands"),
    NUM("spectrogram", "f_min_hz", K_FLOAT, spec.f_min_hz, 0, 192000, "lowest mel frequency"),
    NUM("spectrogram", "f_max_hz", K_FLOAT, spec.f_max_hz, 1, 192000, "highest, <= rate_hz / 2"),
    NUM("spectrogram", "mel_scale", K_MELSCALE, spec.mel_scale, 0, 0, "htk or slaney"),
    NUM("spectrogram", "mel_norm", K_BOOL, spec.mel_norm, 0, 1, "Slaney area normalisation"),
    NUM("spectrogram", "log", K_SPECLOG, spec.log, 0, 0, "none, offset (log(x + log_offset)) or db"),
    NUM("spectrogram", "log_offset", K_FLOAT, spec.log_offset, 1e-30, 1e6, "the floor of log(x + offset)"),
    NUM("spectrogram", "db_amin", K_FLOAT, spec.db_amin, 1e-30, 1e6, "the floor of db"),
    NUM("spectrogram", "top_db", K_FLOAT, spec.top_db, 0, 1e4, "db: clamp below the clip's maximum; 0 none"),
    NUM("spectrogram", "scale_01", K_BOOL, spec.scale_01, 0, 1, "scale each clip to [0, 1]"),

    ENCODER_KEYS("model", model),
    ENCODER_KEYS("wave", wave),

    NUM("loss", "sim_coeff", K_FLOAT, coeffs.sim, 0, 1e6, "invariance coefficient"),
    NUM("loss", "std_coeff", K_FLOAT, coeffs.std, 0, 1e6, "variance coefficient"),
    NUM("loss", "cov_coeff", K_FLOAT, coeffs.cov, 0, 1e6, "covariance coefficient"),

    NUM("optim", "name", K_OPTIM, optim.kind, 0, 0, "lars, sgd or adamw"),
    NUM("optim", "base_lr", K_FLOAT, base_lr, 0, 1e3, "learning rate (at batch 256 when scale_lr)"),
    NUM("optim", "scale_lr", K_BOOL, scale_lr, 0, 1, "scale base_lr by batch / 256"),
    NUM("optim", "weight_decay", K_FLOAT, optim.weight_decay, 0, 10, "default: the optimiser's"),
    NUM("optim", "momentum", K_FLOAT, optim.momentum, 0, 1, "LARS, SGD"),
    NUM("optim", "eta", K_FLOAT, optim.eta, 0, 10, "LARS trust coefficient"),
    NUM("optim", "beta1", K_FLOAT, optim.beta1, 0, 1, "AdamW"),
    NUM("optim", "beta2", K_FLOAT, optim.beta2, 0, 1, "AdamW"),
    NUM("optim", "eps", K_FLOAT, optim.eps, 0, 1, "AdamW"),
    NUM("optim", "exclude_1d", K_BOOL, optim.exclude_1d, 0, 1, "no decay/trust ratio for biases and BN"),
    NUM("optim", "warmup_epochs", K_FLOAT, warmup_epochs, 0, 1e6, "linear warm-up, may be fractional"),
    NUM("optim", "final_lr_ratio", K_FLOAT, final_lr_ratio, 0, 1, "end of the cosine / base"),

    NUM("train", "epochs", K_INT, epochs, 1, 1e6, "passes over the training set"),
    NUM("train", "batch", K_INT, batch, 2, 1e6, "pairs per step"),
    NUM("train", "seed", K_U64, seed, 0, 0, "initialisation, shuffles and views"),
    NUM("train", "threads", K_INT, threads, 0, 4096, "0: every core"),
    STR("train", "backend", backend, "cpu (or cuda where built)"),
    STR("train", "run_dir", run_dir, "recipe.ini, metrics.jsonl, checkpoint, eval.json"),
    NUM("train", "checkpoint_every", K_LONG, checkpoint_every, 0, 1e15, "steps; 0: only at the end"),
    NUM("train", "log_every", K_INT, log_every, 1, 1e9, "steps between metrics.jsonl lines"),
    NUM("train", "max_minutes", K_FLOAT, max_minutes, 0, 1e7, "stop early after this training time; 0: none"),

    STR("dist", "comm", comm, "auto (mpi under mpirun, else single), single, mpi or nccl"),
    NUM("dist", "gather", K_BOOL, gather, 0, 1, "the loss over the global batch (every rank's embeddings)"),
    NUM("dist", "sync_bn", K_BOOL, sync_bn, 0, 1, "batch norm statistics over the global batch"),
    NUM("dist", "timeout_s", K_FLOAT, comm_timeout_s, 0, 1e7,
        "longest wait for the other ranks (data loading, a checkpoint); 0: none"),
    NUM("dist", "bucket_mb", K_FLOAT, bucket_mb, 0.001, 1e6,
        "gradients summed over the ranks in buckets of this many MB, each started during the "
        "backward as soon as it is final"),

    NUM("eval", "k", K_INT, eval_k, 1, 10000, "neighbours"),
    NUM("eval", "temperature", K_FLOAT, eval_temperature, 1e-6, 1e6, "vote weight exp(sim / T)"),
    NUM("eval", "train_limit", K_INT, eval_train_limit, 0, 1e9, "N training samples (folder: spread); 0: all"),
    NUM("eval", "test_limit", K_INT, eval_test_limit, 0, 1e9, "N test samples (folder: spread); 0: all"),
    NUM("eval", "batch", K_INT, eval_batch, 1, 1e6, "samples per forward pass"),
    NUM("eval", "linear", K_PROBE, eval_linear, 0, 0, "linear probe: none, adam (full batch) or sgd"),
};
#define NKEYS ((int)(sizeof keys / sizeof *keys))

static void encoder_from(vr_recipe_encoder *e, const vr_branch_config *bc)
{
    const vr_resnet_config *c = &bc->encoder;
    *e = (vr_recipe_encoder){.depth = c->depth, .stem_kernel = c->stem_kernel, .stem_stride = c->stem_stride,
                             .stem_pad = c->stem_pad, .pool_kernel = c->pool_kernel,
                             .pool_stride = c->pool_stride, .pool_pad = c->pool_pad,
                             .zero_init_residual = c->zero_init_residual};
    memcpy(e->widths, c->widths, sizeof e->widths);
    snprintf(e->expander, sizeof e->expander, "%s", bc->expander);
}

static void encoder_to(vr_resnet_config *c, const vr_recipe_encoder *e)
{
    c->depth = e->depth;
    memcpy(c->widths, e->widths, sizeof c->widths);
    c->stem_kernel = e->stem_kernel;
    c->stem_stride = e->stem_stride;
    c->stem_pad = e->stem_pad;
    c->pool_kernel = e->pool_kernel;
    c->pool_stride = e->pool_stride;
    c->pool_pad = e->pool_pad;
    c->zero_init_residual = e->zero_init_residual;
}

static void defaults(vr_recipe *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->train_images, sizeof r->train_images, "%s", FMNIST "train-images-idx3-ubyte.gz");
    snprintf(r->train_labels, sizeof r->train_labels, "%s", FMNIST "train-labels-idx1-ubyte.gz");
    snprintf(r->test_images, sizeof r->test_images, "%s", FMNIST "t10k-images-idx3-ubyte.gz");
    snprintf(r->test_labels, sizeof r->test_labels, "%s", FMNIST "t10k-labels-idx1-ubyte.gz");
    vr_gray_views_default(&r->views, 28);
    /* Fashion-MNIST's pixel statistics over the training set, in [0, 1] */
    r->views.mean = 0.2860f;
    r->views.std = 0.3530f;
    vr_branch_config bc;
    vr_branch_config_spec(&bc, "2048-2048-2048");
    encoder_from(&r->model, &bc);
    vr_branch_config_wave(&bc, "2048-2048-2048");
    encoder_from(&r->wave, &bc);
    snprintf(r->path_column, sizeof r->path_column, "path");
    snprintf(r->label_column, sizeof r->label_column, "label");
    snprintf(r->select_column, sizeof r->select_column, "split");
    snprintf(r->train_select, sizeof r->train_select, "train");
    snprintf(r->test_select, sizeof r->test_select, "test");
    r->rate_hz = 16000;
    r->clip_seconds = 1.0f;
    r->crop_seconds = 1.0f;
    vr_audio_views_default(&r->audio_views, 16000);
    vr_image_views_config_default(&r->image_views);
    vr_image_eval_config_default(&r->image_eval);
    r->prefetch = 2;
    vr_spectrogram_default(&r->spec);
    r->coeffs = (vr_vicreg_coeffs){25.0f, 25.0f, 1.0f};
    r->optim.kind = VR_OPTIM_LARS;
    r->optim.weight_decay = r->optim.momentum = r->optim.eta = NAN;
    r->optim.beta1 = r->optim.beta2 = r->optim.eps = NAN;
    r->optim.exclude_1d = 1;
    r->base_lr = 0.3f;
    r->scale_lr = 1;
    r->warmup_epochs = 10.0f;
    r->final_lr_ratio = 0.001f;
    r->epochs = 100;
    r->batch = 256;
    r->seed = 0;
    r->threads = 0;
    snprintf(r->backend, sizeof r->backend, "cpu");
    snprintf(r->run_dir, sizeof r->run_dir, "runs/vicreg");
    r->checkpoint_every = 1000;
    r->log_every = 10;
    snprintf(r->comm, sizeof r->comm, "auto");
    r->gather = 1;
    r->sync_bn = 1;
    r->comm_timeout_s = 300.0f;
    r->bucket_mb = 25.0f;
    r->eval_k = 20;
    r->eval_temperature = 0.07f;
    r->eval_batch = 256;
}

static const key_def *find_key(const char *section, const char *name, int *section_known)
{
    *section_known = 0;
    for (int i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0) continue;
        *section_known = 1;
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    }
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) return *out = 1, 1;
        if (!strcasecmp(v, no[i])) return *out = 0, 1;
    }
    return 0;
}

/* The names of an enumerated key's values, in the order of their enum; NULL-terminated. */
static const char *const kind_names[] = {"idx", "audio", "folder", NULL};
static const char *const melscale_names[] = {"htk", "slaney", NULL};
static const char *const speclog_names[] = {"none", "offset", "db", NULL};
static const char *const probe_names[] = {"none", "adam", "sgd", NULL};
static const char *const *enum_names(key_type t)
{
    return t == K_KIND ? kind_names : t == K_MELSCALE ? melscale_names : t == K_SPECLOG ? speclog_names : probe_names;
}

static const char *enum_list(key_type t)
{
    return t == K_KIND ? "idx, audio, folder" : t == K_MELSCALE ? "htk, slaney" : t == K_SPECLOG ? "none, offset, db"
                                                                                          : "none, adam, sgd";
}

/* Integers in full, no trailing text, within [min, max]. */
static int parse_int(const char *v, double min, double max, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || (double)x < min || (double)x > max) return 0;
    *out = x;
    return 1;
}

/* 1 when the string value v reads back the same from the canonical text (vr_recipe_format),
 * where it stands between "key = " and " ; help": one line without control characters, no
 * space at either end (inih strips it), no ';' first or after a space (inih's inline comment,
 * as the space of "= " precedes the value). A --set value, or a file's "key =;x", is taken as
 * it is, so this is where such a value is refused. */
static int writable_str(const char *v)
{
    size_t n = strlen(v);
    if (n && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]) || v[0] == ';')) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f || (c == ';' && i && isspace((unsigned char)v[i - 1]))) return 0;
    }
    return 1;
}

/* Stores value v into key k of r; on failure fills why (what was expected). */
static int set_value(vr_recipe *r, const key_def *k, const char *v, char *why, size_t len)
{
    char *field = (char *)r + k->offset;
    long long x;
    switch (k->type) {
    case K_STR:
        if (strlen(v) >= k->size || strlen(v) > MAX_STR_VALUE)
            return snprintf(why, len, "at most %d characters", MAX_STR_VALUE), 0;
        if (!writable_str(v))
            return snprintf(why, len, "one line of text without control characters, spaces at its ends, ' ;' or a leading ';'"), 0;
        memcpy(field, v, strlen(v) + 1);
        return 1;
    case K_INT:
    case K_LONG:
        if (!parse_int(v, k->min, k->max, &x))
            return snprintf(why, len, "an integer in %.0f..%.0f", k->min, k->max), 0;
        if (k->type == K_INT) *(int *)field = (int)x;
        else *(long *)field = (long)x;
        return 1;
    case K_DEPTH:
        if (!parse_int(v, k->min, k->max, &x) || (x != 18 && x != 34 && x != 50))
            return snprintf(why, len, "18, 34 or 50"), 0;
        *(int *)field = (int)x;
        return 1;
    case K_U64: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(v, &end, 0);
        if (end == v || *end || errno || v[0] == '-') return snprintf(why, len, "an unsigned 64-bit integer"), 0;
        *(uint64_t *)field = u;
        return 1;
    }
    case K_FLOAT: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(d) || d < k->min || d > k->max)
            return snprintf(why, len, "a number in %g..%g", k->min, k->max), 0;
        *(float *)field = (float)d;
        return 1;
    }
    case K_FLOAT3: {
        float f[3];
        const char *p = v;
        int n = 0;
        for (; n < 3; n++) {
            char *end;
            errno = 0;
            double d = strtod(p, &end);
            if (end == p || errno || !isfinite(d) || d < k->min || d > k->max) break;
            f[n] = (float)d;
            while (*end == ' ' || *end == '\t') end++;
            if (n < 2 && *end != ',') break;
            p = n < 2 ? end + 1 : end;
        }
        if (n < 3 || *p) return snprintf(why, len, "three numbers in %g..%g separated by commas", k->min, k->max), 0;
        memcpy(field, f, sizeof f);
        return 1;
    }
    case K_BOOL:
        if (!parse_bool(v, (int *)field)) return snprintf(why, len, "true or false"), 0;
        return 1;
    case K_WIDTHS: {
        int w[4], n = 0;
        const char *p = v;
        while (n < 4) {
            char *end;
            errno = 0;
            long y = strtol(p, &end, 10);
            if (end == p || errno || y < k->min || y > k->max) break;
            w[n++] = (int)y;
            while (*end == ' ' || *end == '\t') end++;
            if (n < 4 && *end != ',') break;
            p = n < 4 ? end + 1 : end;
        }
        if (n < 4 || *p) return snprintf(why, len, "four integers in 1..8192 separated by commas"), 0;
        memcpy(field, w, sizeof w);
        return 1;
    }
    case K_OPTIM:
        if (vr_optim_kind_parse(v, (vr_optim_kind *)field) != VR_OK)
            return snprintf(why, len, "one of lars, sgd, adamw"), 0;
        return 1;
    case K_KIND:
    case K_MELSCALE:
    case K_SPECLOG:
    case K_PROBE: {
        const char *const *names = enum_names(k->type);
        for (int i = 0; names[i]; i++)
            if (!strcasecmp(v, names[i])) return *(int *)field = i, 1;
        return snprintf(why, len, "one of %s", enum_list(k->type)), 0;
    }
    }
    return 0;
}

/* State of one parse: the text's name for errors, its reader and the line counter. */
typedef struct parse_ctx {
    vr_recipe *r;
    const char *name;
    FILE *file;         /* or */
    const char *text;   /* the rest of the text */
    int line;           /* lines handed to inih so far = the line being parsed */
    int long_line;      /* first line longer than inih's buffer, 0 if none */
    int set_line[NKEYS];
    int err_line;       /* line of the first handler error; 0 if none */
    char err[512];
} parse_ctx;

/* inih's reader: one line per call, counted, so the handler knows which line it is on. */
static char *read_line(char *str, int num, void *stream)
{
    parse_ctx *p = stream;
    char *got;
    if (p->file) {
        got = fgets(str, num, p->file);
    } else {
        if (!*p->text) return NULL;
        const char *nl = strchr(p->text, '\n');
        size_t n = nl ? (size_t)(nl - p->text) + 1 : strlen(p->text);
        if (n > (size_t)num - 1) n = (size_t)num - 1;
        memcpy(str, p->text, n);
        str[n] = '\0';
        p->text += n;
        got = str;
    }
    if (!got) return NULL;
    size_t n = strlen(str);
    /* a line that filled the buffer without its newline continues in the next call: inih would
     * read the rest as a line of its own, so it is refused outright */
    if (n == (size_t)num - 1 && str[n - 1] != '\n') {
        if (!p->long_line) p->long_line = p->line + 1;
    }
    p->line++;
    return got;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *p = user;
    if (p->err_line) return 1; /* the first error is the one reported */
    int known;
    const key_def *k = find_key(section, name, &known);
    char why[160];
    if (!k) {
        if (known)
            snprintf(p->err, sizeof p->err, "unknown key '%s' in [%s]", name, section);
        else if (!*section)
            snprintf(p->err, sizeof p->err, "key '%s' outside any [section]", name);
        else
            snprintf(p->err, sizeof p->err, "unknown section [%s] (key '%s')", section, name);
        p->err_line = p->line;
        return 0;
    }
    int i = (int)(k - keys);
    if (p->set_line[i]) {
        snprintf(p->err, sizeof p->err, "key '%s' in [%s] set again (first on line %d)", name,
                 section, p->set_line[i]);
        p->err_line = p->line;
        return 0;
    }
    p->set_line[i] = p->line;
    if (!set_value(p->r, k, value, why, sizeof why)) {
        snprintf(p->err, sizeof p->err, "[%s] %s = '%s': expected %s", section, name, value, why);
        p->err_line = p->line;
        return 0;
    }
    return 1;
}

static vr_status run_parse(parse_ctx *p)
{
    int rc = ini_parse_stream(read_line, p, handler, p);
    if (p->long_line && (!rc || p->long_line <= rc))
        return vr_fail(VR_ERR_ARG, "recipe", "%s:%d: line longer than %d characters", p->name,
                       p->long_line, INI_MAX_LINE - 2);
    if (rc == 0) return VR_OK;
    if (rc < 0) return vr_fail(VR_ERR_NOMEM, "recipe", "%s: parser out of memory", p->name);
    if (rc == p->err_line) return vr_fail(VR_ERR_ARG, "recipe", "%s:%d: %s", p->name, rc, p->err);
    return vr_fail(VR_ERR_ARG, "recipe", "%s:%d: syntax error (expected [section] or key = value)",
                   p->name, rc);
}

static vr_status apply_set(vr_recipe *r, const char *arg)
{
    char section[64], name[64], why[160];
    const char *dot = strchr(arg, '.'), *eq = strchr(arg, '=');
    if (!dot || !eq || dot > eq || dot == arg || eq == dot + 1 || (size_t)(dot - arg) >= sizeof section ||
        (size_t)(eq - dot - 1) >= sizeof name)
        return vr_fail(VR_ERR_ARG, "recipe", "--set %s: expected section.key=value", arg);
    memcpy(section, arg, (size_t)(dot - arg));
    section[dot - arg] = '\0';
    memcpy(name, dot + 1, (size_t)(eq - dot - 1));
    name[eq - dot - 1] = '\0';
    int known;
    const key_def *k = find_key(section, name, &known);
    if (!k)
        return vr_fail(VR_ERR_ARG, "recipe", "--set %s: %s '%s'%s%s%s", arg,
                       known ? "unknown key" : "unknown section", known ? name : section,
                       known ? " in [" : "", known ? section : "", known ? "]" : "");
    if (!set_value(r, k, eq + 1, why, sizeof why))
        return vr_fail(VR_ERR_ARG, "recipe", "--set %s: expected %s", arg, why);
    return VR_OK;
}

/* The library's message about a section's values, as a recipe error. */
static vr_status section_error(const char *name, const char *section)
{
    char why[256]; /* a copy: vr_fail writes over the message it would read */
    const char *msg = vr_last_error(), *colon = strstr(msg, ": ");
    snprintf(why, sizeof why, "%s", colon && colon - msg < 16 ? colon + 2 : msg);
    return vr_fail(VR_ERR_ARG, "recipe", "%s: [%s] %s", name, section, why);
}

int64_t vr_recipe_samples(const vr_recipe *r, float seconds)
{
    return (int64_t)llround((double)seconds * r->rate_hz);
}

/* Cross-key checks and the optimiser's defaults for what the recipe left unset. */
static vr_status finish(vr_recipe *r, const char *name)
{
    vr_optim_config d;
    vr_optim_config_default(&d, r->optim.kind);
    float *mine[] = {&r->optim.weight_decay, &r->optim.momentum, &r->optim.eta,
                     &r->optim.beta1, &r->optim.beta2, &r->optim.eps};
    const float theirs[] = {d.weight_decay, d.momentum, d.eta, d.beta1, d.beta2, d.eps};
    for (int i = 0; i < 6; i++)
        if (isnan(*mine[i])) *mine[i] = theirs[i];
    if (vr_gray_views_check(&r->views) != VR_OK) return section_error(name, "views");
    if (r->kind == VR_DATA_IDX && (!r->train_images[0] || !r->train_labels[0]))
        return vr_fail(VR_ERR_ARG, "recipe", "%s: [data] train_images and train_labels are required", name);
    /* one size and one normalisation for both views (one batch) and the evaluation input */
    vr_image_view_config *v1 = &r->image_views.view[0], *v2 = &r->image_views.view[1];
    v2->size = r->image_eval.size = v1->size;
    memcpy(v2->mean, v1->mean, sizeof v2->mean);
    memcpy(v2->std, v1->std, sizeof v2->std);
    memcpy(r->image_eval.mean, v1->mean, sizeof v1->mean);
    memcpy(r->image_eval.std, v1->std, sizeof v1->std);
    if (vr_image_views_config_check(&r->image_views) != VR_OK || vr_image_eval_config_check(&r->image_eval) != VR_OK)
        return section_error(name, "image_views");
    if (r->kind == VR_DATA_FOLDER && !r->train_folder[0])
        return vr_fail(VR_ERR_ARG, "recipe", "%s: the folder kind needs [data] train_folder", name);
    if (r->kind == VR_DATA_AUDIO) {
        if (!r->manifest[0] == !r->train_folder[0])
            return vr_fail(VR_ERR_ARG, "recipe", "%s: audio needs [data] manifest or train_folder (one of them)", name);
        if (r->crop_seconds > r->clip_seconds)
            return vr_fail(VR_ERR_ARG, "recipe", "%s: [audio_views] crop_seconds %g is longer than [data] clip_seconds %g",
                           name, (double)r->crop_seconds, (double)r->clip_seconds);
        r->audio_views.crop_samples = vr_recipe_samples(r, r->crop_seconds);
        if (vr_audio_views_check(&r->audio_views) != VR_OK) return section_error(name, "audio_views");
        if (vr_audio_view_span(r->audio_views.crop_samples, r->audio_views.speed_max) >
            vr_recipe_samples(r, r->clip_seconds))
            return vr_fail(VR_ERR_ARG, "recipe",
                           "%s: [audio_views] a crop of %g s at speed_max %g reads more than [data] clip_seconds %g",
                           name, (double)r->crop_seconds, (double)r->audio_views.speed_max, (double)r->clip_seconds);
        r->spec.sample_rate_hz = r->rate_hz;
        if (vr_spectrogram_check(&r->spec) != VR_OK) return section_error(name, "spectrogram");
    }
    if (!r->run_dir[0]) return vr_fail(VR_ERR_ARG, "recipe", "%s: [train] run_dir is empty", name);
    return VR_OK;
}

static vr_status load(vr_recipe *r, parse_ctx *p, const char *const *sets, int n_sets)
{
    VR_TRY(run_parse(p));
    for (int i = 0; i < n_sets; i++) VR_TRY(apply_set(r, sets[i]));
    return finish(r, p->name);
}

vr_status vr_recipe_load(vr_recipe *r, const char *path, const char *const *sets, int n_sets)
{
    defaults(r);
    parse_ctx p = {.r = r, .name = path ? path : "(defaults)", .text = ""};
    if (path) {
        p.file = fopen(path, "r");
        if (!p.file) return vr_fail(VR_ERR_IO, "recipe", "%s: cannot open: %s", path, strerror(errno));
    }
    vr_status s = load(r, &p, sets, n_sets);
    if (p.file) fclose(p.file);
    return s;
}

vr_status vr_recipe_load_text(vr_recipe *r, const char *text, const char *name,
                              const char *const *sets, int n_sets)
{
    defaults(r);
    parse_ctx p = {.r = r, .name = name, .text = text};
    return load(r, &p, sets, n_sets);
}

/* The shortest %g form that reads back as the same float. */
static void format_float(char *buf, size_t len, float x)
{
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, len, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->failed) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *vr_recipe_format(const vr_recipe *r)
{
    strbuf b = {0};
    const char *section = "";
    sb_printf(&b, "; resolved recipe: every key, defaults included\n");
    for (int i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const char *field = (const char *)r + k->offset;
        char value[VR_RECIPE_PATH + 64];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            sb_printf(&b, "%s[%s]\n", i ? "\n" : "", section);
        }
        switch (k->type) {
        case K_STR: snprintf(value, sizeof value, "%s", field); break;
        case K_INT:
        case K_DEPTH: snprintf(value, sizeof value, "%d", *(const int *)field); break;
        case K_LONG: snprintf(value, sizeof value, "%ld", *(const long *)field); break;
        case K_U64: snprintf(value, sizeof value, "%llu", (unsigned long long)*(const uint64_t *)field); break;
        case K_FLOAT: format_float(value, sizeof value, *(const float *)field); break;
        case K_FLOAT3: {
            char f[3][32];
            for (int j = 0; j < 3; j++) format_float(f[j], sizeof f[j], ((const float *)field)[j]);
            snprintf(value, sizeof value, "%s,%s,%s", f[0], f[1], f[2]);
            break;
        }
        case K_BOOL: snprintf(value, sizeof value, "%s", *(const int *)field ? "true" : "false"); break;
        case K_WIDTHS: {
            const int *w = (const int *)field;
            snprintf(value, sizeof value, "%d,%d,%d,%d", w[0], w[1], w[2], w[3]);
            break;
        }
        case K_OPTIM: snprintf(value, sizeof value, "%s", vr_optim_kind_name(*(const vr_optim_kind *)field)); break;
        case K_KIND:
        case K_MELSCALE:
        case K_SPECLOG:
        case K_PROBE: snprintf(value, sizeof value, "%s", enum_names(k->type)[*(const int *)field]); break;
        }
        /* the help rides along as a comment where the line stays within inih's limit */
        size_t shown = strlen(value) > 40 ? strlen(value) : 40; /* the value column is 40 wide */
        if (18 + 3 + shown + 3 + strlen(k->help) + 1 < INI_MAX_LINE - 1)
            sb_printf(&b, "%-18s = %-40s ; %s\n", k->name, value, k->help);
        else
            sb_printf(&b, "%s = %s\n", k->name, value);
    }
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

int vr_recipe_branches(const vr_recipe *r, vr_branch_config bc[VR_MAX_BRANCHES])
{
    if (r->kind == VR_DATA_AUDIO) {
        vr_branch_config_wave(&bc[0], "");
        encoder_to(&bc[0].encoder, &r->wave);
        snprintf(bc[0].expander, sizeof bc[0].expander, "%s", r->wave.expander);
        vr_branch_config_spec(&bc[1], "");
        encoder_to(&bc[1].encoder, &r->model);
        snprintf(bc[1].expander, sizeof bc[1].expander, "%s", r->model.expander);
        return 2;
    }
    vr_branch_config_image(&bc[0], r->model.depth, "");
    bc[0].encoder.in_channels = r->kind == VR_DATA_FOLDER ? 3 : 1;
    encoder_to(&bc[0].encoder, &r->model);
    snprintf(bc[0].expander, sizeof bc[0].expander, "%s", r->model.expander);
    return 1;
}

vr_lr_schedule vr_recipe_schedule(const vr_recipe *r, long steps_per_epoch)
{
    return (vr_lr_schedule){
        .base = r->scale_lr ? vr_lr_scaled_base(r->base_lr, r->batch) : r->base_lr,
        .warmup_steps = lround((double)r->warmup_epochs * steps_per_epoch),
        .total_steps = (long)r->epochs * steps_per_epoch,
        .final_ratio = r->final_lr_ratio,
    };
}
