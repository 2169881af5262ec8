/* The spectrogram front end (audio/) against torchaudio 0.13 on real speech, against a
 * double-precision direct DFT, the mel filterbank against its triangle formula and analytic
 * values, reflection padding against a padded signal built by hand, thread-count independence,
 * and the configuration checks.
 *
 * Parity (fixture tests/fixtures/spectrogram.safetensors, tests/reference/make_spec_fixtures.py,
 * references in float64). A float32 FFT errs by a few ulps of its frame's energy, not of each
 * bin, so a bin far below the loudest is only known to an absolute accuracy. Hence the floor:
 * 60 dB below the clip's peak, i.e. FLOOR_REL = 1e-6 of the clip's largest reference power
 * (sqrt(1e-6) = 1e-3 of its largest magnitude). Power, magnitude and mel outputs are compared
 * clip by clip: where the reference is at or above the floor the relative error must be
 * <= RTOL = 1e-4; below it the absolute error must be <= ATOL_BELOW_REL = 1e-9 of the clip's
 * peak power (ATOL_BELOW_MAG_REL = 3e-7 of its peak magnitude). Decibel outputs are compared the
 * same way after turning both sides back into power or magnitude (exact in double). log(x +
 * offset) outputs: |got - ref| <= ATOL_LOG nats; [0, 1] outputs: |got - ref| <= ATOL_SCALED
 * (both atol + rtol*|ref| with rtol 0). Each comparison prints its largest errors. */
#include <omp.h>

#include "testutil.h"
#include "vicreg/spectrogram.h"

#define FLOOR_REL 1e-6
#define RTOL 1e-4
#define ATOL_BELOW_REL 1e-9
#define ATOL_BELOW_MAG_REL 3e-7
#define ATOL_LOG 5e-4
#define ATOL_SCALED 5e-5

typedef struct spec_case {
    const char *name, *clips;  /* "clips16" (2, 7200) or "clip22" (1, 9301) */
    int rate, n_fft, win, hop, center, power;
    int n_mels;                /* 0: linear spectrogram only */
    float f_min, f_max;
    vr_mel_scale scale;
    vr_mel_norm norm;
    vr_spec_log log;
    float log_value;           /* the offset of VR_SPEC_LOG_OFFSET, top_db of VR_SPEC_LOG_DB */
    int scaled, has_mel, has_fb, has_spec;
} spec_case;

