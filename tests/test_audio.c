/* The audio front end: reading (WAV 8/16/24-bit and float, FLAC, OGG/Vorbis, AIFF; mono,
 * stereo, 6 channels; 8, 16, 22.05, 44.1, 48 and 96 kHz) against the analytic sine it was made
 * from, the resampler's amplitude and frequency, crop and pad, memory input, reader reuse, PCM
 * in memory against the same samples read from a file; every
 * bad input named (empty, no frames, text, random bytes, truncated, missing); the folder and
 * CSV data sets (labels, counts, selections, skipped files, manifest errors); the views
 * (determinism over threads, the drawn crop and gain, noise power against the drawn SNR, masks
 * against the drawn bands). Audio files are written at test time with libsndfile into a
 * temporary folder removed at the end. */
#include <ftw.h>
#include <sndfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "vicreg/audio.h"
#include "vicreg/audio_dataset.h"
#include "vicreg/audio_views.h"

#define RATE 16000
#define TONE_HZ 1000.0
#define SIDE_HZ 3000.0
/* Output samples left out at each end of a comparison (50 ms at 16 kHz): the resampler's
 * filter rings where the tone starts and stops abruptly. */
#define EDGE 800

static char dir[64];

static const char *tmp(const char *name)
{
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* The signal of every test file: channel c of `channels` carries amp*sin(2 pi 1 kHz t) plus
 * 0.1*(c - (channels-1)/2)*sin(2 pi 3 kHz t). The 3 kHz parts sum to zero over the channels,
 * so only their mean gives back the pure 1 kHz tone. */
static double channel_value(double amp, int64_t k, int rate, int c, int channels)
{
    double t = (double)k / rate;
    return amp * sin(2 * M_PI * TONE_HZ * t) + 0.1 * (c - (channels - 1) / 2.0) * sin(2 * M_PI * SIDE_HZ * t);
}

/* The mono tone at RATE, sample m. */
static double expected(double amp, int64_t m) { return amp * sin(2 * M_PI * TONE_HZ * (double)m / RATE); }

/* Writes `frames` frames of the test signal. bits 8/16/24: the samples are quantised here and
 * handed to libsndfile as exact 32-bit integers, so what the file holds is known exactly (a
 * float write would also rescale by 127/128 at 8 bits); bits 0: floats as they are. */
static void write_audio(const char *path, int format, int rate, int channels, int64_t frames,
                        double amp, int bits)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f) fprintf(stderr, "\n  cannot write %s: %s\n", path, sf_strerror(NULL));
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    double best = 0.0; /* Vorbis at its highest quality, so its tolerance can be tight */
    if ((format & SF_FORMAT_SUBMASK) == SF_FORMAT_VORBIS)
        CU_ASSERT_EQUAL(sf_command(f, SFC_SET_COMPRESSION_LEVEL, &best, sizeof best), SF_TRUE);
    for (int64_t k = 0; k < frames; k++) {
        float fv[8];
        int iv[8];
        for (int c = 0; c < channels; c++) {
            double v = channel_value(amp, k, rate, c, channels);
            fv[c] = (float)v;
            if (bits) {
                double q = round(v * (1 << (bits - 1)));
                iv[c] = (int)q * (1 << (32 - bits));
            }
        }
        sf_count_t w = bits ? sf_writef_int(f, iv, 1) : sf_writef_float(f, fv, 1);
        CU_ASSERT_EQUAL_FATAL(w, 1);
    }
    sf_close(f);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (len) CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*len + 1);
    CU_ASSERT_EQUAL_FATAL(fread(p, 1, *len, f), *len);
    fclose(f);
    return p;
}

static void truncate_half(const char *path)
{
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL_FATAL(truncate(path, st.st_size / 2), 0);
}

/* got (n) against the tone of amplitude amp over [EDGE, n - EDGE). */
static int matches_tone(const float *got, int64_t n, double amp, double atol, const char *what)
{
    CU_ASSERT_FATAL(n > 2 * EDGE);
    int64_t m = n - 2 * EDGE;
    float *ref = malloc((size_t)m * sizeof(float));
    for (int64_t i = 0; i < m; i++) ref[i] = (float)expected(amp, EDGE + i);
    int ok = tu_close(got + EDGE, ref, (size_t)m, atol, 0.0, what);
    free(ref);
    return ok;
}

/* 1 when the last message names `path` and contains `words`. */
static int says(const char *path, const char *words)
{
    const char *msg = vr_last_error();
    int ok = strstr(msg, path) && strstr(msg, words);
    if (!ok) fprintf(stderr, "\n  message '%s' should name %s and say '%s'\n", msg, path, words);
    return ok;
}

/* One file of each kind. atol: half a quantisation step of the format (the mean of quantised
 * channels is no further from the true mean) plus 1e-5 for the resampler (20-bit precision;
 * measured at most 3.6e-7 here); Vorbis is lossy even at its best quality: 2e-2 (measured
 * 8.7e-3). */
typedef struct format_case {
    const char *name;
    int format, rate, channels, bits;
    double atol;
} format_case;

