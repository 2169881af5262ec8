/* Audio reading: libsndfile decode, mean-of-channels mix, libsoxr resampling, crop or pad
 * (see include/vicreg/audio.h). The signal streams through fixed scratch buffers chunk by
 * chunk, so a long file costs no memory unless its whole signal is asked for. */
#include "vicreg/audio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Interleaved floats per libsndfile read: 256 KiB, and at least 64 frames at libsndfile's
 * largest channel count (1024). */
#define READ_FLOATS 65536
/* Resampled samples per libsoxr call. */
#define RESAMPLED_FLOATS 16384

struct vr_audio_reader {
    int rate_hz;
    soxr_t soxr;        /* resampler for sources at soxr_in_hz; NULL until one is needed */
    int soxr_in_hz;
    float *frames;      /* (READ_FLOATS) one chunk of interleaved frames */
    float *mono;        /* (READ_FLOATS) the chunk mixed to mono */
    float *resampled;   /* (RESAMPLED_FLOATS) */
    float *whole;       /* (whole_cap) the signal of the last decode */
    int64_t whole_cap;
};

/* Where decoded samples go: a caller's buffer of fixed length, or the reader's growing one. */
typedef struct sink {
    float *buf;
    int64_t len, cap;
    vr_audio_reader *grow; /* non-NULL: grow the reader's whole-signal buffer as needed */
} sink;

/* A file image in memory behind libsndfile's virtual I/O. */
typedef struct mem_file {
    const unsigned char *data;
    sf_count_t size, pos;
} mem_file;

vr_status vr_audio_reader_create(int rate_hz, vr_audio_reader **out)
{
    *out = NULL;
    if (rate_hz < 1 || rate_hz > VR_AUDIO_MAX_RATE_HZ)
        return vr_fail(VR_ERR_ARG, "audio", "reader rate %d Hz (1..%d)", rate_hz, VR_AUDIO_MAX_RATE_HZ);
    vr_audio_reader *r = calloc(1, sizeof *r);
    if (!r) return vr_fail(VR_ERR_NOMEM, "audio", "cannot allocate a reader");
    r->rate_hz = rate_hz;
    r->frames = malloc(READ_FLOATS * sizeof(float));
    r->mono = malloc(READ_FLOATS * sizeof(float));
    r->resampled = malloc(RESAMPLED_FLOATS * sizeof(float));
    if (!r->frames || !r->mono || !r->resampled) {
        vr_audio_reader_free(r);
        return vr_fail(VR_ERR_NOMEM, "audio", "cannot allocate a reader's buffers");
    }
    *out = r;
    return VR_OK;
}

void vr_audio_reader_free(vr_audio_reader *r)
{
    if (!r) return;
    if (r->soxr) soxr_delete(r->soxr);
    free(r->frames);
    free(r->mono);
    free(r->resampled);
    free(r->whole);
    free(r);
}

static int sink_full(const sink *s) { return !s->grow && s->len >= s->cap; }

static vr_status sink_put(sink *s, const float *x, int64_t n, const char *name)
{
    if (n == 0) return VR_OK; /* nothing to move, and a growing sink may have no buffer yet */
    if (s->grow) {
        if (s->len + n > VR_AUDIO_MAX_SAMPLES)
            return vr_fail(VR_ERR_FORMAT, "audio", "%s: longer than %lld samples at %d Hz", name,
                           (long long)VR_AUDIO_MAX_SAMPLES, s->grow->rate_hz);
        if (s->len + n > s->cap) {
            int64_t cap = s->cap ? s->cap : 65536;
            while (cap < s->len + n) cap *= 2;
            float *p = realloc(s->buf, (size_t)cap * sizeof(float));
            if (!p) return vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot hold %lld samples", name, (long long)cap);
            s->buf = s->grow->whole = p;
            s->cap = s->grow->whole_cap = cap;
        }
    } else if (n > s->cap - s->len) {
        n = s->cap - s->len;
    }
    memcpy(s->buf + s->len, x, (size_t)n * sizeof(float));
    s->len += n;
    return VR_OK;
}

