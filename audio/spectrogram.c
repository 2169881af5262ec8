/* The STFT -> mel -> log -> [0, 1] front end (see include/vicreg/spectrogram.h).
 *
 * A clip is worked in blocks of 16 frames: each windowed frame is built in a buffer of n_fft
 * floats, transformed by FFTW's real-to-complex plan, and its n_fft/2 + 1 powers become one
 * column of a (bins, 16) block; the filterbank then turns the block into 16 columns of the
 * output, 16 frames per vector operation. The filterbank is stored sparse, each triangle as its
 * run of non-zero weights: a bin belongs to at most two triangles, so a frame costs about
 * 2 (n_fft/2 + 1) multiply-adds (400 at the default) against n_mels (n_fft/2 + 1) (12864) for a
 * dense product (as sgemm, about as long as all the FFTs). The block (13 KiB at the default)
 * and the frame buffers stay in L1; the log, clamp and scaling steps then run over the clip's
 * output while it is still in cache.
 *
 * The plan is made once per object with FFTW_ESTIMATE, which picks the same algorithm on
 * every run, so spectrograms are bitwise reproducible (a measured plan may differ between
 * runs, and for n_fft 400 it is no faster: 0.3 us a frame either way). Threads execute it concurrently through the new-array interface on buffers of their
 * own from fftwf_malloc, which have the SIMD alignment of the arrays it was planned on. */
#include "vicreg/spectrogram.h"

#include <fftw3.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* glibc's libmvec has vector logf and log10f on x86-64 (log10f since 2.35, within 4 ulp):
 * declared simd, the log loops below call them 8 or 16 values at a time, which takes the log
 * step from about a fifth of the front end's time to a few percent. Elsewhere the scalar calls
 * remain. */
#if defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
float log10f(float);
#endif

/* Largest n_fft accepted: 1.4 s at 48 kHz, far above any front end here. */
#define SPEC_MAX_FFT 65536

/* The denominator's guard of the per-clip scaling, as the audio peer's LogMel. */
#define SCALE_EPS 1e-6f

struct vr_spectrogram {
    vr_spectrogram_config cfg;
    int n_freq;        /* n_fft/2 + 1 */
    int pad;           /* samples of reflection before the clip: n_fft/2, or 0 without centre */
    int win_offset;    /* (n_fft - win_length)/2: zeros before the window inside a frame */
    fftwf_plan plan;   /* r2c of n_fft floats, out of place */
    float *window;     /* (win_length) periodic Hann */
    int *mel_first;    /* (n_mels) first bin of each triangle */
    int *mel_count;    /* (n_mels) its number of non-zero bins */
    int *mel_offset;   /* (n_mels) where its weights start in mel_w */
    float *mel_w;      /* the non-zero weights, triangle after triangle */
};

/* Frames per block: the filterbank runs over a block of frames at once, FRAME_BLOCK lanes wide
 * (one AVX-512 or two AVX2 registers), instead of reducing each short triangle horizontally. */
#define FRAME_BLOCK 16

/* One thread's buffers. */
typedef struct work {
    float *frame;        /* (n_fft), zero outside the window */
    fftwf_complex *spec; /* (n_freq) */
    float *block;        /* (n_freq, FRAME_BLOCK) power or magnitude of a block of frames */
} work;

void vr_spectrogram_default(vr_spectrogram_config *c)
{
    *c = (vr_spectrogram_config){
        .sample_rate_hz = 16000,
        .n_fft = 400, .win_length = 400, .hop_samples = 160, .center = 1,
        .power = 2,
        .n_mels = 64, .f_min_hz = 0.0f, .f_max_hz = 8000.0f,
        .mel_scale = VR_MEL_HTK, .mel_norm = VR_MEL_NORM_NONE,
        .log = VR_SPEC_LOG_OFFSET, .log_offset = 1e-6f, .db_amin = 1e-10f, .top_db = 0.0f,
        .scale_01 = 1,
    };
}