static const format_case FORMATS[] = {
    {"u8_8k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 8000, 1, 8, 0.5 / 128 + 1e-5},
    {"s16_16k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 16, 0.5 / 32768 + 1e-5},
    {"s24_44k_stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 44100, 2, 24, 0.5 / 8388608 + 1e-5},
    {"f32_96k.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 1, 0, 1e-5},
    {"f32_96k_stereo.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 2, 0, 1e-5},
    {"s16_44k_6ch.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 6, 16, 0.5 / 32768 + 1e-5},
    {"s24_16k.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 16000, 1, 24, 0.5 / 8388608 + 1e-5},
    {"vorbis_48k_stereo.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 48000, 2, 0, 2e-2},
    {"s16_22k.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 22050, 1, 16, 0.5 / 32768 + 1e-5},
    {"f32_44k.aiff", SF_FORMAT_AIFF | SF_FORMAT_FLOAT, 44100, 1, 0, 1e-5},
};
#define NFORMATS (int)(sizeof FORMATS / sizeof FORMATS[0])
#define TONE_AMP 0.5
#define TONE_SECONDS 0.5

static void test_formats(void)
{
    vr_audio_reader *r;
    TU_OK(vr_audio_reader_create(RATE, &r));
    for (int i = 0; i < NFORMATS; i++) {
        const format_case *fc = &FORMATS[i];
        const char *path = tmp(fc->name);
        int64_t frames = (int64_t)(TONE_SECONDS * fc->rate);
        write_audio(path, fc->format, fc->rate, fc->channels, frames, TONE_AMP, fc->bits);
        const float *x;
        int64_t n;
        vr_audio_info info;
        TU_OK(vr_audio_decode(r, path, &x, &n, &info));
        CU_ASSERT_EQUAL(info.channels, fc->channels);
        CU_ASSERT_EQUAL(info.rate_hz, fc->rate);
        CU_ASSERT_EQUAL(info.frames, frames);
        CU_ASSERT_PTR_NOT_NULL(info.container);
        /* the resampled length is the duration at the new rate, to a sample */
        CU_ASSERT(llabs(n - (int64_t)(TONE_SECONDS * RATE)) <= 1);
        CU_ASSERT(matches_tone(x, n, TONE_AMP, fc->atol, fc->name));
    }
    vr_audio_reader_free(r);
}

/* A float 1 kHz tone at each source rate, resampled to 16 kHz: within 1e-5 of the analytic
 * tone away from the edges, sample by sample, so amplitude, frequency and phase all hold
 * (measured at most 3.6e-7); and, computed another way, its amplitude from the projection on
 * sin/cos at 1 kHz within 1e-5 of 0.5 with a cos (phase) part below 1e-5. */
static void test_resampler(void)
{
    static const int rates[] = {8000, 22050, 44100, 48000, 96000};
    vr_audio_reader *r;
    TU_OK(vr_audio_reader_create(RATE, &r));
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "tone_%d.wav", rates[i]);
        const char *path = tmp(name);
        write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, rates[i], 1, rates[i], TONE_AMP, 0);
        const float *x;
        int64_t n;
        TU_OK(vr_audio_decode(r, path, &x, &n, NULL));
        CU_ASSERT(llabs(n - RATE) <= 1);
        CU_ASSERT(matches_tone(x, n, TONE_AMP, 1e-5, name));
        /* over a whole number of periods (16 samples each) inside the edges */
        double s = 0, c = 0;
        int64_t m0 = EDGE, m1 = EDGE + 16 * 800;
        for (int64_t m = m0; m < m1; m++) {
            s += x[m] * sin(2 * M_PI * TONE_HZ * m / RATE);
            c += x[m] * cos(2 * M_PI * TONE_HZ * m / RATE);
        }
        double amp = 2 * sqrt(s * s + c * c) / (double)(m1 - m0);
        CU_ASSERT(fabs(amp - TONE_AMP) < 1e-5);
        CU_ASSERT(fabs(2 * c / (double)(m1 - m0)) < 1e-5); /* no phase shift: the cos part is 0 */
    }
    vr_audio_reader_free(r);
}

/* Crop to the first samples, pad with zeros, and the same results from memory. */
static void test_crop_pad_memory(void)
{
    vr_audio_reader *r;
    TU_OK(vr_audio_reader_create(RATE, &r));
    const char *path = tmp("crop.flac");
    write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2, 22050, TONE_AMP, 16);
    const float *whole;
    int64_t n;
    TU_OK(vr_audio_decode(r, path, &whole, &n, NULL));
    float *keep = malloc((size_t)n * sizeof(float));
    memcpy(keep, whole, (size_t)n * sizeof(float));

    /* cropping stops decoding early; what it returns is exactly the start of the whole signal */
    int64_t len = 3000, valid = -1;
    float *out = malloc((size_t)(2 * n) * sizeof(float));
    TU_OK(vr_audio_read(r, path, len, out, &valid, NULL));
    CU_ASSERT_EQUAL(valid, len);
    CU_ASSERT(tu_close(out, keep, (size_t)len, 0.0, 0.0, "crop"));

    /* padding: the signal, then exact zeros */
    for (int64_t i = 0; i < 2 * n; i++) out[i] = 7.0f;
    TU_OK(vr_audio_read(r, path, 2 * n, out, &valid, NULL));
    CU_ASSERT_EQUAL(valid, n);
    CU_ASSERT(tu_close(out, keep, (size_t)n, 0.0, 0.0, "pad: signal"));
    int zeros = 1;
    for (int64_t i = n; i < 2 * n; i++) zeros &= out[i] == 0.0f;
    CU_ASSERT(zeros);

    /* the same bytes through memory give the same samples */
    size_t size;
    void *bytes = slurp(path, &size);
    const float *mem;
    int64_t mn;
    TU_OK(vr_audio_decode_memory(r, bytes, size, "crop.flac", &mem, &mn, NULL));
    CU_ASSERT_EQUAL(mn, n);
    CU_ASSERT(tu_close(mem, keep, (size_t)n, 0.0, 0.0, "decode from memory"));
    float *mout = malloc((size_t)(2 * n) * sizeof(float));
    TU_OK(vr_audio_read_memory(r, bytes, size, "crop.flac", 2 * n, mout, &valid, NULL));
    CU_ASSERT_EQUAL(valid, n);
    CU_ASSERT(tu_close(mout, out, (size_t)(2 * n), 0.0, 0.0, "read from memory"));
    free(bytes);
    free(mout);
    free(out);
    free(keep);
    vr_audio_reader_free(r);
}

/* A fresh reader (no whole-signal buffer yet) decoding a source whose first resampler call
 * yields no samples: 3 frames at 1 Hz, upsampled 16000-fold. The reader handed those 0 samples
 * on as a copy from a NULL buffer, undefined behaviour that -fsanitize=undefined stops at
 * (found by fuzzing; tests/fuzz's build runs this suite so instrumented). From memory and from
 * the file, each on a fresh reader, the same samples, 3 s of them at 16 kHz. */
static void test_first_chunk_empty(void)
{
    const char *path = tmp("three_frames_1hz.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 1, 3, TONE_AMP, 16);
    size_t size;
    void *bytes = slurp(path, &size);
    vr_audio_reader *a, *b;
    TU_OK(vr_audio_reader_create(RATE, &a));
    TU_OK(vr_audio_reader_create(RATE, &b));
    const float *x, *y;
    int64_t nx = -1, ny = -1;
    TU_OK(vr_audio_decode_memory(a, bytes, size, "three_frames_1hz.wav", &x, &nx, NULL));
    TU_OK(vr_audio_decode(b, path, &y, &ny, NULL));
    CU_ASSERT_EQUAL(nx, 3 * RATE);
    CU_ASSERT_EQUAL(ny, nx);
    if (nx == ny && nx > 0) CU_ASSERT(tu_close(x, y, (size_t)nx, 0.0, 0.0, "1 Hz: memory against file"));
    free(bytes);
    vr_audio_reader_free(a);
    vr_audio_reader_free(b);
}

/* A reader reused across files and rates gives what a fresh reader gives. */
static void test_reader_reuse(void)
{
    const char *a = tmp("reuse_a.wav"), *b = tmp("reuse_b.wav"), *c = tmp("reuse_c.wav");
    write_audio(a, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 1, 30000, 0.3, 0);
    write_audio(b, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 1, 20000, 0.6, 0);
    write_audio(c, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 2, 20000, 0.2, 0);
    int64_t len = 12000, valid;
    float *fresh = malloc((size_t)len * sizeof(float)), *used = malloc((size_t)len * sizeof(float));
    vr_audio_reader *r;
    TU_OK(vr_audio_reader_create(RATE, &r));
    TU_OK(vr_audio_read(r, b, len, fresh, &valid, NULL));
    vr_audio_reader_free(r);

    TU_OK(vr_audio_reader_create(RATE, &r));
    const char *order[] = {a, b, c, b};
    for (int k = 0; k < 4; k++) {
        TU_OK(vr_audio_read(r, order[k], len, used, &valid, NULL));
        if (order[k] == b) CU_ASSERT(tu_close(used, fresh, (size_t)len, 0.0, 0.0, "reused reader"));
    }
    vr_audio_reader_free(r);
    free(fresh);
    free(used);
}

/* PCM in memory: mixed and resampled exactly as the same floats read from a float WAV file
 * (atol 0, rtol 0), which the file tests above check against the analytic tone; the converted
 * 44.1 kHz stereo signal is itself the 1 kHz tone within 1e-5 away from the edges. Three
 * seconds of stereo run through several chunks; a signal at the reader's rate passes through
 * mixed only. Bad arguments are named. */
static void test_convert_pcm(void)
{
    static const struct { int rate, channels; int64_t frames; } cases[] = {
        {44100, 2, 3 * 44100}, {22050, 3, 9001}, {RATE, 2, 5000}, {8000, 1, 77},
    };
    vr_audio_reader *file_reader, *r;
    TU_OK(vr_audio_reader_create(RATE, &file_reader));
    TU_OK(vr_audio_reader_create(RATE, &r));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rate = cases[i].rate, ch = cases[i].channels;
        int64_t frames = cases[i].frames;
        float *pcm = malloc((size_t)(frames * ch) * sizeof(float));
        for (int64_t k = 0; k < frames; k++)
            for (int c = 0; c < ch; c++) pcm[k * ch + c] = (float)channel_value(TONE_AMP, k, rate, c, ch);
        char name[64];
        snprintf(name, sizeof name, "convert_%d_%d.wav", rate, ch);
        write_audio(tmp(name), SF_FORMAT_WAV | SF_FORMAT_FLOAT, rate, ch, frames, TONE_AMP, 0);
        const float *want, *got;
        int64_t nwant, ngot;
        TU_OK(vr_audio_decode(file_reader, tmp(name), &want, &nwant, NULL));
        TU_OK(vr_audio_convert(r, pcm, frames, ch, rate, name, &got, &ngot));
        CU_ASSERT_EQUAL(ngot, nwant);
        if (ngot == nwant) CU_ASSERT(tu_close(got, want, (size_t)ngot, 0.0, 0.0, name));
        if (rate == 44100) CU_ASSERT(matches_tone(got, ngot, TONE_AMP, 1e-5, name));
        free(pcm);
    }
    const float *x;
    int64_t n;
    float one = 0.5f;
    CU_ASSERT_EQUAL(vr_audio_convert(r, &one, 0, 1, RATE, "clip-20", &x, &n), VR_ERR_ARG);
    CU_ASSERT(says("clip-20", "0 frames"));
    CU_ASSERT_EQUAL(vr_audio_convert(r, &one, 1, 0, RATE, "clip-21", &x, &n), VR_ERR_ARG);
    CU_ASSERT(says("clip-21", "0 channels"));
    CU_ASSERT_EQUAL(vr_audio_convert(r, NULL, 1, 1, RATE, "clip-22", &x, &n), VR_ERR_ARG);
    CU_ASSERT(says("clip-22", "without samples"));
    CU_ASSERT_EQUAL(vr_audio_convert(r, &one, 1, 1, 0, "clip-23", &x, &n), VR_ERR_ARG);
    CU_ASSERT(says("clip-23", "rate 0 Hz"));
    vr_audio_reader_free(r);
    vr_audio_reader_free(file_reader);
}

/* Each bad input fails with its status and a message naming the file; a silent clip and a
 * truncated PCM file are read. */
static void test_bad_inputs(void)
{
    vr_audio_reader *r;
    TU_OK(vr_audio_reader_create(RATE, &r));
    int64_t len = 8000, valid;
    float *out = malloc((size_t)len * sizeof(float));

    const char *empty = tmp("empty.wav");
    write_bytes(empty, "", 0);
    CU_ASSERT_EQUAL(vr_audio_read(r, empty, len, out, &valid, NULL), VR_ERR_FORMAT);
    CU_ASSERT(says(empty, "empty file"));

    const char *zero = tmp("zero_frames.wav");
    write_audio(zero, SF_FORMAT_WAV | SF_FORMAT_PCM_16, RATE, 1, 0, TONE_AMP, 16);
    CU_ASSERT_EQUAL(vr_audio_read(r, zero, len, out, &valid, NULL), VR_ERR_FORMAT);
    CU_ASSERT(says(zero, "no audio frames"));

    const char *text = tmp("text.wav");
    write_text(text, "this is not audio, whatever its name says\n");
    CU_ASSERT_EQUAL(vr_audio_read(r, text, len, out, &valid, NULL), VR_ERR_UNSUPPORTED);
    CU_ASSERT(says(text, "not an audio format"));

    const char *noise = tmp("random_bytes.wav");
    unsigned char junk[3000];
    vr_rng g;
    vr_rng_seed(&g, 7);
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)vr_rng_u64(&g);
    write_bytes(noise, junk, sizeof junk);
    vr_status s = vr_audio_read(r, noise, len, out, &valid, NULL);
    CU_ASSERT(s == VR_ERR_UNSUPPORTED || s == VR_ERR_FORMAT);
    CU_ASSERT(says(noise, "random_bytes.wav"));

    const char *missing = tmp("no_such_file.wav");
    CU_ASSERT_EQUAL(vr_audio_read(r, missing, len, out, &valid, NULL), VR_ERR_NOT_FOUND);
    CU_ASSERT(says(missing, "No such file"));

    CU_ASSERT_EQUAL(vr_audio_read(r, dir, len, out, &valid, NULL), VR_ERR_IO);
    CU_ASSERT(says(dir, "directory"));

    /* a FLAC stream cut in half cannot be decoded to its end */
    const char *tflac = tmp("truncated.flac");
    write_audio(tflac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, RATE, 1, 16000, TONE_AMP, 16);
    truncate_half(tflac);
    CU_ASSERT_EQUAL(vr_audio_read(r, tflac, len, out, &valid, NULL), VR_ERR_FORMAT);
    CU_ASSERT(says(tflac, "decoding failed"));

    /* a WAV whose header promises 8000 frames but holds fewer is read up to its end */
    const char *twav = tmp("truncated.wav");
    write_audio(twav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, RATE, 1, 8000, TONE_AMP, 16);
    truncate_half(twav);
    TU_OK(vr_audio_read(r, twav, len, out, &valid, NULL));
    CU_ASSERT_EQUAL(valid, ((44 + 2 * 8000) / 2 - 44) / 2); /* what is left after the header */
    CU_ASSERT(matches_tone(out, valid, TONE_AMP, 0.5 / 32768 + 1e-6, "truncated wav"));

    const char *silent = tmp("silent.wav");
    write_audio(silent, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 2, 22050, 0.0, 0);
    TU_OK(vr_audio_read(r, silent, len, out, &valid, NULL));
    CU_ASSERT_EQUAL(valid, len);
    int all_zero = 1;
    for (int64_t i = 0; i < len; i++) all_zero &= out[i] == 0.0f;
    CU_ASSERT(all_zero);

    /* from memory: the name given stands for the file */
    CU_ASSERT_EQUAL(vr_audio_read_memory(r, "RIFF....WAVEjunk", 16, "clip-17", len, out, &valid, NULL),
                    VR_ERR_FORMAT);
    CU_ASSERT(says("clip-17", "malformed"));
    CU_ASSERT_EQUAL(vr_audio_read_memory(r, "plain words", 11, "clip-18", len, out, &valid, NULL),
                    VR_ERR_UNSUPPORTED);
    CU_ASSERT(says("clip-18", "not an audio format"));
    CU_ASSERT_EQUAL(vr_audio_read_memory(r, "", 0, "clip-19", len, out, &valid, NULL), VR_ERR_FORMAT);
    CU_ASSERT(says("clip-19", "empty"));

    /* a float WAV holding a NaN (frame 5000 of the right channel) or an Inf: refused by name
     * and position; in PCM handed to the converter too */
    const char *nan_wav = tmp("nan.wav");
    float stereo[2 * 6000];
    for (int i = 0; i < 2 * 6000; i++) stereo[i] = 0.25f * sinf(0.01f * (float)i);
    stereo[2 * 5000 + 1] = NAN;
    SF_INFO info = {.samplerate = RATE, .channels = 2, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    SNDFILE *f = sf_open(nan_wav, SFM_WRITE, &info);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(sf_writef_float(f, stereo, 6000), 6000);
    sf_close(f);
    CU_ASSERT_EQUAL(vr_audio_read(r, nan_wav, len, out, &valid, NULL), VR_ERR_FORMAT);
    CU_ASSERT(says(nan_wav, "sample 5000 of channel 2 is not finite"));
    stereo[2 * 5000 + 1] = 0.0f;
    stereo[2 * 10] = -INFINITY;
    const float *conv;
    int64_t nconv;
    CU_ASSERT_EQUAL(vr_audio_convert(r, stereo, 6000, 2, RATE, "pcm-3", &conv, &nconv), VR_ERR_FORMAT);
    CU_ASSERT(says("pcm-3", "sample 10 of channel 1 is not finite"));
    stereo[2 * 10] = 0.0f;
    TU_OK(vr_audio_convert(r, stereo, 6000, 2, RATE, "pcm-3", &conv, &nconv));

    /* arguments */
    CU_ASSERT_EQUAL(vr_audio_read(r, silent, 0, out, &valid, NULL), VR_ERR_ARG);
    vr_audio_reader *bad;
    CU_ASSERT_EQUAL(vr_audio_reader_create(0, &bad), VR_ERR_ARG);
    CU_ASSERT_PTR_NULL(bad);
    free(out);
    vr_audio_reader_free(r);
}

/* ---- data sets ---- */

#define CLIP 8000 /* 0.5 s at 16 kHz: the clip length of the data set tests */

/* A file of the data set tests and the clip it must give (amplitude 0: silence), or the reason
 * it must be skipped. */
typedef struct set_file {
    const char *path; /* under the temporary folder */
    const char *kind; /* "wav", "flac", "ogg", "short", "text", "zero", "random", "none" */
    double amp;
} set_file;

static void make_file(const set_file *f)
{
    const char *p = tmp(f->path);
    if (!strcmp(f->kind, "wav")) write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, RATE, 1, CLIP, f->amp, 16);
    else if (!strcmp(f->kind, "flac")) write_audio(p, SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 44100, 2, 22050, f->amp, 24);
    else if (!strcmp(f->kind, "ogg")) write_audio(p, SF_FORMAT_OGG | SF_FORMAT_VORBIS, RATE, 1, CLIP, f->amp, 0);
    else if (!strcmp(f->kind, "short")) write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 1, 24000, f->amp, 0);
    else if (!strcmp(f->kind, "text")) write_text(p, "not audio\n");
    else if (!strcmp(f->kind, "zero")) write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, RATE, 1, 0, 0, 16);
    else if (!strcmp(f->kind, "random")) {
        unsigned char junk[1000];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 2654435761u >> 13);
        write_bytes(p, junk, sizeof junk);
    }
}

/* Row `row` of ds against the clip file f must give: its tone (Vorbis within 2e-2, the rest
 * within half a 16-bit step + 1e-5), a short clip's 0.25 s centred between zeros, all zeros
 * for silence. */
static void check_clip(const vr_audio_dataset *ds, int row, const set_file *f)
{
    const float *x = ds->clips + (size_t)row * CLIP;
    int64_t n = !strcmp(f->kind, "short") ? CLIP / 2 : CLIP, at = (CLIP - n) / 2;
    double atol = !strcmp(f->kind, "ogg") ? 2e-2 : 0.5 / 32768 + 1e-5;
    if (f->amp == 0.0) {
        for (int64_t i = 0; i < CLIP; i++) CU_ASSERT_EQUAL_FATAL(x[i], 0.0f);
        return;
    }
    CU_ASSERT(matches_tone(x + at, n, f->amp, atol, f->path));
    for (int64_t i = 0; i < at; i++) CU_ASSERT_EQUAL_FATAL(x[i], 0.0f);
    for (int64_t i = at + n; i < CLIP; i++) CU_ASSERT_EQUAL_FATAL(x[i], 0.0f);
}

static int ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static const set_file FOLDER[] = {
    /* classes sorted bytewise: bird 0, cat 1, dog 2; files sorted within each */
    {"set/dog/d1.ogg", "ogg", 0.5},   {"set/dog/d2.wav", "zero", 0},     {"set/dog/d3.wav", "random", 0},
    {"set/dog/d4.wav", "wav", 0.0},   {"set/cat/c1.wav", "wav", 0.3},    {"set/cat/c2.wav", "text", 0},
    {"set/cat/c3.wav", "short", 0.4}, {"set/bird/b1.wav", "wav", 0.1},   {"set/bird/b2.flac", "flac", 0.2},
    {"set/cat/.hidden.wav", "wav", 0.9},
};

static void test_folder_dataset(void)
{
    CU_ASSERT_EQUAL_FATAL(mkdir(tmp("set"), 0700), 0);
    mkdir(tmp("set/dog"), 0700);
    mkdir(tmp("set/cat"), 0700);
    mkdir(tmp("set/bird"), 0700);
    for (size_t i = 0; i < sizeof FOLDER / sizeof FOLDER[0]; i++) make_file(&FOLDER[i]);
    write_text(tmp("set/README"), "a file beside the class folders is not a class\n");

    vr_audio_list list;
    TU_OK(vr_audio_list_folder(tmp("set"), &list));
    CU_ASSERT_EQUAL(list.nclasses, 3);
    CU_ASSERT_EQUAL(list.n, 9);
    CU_ASSERT_STRING_EQUAL(list.class_names[0], "bird");
    CU_ASSERT_STRING_EQUAL(list.class_names[2], "dog");

    vr_audio_load_config c;
    vr_audio_load_default(&c);
    c.clip_samples = CLIP;
    c.threads = 1;
    vr_audio_dataset ds;
    TU_OK(vr_audio_dataset_load(&list, &c, &ds));
    static const int want_file[] = {7, 8, 4, 6, 0, 3}, want_label[] = {0, 0, 1, 1, 2, 2};
    CU_ASSERT_EQUAL_FATAL(ds.n, 6);
    CU_ASSERT_EQUAL(ds.nclasses, 3);
    for (int i = 0; i < 6; i++) {
        const set_file *f = &FOLDER[want_file[i]];
        CU_ASSERT(ends_with(ds.paths[i], f->path));
        CU_ASSERT_EQUAL(ds.labels[i], want_label[i]);
        check_clip(&ds, i, f);
    }
    /* skipped in list order: cat/c2 (text), dog/d2 (no frames), dog/d3 (random bytes) */
    CU_ASSERT_EQUAL_FATAL(ds.nskipped, 3);
    CU_ASSERT(ends_with(ds.skipped[0].path, "cat/c2.wav"));
    CU_ASSERT(strstr(ds.skipped[0].reason, "c2.wav") && strstr(ds.skipped[0].reason, "not an audio format"));
    CU_ASSERT(ends_with(ds.skipped[1].path, "dog/d2.wav"));
    CU_ASSERT(strstr(ds.skipped[1].reason, "no audio frames") != NULL);
    CU_ASSERT(ends_with(ds.skipped[2].path, "dog/d3.wav"));

    /* any thread count gives the same set */
    vr_audio_dataset ds3;
    c.threads = 3;
    TU_OK(vr_audio_dataset_load(&list, &c, &ds3));
    CU_ASSERT_EQUAL_FATAL(ds3.n, ds.n);
    CU_ASSERT_EQUAL(memcmp(ds3.clips, ds.clips, (size_t)ds.n * CLIP * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(ds3.labels, ds.labels, (size_t)ds.n * sizeof(int)), 0);
    CU_ASSERT_EQUAL(ds3.nskipped, 3);
    vr_audio_dataset_free(&ds3);
    vr_audio_dataset_free(&ds);
    vr_audio_list_free(&list);

    CU_ASSERT_EQUAL(vr_audio_list_folder(tmp("set/bird"), &list), VR_ERR_NOT_FOUND);
    CU_ASSERT(says("set/bird", "no class folders"));
    CU_ASSERT_EQUAL(vr_audio_list_folder(tmp("nowhere"), &list), VR_ERR_NOT_FOUND);
}

static const set_file ESC[] = {
    {"esc/audio/1-a.wav", "wav", 0.1},  {"esc/audio/1-b.flac", "flac", 0.2}, {"esc/audio/2-a.wav", "short", 0.3},
    {"esc/audio/3-a.wav", "wav", 0.4},  {"esc/audio/2-b,x.wav", "wav", 0.5}, {"esc/audio/1-gone.wav", "none", 0},
};

static void test_esc50_manifest(void)
{
    mkdir(tmp("esc"), 0700);
    mkdir(tmp("esc/meta"), 0700);
    mkdir(tmp("esc/audio"), 0700);
    for (size_t i = 0; i < sizeof ESC / sizeof ESC[0]; i++) make_file(&ESC[i]);
    write_text(tmp("esc/meta/esc50.csv"),
               "filename,fold,target,category,esc10,src_file,take\n"
               "1-a.wav,1,0,dog,True,100032,A\n"
               "1-b.flac,1,3,cow,False,1,A\n"
               "2-a.wav,2,2,pig,False,2,A\n"
               "3-a.wav,3,1,rooster,False,3,A\n"
               "\"2-b,x.wav\",2,4,\"frog, \"\"green\"\"\",False,4,B\n"
               "1-gone.wav,1,0,dog,True,5,A\n");
    vr_audio_manifest_config m;
    vr_audio_manifest_esc50(&m, "1, 2", tmp("esc/audio"));
    vr_audio_list list;
    TU_OK(vr_audio_list_manifest(tmp("esc/meta/esc50.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 5);
    CU_ASSERT_EQUAL(list.nclasses, 5); /* targets 0..4 over every fold */

    vr_audio_load_config c;
    vr_audio_load_default(&c);
    c.clip_samples = CLIP;
    c.threads = 2;
    vr_audio_dataset ds;
    TU_OK(vr_audio_dataset_load(&list, &c, &ds));
    static const int want_file[] = {0, 1, 2, 4}, want_label[] = {0, 3, 2, 4};
    CU_ASSERT_EQUAL_FATAL(ds.n, 4);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT(ends_with(ds.paths[i], ESC[want_file[i]].path));
        CU_ASSERT_EQUAL(ds.labels[i], want_label[i]);
        check_clip(&ds, i, &ESC[want_file[i]]);
    }
    CU_ASSERT_EQUAL_FATAL(ds.nskipped, 1);
    CU_ASSERT(ends_with(ds.skipped[0].path, "1-gone.wav"));
    CU_ASSERT(strstr(ds.skipped[0].reason, "No such file") != NULL);
    vr_audio_dataset_free(&ds);
    vr_audio_list_free(&list);

    /* fold 3 alone, and every fold */
    vr_audio_manifest_esc50(&m, "3", tmp("esc/audio"));
    TU_OK(vr_audio_list_manifest(tmp("esc/meta/esc50.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 1);
    CU_ASSERT_EQUAL(list.labels[0], 1);
    vr_audio_list_free(&list);
    vr_audio_manifest_esc50(&m, NULL, tmp("esc/audio"));
    TU_OK(vr_audio_list_manifest(tmp("esc/meta/esc50.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 6);
    vr_audio_list_free(&list);
    vr_audio_manifest_esc50(&m, "5", tmp("esc/audio"));
    CU_ASSERT_EQUAL(vr_audio_list_manifest(tmp("esc/meta/esc50.csv"), &m, &list), VR_ERR_NOT_FOUND);
    CU_ASSERT(says("esc50.csv", "no record has fold in {5}"));
}

static void test_labels_manifest(void)
{
    mkdir(tmp("lab"), 0700);
    mkdir(tmp("lab/clips"), 0700);
    static const set_file LAB[] = {
        {"lab/clips/a.wav", "wav", 0.1}, {"lab/clips/b.wav", "wav", 0.2},
        {"lab/clips/c.wav", "wav", 0.3}, {"lab/clips/d.wav", "wav", 0.4},
    };
    for (int i = 0; i < 4; i++) make_file(&LAB[i]);
    /* a byte order mark and CRLF line ends, as spreadsheets write them */
    write_text(tmp("lab/labels.csv"),
               "\xEF\xBB\xBFpath,label,split\r\n"
               "clips/a.wav,siren,train\r\n"
               "clips/b.wav,dog,test\r\n"
               "clips/c.wav,bird,train\r\n"
               "clips/d.wav,dog,train\r\n");
    vr_audio_manifest_config m;
    vr_audio_list list;
    vr_audio_manifest_labels(&m, "train");
    TU_OK(vr_audio_list_manifest(tmp("lab/labels.csv"), &m, &list));
    CU_ASSERT_EQUAL_FATAL(list.n, 3);
    CU_ASSERT_EQUAL_FATAL(list.nclasses, 3); /* bird, dog, siren over both splits */
    CU_ASSERT_STRING_EQUAL(list.class_names[0], "bird");
    CU_ASSERT_STRING_EQUAL(list.class_names[1], "dog");
    CU_ASSERT_STRING_EQUAL(list.class_names[2], "siren");
    static const int want_label[] = {2, 0, 1};
    static const char *want_path[] = {"lab/clips/a.wav", "lab/clips/c.wav", "lab/clips/d.wav"};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(list.labels[i], want_label[i]);
        CU_ASSERT_STRING_EQUAL(list.paths[i], tmp(want_path[i])); /* relative to the manifest */
    }
    vr_audio_load_config c;
    vr_audio_load_default(&c);
    c.clip_samples = CLIP;
    vr_audio_dataset ds;
    TU_OK(vr_audio_dataset_load(&list, &c, &ds));
    CU_ASSERT_EQUAL(ds.n, 3);
    CU_ASSERT_EQUAL(ds.nskipped, 0);
    check_clip(&ds, 1, &LAB[2]);
    vr_audio_dataset_free(&ds);
    vr_audio_list_free(&list);

    vr_audio_manifest_labels(&m, "test");
    TU_OK(vr_audio_list_manifest(tmp("lab/labels.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 1);
    CU_ASSERT_EQUAL(list.labels[0], 1); /* dog, as in the train split */
    vr_audio_list_free(&list);
    vr_audio_manifest_labels(&m, "train|test");
    TU_OK(vr_audio_list_manifest(tmp("lab/labels.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 4);
    vr_audio_list_free(&list);

    /* no split column and no split asked for: every row */
    write_text(tmp("lab/nosplit.csv"), "label,path\ncat,clips/a.wav\ncat,clips/b.wav\n");
    vr_audio_manifest_labels(&m, NULL);
    TU_OK(vr_audio_list_manifest(tmp("lab/nosplit.csv"), &m, &list));
    CU_ASSERT_EQUAL(list.n, 2);
    CU_ASSERT_EQUAL(list.nclasses, 1);
    vr_audio_list_free(&list);
}

/* Malformed manifests fail with VR_ERR_FORMAT and a message naming the file and the fault. */
static void test_manifest_errors(void)
{
    mkdir(tmp("bad"), 0700);
    struct {
        const char *name, *text, *words;
    } cases[] = {
        {"bad/column.csv", "path,klass\na.wav,1\n", "no column 'label' in the header (columns: path, klass)"},
        {"bad/ragged.csv", "path,label\na.wav,1\nb.wav,2,3\n", "record 3 has 3 fields, the header 2"},
        {"bad/quote.csv", "path,label\n\"a.wav,1\n", "malformed CSV"},
        {"bad/stray.csv", "path,label\na\"b\".wav,1\n", "malformed CSV"},
        {"bad/emptypath.csv", "path,label\n,1\n", "record 2 has an empty path"},
        {"bad/emptylabel.csv", "path,label\na.wav,1\nb.wav,\n", "record 3 has an empty label"},
        {"bad/header.csv", "path,label\n", "no records"},
    };
    vr_audio_manifest_config m;
    vr_audio_manifest_labels(&m, NULL);
    vr_audio_list list;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(tmp(cases[i].name), cases[i].text);
        vr_status s = vr_audio_list_manifest(tmp(cases[i].name), &m, &list);
        CU_ASSERT(s == VR_ERR_FORMAT || s == VR_ERR_NOT_FOUND);
        CU_ASSERT(says(cases[i].name, cases[i].words));
        CU_ASSERT_EQUAL(list.n, 0);
    }
    CU_ASSERT_EQUAL(vr_audio_list_manifest(tmp("bad/none.csv"), &m, &list), VR_ERR_NOT_FOUND);
    /* a split asked of a manifest without that column */
    write_text(tmp("bad/nosplit.csv"), "path,label\na.wav,1\n");
    vr_audio_manifest_labels(&m, "train");
    CU_ASSERT_EQUAL(vr_audio_list_manifest(tmp("bad/nosplit.csv"), &m, &list), VR_ERR_FORMAT);
    CU_ASSERT(says("nosplit.csv", "no column 'split'"));

    /* every file of a list unreadable */
    vr_audio_manifest_labels(&m, NULL);
    write_text(tmp("bad/gone.csv"), "path,label\ngone1.wav,a\ngone2.wav,b\n");
    TU_OK(vr_audio_list_manifest(tmp("bad/gone.csv"), &m, &list));
    vr_audio_load_config c;
    vr_audio_load_default(&c);
    vr_audio_dataset ds;
    CU_ASSERT_EQUAL(vr_audio_dataset_load(&list, &c, &ds), VR_ERR_NOT_FOUND);
    CU_ASSERT(says("gone1.wav", "none of the 2 files"));
    CU_ASSERT_EQUAL(ds.n, 0);
    CU_ASSERT_EQUAL(ds.nskipped, 2);
    vr_audio_dataset_free(&ds);
    vr_audio_list_free(&list);
}

/* ---- views ---- */

static float *random_clips(int m, int64_t len, uint64_t seed)
{
    float *x = malloc((size_t)m * (size_t)len * sizeof(float));
    vr_rng g;
    vr_rng_seed(&g, seed);
    tu_fill(x, (size_t)m * (size_t)len, &g, -0.5f, 0.5f);
    return x;
}

static void test_views_deterministic(void)
{
    const int m = 5, n = 7;
    const int64_t len = 4000;
    float *clips = random_clips(m, len, 1);
    const int index[7] = {3, 0, 4, 1, 2, 2, 0};
    vr_audio_views_config c;
    vr_audio_views_default(&c, 1000);
    float *a = malloc(n * 1000 * sizeof(float)), *b = malloc(n * 1000 * sizeof(float));
    TU_OK(vr_audio_views_batch(&c, clips, len, index, n, 42, 10, 1, a));
    for (int threads = 2; threads <= 4; threads++) {
        TU_OK(vr_audio_views_batch(&c, clips, len, index, n, 42, 10, threads, b));
        CU_ASSERT_EQUAL(memcmp(a, b, n * 1000 * sizeof(float)), 0);
    }
    /* sample 3 (global index 13) alone in a batch of its own */
    TU_OK(vr_audio_views_batch(&c, clips, len, &index[3], 1, 42, 13, 1, b));
    CU_ASSERT_EQUAL(memcmp(a + 3 * 1000, b, 1000 * sizeof(float)), 0);
    /* another seed gives another view */
    TU_OK(vr_audio_views_batch(&c, clips, len, index, n, 43, 10, 1, b));
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, 1000 * sizeof(float)), 0);

    const int mels = 16, frames = 25;
    float *sa = malloc(n * mels * frames * sizeof(float)), *sb = malloc(n * mels * frames * sizeof(float));
    for (int i = 0; i < n * mels * frames; i++) sa[i] = 1.0f + (float)i;
    memcpy(sb, sa, n * mels * frames * sizeof(float));
    TU_OK(vr_spec_masks_batch(&c, sa, mels, frames, n, 42, 10, 1));
    TU_OK(vr_spec_masks_batch(&c, sb, mels, frames, n, 42, 10, 3));
    CU_ASSERT_EQUAL(memcmp(sa, sb, n * mels * frames * sizeof(float)), 0);
    free(sa);
    free(sb);
    free(a);
    free(b);
    free(clips);
}

/* Without noise a view is the drawn crop times the drawn gain; over many draws the offsets
 * cover [0, L - crop] with mean (L - crop) / 2 and the gains lie in their range with mean at
 * its centre (within 4 standard errors of a uniform mean). */
static void test_views_crop_gain(void)
{
    const int n = 4000;
    const int64_t len = 64, crop = 16;
    float *clips = random_clips(1, len, 2);
    int *index = calloc(n, sizeof(int));
    float *out = malloc((size_t)n * crop * sizeof(float));
    vr_audio_views_config c;
    vr_audio_views_default(&c, crop);
    c.noise_p = 0.0f;
    TU_OK(vr_audio_views_batch(&c, clips, len, index, n, 5, 0, 2, out));
    double sum_offset = 0, sum_gain = 0;
    int64_t lo = len, hi = -1;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, 5, (uint64_t)i * 2);
        vr_audio_view_params p;
        vr_audio_view_draw(&r, &c, len, &p);
        ok &= p.offset >= 0 && p.offset <= len - crop && p.gain_db >= -6.0f && p.gain_db <= 6.0f && !p.noisy;
        lo = p.offset < lo ? p.offset : lo;
        hi = p.offset > hi ? p.offset : hi;
        sum_offset += (double)p.offset;
        sum_gain += p.gain_db;
        float ref[16];
        double g = pow(10.0, p.gain_db / 20.0);
        for (int t = 0; t < crop; t++) ref[t] = (float)(g * clips[p.offset + t]);
        ok &= tu_close(out + (size_t)i * crop, ref, (size_t)crop, 0.0, 1e-6, "crop x gain");
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(lo, 0);
    CU_ASSERT_EQUAL(hi, len - crop);
    double span = (double)(len - crop + 1);
    CU_ASSERT(fabs(sum_offset / n - (len - crop) / 2.0) < 4 * sqrt((span * span - 1) / 12 / n));
    CU_ASSERT(fabs(sum_gain / n) < 4 * 12.0 / sqrt(12.0 * n));
    free(out);
    free(index);
    free(clips);
}

/* Speed perturbation against the analytic signal: a clip sin(w t) read at speed f is
 * g sin(w (offset + t f)), up to linear interpolation's error w^2 / 8 (amplitude 1); speeds
 * cover their range uniformly (mean within 4 standard errors); offsets keep the span inside
 * the clip and reach both ends; a range of one value draws exactly as without speed. */
static void test_views_speed(void)
{
    const int n = 3000;
    const int64_t len = 400, crop = 300;
    const double w = 0.05;
    float *clip = malloc((size_t)len * sizeof(float));
    for (int64_t t = 0; t < len; t++) clip[t] = (float)sin(w * (double)t);
    int *index = calloc(n, sizeof(int));
    float *out = malloc((size_t)n * crop * sizeof(float));
    vr_audio_views_config c;
    vr_audio_views_default(&c, crop);
    c.noise_p = 0.0f;
    c.speed_min = 0.9f;
    c.speed_max = 1.3f;
    TU_OK(vr_audio_views_batch(&c, clip, len, index, n, 11, 0, 2, out));
    double sum_speed = 0, worst = 0;
    int64_t lo = len, hi_end = 0;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, 11, (uint64_t)i * 2);
        vr_audio_view_params p;
        vr_audio_view_draw(&r, &c, len, &p);
        int64_t span = vr_audio_view_span(crop, p.speed);
        ok &= p.speed >= 0.9f && p.speed <= 1.3f && p.offset >= 0 && p.offset + span <= len;
        lo = p.offset < lo ? p.offset : lo;
        hi_end = p.offset + span > hi_end ? p.offset + span : hi_end;
        sum_speed += p.speed;
        double g = pow(10.0, p.gain_db / 20.0);
        for (int64_t t = 0; t < crop; t++) {
            double ref = g * sin(w * ((double)p.offset + (double)t * p.speed));
            double err = fabs(out[(size_t)i * crop + t] - ref) / g;
            worst = err > worst ? err : worst;
        }
    }
    CU_ASSERT(ok);
    CU_ASSERT(worst <= w * w / 8 + 1e-5);
    CU_ASSERT_EQUAL(lo, 0);
    CU_ASSERT(hi_end >= len - 1);
    CU_ASSERT(fabs(sum_speed / n - 1.1) < 4 * 0.4 / sqrt(12.0 * n));

    /* a clip too short for the fastest span is refused; speed 1..1 equals no speed at all */
    CU_ASSERT_EQUAL(vr_audio_views_batch(&c, clip, 380, index, 1, 11, 0, 1, out), VR_ERR_ARG);
    float *plain = malloc((size_t)crop * sizeof(float));
    c.speed_min = c.speed_max = 1.0f;
    TU_OK(vr_audio_views_batch(&c, clip, len, index, 1, 11, 0, 1, out));
    vr_audio_views_config d;
    vr_audio_views_default(&d, crop);
    d.noise_p = 0.0f;
    TU_OK(vr_audio_views_batch(&d, clip, len, index, 1, 11, 0, 1, plain));
    CU_ASSERT(memcmp(out, plain, (size_t)crop * sizeof(float)) == 0);
    c.speed_min = 0.4f;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    free(plain);
    free(out);
    free(index);
    free(clip);
}

/* Noise: drawn with probability 0.5 (observed fraction within 4 standard errors); where drawn,
 * the residual's power over 8000 samples is the crop's power over 10^(snr/10) within 10% (6
 * standard errors of a power estimate), over all noisy views within 1%; the residual is white
 * (mean lag-1 correlation within 4 standard errors of 0) and zero elsewhere; a silent clip
 * stays silent. */
static void test_views_noise(void)
{
    const int n = 300;
    const int64_t len = 8000;
    float *clips = random_clips(1, len, 3);
    int *index = calloc(n, sizeof(int));
    float *out = malloc((size_t)n * len * sizeof(float));
    vr_audio_views_config c;
    vr_audio_views_default(&c, len);
    TU_OK(vr_audio_views_batch(&c, clips, len, index, n, 9, 100, 2, out));
    int noisy = 0, ok = 1;
    double ratio_sum = 0, snr_sum = 0, lag_sum = 0;
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, 9, (uint64_t)(100 + i) * 2);
        vr_audio_view_params p;
        vr_audio_view_draw(&r, &c, len, &p);
        ok &= p.offset == 0 && p.snr_db >= 15.0f && p.snr_db <= 40.0f;
        snr_sum += p.snr_db;
        double g = pow(10.0, p.gain_db / 20.0), signal = 0, noise = 0, lag = 0, prev = 0;
        const float *y = out + (size_t)i * len;
        for (int64_t t = 0; t < len; t++) {
            double clean = g * clips[t];
            double e = y[t] - clean;
            signal += clean * clean;
            noise += e * e;
            lag += e * prev;
            prev = e;
        }
        if (!p.noisy) {
            ok &= noise < 1e-12 * signal; /* float rounding of the gain only */
            continue;
        }
        noisy++;
        double ratio = noise / (signal / pow(10.0, p.snr_db / 10.0));
        ok &= fabs(ratio - 1.0) < 0.1;
        ratio_sum += ratio;
        lag_sum += lag / noise;
    }
    CU_ASSERT(ok);
    CU_ASSERT(fabs((double)noisy / n - 0.5) < 4 * sqrt(0.25 / n));
    CU_ASSERT(fabs(ratio_sum / noisy - 1.0) < 0.01);
    CU_ASSERT(fabs(snr_sum / n - 27.5) < 4 * 25.0 / sqrt(12.0 * n));
        /* each view's lag-1 correlation has standard error 1/sqrt(len); their mean 1/sqrt(noisy*len) */
    CU_ASSERT(fabs(lag_sum / noisy) < 4 / sqrt((double)noisy * len));

    float *silent = calloc((size_t)len, sizeof(float));
    c.noise_p = 1.0f;
    TU_OK(vr_audio_views_batch(&c, silent, len, index, 1, 9, 0, 1, out));
    int zero = 1;
    for (int64_t t = 0; t < len; t++) zero &= out[t] == 0.0f;
    CU_ASSERT(zero);
    free(silent);
    free(out);
    free(index);
    free(clips);
}

/* The masks zero exactly the drawn bands (every other value untouched); widths cover 0..F with
 * mean F/2 (4 standard errors), capped at the array's size; starts keep a band inside and reach
 * both ends. */
static void test_masks(void)
{
    const int n = 300, mels = 20, frames = 30;
    vr_audio_views_config c;
    vr_audio_views_default(&c, 100);
    c.freq_masks = 2;
    c.freq_mask_bins = 6;
    c.time_masks = 3;
    c.time_mask_frames = 50; /* wider than the 30 frames: capped */
    size_t plane = (size_t)mels * frames;
    float *spec = malloc(n * plane * sizeof(float)), *orig = malloc(n * plane * sizeof(float));
    vr_rng g;
    vr_rng_seed(&g, 4);
    tu_fill(orig, n * plane, &g, 0.5f, 1.5f);
    memcpy(spec, orig, n * plane * sizeof(float));
    TU_OK(vr_spec_masks_batch(&c, spec, mels, frames, n, 77, 0, 2));
    int ok = 1, seen_f[7] = {0}, full_time = 0, at_top = 0, at_bottom = 0;
    double width_sum = 0;
    for (int i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, 77, (uint64_t)i * 2 + 1);
        vr_spec_masks m;
        vr_spec_masks_draw(&r, &c, mels, frames, &m);
        ok &= m.nfreq == 2 && m.ntime == 3;
        char fmask[20] = {0}, tmask[30] = {0};
        for (int k = 0; k < m.nfreq; k++) {
            ok &= m.freq_width[k] >= 0 && m.freq_width[k] <= 6 && m.freq_start[k] >= 0 &&
                  m.freq_start[k] + m.freq_width[k] <= mels;
            seen_f[m.freq_width[k]] = 1;
            at_bottom |= m.freq_width[k] > 0 && m.freq_start[k] == 0;
            at_top |= m.freq_width[k] > 0 && m.freq_start[k] + m.freq_width[k] == mels;
            width_sum += m.freq_width[k];
            for (int f = m.freq_start[k]; f < m.freq_start[k] + m.freq_width[k]; f++) fmask[f] = 1;
        }
        for (int k = 0; k < m.ntime; k++) {
            ok &= m.time_width[k] >= 0 && m.time_width[k] <= frames && m.time_start[k] >= 0 &&
                  m.time_start[k] + m.time_width[k] <= frames;
            full_time |= m.time_width[k] == frames;
            for (int t = m.time_start[k]; t < m.time_start[k] + m.time_width[k]; t++) tmask[t] = 1;
        }
        for (int f = 0; f < mels; f++)
            for (int t = 0; t < frames; t++) {
                size_t at = (size_t)i * plane + (size_t)f * frames + (size_t)t;
                ok &= (fmask[f] || tmask[t]) ? spec[at] == 0.0f : spec[at] == orig[at];
            }
    }
    CU_ASSERT(ok);
    for (int w = 0; w <= 6; w++) CU_ASSERT(seen_f[w]);
    CU_ASSERT(at_bottom && at_top); /* every start where a band fits is drawn, the ends too */
    CU_ASSERT(full_time);
    double count = 2.0 * n, sd = sqrt((7.0 * 7.0 - 1) / 12.0);
    CU_ASSERT(fabs(width_sum / count - 3.0) < 4 * sd / sqrt(count));
    free(spec);
    free(orig);
}

static void test_views_check(void)
{
    vr_audio_views_config ok, c;
    vr_audio_views_default(&ok, 16000);
    TU_OK(vr_audio_views_check(&ok));
    c = ok, c.crop_samples = 0;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    c = ok, c.gain_db_min = 3, c.gain_db_max = -3;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    CU_ASSERT(strstr(vr_last_error(), "gain") != NULL);
    c = ok, c.noise_p = 1.5f;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    c = ok, c.snr_db_max = NAN;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    c = ok, c.freq_masks = VR_AUDIO_MAX_MASKS + 1;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    c = ok, c.time_mask_frames = -1;
    CU_ASSERT_EQUAL(vr_audio_views_check(&c), VR_ERR_ARG);
    float clip[100] = {0}, out[200];
    int index = 0;
    CU_ASSERT_EQUAL(vr_audio_views_batch(&ok, clip, 100, &index, 1, 0, 0, 1, out), VR_ERR_ARG);
    CU_ASSERT_EQUAL(vr_spec_masks_batch(&ok, out, 0, 10, 1, 0, 0, 1), VR_ERR_ARG);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/vr_test_audio_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    static const tu_test tests[] = {
        {"formats", test_formats},
        {"resampler", test_resampler},
        {"crop_pad_memory", test_crop_pad_memory},
        {"first_chunk_empty", test_first_chunk_empty},
        {"reader_reuse", test_reader_reuse},
        {"convert_pcm", test_convert_pcm},
        {"bad_inputs", test_bad_inputs},
        {"folder_dataset", test_folder_dataset},
        {"esc50_manifest", test_esc50_manifest},
        {"labels_manifest", test_labels_manifest},
        {"manifest_errors", test_manifest_errors},
        {"views_deterministic", test_views_deterministic},
        {"views_crop_gain", test_views_crop_gain},
        {"views_noise", test_views_noise},
        {"views_speed", test_views_speed},
        {"masks", test_masks},
        {"views_check", test_views_check},
        {NULL, NULL},
    };
    int rc = tu_main("audio", tests);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