/* make_spec_fixtures.py's CASES, with the outputs it stores */
static const spec_case cases[] = {
    {"power", "clips16", 16000, 400, 400, 160, 1, 2, 0, 0, 0, VR_MEL_HTK, VR_MEL_NORM_NONE,
     VR_SPEC_LOG_NONE, 0, 0, 0, 0, 1},
    {"magnitude", "clip22", 22050, 512, 400, 128, 1, 1, 0, 0, 0, VR_MEL_HTK, VR_MEL_NORM_NONE,
     VR_SPEC_LOG_NONE, 0, 0, 0, 0, 1},
    {"logmel", "clips16", 16000, 400, 400, 160, 1, 2, 64, 0.0f, 8000.0f, VR_MEL_HTK,
     VR_MEL_NORM_NONE, VR_SPEC_LOG_OFFSET, 1e-6f, 1, 1, 0, 0},
    {"slaney_norm_db", "clip22", 22050, 512, 512, 256, 1, 2, 40, 50.0f, 11025.0f, VR_MEL_SLANEY,
     VR_MEL_NORM_SLANEY, VR_SPEC_LOG_DB, 80.0f, 0, 1, 1, 0},
    {"slaney_mag_db", "clips16", 16000, 400, 400, 160, 1, 1, 48, 0.0f, 8000.0f, VR_MEL_SLANEY,
     VR_MEL_NORM_NONE, VR_SPEC_LOG_DB, 0.0f, 1, 0, 0, 0},
    {"odd", "clip22", 22050, 255, 201, 97, 1, 2, 32, 100.0f, 10000.0f, VR_MEL_HTK,
     VR_MEL_NORM_NONE, VR_SPEC_LOG_OFFSET, 1e-3f, 0, 1, 1, 1},
    {"nocenter", "clips16", 16000, 400, 400, 160, 0, 2, 64, 20.0f, 7600.0f, VR_MEL_HTK,
     VR_MEL_NORM_NONE, VR_SPEC_LOG_OFFSET, 1e-6f, 0, 0, 0, 0},
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

static float *alloc_f(size_t count)
{
    float *p = calloc(count ? count : 1, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static vr_safetensors *open_fixture(void)
{
    vr_safetensors *st = NULL;
    TU_OK(vr_st_open(VR_FIXTURE_DIR "/spectrogram.safetensors", &st));
    return st;
}

/* Tensor `name` of the fixture with its shape in dims (up to 3). */
static float *fixture(const vr_safetensors *st, const char *name, int64_t *dims)
{
    const vr_st_entry *e = vr_st_find(st, name);
    if (!e) fprintf(stderr, "\n  fixture tensor %s missing\n", name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_FATAL(e->ndim >= 2 && e->ndim <= 3);
    size_t count = 1;
    for (int i = 0; i < e->ndim; i++) {
        dims[i] = e->shape[i];
        count *= (size_t)e->shape[i];
    }
    float *p = alloc_f(count);
    TU_OK(vr_st_read(st, name, VR_DTYPE_F32, p, count));
    return p;
}

static void config_of(const spec_case *k, vr_spectrogram_config *c)
{
    vr_spectrogram_default(c);
    c->sample_rate_hz = k->rate;
    c->n_fft = k->n_fft;
    c->win_length = k->win;
    c->hop_samples = k->hop;
    c->center = k->center;
    c->power = k->power;
    if (k->n_mels) {
        c->n_mels = k->n_mels;
        c->f_min_hz = k->f_min;
        c->f_max_hz = k->f_max;
        c->mel_scale = k->scale;
        c->mel_norm = k->norm;
    } else {
        c->f_max_hz = (float)(k->rate / 2);
    }
    c->log = VR_SPEC_LOG_NONE;
    c->scale_01 = 0;
}

/* out (B, rows, frames) of the case's clips for configuration c: the batch entry point over
 * two threads for a batch, the single-clip one otherwise. */
static float *compute(const vr_spectrogram_config *c, int mel, const float *wave, int batch,
                      int64_t len, size_t *count)
{
    vr_spectrogram *sp = NULL;
    TU_OK(vr_spectrogram_create(c, &sp));
    int64_t frames = vr_spectrogram_frames(sp, len);
    int rows = mel ? c->n_mels : vr_spectrogram_freq_bins(sp);
    *count = (size_t)batch * rows * frames;
    float *out = alloc_f(*count);
    if (batch == 1)
        TU_OK(mel ? vr_spectrogram_mel(sp, wave, len, out) : vr_spectrogram_linear(sp, wave, len, out));
    else if (mel)
        TU_OK(vr_spectrogram_mel_batch(sp, wave, batch, len, 2, out));
    else
        TU_OK(vr_spectrogram_linear_batch(sp, wave, batch, len, 2, out));
    vr_spectrogram_destroy(sp);
    return out;
}

/* The floor comparison of the header on non-negative linear values, clip by clip (per values
 * each). Prints the worst relative error above the floor and absolute error below it. */
static int close_above_floor(const float *got, const double *ref, int clips, size_t per,
                             int power, const char *what)
{
    double floor_rel = power == 2 ? FLOOR_REL : sqrt(FLOOR_REL);
    double atol_rel = power == 2 ? ATOL_BELOW_REL : ATOL_BELOW_MAG_REL;
    int ok = 1;
    for (int b = 0; b < clips; b++) {
        const float *g = got + (size_t)b * per;
        const double *r = ref + (size_t)b * per;
        double peak = 0.0, worst_rel = 0.0, worst_abs = 0.0;
        for (size_t i = 0; i < per; i++) peak = fmax(peak, fabs(r[i]));
        double floor_v = floor_rel * peak, atol = atol_rel * peak;
        size_t above = 0;
        for (size_t i = 0; i < per; i++) {
            double err = fabs((double)g[i] - r[i]);
            if (isnan(err)) err = INFINITY;
            if (fabs(r[i]) >= floor_v) {
                above++;
                worst_rel = fmax(worst_rel, err / fabs(r[i]));
            } else {
                worst_abs = fmax(worst_abs, err);
            }
        }
        int pass = worst_rel <= RTOL && worst_abs <= atol;
        fprintf(stderr, "\n    %-22s clip %d: %5.1f%% above floor, max rel err %.2e, below: max abs err %.2e of peak%s",
                what, b, 100.0 * above / per, worst_rel, worst_abs / peak, pass ? "" : "  FAILED");
        ok &= pass;
    }
    return ok;
}

static double *to_double(const float *x, size_t n, double (*f)(double, double), double arg)
{
    double *d = malloc(n * sizeof *d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (size_t i = 0; i < n; i++) d[i] = f ? f(x[i], arg) : x[i];
    return d;
}

/* decibels back to power (mult 10) or magnitude (mult 20) */
static double from_db(double db, double mult) { return pow(10.0, db / mult); }

static int compare_linear(const float *got, const float *ref, int clips, size_t count,
                          int power, const char *what)
{
    double *r = to_double(ref, count, NULL, 0.0);
    int ok = close_above_floor(got, r, clips, count / clips, power, what);
    free(r);
    return ok;
}

static int compare_db(const float *got, const float *ref, int clips, size_t count, double mult,
                      const char *what)
{
    double *r = to_double(ref, count, from_db, mult);
    float *g = alloc_f(count);
    for (size_t i = 0; i < count; i++) g[i] = (float)from_db(got[i], mult);
    int ok = close_above_floor(g, r, clips, count / clips, mult == 10.0 ? 2 : 1, what);
    free(r);
    free(g);
    return ok;
}

/* |got - ref| <= atol everywhere, printing the largest error. */
static int compare_abs(const float *got, const float *ref, size_t n, double atol, const char *what)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - ref[i]));
    fprintf(stderr, "\n    %-22s max abs err %.2e", what, worst);
    return tu_close(got, ref, n, atol, 0.0, what);
}

static void test_torchaudio_parity(void)
{
    vr_safetensors *st = open_fixture();
    for (int ci = 0; ci < NCASES; ci++) {
        const spec_case *k = &cases[ci];
        int64_t wd[3];
        float *wave = fixture(st, k->clips, wd);
        int batch = (int)wd[0];
        int64_t len = wd[1];
        vr_spectrogram_config c;
        config_of(k, &c);
        char name[96];
        int64_t rd[3];
        size_t n;

        if (k->has_spec) {
            snprintf(name, sizeof name, "%s.spec", k->name);
            float *ref = fixture(st, name, rd);
            float *got = compute(&c, 0, wave, batch, len, &n);
            CU_ASSERT_EQUAL(n, (size_t)(rd[0] * rd[1] * rd[2]));
            CU_ASSERT(compare_linear(got, ref, batch, n, k->power, name));
            free(ref);
            free(got);
        }
        if (k->has_mel) {
            snprintf(name, sizeof name, "%s.mel", k->name);
            float *ref = fixture(st, name, rd);
            float *got = compute(&c, 1, wave, batch, len, &n);
            CU_ASSERT_EQUAL(n, (size_t)(rd[0] * rd[1] * rd[2]));
            CU_ASSERT(compare_linear(got, ref, batch, n, k->power, name));
            free(ref);
            free(got);
        }
        if (k->has_fb) {
            snprintf(name, sizeof name, "%s.fb", k->name);
            float *ref = fixture(st, name, rd);
            float *got = alloc_f((size_t)(rd[0] * rd[1]));
            TU_OK(vr_mel_fbank((int)rd[1], c.f_min_hz, c.f_max_hz, c.n_mels, c.sample_rate_hz,
                               c.mel_norm, c.mel_scale, got));
            /* computed in double and rounded once on both sides */
            CU_ASSERT(tu_close(got, ref, (size_t)(rd[0] * rd[1]), 1e-7, 1e-6, name));
            free(ref);
            free(got);
        }
        if (k->log != VR_SPEC_LOG_NONE) {
            c.log = k->log;
            if (k->log == VR_SPEC_LOG_OFFSET) c.log_offset = k->log_value;
            else c.top_db = k->log_value;
            int db = k->log == VR_SPEC_LOG_DB;
            snprintf(name, sizeof name, "%s.%s", k->name, db ? "db" : "log");
            float *ref = fixture(st, name, rd);
            float *got = compute(&c, 1, wave, batch, len, &n);
            CU_ASSERT_EQUAL(n, (size_t)(rd[0] * rd[1] * rd[2]));
            int ok = db ? compare_db(got, ref, batch, n, k->power == 2 ? 10.0 : 20.0, name)
                        : compare_abs(got, ref, n, ATOL_LOG, name);
            CU_ASSERT(ok);
            free(ref);
            free(got);
        }
        if (k->scaled) {
            c.scale_01 = 1;
            snprintf(name, sizeof name, "%s.scaled", k->name);
            float *ref = fixture(st, name, rd);
            float *got = compute(&c, 1, wave, batch, len, &n);
            CU_ASSERT_EQUAL(n, (size_t)(rd[0] * rd[1] * rd[2]));
            CU_ASSERT(compare_abs(got, ref, n, ATOL_SCALED, name));
            free(ref);
            free(got);
        }
        free(wave);
    }
    fprintf(stderr, "\n");
    vr_st_close(st);
}

/* ---------------------------------------------------------------- direct DFT */

/* periodic Hann of length n, centred in a frame of n_fft, as a frame-long window */
static void hann_frame(double *w, int n_fft, int win)
{
    int off = (n_fft - win) / 2;
    for (int j = 0; j < n_fft; j++) w[j] = 0.0;
    for (int j = 0; j < win; j++) w[off + j] = win == 1 ? 1.0 : 0.5 - 0.5 * cos(2.0 * M_PI * j / win);
}

/* out (n_fft/2 + 1, frames) of the frames of `padded` (frames * hop + n_fft - hop samples at
 * least) by the direct sum sum_j x_j w_j exp(-2 pi i j k / n_fft), in double. */
static void naive_stft(const double *padded, int64_t frames, int n_fft, int win, int hop,
                       int power, double *out)
{
    int n_freq = n_fft / 2 + 1;
    double *w = malloc((size_t)n_fft * sizeof *w);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    hann_frame(w, n_fft, win);
    for (int64_t t = 0; t < frames; t++)
        for (int k = 0; k < n_freq; k++) {
            double re = 0.0, im = 0.0;
            for (int j = 0; j < n_fft; j++) {
                double v = padded[t * hop + j] * w[j], a = 2.0 * M_PI * (double)j * k / n_fft;
                re += v * cos(a);
                im -= v * sin(a);
            }
            double p = re * re + im * im;
            out[(size_t)k * frames + t] = power == 2 ? p : sqrt(p);
        }
    free(w);
}

/* The linear spectrogram of x (len) against naive_stft of `padded` (the clip as the
 * configuration pads it). Tolerance: 1e-5 * max|ref| + 1e-4 * |ref|: random signals have no
 * bin far below the frame's energy, where a float32 FFT is only good to its absolute error. */
static void check_against_naive(const vr_spectrogram_config *c, const float *x, int64_t len,
                                const double *padded, const char *what)
{
    vr_spectrogram *sp = NULL;
    TU_OK(vr_spectrogram_create(c, &sp));
    int64_t frames = vr_spectrogram_frames(sp, len);
    CU_ASSERT_FATAL(frames >= 1);
    size_t count = (size_t)vr_spectrogram_freq_bins(sp) * frames;
    float *got = alloc_f(count), *ref = alloc_f(count);
    double *refd = malloc(count * sizeof *refd);
    CU_ASSERT_PTR_NOT_NULL_FATAL(refd);
    TU_OK(vr_spectrogram_linear(sp, x, len, got));
    naive_stft(padded, frames, c->n_fft, c->win_length, c->hop_samples, c->power, refd);
    double peak = 0.0;
    for (size_t i = 0; i < count; i++) {
        ref[i] = (float)refd[i];
        peak = fmax(peak, refd[i]);
    }
    CU_ASSERT(tu_close(got, ref, count, 1e-5 * peak, 1e-4, what));
    free(got);
    free(ref);
    free(refd);
    vr_spectrogram_destroy(sp);
}

static void small_config(vr_spectrogram_config *c, int n_fft, int win, int hop, int center,
                         int power)
{
    vr_spectrogram_default(c);
    c->n_fft = n_fft;
    c->win_length = win;
    c->hop_samples = hop;
    c->center = center;
    c->power = power;
    c->n_mels = 4;
    c->log = VR_SPEC_LOG_NONE;
    c->scale_01 = 0;
}

/* No padding: the STFT alone, even and odd n_fft, window shorter than n_fft, both powers. */
static void test_naive_dft(void)
{
    const int configs[][4] = {{16, 16, 4, 2}, {16, 11, 3, 1}, {15, 15, 5, 2}, {15, 8, 7, 1}, {2, 1, 1, 2}};
    vr_rng r;
    vr_rng_seed(&r, 7);
    enum { LEN = 61 };
    float x[LEN];
    double xd[LEN];
    tu_fill(x, LEN, &r, -1.0f, 1.0f);
    for (int i = 0; i < LEN; i++) xd[i] = x[i];
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        vr_spectrogram_config c;
        small_config(&c, configs[i][0], configs[i][1], configs[i][2], 0, configs[i][3]);
        char what[64];
        snprintf(what, sizeof what, "n_fft %d win %d hop %d power %d", configs[i][0],
                 configs[i][1], configs[i][2], configs[i][3]);
        check_against_naive(&c, x, LEN, xd, what);
    }
}

/* ---------------------------------------------------------------- reflection padding */

/* numpy.pad(x, p, "reflect"): x[p] .. x[1], x, x[n-2] .. x[n-1-p], written by reversed copies */
static double *pad_reflect(const float *x, int n, int p)
{
    double *y = malloc((size_t)(n + 2 * p) * sizeof *y);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    for (int i = 0; i < p; i++) y[p - 1 - i] = x[1 + i];
    for (int i = 0; i < n; i++) y[p + i] = x[i];
    for (int i = 0; i < p; i++) y[p + n + i] = x[n - 2 - i];
    return y;
}

static void test_reflect_padding(void)
{
    /* numpy.pad([1, 2, 3, 4, 5], 2, "reflect") = [3, 2, 1, 2, 3, 4, 5, 4, 3] */
    const float five[5] = {1, 2, 3, 4, 5};
    const double five_padded[9] = {3, 2, 1, 2, 3, 4, 5, 4, 3};
    double *mine = pad_reflect(five, 5, 2);
    for (int i = 0; i < 9; i++) CU_ASSERT_EQUAL(mine[i], five_padded[i]);
    free(mine);
    vr_spectrogram_config c;
    small_config(&c, 4, 4, 1, 1, 2);
    check_against_naive(&c, five, 5, five_padded, "[1..5] n_fft 4 hop 1");

    /* the shortest clip torch pads (n_fft/2 + 1 samples), odd and even n_fft, windows shorter
     * than n_fft, and a longer clip with frames that straddle both ends */
    const int configs[][5] = {/* n_fft, win, hop, power, len */
                              {16, 16, 3, 2, 9}, {16, 10, 2, 1, 9}, {15, 15, 4, 2, 8},
                              {15, 9, 1, 2, 8},  {16, 12, 5, 2, 40}};
    vr_rng r;
    vr_rng_seed(&r, 11);
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        int n_fft = configs[i][0], len = configs[i][4];
        float x[64];
        tu_fill(x, (size_t)len, &r, -1.0f, 1.0f);
        small_config(&c, n_fft, configs[i][1], configs[i][2], 1, configs[i][3]);
        double *padded = pad_reflect(x, len, n_fft / 2);
        char what[64];
        snprintf(what, sizeof what, "reflect n_fft %d win %d len %d", n_fft, configs[i][1], len);
        check_against_naive(&c, x, len, padded, what);
        free(padded);
    }

    /* one sample fewer than reflection needs: refused, naming the clip length */
    small_config(&c, 16, 16, 4, 1, 2);
    vr_spectrogram *sp = NULL;
    TU_OK(vr_spectrogram_create(&c, &sp));
    CU_ASSERT_EQUAL(vr_spectrogram_frames(sp, 8), 0);
    CU_ASSERT_EQUAL(vr_spectrogram_frames(sp, 9), 1 + 9 / 4);
    float x[8] = {0}, out[9 * 3];
    CU_ASSERT_EQUAL(vr_spectrogram_linear(sp, x, 8, out), VR_ERR_SHAPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "8 samples"));
    vr_spectrogram_destroy(sp);
}

