/* The embedding API (include/vicreg/embed.h): one branch of a checkpoint's model, or the
 * log-mel baseline, over windows of PCM.
 *
 * Opening reads the checkpoint once: its recipe gives the network, the rate, the window and
 * the front end; only the chosen branch is built, so a handle holds one encoder and expander.
 * The network runs as evaluation runs it (src/run/featurize.c): running BatchNorm statistics,
 * the waveform branch fed (N,1,W) windows, the spectrogram branch (N,1,M,T) log-mel
 * spectrograms of the same windows. Every buffer is sized at opening for `batch` windows and
 * reused; only a longer file than any before grows the reader's and the results' buffers. */
#include "vicreg/embed.h"

#include <math.h>
#include <string.h>

#include "recipe.h"
#include "vicreg/audio.h"
#include "vicreg/checkpoint.h"
#include "vicreg/knn.h"
#include "vicreg/safetensors.h"

/* The three kinds of row, in the order of the recipe's branches (wave 0, spec 1). */
enum { BRANCH_WAVE = 0, BRANCH_SPEC = 1, BRANCH_LOGMEL = 2 };

struct vr_embedder {
    vr_embedder_config cfg;
    vr_recipe r;
    int kind;                 /* BRANCH_* */
    int dim, batch;
    int64_t window, hop;      /* samples at r.rate_hz */
    int n_mels, frames;       /* one window's spectrogram (spec and logmel) */
    vr_backend *be;           /* NULL for logmel */
    vr_model m;               /* the chosen branch alone */
    vr_spectrogram *sp;       /* NULL for wave */
    vr_audio_reader *reader;
    float *wave;              /* (batch, window) */
    float *spec;              /* (batch, n_mels, frames) */
    float *batch_rows;        /* (batch, dim) the rows of one pass */
    double *sum;              /* (dim) the pooled windows' sum */
    float *rows;              /* (rows_cap, dim) vr_embedder_embed_file's results */
    double *starts;           /* (rows_cap) */
    int64_t rows_cap;
};

vr_embedder_config vr_embedder_defaults(void)
{
    return (vr_embedder_config){.branch = "wave", .output = VR_EMBED_REPR, .batch = 32, .threads = 1};
}

/* The recipe stored in the checkpoint st (path names it). */
static vr_status stored_recipe(const vr_safetensors *st, const char *path, vr_recipe *r)
{
    const char *text = vr_st_metadata(st, "recipe");
    if (!text) return vr_fail(VR_ERR_NOT_FOUND, "embed", "%s: holds no recipe; not written by vicreg train", path);
    char name[600];
    snprintf(name, sizeof name, "%s (stored recipe)", path);
    return vr_recipe_load_text(r, text, name, NULL, 0);
}

/* The branch's parameters at the recipe's seeded initialisation, exactly as vr_model_init
 * initialises branch b of the whole model (its own stream of the seed), so the untrained
 * baseline is the network `vicreg eval --random-init` evaluates. */
static vr_status init_random(vr_model *m, uint64_t seed, int b)
{
    float *p = vr_alloc(m->params.total * sizeof(float));
    float *buf = vr_alloc((m->buffers.total + 1) * sizeof(float));
    vr_status s = VR_OK;
    if (!p || !buf) s = vr_fail(VR_ERR_NOMEM, "embed", "cannot allocate %zu parameters", m->params.total);
    if (s == VR_OK) {
        vr_rng rng;
        vr_rng_seed_stream(&rng, seed, (uint64_t)b);
        vr_resnet_init(&m->branch[0].enc, p, buf, &rng);
        if (m->branch[0].has_expander) vr_expander_init(&m->branch[0].exp, p, buf, &rng);
        s = m->be->upload(m->be, m->p, p, m->params.total);
    }
    if (s == VR_OK) s = m->be->upload(m->be, m->buf, buf, m->buffers.total);
    vr_free(p);
    vr_free(buf);
    return s;
}