vr_status vr_spectrogram_check(const vr_spectrogram_config *c)
{
    const char *what = NULL;
    if (c->sample_rate_hz < 1) what = "sample_rate_hz (>= 1)";
    else if (c->n_fft < 2 || c->n_fft > SPEC_MAX_FFT) what = "n_fft (2..65536)";
    else if (c->win_length < 1 || c->win_length > c->n_fft) what = "win_length (1..n_fft)";
    else if (c->hop_samples < 1) what = "hop_samples (>= 1)";
    else if (c->center != 0 && c->center != 1) what = "center (0 or 1)";
    else if (c->power != 1 && c->power != 2) what = "power (1 or 2)";
    else if (c->n_mels < 1) what = "n_mels (>= 1)";
    else if (!(c->f_min_hz >= 0.0f && c->f_min_hz < c->f_max_hz))
        what = "f_min_hz (0 <= f_min_hz < f_max_hz)";
    else if (!(c->f_max_hz <= c->sample_rate_hz / 2.0)) what = "f_max_hz (<= sample_rate_hz / 2)";
    else if (c->mel_scale != VR_MEL_HTK && c->mel_scale != VR_MEL_SLANEY) what = "mel_scale";
    else if (c->mel_norm != VR_MEL_NORM_NONE && c->mel_norm != VR_MEL_NORM_SLANEY) what = "mel_norm";
    else if (c->log != VR_SPEC_LOG_NONE && c->log != VR_SPEC_LOG_OFFSET && c->log != VR_SPEC_LOG_DB)
        what = "log";
    else if (c->log == VR_SPEC_LOG_OFFSET && !(c->log_offset > 0.0f && isfinite(c->log_offset)))
        what = "log_offset (> 0)";
    else if (c->log == VR_SPEC_LOG_DB && !(c->db_amin > 0.0f && isfinite(c->db_amin)))
        what = "db_amin (> 0)";
    else if (c->log == VR_SPEC_LOG_DB && !(c->top_db >= 0.0f && isfinite(c->top_db)))
        what = "top_db (>= 0, 0: no clamp)";
    else if (c->scale_01 != 0 && c->scale_01 != 1) what = "scale_01 (0 or 1)";
    return what ? vr_fail(VR_ERR_ARG, "spectrogram", "bad %s", what) : VR_OK;
}

/* FFTW's planner is one global object; its own mutex hooks make planning and plan destruction
 * safe from any thread, including threads of other code that plans with FFTW. */
static pthread_once_t planner_once = PTHREAD_ONCE_INIT;
static void planner_make_thread_safe(void) { fftwf_make_planner_thread_safe(); }

/* Splits the dense filterbank (n_mels, n_freq) into its runs of non-zero weights. A triangle's
 * support is one run: its weights are positive strictly between two bin frequencies. */
static vr_status sparse_fbank(vr_spectrogram *sp, const float *fb)
{
    int n_mels = sp->cfg.n_mels, n_freq = sp->n_freq, total = 0;
    sp->mel_first = malloc((size_t)n_mels * sizeof *sp->mel_first);
    sp->mel_count = malloc((size_t)n_mels * sizeof *sp->mel_count);
    sp->mel_offset = malloc((size_t)n_mels * sizeof *sp->mel_offset);
    if (!sp->mel_first || !sp->mel_count || !sp->mel_offset) goto nomem;
    for (int m = 0; m < n_mels; m++) {
        const float *row = fb + (size_t)m * n_freq;
        int first = 0, last = -1;
        while (first < n_freq && row[first] == 0.0f) first++;
        for (int k = n_freq - 1; k >= first; k--)
            if (row[k] != 0.0f) {
                last = k;
                break;
            }
        sp->mel_first[m] = first < n_freq ? first : 0;
        sp->mel_count[m] = last - first + 1 > 0 ? last - first + 1 : 0;
        sp->mel_offset[m] = total;
        total += sp->mel_count[m];
    }
    sp->mel_w = malloc((size_t)(total > 0 ? total : 1) * sizeof *sp->mel_w);
    if (!sp->mel_w) goto nomem;
    for (int m = 0; m < n_mels; m++)
        memcpy(sp->mel_w + sp->mel_offset[m], fb + (size_t)m * n_freq + sp->mel_first[m],
               (size_t)sp->mel_count[m] * sizeof *sp->mel_w);
    return VR_OK;
nomem:
    return vr_fail(VR_ERR_NOMEM, "spectrogram", "filterbank of %d mels", n_mels);
}

