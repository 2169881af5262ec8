/* The views of the audio joint-embedding job. Both branches see the SAME audio: per sample one
 * waveform view is made from the stored clip,
 *
 *   a speed factor f, uniform in [speed_min, speed_max] (1, 1: off): the crop reads the clip
 *      at f samples per output sample, linearly interpolated, so f > 1 plays faster and
 *      higher, shifting pitch, formants and tempo together as speed perturbation in speech
 *      recognition does (no anti-alias filter: speech carries little energy near Nyquist)
 *   -> random crop of crop_samples output samples (offset uniform over the positions where
 *      the f-scaled span of (crop_samples - 1) * f + 1 input samples fits in the clip)
 *   -> gain, uniform in [gain_db_min, gain_db_max] dB
 *   -> with probability noise_p, additive white Gaussian noise whose power is the crop's
 *      power (after the gain) divided by 10^(snr_db / 10), snr_db uniform in
 *      [snr_db_min, snr_db_max] (a silent crop gets no noise)
 *
 * and the waveform branch takes it as it is while the spectrogram branch takes its spectrogram,
 * on which SpecAugment-style masks then zero bands of a (n_mels, frames) array: freq_masks
 * bands of 0..freq_mask_bins mel bins and time_masks bands of 0..time_mask_frames frames, each
 * width uniform over its range (capped at the array's size) and its start uniform over the
 * positions where it fits (torchaudio's FrequencyMasking / TimeMasking with integer widths).
 *
 * Randomness: sample i of a batch whose first sample has global index `first` draws its
 * waveform view from vr_rng_seed_stream(seed, (first + i) * 2) and its masks from stream
 * (first + i) * 2 + 1, so a view depends only on (seed, global index, clip), whatever the
 * thread count, and a resumed run needs no generator state beyond its step. */
#ifndef VICREG_AUDIO_VIEWS_H
#define VICREG_AUDIO_VIEWS_H

#include <stdint.h>

#include "vicreg/rng.h"
#include "vicreg/status.h"

#define VR_AUDIO_MAX_MASKS 8
/* Gains and SNRs are limited to +-120 dB, far past any useful augmentation. */
#define VR_AUDIO_MAX_DB 120.0f

typedef struct vr_audio_views_config {
    int64_t crop_samples;            /* 16000: 1 s at 16 kHz */
    float speed_min, speed_max;      /* 1, 1: no speed perturbation */
    float gain_db_min, gain_db_max;  /* -6, 6 */
    float noise_p;                   /* 0.5 */
    float snr_db_min, snr_db_max;    /* 15, 40 */
    int freq_masks, freq_mask_bins;  /* 2 bands of up to 8 mel bins */
    int time_masks, time_mask_frames; /* 2 bands of up to 10 frames */
} vr_audio_views_config;

/* The defaults above with the given crop length. */
void vr_audio_views_default(vr_audio_views_config *c, int64_t crop_samples);
/* VR_ERR_ARG naming the first value out of its range. */
vr_status vr_audio_views_check(const vr_audio_views_config *c);

/* What one waveform view drew. */
typedef struct vr_audio_view_params {
    float speed;     /* input samples per output sample */
    int64_t offset;  /* first sample of the crop in the clip */
    float gain_db;
    int noisy;       /* 1: noise added */
    float snr_db;    /* drawn whether or not noise is added */
} vr_audio_view_params;

/* The input samples a crop at speed f spans: (crop_samples - 1) * f + 1, rounded up. */
int64_t vr_audio_view_span(int64_t crop_samples, float speed);

/* The draws of one waveform view, in their fixed order (the speed only when its range is not
 * one value, so views without speed perturbation draw as before), from a clip of clip_samples
 * >= the span of the fastest speed; the noise samples follow them in the same stream. */
void vr_audio_view_draw(vr_rng *r, const vr_audio_views_config *c, int64_t clip_samples,
                        vr_audio_view_params *p);

/* clips (M, clip_samples); index (N) picks the clips of the batch; out (N, crop_samples): the
 * waveform view of every sample. Filled by `threads` OpenMP threads (<= 0: OpenMP's default). */
vr_status vr_audio_views_batch(const vr_audio_views_config *c, const float *clips,
                               int64_t clip_samples, const int *index, int n, uint64_t seed,
                               int64_t first, int threads, float *out);

/* The bands one spectrogram's masks drew: [start, start + width). */
typedef struct vr_spec_masks {
    int nfreq, ntime;
    int freq_start[VR_AUDIO_MAX_MASKS], freq_width[VR_AUDIO_MAX_MASKS];
    int time_start[VR_AUDIO_MAX_MASKS], time_width[VR_AUDIO_MAX_MASKS];
} vr_spec_masks;

void vr_spec_masks_draw(vr_rng *r, const vr_audio_views_config *c, int n_mels, int frames,
                        vr_spec_masks *m);
/* Zeros the bands of m in spec (n_mels, frames). */
void vr_spec_masks_apply(const vr_spec_masks *m, int n_mels, int frames, float *spec);

/* spec (N, n_mels, frames), masked in place, sample i with its own stream as above. */
vr_status vr_spec_masks_batch(const vr_audio_views_config *c, float *spec, int n_mels, int frames,
                              int n, uint64_t seed, int64_t first, int threads);

#endif