/* The network of branch e->kind, its weights, and a plan for `batch` windows. */
static vr_status open_network(vr_embedder *e, const vr_safetensors *st, const char *path)
{
    vr_branch_config bc[VR_MAX_BRANCHES];
    vr_recipe_branches(&e->r, bc);
    VR_TRY(vr_cpu_backend_create(e->cfg.threads, &e->be));
    VR_TRY(vr_model_create(&e->m, e->be, 1, &bc[e->kind]));
    vr_branch *br = &e->m.branch[0];
    if (e->cfg.output == VR_EMBED_EMBEDDING && !br->has_expander)
        return vr_fail(VR_ERR_ARG, "embed", "%s: the %s branch has no expander, so no embedding output", path,
                       e->cfg.branch);
    if (e->cfg.random_init) VR_TRY(init_random(&e->m, e->r.seed, e->kind));
    else VR_TRY(vr_checkpoint_load_weights(st, path, &e->m));
    int n = e->batch, h = e->kind == BRANCH_WAVE ? 1 : e->n_mels;
    int w = e->kind == BRANCH_WAVE ? (int)e->window : e->frames;
    VR_TRY(vr_model_plan(&e->m, &n, &h, &w));
    e->dim = e->cfg.output == VR_EMBED_EMBEDDING ? br->exp.dims[br->exp.nlayers] : br->enc.out_dim;
    return VR_OK;
}

/* Window and hop in samples, the spectrogram, the buffers. */
static vr_status open_front_end(vr_embedder *e, const char *path)
{
    const vr_recipe *r = &e->r;
    double w = e->cfg.window_seconds > 0 ? e->cfg.window_seconds : (double)r->crop_seconds;
    e->window = (int64_t)llround(w * r->rate_hz);
    e->hop = e->cfg.hop_seconds > 0 ? (int64_t)llround(e->cfg.hop_seconds * r->rate_hz) : e->window;
    if (e->window < 1 || e->hop < 1 || e->window > VR_AUDIO_MAX_SAMPLES)
        return vr_fail(VR_ERR_ARG, "embed", "%s: window %g s and hop %g s are %lld and %lld samples at %d Hz (1 or more)",
                       path, w, e->cfg.hop_seconds, (long long)e->window, (long long)e->hop, r->rate_hz);
    VR_TRY(vr_audio_reader_create(r->rate_hz, &e->reader));
    if (e->kind != BRANCH_WAVE) {
        VR_TRY(vr_spectrogram_create(&r->spec, &e->sp));
        int64_t frames = vr_spectrogram_frames(e->sp, e->window);
        if (frames < 1)
            return vr_fail(VR_ERR_ARG, "embed", "%s: a window of %lld samples is too short for n_fft %d", path,
                           (long long)e->window, r->spec.n_fft);
        e->n_mels = r->spec.n_mels;
        e->frames = (int)frames;
        e->spec = vr_alloc((size_t)e->batch * e->n_mels * e->frames * sizeof(float));
        if (!e->spec) return vr_fail(VR_ERR_NOMEM, "embed", "cannot hold %d spectrograms", e->batch);
    }
    e->wave = vr_alloc((size_t)e->batch * (size_t)e->window * sizeof(float));
    if (!e->wave) return vr_fail(VR_ERR_NOMEM, "embed", "cannot hold %d windows", e->batch);
    return VR_OK;
}

vr_status vr_embedder_open(const char *checkpoint, const vr_embedder_config *cfg, vr_embedder **out)
{
    *out = NULL;
    if (!checkpoint) return vr_fail(VR_ERR_ARG, "embed", "no checkpoint given");
    vr_embedder *e = calloc(1, sizeof *e);
    if (!e) return vr_fail(VR_ERR_NOMEM, "embed", "cannot allocate a handle");
    e->cfg = cfg ? *cfg : vr_embedder_defaults();
    if (!e->cfg.branch) e->cfg.branch = "wave";
    e->batch = e->cfg.batch > 0 ? e->cfg.batch : 32;
    if (e->cfg.threads <= 0) e->cfg.threads = 1;
    vr_status s = VR_OK;
    if (!strcmp(e->cfg.branch, "wave")) e->kind = BRANCH_WAVE;
    else if (!strcmp(e->cfg.branch, "spec")) e->kind = BRANCH_SPEC;
    else if (!strcmp(e->cfg.branch, "logmel")) e->kind = BRANCH_LOGMEL;
    else s = vr_fail(VR_ERR_ARG, "embed", "%s: unknown branch '%s' (wave, spec or logmel)", checkpoint, e->cfg.branch);
    if (s == VR_OK && e->cfg.output != VR_EMBED_REPR && e->cfg.output != VR_EMBED_EMBEDDING)
        s = vr_fail(VR_ERR_ARG, "embed", "%s: output %d (repr or embedding)", checkpoint, (int)e->cfg.output);
    vr_safetensors *st = NULL;
    if (s == VR_OK) s = vr_st_open(checkpoint, &st);
    if (s == VR_OK) s = stored_recipe(st, checkpoint, &e->r);
    if (s == VR_OK && e->r.kind != VR_DATA_AUDIO)
        s = vr_fail(VR_ERR_UNSUPPORTED, "embed", "%s: an image recipe; this API embeds audio", checkpoint);
    if (s == VR_OK) s = open_front_end(e, checkpoint);
    if (s == VR_OK && e->kind == BRANCH_LOGMEL) e->dim = e->n_mels;
    else if (s == VR_OK) s = open_network(e, st, checkpoint);
    vr_st_close(st);
    if (s == VR_OK) {
        e->sum = vr_alloc((size_t)e->dim * sizeof(double));
        e->batch_rows = vr_alloc((size_t)e->batch * e->dim * sizeof(float));
        if (!e->sum || !e->batch_rows) s = vr_fail(VR_ERR_NOMEM, "embed", "cannot allocate a handle's buffers");
    }
    if (s != VR_OK) {
        vr_embedder_close(e);
        return s;
    }
    *out = e;
    return VR_OK;
}

