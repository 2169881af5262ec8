/* Waveform views (crop, gain, noise) and spectrogram masks of the audio job (see
 * include/vicreg/audio_views.h). */
#include "vicreg/audio_views.h"

#include <math.h>
#include <omp.h>
#include <string.h>

void vr_audio_views_default(vr_audio_views_config *c, int64_t crop_samples)
{
    *c = (vr_audio_views_config){
        .crop_samples = crop_samples,
        .speed_min = 1.0f, .speed_max = 1.0f,
        .gain_db_min = -6.0f, .gain_db_max = 6.0f,
        .noise_p = 0.5f, .snr_db_min = 15.0f, .snr_db_max = 40.0f,
        .freq_masks = 2, .freq_mask_bins = 8,
        .time_masks = 2, .time_mask_frames = 10,
    };
}

static int db_range(float lo, float hi)
{
    return lo >= -VR_AUDIO_MAX_DB && lo <= hi && hi <= VR_AUDIO_MAX_DB; /* false for NaN */
}

vr_status vr_audio_views_check(const vr_audio_views_config *c)
{
    const char *what = NULL;
    if (c->crop_samples < 1) what = "crop length (>= 1 sample)";
    else if (!(c->speed_min >= 0.5f && c->speed_min <= c->speed_max && c->speed_max <= 2.0f))
        what = "speed range (0.5 <= min <= max <= 2)";
    else if (!db_range(c->gain_db_min, c->gain_db_max)) what = "gain range (-120 <= min <= max <= 120 dB)";
    else if (!(c->noise_p >= 0.0f && c->noise_p <= 1.0f)) what = "noise probability (0..1)";
    else if (!db_range(c->snr_db_min, c->snr_db_max)) what = "SNR range (-120 <= min <= max <= 120 dB)";
    else if (c->freq_masks < 0 || c->freq_masks > VR_AUDIO_MAX_MASKS) what = "frequency mask count (0..8)";
    else if (c->time_masks < 0 || c->time_masks > VR_AUDIO_MAX_MASKS) what = "time mask count (0..8)";
    else if (c->freq_mask_bins < 0) what = "frequency mask width (>= 0 bins)";
    else if (c->time_mask_frames < 0) what = "time mask width (>= 0 frames)";
    return what ? vr_fail(VR_ERR_ARG, "audio views", "bad %s", what) : VR_OK;
}

int64_t vr_audio_view_span(int64_t crop_samples, float speed)
{
    return (int64_t)ceil((double)(crop_samples - 1) * speed) + 1;
}

void vr_audio_view_draw(vr_rng *r, const vr_audio_views_config *c, int64_t clip_samples,
                        vr_audio_view_params *p)
{
    p->speed = c->speed_min < c->speed_max ? vr_rng_range(r, c->speed_min, c->speed_max) : c->speed_min;
    int64_t span = vr_audio_view_span(c->crop_samples, p->speed);
    VR_ASSERT(clip_samples >= span && c->crop_samples >= 1);
    p->offset = (int64_t)vr_rng_below(r, (uint64_t)(clip_samples - span + 1));
    p->gain_db = vr_rng_range(r, c->gain_db_min, c->gain_db_max);
    p->noisy = vr_rng_uniform(r) < c->noise_p;
    p->snr_db = vr_rng_range(r, c->snr_db_min, c->snr_db_max);
}