vr_status vr_spectrogram_create(const vr_spectrogram_config *c, vr_spectrogram **out)
{
    *out = NULL;
    VR_TRY(vr_spectrogram_check(c));
    vr_spectrogram *sp = calloc(1, sizeof *sp);
    if (!sp) return vr_fail(VR_ERR_NOMEM, "spectrogram", "object");
    sp->cfg = *c;
    sp->n_freq = c->n_fft / 2 + 1;
    sp->pad = c->center ? c->n_fft / 2 : 0;
    sp->win_offset = (c->n_fft - c->win_length) / 2; /* torch.stft's left padding of the window */
    vr_status s = VR_OK;

    sp->window = malloc((size_t)c->win_length * sizeof *sp->window);
    float *fb = malloc((size_t)c->n_mels * sp->n_freq * sizeof *fb);
    float *in = fftwf_malloc((size_t)c->n_fft * sizeof *in);
    fftwf_complex *spec = fftwf_malloc((size_t)sp->n_freq * sizeof *spec);
    if (!sp->window || !fb || !in || !spec) {
        s = vr_fail(VR_ERR_NOMEM, "spectrogram", "buffers of n_fft %d", c->n_fft);
        goto done;
    }
    /* torch.hann_window(N, periodic=True): 0.5 - 0.5 cos(2 pi n / N), and ones(1) for N = 1 */
    for (int n = 0; n < c->win_length; n++)
        sp->window[n] = c->win_length == 1
                            ? 1.0f
                            : (float)(0.5 - 0.5 * cos(2.0 * M_PI * n / c->win_length));
    s = vr_mel_fbank(sp->n_freq, c->f_min_hz, c->f_max_hz, c->n_mels, c->sample_rate_hz,
                     c->mel_norm, c->mel_scale, fb);
    if (s == VR_OK) s = sparse_fbank(sp, fb);
    if (s != VR_OK) goto done;
    pthread_once(&planner_once, planner_make_thread_safe);
    sp->plan = fftwf_plan_dft_r2c_1d(c->n_fft, in, spec, FFTW_ESTIMATE);
    if (!sp->plan) s = vr_fail(VR_ERR_UNSUPPORTED, "spectrogram", "FFTW made no plan for n_fft %d", c->n_fft);
done:
    free(fb);
    fftwf_free(in);
    fftwf_free(spec);
    if (s != VR_OK) {
        vr_spectrogram_destroy(sp);
        return s;
    }
    *out = sp;
    return VR_OK;
}

void vr_spectrogram_destroy(vr_spectrogram *sp)
{
    if (!sp) return;
    if (sp->plan) fftwf_destroy_plan(sp->plan);
    free(sp->window);
    free(sp->mel_first);
    free(sp->mel_count);
    free(sp->mel_offset);
    free(sp->mel_w);
    free(sp);
}

const vr_spectrogram_config *vr_spectrogram_config_of(const vr_spectrogram *sp) { return &sp->cfg; }

int vr_spectrogram_freq_bins(const vr_spectrogram *sp) { return sp->n_freq; }

int64_t vr_spectrogram_frames(const vr_spectrogram *sp, int64_t length_samples)
{
    int64_t n_fft = sp->cfg.n_fft;
    /* torch's reflection padding needs pad < length: one reflection then reaches every index */
    if (sp->cfg.center ? length_samples <= sp->pad : length_samples < n_fft) return 0;
    return 1 + (length_samples + 2 * sp->pad - n_fft) / sp->cfg.hop_samples;
}

static int work_init(work *w, const vr_spectrogram *sp)
{
    w->frame = fftwf_malloc((size_t)sp->cfg.n_fft * sizeof *w->frame);
    w->spec = fftwf_malloc((size_t)sp->n_freq * sizeof *w->spec);
    w->block = calloc((size_t)sp->n_freq * FRAME_BLOCK, sizeof *w->block);
    if (!w->frame || !w->spec || !w->block) return 0;
    /* the samples around a window shorter than n_fft stay zero for good */
    memset(w->frame, 0, (size_t)sp->cfg.n_fft * sizeof *w->frame);
    return 1;
}