void vr_embedder_close(vr_embedder *e)
{
    if (!e) return;
    vr_model_free(&e->m);
    if (e->be) vr_backend_destroy(e->be);
    if (e->sp) vr_spectrogram_destroy(e->sp);
    vr_audio_reader_free(e->reader);
    vr_free(e->wave);
    vr_free(e->spec);
    vr_free(e->sum);
    vr_free(e->batch_rows);
    vr_free(e->rows);
    vr_free(e->starts);
    free(e);
}

int vr_embedder_dim(const vr_embedder *e) { return e->dim; }
int vr_embedder_rate_hz(const vr_embedder *e) { return e->r.rate_hz; }
int64_t vr_embedder_window_samples(const vr_embedder *e) { return e->window; }
int64_t vr_embedder_hop_samples(const vr_embedder *e) { return e->hop; }

/* Windows over a signal of n samples (embed.h): one when it fits, else every hop while the
 * window fits, plus one ending at the signal's end when its tail is not yet covered. */
static int64_t count_windows(const vr_embedder *e, int64_t n)
{
    if (n <= e->window) return 1;
    int64_t k = (n - e->window) / e->hop + 1;
    return (k - 1) * e->hop + e->window < n ? k + 1 : k;
}

/* The start of window i: the last one, when it is the extra one, ends at the signal's end. */
static int64_t window_start(const vr_embedder *e, int64_t n, int64_t i)
{
    if (n <= e->window) return 0;
    int64_t start = i * e->hop;
    return start > n - e->window ? n - e->window : start;
}

int64_t vr_embedder_rows(const vr_embedder *e, int64_t frames, int rate_hz)
{
    if (frames < 1 || rate_hz < 1) return 0;
    if (e->cfg.pool) return 1;
    /* libsoxr ends a resampled signal after round(frames * out / in) samples */
    int64_t n = rate_hz == e->r.rate_hz ? frames : (int64_t)llround((double)frames * e->r.rate_hz / rate_hz);
    return count_windows(e, n);
}

/* spec (n, M, T) -> out (n, M): each band's mean over the frames, the log-mel baseline. */
static void mean_over_time(const float *spec, int n, int m, int t, float *out)
{
    for (int i = 0; i < n * m; i++) {
        double sum = 0;
        for (int j = 0; j < t; j++) sum += spec[(size_t)i * t + j];
        out[i] = (float)(sum / t);
    }
}

/* Rows of windows [first, first + count) of x (n) into dst (count, dim). */
static vr_status embed_windows(vr_embedder *e, const float *x, int64_t n, int64_t first, int count, float *dst)
{
    int64_t w = e->window;
    for (int i = 0; i < count; i++) {
        float *row = e->wave + (size_t)i * w;
        if (n <= w) {
            /* one window, the signal centred in zeros as evaluation centres its crop */
            int64_t pad = (w - n) / 2;
            memset(row, 0, (size_t)w * sizeof(float));
            memcpy(row + pad, x, (size_t)n * sizeof(float));
        } else {
            memcpy(row, x + window_start(e, n, first + i), (size_t)w * sizeof(float));
        }
    }
    if (e->kind != BRANCH_WAVE) VR_TRY(vr_spectrogram_mel_batch(e->sp, e->wave, count, w, e->cfg.threads, e->spec));
    if (e->kind == BRANCH_LOGMEL) {
        mean_over_time(e->spec, count, e->n_mels, e->frames, dst);
        return VR_OK;
    }
    vr_branch *br = &e->m.branch[0];
    vr_ctx ctx = vr_model_ctx(&e->m, count, 1, 0);
    VR_TRY(vr_resnet_forward(&br->enc, &ctx, e->kind == BRANCH_WAVE ? e->wave : e->spec));
    const float *repr = ctx.ws + br->enc.repr, *res = repr;
    if (e->cfg.output == VR_EMBED_EMBEDDING) {
        VR_TRY(vr_expander_forward(&br->exp, &ctx, repr));
        res = vr_expander_output(&br->exp, &ctx);
    }
    return e->be->download(e->be, dst, res, (size_t)count * e->dim);
}