/* A resampler from in_hz to the reader's rate, in its fresh state. */
static vr_status resampler_ready(vr_audio_reader *r, int in_hz, const char *name)
{
    if (r->soxr && r->soxr_in_hz == in_hz) {
        soxr_error_t e = soxr_clear(r->soxr);
        if (!e) return VR_OK;
        soxr_delete(r->soxr); /* a resampler that cannot clear is rebuilt */
    } else if (r->soxr) {
        soxr_delete(r->soxr);
    }
    r->soxr = NULL;
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, SOXR_LINEAR_PHASE);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1); /* callers parallelise over files */
    soxr_error_t e = NULL;
    r->soxr = soxr_create(in_hz, r->rate_hz, 1, &e, &io, &q, &rt);
    if (!r->soxr || e) {
        if (r->soxr) soxr_delete(r->soxr);
        r->soxr = NULL;
        return vr_fail(VR_ERR_UNSUPPORTED, "audio", "%s: cannot resample %d Hz to %d Hz: %s", name,
                       in_hz, r->rate_hz, soxr_strerror(e));
    }
    r->soxr_in_hz = in_hz;
    return VR_OK;
}

/* Feeds n mono samples (in == NULL: the end of the input) and moves what comes out to s. */
static vr_status resample(vr_audio_reader *r, const float *in, size_t n, sink *s, const char *name)
{
    for (;;) {
        size_t idone = 0, odone = 0;
        soxr_error_t e = soxr_process(r->soxr, in, n, in ? &idone : NULL, r->resampled,
                                      RESAMPLED_FLOATS, &odone);
        if (e) return vr_fail(VR_ERR_FORMAT, "audio", "%s: resampling failed: %s", name, e);
        VR_TRY(sink_put(s, r->resampled, (int64_t)odone, name));
        if (in) {
            in += idone;
            n -= idone;
        }
        if (sink_full(s)) return VR_OK;
        /* done when the input is taken and the output drained; a call that does neither
         * would never end */
        if (n == 0 && odone < RESAMPLED_FLOATS) return VR_OK;
        if (idone == 0 && odone == 0)
            return vr_fail(VR_ERR_FORMAT, "audio", "%s: the resampler stopped with input left", name);
    }
}

/* Mean of the channels of x (frames, channels) into mono (frames). */
static void mix(const float *x, sf_count_t frames, int channels, float *mono)
{
    float inv = 1.0f / (float)channels;
    for (sf_count_t i = 0; i < frames; i++) {
        const float *f = x + i * channels;
        float sum = 0.0f;
        for (int c = 0; c < channels; c++) sum += f[c];
        mono[i] = sum * inv;
    }
}

static void describe(const SF_INFO *in, vr_audio_info *info)
{
    if (!info) return;
    SF_FORMAT_INFO major = {.format = in->format & SF_FORMAT_TYPEMASK};
    SF_FORMAT_INFO sub = {.format = in->format & SF_FORMAT_SUBMASK};
    if (sf_command(NULL, SFC_GET_FORMAT_INFO, &major, sizeof major) != 0) major.name = "unknown";
    if (sf_command(NULL, SFC_GET_FORMAT_INFO, &sub, sizeof sub) != 0) sub.name = "unknown";
    *info = (vr_audio_info){.frames = in->frames, .channels = in->channels,
                            .rate_hz = in->samplerate, .container = major.name, .encoding = sub.name};
}

/* Mixes one chunk of `got` frames (got * channels <= READ_FLOATS; the first is frame `at` of
 * the file) and moves it to s, through the resampler when converting; a non-finite sample
 * refuses the file. */
static vr_status feed(vr_audio_reader *r, const float *frames, sf_count_t got, int channels, int converting,
                      sink *s, const char *name, int64_t at)
{
    /* a float file can hold NaN or Inf, which would poison every batch it lands in */
    for (int64_t i = 0; i < (int64_t)got * channels; i++)
        if (!isfinite(frames[i]))
            return vr_fail(VR_ERR_FORMAT, "audio", "%s: sample %lld of channel %d is not finite (%g)", name,
                           (long long)(at + i / channels), (int)(i % channels) + 1, (double)frames[i]);
    const float *mono = frames;
    if (channels > 1) {
        mix(frames, got, channels, r->mono);
        mono = r->mono;
    }
    if (converting) return resample(r, mono, (size_t)got, s, name);
    return sink_put(s, mono, got, name);
}

/* Decodes an open file into s: chunks of frames, mixed, resampled, until s is full or the
 * audio ends. */