static void work_free(work *w)
{
    fftwf_free(w->frame);
    fftwf_free(w->spec);
    free(w->block);
}

/* Index into a clip of length n of padded position i, reflecting at both ends without
 * repeating the edge sample (numpy/torch "reflect"); |overhang| < n by the frames() check. */
static inline int64_t reflect(int64_t i, int64_t n)
{
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

/* w->frame[win_offset + j] = x[frame start + j] * window[j], j < win_length. */
static void fill_frame(const vr_spectrogram *sp, work *w, const float *x, int64_t n, int64_t t)
{
    int win = sp->cfg.win_length;
    int64_t start = t * sp->cfg.hop_samples - sp->pad + sp->win_offset;
    float *f = w->frame + sp->win_offset;
    const float *win_w = sp->window;
    if (start >= 0 && start + win <= n) {
        const float *src = x + start;
#pragma omp simd
        for (int j = 0; j < win; j++) f[j] = src[j] * win_w[j];
    } else {
        for (int j = 0; j < win; j++) f[j] = x[reflect(start + j, n)] * win_w[j];
    }
}

/* |X_k|^2 or |X_k| of the transformed frame into column i of the block. */
static void frame_bins(const vr_spectrogram *sp, work *w, int i)
{
    const float *s = (const float *)w->spec; /* (n_freq, 2): re, im */
    float *b = w->block + i;
    int n = sp->n_freq;
    if (sp->cfg.power == 2) {
        for (int k = 0; k < n; k++)
            b[k * FRAME_BLOCK] = s[2 * k] * s[2 * k] + s[2 * k + 1] * s[2 * k + 1];
    } else {
        for (int k = 0; k < n; k++)
            b[k * FRAME_BLOCK] = sqrtf(s[2 * k] * s[2 * k] + s[2 * k + 1] * s[2 * k + 1]);
    }
}

/* out (n_mels, frames) columns t0 .. t0 + count - 1 from the block: every frame's sum runs over
 * its triangle's bins in order, whatever block it falls in. */
static void mel_block(const vr_spectrogram *sp, const float *block, int count, float *out,
                      int64_t frames)
{
    for (int m = 0; m < sp->cfg.n_mels; m++) {
        const float *wm = sp->mel_w + sp->mel_offset[m];
        const float *bm = block + (size_t)sp->mel_first[m] * FRAME_BLOCK;
        float acc[FRAME_BLOCK] = {0};
        for (int j = 0; j < sp->mel_count[m]; j++) {
            float wj = wm[j];
#pragma omp simd
            for (int i = 0; i < FRAME_BLOCK; i++) acc[i] += wj * bm[j * FRAME_BLOCK + i];
        }
        float *o = out + (size_t)m * frames;
        for (int i = 0; i < count; i++) o[i] = acc[i];
    }
}

/* The log or decibel step, top_db clamp and [0, 1] scaling over one clip's x (count). */
static void post_process(const vr_spectrogram_config *c, float *x, size_t count)
{
    if (c->log == VR_SPEC_LOG_OFFSET) {
        float off = c->log_offset;
#pragma omp simd
        for (size_t i = 0; i < count; i++) x[i] = logf(x[i] + off);
    } else if (c->log == VR_SPEC_LOG_DB) {
        /* AmplitudeToDB with ref 1: multiplier 10 for power, 20 for magnitude */
        float mult = c->power == 2 ? 10.0f : 20.0f, amin = c->db_amin;
        /* comparisons rather than fmaxf, which is a library call unless NaN may be dropped;
         * separate loops, as the compiler vectorises neither the clamp nor the maximum in the
         * loop that calls log10f */
#pragma omp simd
        for (size_t i = 0; i < count; i++) x[i] = x[i] < amin ? amin : x[i];
#pragma omp simd
        for (size_t i = 0; i < count; i++) x[i] = mult * log10f(x[i]);
        float hi = -INFINITY;
#pragma omp simd reduction(max : hi)
        for (size_t i = 0; i < count; i++) hi = x[i] > hi ? x[i] : hi;
        if (c->top_db > 0.0f) {
            float floor_db = hi - c->top_db;
#pragma omp simd
            for (size_t i = 0; i < count; i++) x[i] = x[i] < floor_db ? floor_db : x[i];
        }
    }
    if (c->scale_01) {
        float lo = x[0], hi = x[0];
#pragma omp simd reduction(min : lo) reduction(max : hi)
        for (size_t i = 0; i < count; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        /* (m - lo) / (hi - lo + 1e-6) as the peer computes it, a division per element */
        float den = hi - lo + SCALE_EPS;
#pragma omp simd
        for (size_t i = 0; i < count; i++) x[i] = (x[i] - lo) / den;
    }
}

/* One clip x (n) -> out (rows, frames), mel or linear. */
static void run_clip(const vr_spectrogram *sp, work *w, const float *x, int64_t n,
                     int64_t frames, int mel, float *out)
{
    int n_freq = sp->n_freq;
    for (int64_t t0 = 0; t0 < frames; t0 += FRAME_BLOCK) {
        int count = frames - t0 < FRAME_BLOCK ? (int)(frames - t0) : FRAME_BLOCK;
        for (int i = 0; i < count; i++) {
            fill_frame(sp, w, x, n, t0 + i);
            fftwf_execute_dft_r2c(sp->plan, w->frame, w->spec);
            frame_bins(sp, w, i);
        }
        if (mel) {
            mel_block(sp, w->block, count, out + t0, frames);
        } else {
            for (int k = 0; k < n_freq; k++)
                memcpy(out + (size_t)k * frames + t0, w->block + (size_t)k * FRAME_BLOCK,
                       (size_t)count * sizeof *out);
        }
    }
    post_process(&sp->cfg, out, (size_t)(mel ? sp->cfg.n_mels : n_freq) * frames);
}

static vr_status run(const vr_spectrogram *sp, const float *wave, int batch, int64_t n,
                     int threads, int mel, float *out)
{
    if (!sp || !wave || !out) return vr_fail(VR_ERR_ARG, "spectrogram", "NULL argument");
    if (batch < 1) return vr_fail(VR_ERR_SHAPE, "spectrogram", "batch of %d clips", batch);
    int64_t frames = vr_spectrogram_frames(sp, n);
    if (frames < 1)
        return vr_fail(VR_ERR_SHAPE, "spectrogram", "clip of %lld samples is too short for n_fft %d%s",
                       (long long)n, sp->cfg.n_fft, sp->cfg.center ? " with centre padding" : "");
    size_t per_clip = (size_t)(mel ? sp->cfg.n_mels : sp->n_freq) * (size_t)frames;
    int nt = threads > 0 ? threads : omp_get_max_threads();
    if (nt > batch) nt = batch;
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        work w;
        int ok = work_init(&w, sp);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1) nowait
        for (int i = 0; i < batch; i++)
            if (ok) run_clip(sp, &w, wave + (size_t)i * n, n, frames, mel, out + (size_t)i * per_clip);
        work_free(&w);
    }
    if (failed) return vr_fail(VR_ERR_NOMEM, "spectrogram", "frame buffers of n_fft %d", sp->cfg.n_fft);
    return VR_OK;
}

vr_status vr_spectrogram_mel(const vr_spectrogram *sp, const float *wave, int64_t length_samples,
                             float *out)
{
    return run(sp, wave, 1, length_samples, 1, 1, out);
}

vr_status vr_spectrogram_mel_batch(const vr_spectrogram *sp, const float *wave, int batch,
                                   int64_t length_samples, int threads, float *out)
{
    return run(sp, wave, batch, length_samples, threads, 1, out);
}

vr_status vr_spectrogram_linear(const vr_spectrogram *sp, const float *wave,
                                int64_t length_samples, float *out)
{
    return run(sp, wave, 1, length_samples, 1, 0, out);
}

vr_status vr_spectrogram_linear_batch(const vr_spectrogram *sp, const float *wave, int batch,
                                      int64_t length_samples, int threads, float *out)
{
    return run(sp, wave, batch, length_samples, threads, 0, out);
}