/* ---------------------------------------------------------------- mel filterbank */

/* The triangle of mel band m at frequency f by its two edges, written out as branches. */
static double triangle(double f, double lo, double mid, double hi)
{
    if (f <= lo || f >= hi) return 0.0;
    if (f <= mid) return (f - lo) / (mid - lo);
    return (hi - f) / (hi - mid);
}

static void test_mel_fbank(void)
{
    /* analytic values of the scales */
    CU_ASSERT_DOUBLE_EQUAL(vr_hz_to_mel(700.0, VR_MEL_HTK), 2595.0 * log10(2.0), 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(vr_hz_to_mel(1000.0, VR_MEL_SLANEY), 15.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(vr_hz_to_mel(6400.0, VR_MEL_SLANEY), 42.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(vr_hz_to_mel(500.0, VR_MEL_SLANEY), 7.5, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(vr_mel_to_hz(42.0, VR_MEL_SLANEY), 6400.0, 1e-9);
    for (double f = 0.0; f <= 12000.0; f += 333.0) {
        CU_ASSERT_DOUBLE_EQUAL(vr_mel_to_hz(vr_hz_to_mel(f, VR_MEL_HTK), VR_MEL_HTK), f, 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(vr_mel_to_hz(vr_hz_to_mel(f, VR_MEL_SLANEY), VR_MEL_SLANEY), f, 1e-9);
    }

    /* the default HTK bank and a Slaney one with norm, at an odd sample rate, against the
     * triangles between mel points spaced by hand */
    const struct {
        int n_freq, n_mels, rate;
        double f_min, f_max;
        vr_mel_scale scale;
        vr_mel_norm norm;
    } banks[] = {{201, 64, 16000, 0.0, 8000.0, VR_MEL_HTK, VR_MEL_NORM_NONE},
                 {257, 40, 11025, 30.0, 5512.5, VR_MEL_SLANEY, VR_MEL_NORM_SLANEY},
                 {129, 20, 22050, 300.0, 4000.0, VR_MEL_SLANEY, VR_MEL_NORM_NONE}};
    for (size_t b = 0; b < sizeof banks / sizeof banks[0]; b++) {
        int n_freq = banks[b].n_freq, n_mels = banks[b].n_mels;
        float *got = alloc_f((size_t)n_freq * n_mels), *ref = alloc_f((size_t)n_freq * n_mels);
        TU_OK(vr_mel_fbank(n_freq, banks[b].f_min, banks[b].f_max, n_mels, banks[b].rate,
                           banks[b].norm, banks[b].scale, got));
        double m_lo = vr_hz_to_mel(banks[b].f_min, banks[b].scale);
        double m_step = (vr_hz_to_mel(banks[b].f_max, banks[b].scale) - m_lo) / (n_mels + 1);
        double bin_hz = (double)(banks[b].rate / 2) / (n_freq - 1); /* integer Nyquist, as torchaudio */
        for (int m = 0; m < n_mels; m++) {
            double lo = vr_mel_to_hz(m_lo + m * m_step, banks[b].scale);
            double mid = vr_mel_to_hz(m_lo + (m + 1) * m_step, banks[b].scale);
            double hi = vr_mel_to_hz(m_lo + (m + 2) * m_step, banks[b].scale);
            double gain = banks[b].norm == VR_MEL_NORM_SLANEY ? 2.0 / (hi - lo) : 1.0;
            for (int k = 0; k < n_freq; k++)
                ref[(size_t)m * n_freq + k] = (float)(gain * triangle(k * bin_hz, lo, mid, hi));
        }
        char what[64];
        snprintf(what, sizeof what, "mel bank %zu", b);
        CU_ASSERT(tu_close(got, ref, (size_t)n_freq * n_mels, 1e-6, 1e-5, what));
        free(got);
        free(ref);
    }

    /* Slaney's norm gives every triangle unit area in Hz: on a fine grid of bins the sum of
     * weight * bin width is 1 to within the grid's quadrature error */
    enum { N_FREQ = 8193, N_MELS = 32 };
    float *fb = alloc_f((size_t)N_FREQ * N_MELS);
    TU_OK(vr_mel_fbank(N_FREQ, 100.0, 8000.0, N_MELS, 16000, VR_MEL_NORM_SLANEY, VR_MEL_HTK, fb));
    for (int m = 0; m < N_MELS; m++) {
        double area = 0.0;
        for (int k = 0; k < N_FREQ; k++) area += fb[(size_t)m * N_FREQ + k] * (8000.0 / (N_FREQ - 1));
        CU_ASSERT_DOUBLE_EQUAL(area, 1.0, 2e-3);
    }
    free(fb);
}

/* ---------------------------------------------------------------- threads and shapes */

/* The batch over 1 and 3 threads, the single-clip calls, and four threads calling one object
 * at once all give the same bits; one second of the default recipe is 64 x 101 in [0, 1]. */
static void test_threads_and_shapes(void)
{
    enum { B = 5, L = 16000, ROWS = 64, FRAMES = 101 };
    vr_spectrogram_config c;
    vr_spectrogram_default(&c);
    vr_spectrogram *sp = NULL;
    TU_OK(vr_spectrogram_create(&c, &sp));
    CU_ASSERT_EQUAL(vr_spectrogram_frames(sp, L), FRAMES);
    CU_ASSERT_EQUAL(vr_spectrogram_freq_bins(sp), 201);
    float *x = alloc_f((size_t)B * L);
    vr_rng r;
    vr_rng_seed(&r, 3);
    tu_fill_normal(x, (size_t)B * L, &r, 0.1f);
    size_t per = (size_t)ROWS * FRAMES;
    float *one = alloc_f(B * per), *three = alloc_f(B * per), *single = alloc_f(B * per),
          *conc = alloc_f(B * per);
    TU_OK(vr_spectrogram_mel_batch(sp, x, B, L, 1, one));
    TU_OK(vr_spectrogram_mel_batch(sp, x, B, L, 3, three));
    for (int b = 0; b < B; b++) TU_OK(vr_spectrogram_mel(sp, x + (size_t)b * L, L, single + b * per));
    int fails = 0;
#pragma omp parallel for num_threads(4) reduction(+ : fails)
    for (int b = 0; b < B; b++)
        fails += vr_spectrogram_mel(sp, x + (size_t)b * L, L, conc + b * per) != VR_OK;
    CU_ASSERT_EQUAL(fails, 0);
    CU_ASSERT(memcmp(one, three, B * per * sizeof(float)) == 0);
    CU_ASSERT(memcmp(one, single, B * per * sizeof(float)) == 0);
    CU_ASSERT(memcmp(one, conc, B * per * sizeof(float)) == 0);
    /* scaled to [0, 1] per clip, reaching 0 and nearly 1 */
    for (int b = 0; b < B; b++) {
        float lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < per; i++) {
            lo = fminf(lo, one[b * per + i]);
            hi = fmaxf(hi, one[b * per + i]);
        }
        CU_ASSERT_EQUAL(lo, 0.0f);
        CU_ASSERT(hi > 0.9999f && hi <= 1.0f);
    }
    /* a silent clip has a constant log-mel, which the 1e-6 guard scales to 0, not NaN */
    for (size_t i = 0; i < L; i++) x[i] = 0.0f;
    TU_OK(vr_spectrogram_mel(sp, x, L, one));
    size_t nonzero = 0;
    for (size_t i = 0; i < per; i++) nonzero += one[i] != 0.0f;
    CU_ASSERT_EQUAL(nonzero, 0);
    CU_ASSERT_EQUAL(vr_spectrogram_mel_batch(sp, x, 0, L, 2, one), VR_ERR_SHAPE);
    free(x);
    free(one);
    free(three);
    free(single);
    free(conc);
    vr_spectrogram_destroy(sp);
}

/* Objects made and destroyed from several threads at once (FFTW's planner is shared). */
static void test_concurrent_create(void)
{
    int fails = 0;
#pragma omp parallel for num_threads(4) reduction(+ : fails)
    for (int i = 0; i < 16; i++) {
        vr_spectrogram_config c;
        vr_spectrogram_default(&c);
        c.n_fft = 256 + 30 * i;
        c.win_length = c.n_fft;
        vr_spectrogram *sp = NULL;
        if (vr_spectrogram_create(&c, &sp) != VR_OK) {
            fails++;
            continue;
        }
        float x[2000], out[64 * 16];
        for (int j = 0; j < 2000; j++) x[j] = sinf(0.05f * j * (1 + i));
        fails += vr_spectrogram_mel(sp, x, 2000, out) != VR_OK;
        vr_spectrogram_destroy(sp);
    }
    CU_ASSERT_EQUAL(fails, 0);
}

/* ---------------------------------------------------------------- configuration */

static void expect_bad(const vr_spectrogram_config *c, const char *field)
{
    vr_clear_error();
    CU_ASSERT_EQUAL(vr_spectrogram_check(c), VR_ERR_ARG);
    if (!strstr(vr_last_error(), field))
        fprintf(stderr, "\n  message \"%s\" does not name %s\n", vr_last_error(), field);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), field));
    vr_spectrogram *sp = (vr_spectrogram *)&sp;
    CU_ASSERT_EQUAL(vr_spectrogram_create(c, &sp), VR_ERR_ARG);
    CU_ASSERT_PTR_NULL(sp);
}

static void test_bad_config(void)
{
    vr_spectrogram_config c0, c;
    vr_spectrogram_default(&c0);
    TU_OK(vr_spectrogram_check(&c0));
    c = c0, c.hop_samples = 0;
    expect_bad(&c, "hop_samples");
    c = c0, c.win_length = 401;
    expect_bad(&c, "win_length");
    c = c0, c.f_max_hz = 8000.5f;
    expect_bad(&c, "f_max_hz");
    c = c0, c.n_mels = 0;
    expect_bad(&c, "n_mels");
    c = c0, c.n_fft = 1;
    expect_bad(&c, "n_fft");
    c = c0, c.power = 3;
    expect_bad(&c, "power");
    c = c0, c.f_min_hz = 8000.0f;
    expect_bad(&c, "f_min_hz");
    c = c0, c.log_offset = 0.0f;
    expect_bad(&c, "log_offset");
    c = c0, c.log = VR_SPEC_LOG_DB, c.top_db = -1.0f;
    expect_bad(&c, "top_db");
    c = c0, c.sample_rate_hz = 0;
    expect_bad(&c, "sample_rate_hz");
    /* f_max at exactly half the sample rate is allowed */
    c = c0, c.f_max_hz = 8000.0f;
    TU_OK(vr_spectrogram_check(&c));
    CU_ASSERT_EQUAL(vr_mel_fbank(201, 0.0, 9000.0, 64, 16000, VR_MEL_NORM_NONE, VR_MEL_HTK,
                                 (float[1]){0}),
                    VR_ERR_ARG);
}

int main(void)
{
    const tu_test tests[] = {
        {"torchaudio parity on speech", test_torchaudio_parity},
        {"direct DFT", test_naive_dft},
        {"reflection padding", test_reflect_padding},
        {"mel filterbank", test_mel_fbank},
        {"threads and shapes", test_threads_and_shapes},
        {"concurrent create", test_concurrent_create},
        {"bad configurations", test_bad_config},
        {NULL, NULL},
    };
    return tu_main("spectrogram", tests);
}