/* Two independent standard normals (Box-Muller, both outputs used). */
static void normal_pair(vr_rng *r, float *a, float *b)
{
    double u1 = ((double)(vr_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(vr_rng_u64(r) >> 11) * 0x1.0p-53;
    double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
    *a = (float)(rad * cos(ang));
    *b = (float)(rad * sin(ang));
}

/* One waveform view of clip (clip_samples) into out (crop_samples). */
static void make_view(const vr_audio_views_config *c, const float *clip, int64_t clip_samples,
                      vr_rng *r, float *out)
{
    vr_audio_view_params p;
    vr_audio_view_draw(r, c, clip_samples, &p);
    int64_t len = c->crop_samples;
    float gain = powf(10.0f, p.gain_db / 20.0f);
    double power = 0.0;
    const float *x = clip + p.offset;
    for (int64_t t = 0; t < len; t++) {
        if (p.speed == 1.0f) {
            out[t] = gain * x[t];
        } else {
            /* position t * f of the span; the span's last sample is read with weight 0 at most */
            double pos = (double)t * p.speed;
            int64_t k = (int64_t)pos;
            float w = (float)(pos - (double)k);
            float a = x[k], b = w > 0.0f ? x[k + 1] : a;
            out[t] = gain * (a + w * (b - a));
        }
        power += (double)out[t] * out[t];
    }
    power /= (double)len;
    if (!p.noisy || power == 0.0) return;
    float sigma = (float)sqrt(power / pow(10.0, p.snr_db / 10.0));
    for (int64_t t = 0; t < len; t += 2) {
        float a, b;
        normal_pair(r, &a, &b);
        out[t] += sigma * a;
        if (t + 1 < len) out[t + 1] += sigma * b;
    }
}

vr_status vr_audio_views_batch(const vr_audio_views_config *c, const float *clips,
                               int64_t clip_samples, const int *index, int n, uint64_t seed,
                               int64_t first, int threads, float *out)
{
    VR_TRY(vr_audio_views_check(c));
    if (n < 1 || clip_samples < vr_audio_view_span(c->crop_samples, c->speed_max))
        return vr_fail(VR_ERR_ARG, "audio views", "batch of %d clips of %lld samples, crops of %lld at speed up to %g",
                       n, (long long)clip_samples, (long long)c->crop_samples, (double)c->speed_max);
    int nt = threads > 0 ? threads : omp_get_max_threads();
    size_t len = (size_t)c->crop_samples;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, seed, (uint64_t)(first + i) * 2);
        make_view(c, clips + (size_t)index[i] * (size_t)clip_samples, clip_samples, &r, out + (size_t)i * len);
    }
    return VR_OK;
}

/* count bands of 0..max_width (capped at size), each placed where it fits. */
static void draw_bands(vr_rng *r, int count, int max_width, int size, int *start, int *width)
{
    int cap = max_width < size ? max_width : size;
    for (int k = 0; k < count; k++) {
        width[k] = (int)vr_rng_below(r, (uint64_t)cap + 1);
        start[k] = (int)vr_rng_below(r, (uint64_t)(size - width[k]) + 1);
    }
}

void vr_spec_masks_draw(vr_rng *r, const vr_audio_views_config *c, int n_mels, int frames,
                        vr_spec_masks *m)
{
    VR_ASSERT(n_mels >= 1 && frames >= 1 && c->freq_masks >= 0 && c->freq_masks <= VR_AUDIO_MAX_MASKS &&
              c->time_masks >= 0 && c->time_masks <= VR_AUDIO_MAX_MASKS);
    m->nfreq = c->freq_masks;
    m->ntime = c->time_masks;
    draw_bands(r, m->nfreq, c->freq_mask_bins, n_mels, m->freq_start, m->freq_width);
    draw_bands(r, m->ntime, c->time_mask_frames, frames, m->time_start, m->time_width);
}

void vr_spec_masks_apply(const vr_spec_masks *m, int n_mels, int frames, float *spec)
{
    for (int k = 0; k < m->nfreq; k++)
        memset(spec + (size_t)m->freq_start[k] * frames, 0, (size_t)m->freq_width[k] * frames * sizeof(float));
    for (int f = 0; f < n_mels; f++)
        for (int k = 0; k < m->ntime; k++)
            memset(spec + (size_t)f * frames + m->time_start[k], 0, (size_t)m->time_width[k] * sizeof(float));
}

vr_status vr_spec_masks_batch(const vr_audio_views_config *c, float *spec, int n_mels, int frames,
                              int n, uint64_t seed, int64_t first, int threads)
{
    VR_TRY(vr_audio_views_check(c));
    if (n < 1 || n_mels < 1 || frames < 1)
        return vr_fail(VR_ERR_ARG, "audio views", "masks for %d spectrograms of %d x %d", n, n_mels, frames);
    int nt = threads > 0 ? threads : omp_get_max_threads();
    size_t plane = (size_t)n_mels * frames;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, seed, (uint64_t)(first + i) * 2 + 1);
        vr_spec_masks m;
        vr_spec_masks_draw(&r, c, n_mels, frames, &m);
        vr_spec_masks_apply(&m, n_mels, frames, spec + (size_t)i * plane);
    }
    return VR_OK;
}