static vr_status decode(vr_audio_reader *r, SNDFILE *f, const SF_INFO *in, const char *name, sink *s)
{
    if (in->channels < 1 || in->samplerate < 1)
        return vr_fail(VR_ERR_FORMAT, "audio", "%s: %d channels at %d Hz", name, in->channels, in->samplerate);
    if (in->frames == 0) return vr_fail(VR_ERR_FORMAT, "audio", "%s: no audio frames", name);
    int converting = in->samplerate != r->rate_hz;
    if (converting) VR_TRY(resampler_ready(r, in->samplerate, name));
    sf_count_t chunk = READ_FLOATS / in->channels, total = 0;
    while (!sink_full(s)) {
        sf_count_t got = sf_readf_float(f, r->frames, chunk);
        int err = sf_error(f);
        if (err != SF_ERR_NO_ERROR)
            return vr_fail(VR_ERR_FORMAT, "audio", "%s: decoding failed after %lld frames: %s", name,
                           (long long)total, sf_strerror(f));
        if (got <= 0) break;
        VR_TRY(feed(r, r->frames, got, in->channels, converting, s, name, total));
        total += got;
    }
    if (total == 0) return vr_fail(VR_ERR_FORMAT, "audio", "%s: no audio frames", name);
    if (converting && !sink_full(s)) VR_TRY(resample(r, NULL, 0, s, name));
    return VR_OK;
}

static sf_count_t mem_length(void *user) { return ((mem_file *)user)->size; }

static sf_count_t mem_seek(sf_count_t offset, int whence, void *user)
{
    mem_file *m = user;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    sf_count_t to = base + offset;
    if (to < 0 || to > m->size) return -1;
    return m->pos = to;
}

static sf_count_t mem_read(void *ptr, sf_count_t count, void *user)
{
    mem_file *m = user;
    sf_count_t n = count < m->size - m->pos ? count : m->size - m->pos;
    if (n <= 0) return 0;
    memcpy(ptr, m->data + m->pos, (size_t)n);
    m->pos += n;
    return n;
}

static sf_count_t mem_write(const void *ptr, sf_count_t count, void *user)
{
    (void)ptr, (void)count, (void)user;
    return 0;
}

static sf_count_t mem_tell(void *user) { return ((mem_file *)user)->pos; }

/* Opens a file descriptor (fd >= 0) or a memory image for reading. libsndfile keeps the error
 * of a failed open in one process-wide slot, so opens are serialised to read it reliably. */
static vr_status open_sndfile(int fd, mem_file *mem, const char *name, SNDFILE **f, SF_INFO *in)
{
    char why[256];
    int err;
    SF_VIRTUAL_IO vio = {mem_length, mem_seek, mem_read, mem_write, mem_tell};
    memset(in, 0, sizeof *in);
#pragma omp critical(vr_sndfile_open)
    {
        *f = fd >= 0 ? sf_open_fd(fd, SFM_READ, in, SF_FALSE) : sf_open_virtual(&vio, SFM_READ, in, mem);
        err = *f ? SF_ERR_NO_ERROR : sf_error(NULL);
        snprintf(why, sizeof why, "%s", *f ? "" : sf_strerror(NULL));
    }
    if (*f) return VR_OK;
    switch (err) {
    case SF_ERR_UNRECOGNISED_FORMAT:
        return vr_fail(VR_ERR_UNSUPPORTED, "audio", "%s: not an audio format libsndfile reads (%s)", name, why);
    case SF_ERR_UNSUPPORTED_ENCODING:
        return vr_fail(VR_ERR_UNSUPPORTED, "audio", "%s: unsupported encoding (%s)", name, why);
    case SF_ERR_SYSTEM:
        return vr_fail(VR_ERR_IO, "audio", "%s: cannot read (%s)", name, why);
    default:
        return vr_fail(VR_ERR_FORMAT, "audio", "%s: malformed (%s)", name, why);
    }
}

static vr_status read_path(vr_audio_reader *r, const char *path, sink *s, vr_audio_info *info)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, "audio", "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    vr_status status = VR_OK;
    if (fstat(fd, &st) != 0) status = vr_fail(VR_ERR_IO, "audio", "%s: cannot stat: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode)) status = vr_fail(VR_ERR_IO, "audio", "%s: is a directory", path);
    else if (S_ISREG(st.st_mode) && st.st_size == 0) status = vr_fail(VR_ERR_FORMAT, "audio", "%s: empty file", path);
    SNDFILE *f = NULL;
    SF_INFO in;
    if (status == VR_OK) status = open_sndfile(fd, NULL, path, &f, &in);
    if (status == VR_OK) {
        describe(&in, info);
        status = decode(r, f, &in, path, s);
        sf_close(f);
    }
    close(fd);
    return status;
}