/* The rows of a mono signal x (n) at the model's rate into out (rows, dim), rows as
 * vr_embedder_rows says; starts (may be NULL) in seconds. */
static vr_status embed_signal(vr_embedder *e, const float *x, int64_t n, float *out, double *starts)
{
    int64_t nwin = count_windows(e, n);
    int pool = e->cfg.pool;
    memset(e->sum, 0, (size_t)e->dim * sizeof(double));
    for (int64_t i0 = 0; i0 < nwin; i0 += e->batch) {
        int count = nwin - i0 < e->batch ? (int)(nwin - i0) : e->batch;
        VR_TRY(embed_windows(e, x, n, i0, count, e->batch_rows));
        if (!pool) {
            memcpy(out + (size_t)i0 * e->dim, e->batch_rows, (size_t)count * e->dim * sizeof(float));
            for (int i = 0; starts && i < count; i++) starts[i0 + i] = (double)window_start(e, n, i0 + i) / e->r.rate_hz;
            continue;
        }
        for (int i = 0; i < count; i++)
            for (int j = 0; j < e->dim; j++) e->sum[j] += e->batch_rows[(size_t)i * e->dim + j];
    }
    if (pool) {
        for (int j = 0; j < e->dim; j++) out[j] = (float)(e->sum[j] / (double)nwin);
        if (starts) starts[0] = 0.0;
    }
    if (e->cfg.normalize) vr_l2_normalise_rows(out, pool ? 1 : (int)nwin, e->dim);
    return VR_OK;
}

vr_status vr_embedder_embed_pcm(vr_embedder *e, const float *pcm, int64_t frames, int channels,
                                int rate_hz, float *out, int64_t max_rows, double *starts)
{
    if (frames < 1 || channels < 1)
        return vr_fail(VR_ERR_ARG, "embed", "(pcm): %lld frames of %d channels (1 or more of each)", (long long)frames,
                       channels);
    if (!out) return vr_fail(VR_ERR_ARG, "embed", "(pcm): no output buffer");
    const float *x;
    int64_t n;
    VR_TRY(vr_audio_convert(e->reader, pcm, frames, channels, rate_hz, "(pcm)", &x, &n));
    int64_t rows = e->cfg.pool ? 1 : count_windows(e, n);
    if (rows > max_rows)
        return vr_fail(VR_ERR_ARG, "embed", "(pcm): %lld frames at %d Hz give %lld rows, the output holds %lld",
                       (long long)frames, rate_hz, (long long)rows, (long long)max_rows);
    return embed_signal(e, x, n, out, starts);
}

vr_status vr_embedder_embed_file(vr_embedder *e, const char *path, const float **rows, int64_t *nrows,
                                 const double **starts, double *duration_seconds)
{
    const float *x;
    int64_t n;
    vr_audio_info info;
    VR_TRY(vr_audio_decode(e->reader, path, &x, &n, &info));
    int64_t need = e->cfg.pool ? 1 : count_windows(e, n);
    if (need > e->rows_cap) {
        vr_free(e->rows);
        vr_free(e->starts);
        e->rows = vr_alloc((size_t)need * e->dim * sizeof(float));
        e->starts = vr_alloc((size_t)need * sizeof(double));
        e->rows_cap = e->rows && e->starts ? need : 0;
        if (!e->rows_cap) return vr_fail(VR_ERR_NOMEM, "embed", "%s: cannot hold %lld rows", path, (long long)need);
    }
    VR_TRY(embed_signal(e, x, n, e->rows, e->starts));
    *rows = e->rows;
    *nrows = need;
    if (starts) *starts = e->starts;
    if (duration_seconds) *duration_seconds = (double)info.frames / info.rate_hz;
    return VR_OK;
}
