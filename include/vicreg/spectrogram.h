/* The spectrogram front end of the audio path: short-time Fourier transform (FFTW single
 * precision), mel filterbank, log or decibel step and per-clip scaling to [0, 1].
 *
 * Each step matches a PyTorch/torchaudio 0.13 reference, so a model trained on either side
 * sees the same input:
 *   STFT       torch.stft(x, n_fft, hop_length, win_length, torch.hann_window(win_length),
 *              center=True, pad_mode="reflect"): periodic Hann window, centred in the n_fft
 *              frame (zeros around it) when win_length < n_fft; n_fft/2 samples of reflection
 *              padding each side; then |X| (power 1) or |X|^2 (power 2) of the n_fft/2 + 1
 *              one-sided bins (torchaudio.transforms.Spectrogram).
 *   mel        torchaudio.functional.melscale_fbanks: triangles between mel-spaced points
 *              (HTK or Slaney scale) over bins at k * (sample_rate / 2) / (n_fft / 2) Hz, with
 *              optional Slaney area normalisation (torchaudio.transforms.MelSpectrogram).
 *   log        log(x + offset) (the audio peer's torch.log(mel + 1e-6)), or decibels as
 *              torchaudio.transforms.AmplitudeToDB: 10 log10(max(x, amin)) for power,
 *              20 log10(max(x, amin)) for magnitude, optionally clamped to top_db below the
 *              clip's maximum (per clip, as AmplitudeToDB on a (batch, 1, freq, time) input).
 *   scaling    (m - min) / (max - min + 1e-6) with min and max over the whole clip.
 *
 * Frames: 1 + (L + 2 (n_fft/2) - n_fft) / hop with centre padding (1 + L/hop for even n_fft),
 * 1 + (L - n_fft) / hop without. Outputs are (rows, frames) per clip, rows = n_mels for the mel
 * spectrogram and n_fft/2 + 1 for the linear one, row-major: the layout of torchaudio's
 * (..., freq, time).
 *
 * A vr_spectrogram holds the FFTW plan, window and filterbank of one configuration, made once.
 * Its compute functions only read it, so any number of threads may use one object at once. */
#ifndef VICREG_SPECTROGRAM_H
#define VICREG_SPECTROGRAM_H

#include <stdint.h>

#include "vicreg/status.h"

typedef enum vr_mel_scale {
    VR_MEL_HTK,    /* 2595 log10(1 + f/700) */
    VR_MEL_SLANEY  /* linear below 1 kHz (3 mels per 200 Hz), logarithmic above (librosa) */
} vr_mel_scale;

typedef enum vr_mel_norm {
    VR_MEL_NORM_NONE,   /* triangles of height 1 */
    VR_MEL_NORM_SLANEY  /* each triangle scaled by 2 / (its width in Hz): equal area */
} vr_mel_norm;

typedef enum vr_spec_log {
    VR_SPEC_LOG_NONE,   /* the power or magnitude itself */
    VR_SPEC_LOG_OFFSET, /* natural log(x + log_offset) */
    VR_SPEC_LOG_DB      /* 10 or 20 log10(max(x, db_amin)), by power; top_db clamp */
} vr_spec_log;

typedef struct vr_spectrogram_config {
    int sample_rate_hz;      /* 16000 */
    int n_fft;               /* 400 samples */
    int win_length;          /* 400 samples, <= n_fft */
    int hop_samples;         /* 160 */
    int center;              /* 1: reflection padding of n_fft/2 samples each side */
    int power;               /* 1 magnitude, 2 power */
    int n_mels;              /* 64 */
    float f_min_hz, f_max_hz; /* 0, 8000; f_max_hz <= sample_rate_hz / 2 */
    vr_mel_scale mel_scale;  /* HTK */
    vr_mel_norm mel_norm;    /* none */
    vr_spec_log log;         /* offset */
    float log_offset;        /* 1e-6 */
    float db_amin;           /* 1e-10 */
    float top_db;            /* dB below the clip's maximum; 0: no clamp */
    int scale_01;            /* 1: per-clip (m - min) / (max - min + 1e-6) */
} vr_spectrogram_config;

/* The audio recipe's front end: 16 kHz, n_fft 400, win 400, hop 160, 64 HTK mels over 0-8 kHz,
 * no norm, power 2, log(x + 1e-6), scaled to [0, 1]; one second gives 64 x 101. */
void vr_spectrogram_default(vr_spectrogram_config *c);
/* VR_ERR_ARG naming the first field out of its range. */
vr_status vr_spectrogram_check(const vr_spectrogram_config *c);

typedef struct vr_spectrogram vr_spectrogram;

/* Checks c, makes the FFTW plan (thread-safe planning: any thread may create and destroy
 * objects at any time), window and sparse filterbank. */
vr_status vr_spectrogram_create(const vr_spectrogram_config *c, vr_spectrogram **out);
void vr_spectrogram_destroy(vr_spectrogram *sp);

const vr_spectrogram_config *vr_spectrogram_config_of(const vr_spectrogram *sp);
/* n_fft/2 + 1 */
int vr_spectrogram_freq_bins(const vr_spectrogram *sp);
/* Frames of a clip of length_samples; 0 when the clip is too short (centre padding needs
 * length_samples > n_fft/2, as torch's reflection padding; no padding needs >= n_fft). */
int64_t vr_spectrogram_frames(const vr_spectrogram *sp, int64_t length_samples);

/* wave (L) -> out (n_mels, frames), on the calling thread. */
vr_status vr_spectrogram_mel(const vr_spectrogram *sp, const float *wave, int64_t length_samples,
                             float *out);
/* wave (B, L) -> out (B, n_mels, frames), clips spread over `threads` OpenMP threads (<= 0:
 * OpenMP's default). Each clip's result is the same whatever the thread count. */
vr_status vr_spectrogram_mel_batch(const vr_spectrogram *sp, const float *wave, int batch,
                                   int64_t length_samples, int threads, float *out);

/* The same without the filterbank: out (n_fft/2 + 1, frames) and (B, n_fft/2 + 1, frames),
 * power or magnitude, then the configured log step and scaling. */
vr_status vr_spectrogram_linear(const vr_spectrogram *sp, const float *wave,
                                int64_t length_samples, float *out);
vr_status vr_spectrogram_linear_batch(const vr_spectrogram *sp, const float *wave, int batch,
                                      int64_t length_samples, int threads, float *out);

/* Mel scale conversions in double, as torchaudio's _hz_to_mel and _mel_to_hz. */
double vr_hz_to_mel(double hz, vr_mel_scale scale);
double vr_mel_to_hz(double mel, vr_mel_scale scale);

/* The dense filterbank fb (n_mels, n_freq) of torchaudio.functional.melscale_fbanks
 * (n_freq, f_min_hz, f_max_hz, n_mels, sample_rate_hz, norm, scale), which returns its
 * transpose; computed in double and rounded once. Arguments as checked by
 * vr_spectrogram_check, n_freq >= 2; VR_ERR_ARG otherwise. */
vr_status vr_mel_fbank(int n_freq, double f_min_hz, double f_max_hz, int n_mels,
                       int sample_rate_hz, vr_mel_norm norm, vr_mel_scale scale, float *fb);

#endif