static vr_status read_memory(vr_audio_reader *r, const void *data, size_t size, const char *name,
                             sink *s, vr_audio_info *info)
{
    if (!name) name = "(memory)";
    if (size == 0) return vr_fail(VR_ERR_FORMAT, "audio", "%s: empty file", name);
    if (!data) return vr_fail(VR_ERR_ARG, "audio", "%s: no data", name);
    mem_file mem = {data, (sf_count_t)size, 0};
    SNDFILE *f;
    SF_INFO in;
    VR_TRY(open_sndfile(-1, &mem, name, &f, &in));
    describe(&in, info);
    vr_status status = decode(r, f, &in, name, s);
    sf_close(f);
    return status;
}

/* Pads what the sink did not fill with zeros and reports its count. */
static void finish_fixed(const sink *s, int64_t *valid_samples)
{
    memset(s->buf + s->len, 0, (size_t)(s->cap - s->len) * sizeof(float));
    if (valid_samples) *valid_samples = s->len;
}

static vr_status check_length(int64_t length_samples, const float *out, const char *name)
{
    if (length_samples < 1 || length_samples > VR_AUDIO_MAX_SAMPLES || !out)
        return vr_fail(VR_ERR_ARG, "audio", "%s: length %lld samples (1..%lld, with an output buffer)",
                       name ? name : "(memory)", (long long)length_samples, (long long)VR_AUDIO_MAX_SAMPLES);
    return VR_OK;
}

vr_status vr_audio_read(vr_audio_reader *r, const char *path, int64_t length_samples, float *out,
                        int64_t *valid_samples, vr_audio_info *info)
{
    VR_TRY(check_length(length_samples, out, path));
    sink s = {out, 0, length_samples, NULL};
    VR_TRY(read_path(r, path, &s, info));
    finish_fixed(&s, valid_samples);
    return VR_OK;
}

vr_status vr_audio_read_memory(vr_audio_reader *r, const void *data, size_t size, const char *name,
                               int64_t length_samples, float *out, int64_t *valid_samples,
                               vr_audio_info *info)
{
    VR_TRY(check_length(length_samples, out, name));
    sink s = {out, 0, length_samples, NULL};
    VR_TRY(read_memory(r, data, size, name, &s, info));
    finish_fixed(&s, valid_samples);
    return VR_OK;
}

vr_status vr_audio_decode(vr_audio_reader *r, const char *path, const float **samples, int64_t *n,
                          vr_audio_info *info)
{
    sink s = {r->whole, 0, r->whole_cap, r};
    VR_TRY(read_path(r, path, &s, info));
    *samples = s.buf;
    *n = s.len;
    return VR_OK;
}

vr_status vr_audio_decode_memory(vr_audio_reader *r, const void *data, size_t size,
                                 const char *name, const float **samples, int64_t *n,
                                 vr_audio_info *info)
{
    sink s = {r->whole, 0, r->whole_cap, r};
    VR_TRY(read_memory(r, data, size, name, &s, info));
    *samples = s.buf;
    *n = s.len;
    return VR_OK;
}

vr_status vr_audio_convert(vr_audio_reader *r, const float *pcm, int64_t frames, int channels, int rate_hz,
                           const char *name, const float **samples, int64_t *n)
{
    if (!name) name = "(pcm)";
    if (!pcm || frames < 1 || channels < 1 || channels > VR_AUDIO_MAX_CHANNELS)
        return vr_fail(VR_ERR_ARG, "audio", "%s: %lld frames of %d channels%s (1.. frames, 1..%d channels)", name,
                       (long long)frames, channels, pcm ? "" : " without samples", VR_AUDIO_MAX_CHANNELS);
    if (rate_hz < 1 || rate_hz > VR_AUDIO_MAX_RATE_HZ)
        return vr_fail(VR_ERR_ARG, "audio", "%s: rate %d Hz (1..%d)", name, rate_hz, VR_AUDIO_MAX_RATE_HZ);
    int converting = rate_hz != r->rate_hz;
    if (converting) VR_TRY(resampler_ready(r, rate_hz, name));
    sink s = {r->whole, 0, r->whole_cap, r};
    int64_t chunk = READ_FLOATS / channels;
    for (int64_t done = 0; done < frames; done += chunk) {
        int64_t got = frames - done < chunk ? frames - done : chunk;
        VR_TRY(feed(r, pcm + done * channels, (sf_count_t)got, channels, converting, &s, name, done));
    }
    if (converting) VR_TRY(resample(r, NULL, 0, &s, name));
    *samples = s.buf;
    *n = s.len;
    return VR_OK;
}
