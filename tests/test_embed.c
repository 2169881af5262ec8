/* The embedding API (include/vicreg/embed.h) against the PyTorch reference of
 * tests/reference/make_embed_fixtures.py: a small audio checkpoint made in PyTorch, four
 * signals (one short and padded, a stereo one at 22.05 kHz, a long one of several windows, a
 * three-channel one at 8 kHz) and their rows for both branches, both outputs, per window and
 * pooled, raw and normalised, and the log-mel baseline; from PCM and from files. Also: two
 * threads with a handle each give the serial rows bit for bit; the seeded initialisation equals
 * the whole model's vr_model_init; the row count that vr_embedder_rows promises is the one
 * written; each bad input fails with its status and names its object. And `vicreg embed`
 * (its path the program's argument) on a class folder of the same signals: the same rows in
 * the folder's order with their labels and windows, a skipped file, no readable file; and
 * its image branch against the k-NN path's representations.
 *
 * Tolerance of every comparison with PyTorch: |got - ref| <= 1e-4 + 1e-4 * |ref| (measured at
 * most 4.8e-5 on the spectrogram branch, whose float32 log-mel input the network amplifies, and
 * 4.1e-6 on the waveform branch). */
#include <cjson/cJSON.h>
#include <ftw.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <sndfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recipe.h"
#include "testutil.h"
#include "vicreg/checkpoint.h"
#include "vicreg/embed.h"
#include "vicreg/embedding_set.h"
#include "vicreg/knn.h"
#include "vicreg/retrieval_metrics.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define N_SIGNALS 4

static const char *const SIGNALS[N_SIGNALS] = {"short", "stereo", "long", "three"};
static char dir[64];
static char ckpt[512];
static const char *cli; /* the vicreg program */
static vr_safetensors *ref;

static const char *tmp(const char *name)
{
    static char buf[8][300];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* A signal of the fixture: its PCM (frames, channels) and rate. */
typedef struct clip {
    const float *pcm;
    int64_t frames;
    int channels, rate;
} clip;

static clip get_signal(const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "%s.pcm", name);
    const vr_st_entry *e = vr_st_find(ref, key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    snprintf(key, sizeof key, "%s.rate", name);
    const char *rate = vr_st_metadata(ref, key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rate);
    return (clip){vr_st_data(ref, e), e->shape[0], (int)e->shape[1], atoi(rate)};
}

/* The reference rows `key` (rows, dim). */
static const float *get_rows(const char *key, int64_t *rows, int *dim)
{
    const vr_st_entry *e = vr_st_find(ref, key);
    if (!e) fprintf(stderr, "\n  no reference '%s'\n", key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    *rows = e->shape[0];
    *dim = (int)e->shape[1];
    return vr_st_data(ref, e);
}

static vr_embedder_config config(const char *branch, vr_embed_output output, int normalize, int pool,
                                 double hop_seconds)
{
    vr_embedder_config c = vr_embedder_defaults();
    c.branch = branch;
    c.output = output;
    c.normalize = normalize;
    c.pool = pool;
    c.hop_seconds = hop_seconds;
    c.batch = 4; /* nine windows take three passes, the last one partial */
    return c;
}

/* The fixture key of a configuration: SIG[.hopw].BRANCH.OUT[.pool][.norm] or SIG.logmel[.pool]. */
static void ref_key(char *key, size_t len, const char *sig, const vr_embedder_config *c)
{
    if (!strcmp(c->branch, "logmel"))
        snprintf(key, len, "%s.logmel%s", sig, c->pool ? ".pool" : "");
    else
        snprintf(key, len, "%s.%s.%s%s%s", sig, c->branch, c->output == VR_EMBED_EMBEDDING ? "embedding" : "repr",
                 c->pool ? ".pool" : "", c->normalize ? ".norm" : "");
}

/* Embeds fixture signal `sig` as c says and compares rows and starts with the reference. */
static void check_pcm(const char *sig, const char *ref_sig, const vr_embedder_config *c)
{
    vr_embedder *e;
    TU_OK(vr_embedder_open(ckpt, c, &e));
    clip s = get_signal(sig);
    char key[128];
    ref_key(key, sizeof key, ref_sig, c);
    int64_t nref;
    int dim;
    const float *want = get_rows(key, &nref, &dim);
    CU_ASSERT_EQUAL(vr_embedder_dim(e), dim);
    int64_t rows = vr_embedder_rows(e, s.frames, s.rate);
    CU_ASSERT_EQUAL_FATAL(rows, nref);
    float *out = malloc((size_t)rows * dim * sizeof(float));
    double *starts = malloc((size_t)rows * sizeof(double));
    TU_OK(vr_embedder_embed_pcm(e, s.pcm, s.frames, s.channels, s.rate, out, rows, starts));
    CU_ASSERT(tu_close(out, want, (size_t)(rows * dim), ATOL, RTOL, key));
    snprintf(key, sizeof key, "%s.starts", ref_sig);
    const vr_st_entry *st = vr_st_find(ref, key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const double *want_starts = vr_st_data(ref, st);
    for (int64_t i = 0; i < rows; i++) CU_ASSERT_DOUBLE_EQUAL(starts[i], c->pool ? 0.0 : want_starts[i], 1e-12);
    free(out);
    free(starts);
    vr_embedder_close(e);
}

/* Every signal, both branches and outputs, per window and pooled, raw and normalised; the
 * log-mel baseline; the long signal at the default hop too. */
static void test_parity_pcm(void)
{
    static const char *const branches[] = {"wave", "spec"};
    for (int i = 0; i < N_SIGNALS; i++)
        for (int b = 0; b < 2; b++)
            for (int o = 0; o < 2; o++)
                for (int norm = 0; norm < 2; norm++)
                    for (int pool = 0; pool < 2; pool++) {
                        vr_embedder_config c = config(branches[b], (vr_embed_output)o, norm, pool, 0.1);
                        check_pcm(SIGNALS[i], SIGNALS[i], &c);
                    }
    for (int i = 0; i < N_SIGNALS; i++)
        for (int pool = 0; pool < 2; pool++) {
            vr_embedder_config c = config("logmel", VR_EMBED_REPR, 0, pool, 0.1);
            check_pcm(SIGNALS[i], SIGNALS[i], &c);
        }
    vr_embedder_config c = config("spec", VR_EMBED_EMBEDDING, 0, 0, 0.0);
    check_pcm("long", "long.hopw", &c);
    c = config("wave", VR_EMBED_REPR, 1, 1, 0.0);
    check_pcm("long", "long.hopw", &c);
}

/* Writes a fixture signal as a float WAV file. */
static const char *write_signal(const char *sig)
{
    clip s = get_signal(sig);
    char name[64];
    snprintf(name, sizeof name, "%s.wav", sig);
    const char *path = tmp(name);
    SF_INFO info = {.samplerate = s.rate, .channels = s.channels, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(sf_writef_float(f, s.pcm, s.frames), s.frames);
    sf_close(f);
    return path;
}

/* The same rows from files of the same samples, one handle reused over all of them; the
 * duration is the file's. */
static void test_parity_file(void)
{
    vr_embedder_config cs[2] = {config("wave", VR_EMBED_REPR, 0, 0, 0.1),
                                config("spec", VR_EMBED_EMBEDDING, 1, 1, 0.1)};
    for (int k = 0; k < 2; k++) {
        vr_embedder *e;
        TU_OK(vr_embedder_open(ckpt, &cs[k], &e));
        for (int i = 0; i < N_SIGNALS; i++) {
            const char *path = write_signal(SIGNALS[i]);
            clip s = get_signal(SIGNALS[i]);
            const float *rows;
            const double *starts;
            int64_t n;
            double seconds;
            TU_OK(vr_embedder_embed_file(e, path, &rows, &n, &starts, &seconds));
            char key[128];
            ref_key(key, sizeof key, SIGNALS[i], &cs[k]);
            int64_t nref;
            int dim;
            const float *want = get_rows(key, &nref, &dim);
            CU_ASSERT_EQUAL_FATAL(n, nref);
            CU_ASSERT(tu_close(rows, want, (size_t)(n * dim), ATOL, RTOL, key));
            CU_ASSERT_DOUBLE_EQUAL(seconds, (double)s.frames / s.rate, 1e-12);
            snprintf(key, sizeof key, "%s.starts", SIGNALS[i]);
            const double *want_starts = vr_st_data(ref, vr_st_find(ref, key));
            for (int64_t r = 0; r < n; r++)
                CU_ASSERT_DOUBLE_EQUAL(starts[r], cs[k].pool ? 0.0 : want_starts[r], 1e-12);
        }
        vr_embedder_close(e);
    }
}

/* One thread's work: every signal embedded with its own handle, rows into out. */
typedef struct job {
    vr_embedder_config c;
    float *out[N_SIGNALS];
    vr_status status;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    vr_embedder *e;
    j->status = vr_embedder_open(ckpt, &j->c, &e);
    for (int round = 0; round < 3 && j->status == VR_OK; round++)
        for (int i = 0; i < N_SIGNALS && j->status == VR_OK; i++) {
            clip s = get_signal(SIGNALS[i]);
            int64_t rows = vr_embedder_rows(e, s.frames, s.rate);
            j->status = vr_embedder_embed_pcm(e, s.pcm, s.frames, s.channels, s.rate, j->out[i], rows, NULL);
        }
    if (j->status == VR_OK) vr_embedder_close(e);
    return NULL;
}

/* Two threads with a handle each (the two branches, each run three times over every signal)
 * give exactly the rows that the same handles give one after the other. */
static void test_threads(void)
{
    job serial[2], parallel[2];
    const char *branches[2] = {"wave", "spec"};
    for (int k = 0; k < 2; k++) {
        vr_embedder_config c = config(branches[k], VR_EMBED_EMBEDDING, 1, 0, 0.1);
        serial[k].c = parallel[k].c = c;
        for (int i = 0; i < N_SIGNALS; i++) {
            serial[k].out[i] = calloc(16 * 32, sizeof(float));
            parallel[k].out[i] = calloc(16 * 32, sizeof(float));
        }
        run_job(&serial[k]);
        CU_ASSERT_EQUAL_FATAL(serial[k].status, VR_OK);
    }
    pthread_t t[2];
    for (int k = 0; k < 2; k++) CU_ASSERT_EQUAL_FATAL(pthread_create(&t[k], NULL, run_job, &parallel[k]), 0);
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL(parallel[k].status, VR_OK);
        for (int i = 0; i < N_SIGNALS; i++) {
            CU_ASSERT(tu_close(parallel[k].out[i], serial[k].out[i], 16 * 32, 0.0, 0.0, branches[k]));
            free(serial[k].out[i]);
            free(parallel[k].out[i]);
        }
    }
}

/* Copies every tensor of the fixture checkpoint to path with the given recipe text (NULL:
 * none). */
static void write_checkpoint(const char *path, const char *recipe)
{
    vr_safetensors *st;
    TU_OK(vr_st_open(ckpt, &st));
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    for (int i = 0; i < vr_st_count(st); i++) {
        const vr_st_entry *e = vr_st_entry_at(st, i);
        TU_OK(vr_st_add(w, e->name, e->dtype, e->ndim, e->shape, vr_st_data(st, e)));
    }
    if (recipe) TU_OK(vr_st_add_metadata(w, "recipe", recipe));
    TU_OK(vr_st_write(w, path));
    vr_st_writer_free(w);
    vr_st_close(st);
}

/* The fixture's recipe text, malloc'd. */
static char *fixture_recipe(void)
{
    vr_safetensors *st;
    TU_OK(vr_st_open(ckpt, &st));
    char *text = strdup(vr_st_metadata(st, "recipe"));
    vr_st_close(st);
    return text;
}

/* random_init: the whole model of the recipe initialised by vr_model_init from the recipe's
 * seed and saved as a checkpoint gives exactly (atol 0) the rows of a random_init handle on
 * the trained checkpoint, for both branches; those rows differ from the trained ones. */
static void test_random_init(void)
{
    char *text = fixture_recipe();
    vr_recipe r;
    TU_OK(vr_recipe_load_text(&r, text, "fixture recipe", NULL, 0));
    vr_branch_config bc[VR_MAX_BRANCHES];
    int nb = vr_recipe_branches(&r, bc);
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    vr_model m;
    TU_OK(vr_model_create(&m, be, nb, bc));
    TU_OK(vr_model_init(&m, r.seed));
    const char *fresh = tmp("fresh.safetensors");
    TU_OK(vr_checkpoint_save(fresh, &m, NULL, NULL, text));
    vr_model_free(&m);
    vr_backend_destroy(be);
    free(text);

    clip s = get_signal("stereo");
    const char *branches[2] = {"wave", "spec"};
    for (int k = 0; k < 2; k++) {
        vr_embedder_config c = config(branches[k], VR_EMBED_EMBEDDING, 0, 0, 0.1);
        vr_embedder *trained, *random, *saved;
        TU_OK(vr_embedder_open(ckpt, &c, &trained));
        TU_OK(vr_embedder_open(fresh, &c, &saved));
        c.random_init = 1;
        TU_OK(vr_embedder_open(ckpt, &c, &random));
        int64_t rows = vr_embedder_rows(trained, s.frames, s.rate);
        size_t count = (size_t)rows * vr_embedder_dim(trained);
        float *a = malloc(count * sizeof(float)), *b = malloc(count * sizeof(float)), *t = malloc(count * sizeof(float));
        TU_OK(vr_embedder_embed_pcm(random, s.pcm, s.frames, s.channels, s.rate, a, rows, NULL));
        TU_OK(vr_embedder_embed_pcm(saved, s.pcm, s.frames, s.channels, s.rate, b, rows, NULL));
        TU_OK(vr_embedder_embed_pcm(trained, s.pcm, s.frames, s.channels, s.rate, t, rows, NULL));
        CU_ASSERT(tu_close(a, b, count, 0.0, 0.0, "random_init against vr_model_init"));
        double diff = 0;
        for (size_t i = 0; i < count; i++) diff = fmax(diff, fabs((double)a[i] - t[i]));
        CU_ASSERT(diff > 1e-2);
        free(a);
        free(b);
        free(t);
        vr_embedder_close(trained);
        vr_embedder_close(random);
        vr_embedder_close(saved);
    }
}

/* The rows vr_embedder_rows promises are the rows written (no fewer: the rest of the buffer
 * keeps its NaN fill; no more: that would fail with VR_ERR_ARG), over lengths around window
 * boundaries at several rates, and with one row fewer the call fails. */
static void test_rows(void)
{
    static const int rates[] = {16000, 22050, 44100, 8000, 48000, 11025};
    static const int64_t seconds_x1000[] = {1, 100, 249, 250, 251, 349, 350, 351, 1000, 1051, 2337};
    vr_embedder_config c = config("wave", VR_EMBED_REPR, 0, 0, 0.1);
    vr_embedder *e;
    TU_OK(vr_embedder_open(ckpt, &c, &e));
    CU_ASSERT_EQUAL(vr_embedder_rate_hz(e), 16000);
    CU_ASSERT_EQUAL(vr_embedder_window_samples(e), 4000);
    CU_ASSERT_EQUAL(vr_embedder_hop_samples(e), 1600);
    int dim = vr_embedder_dim(e);
    float *pcm = calloc(48000 * 3, sizeof(float)), *out = malloc(64 * (size_t)dim * sizeof(float));
    for (int i = 0; i < 48000 * 3; i++) pcm[i] = 0.2f * (float)sin(0.01 * i);
    for (size_t ri = 0; ri < sizeof rates / sizeof rates[0]; ri++)
        for (size_t li = 0; li < sizeof seconds_x1000 / sizeof seconds_x1000[0]; li++)
            for (int64_t delta = -1; delta <= 1; delta++) {
                int64_t frames = seconds_x1000[li] * rates[ri] / 1000 + delta;
                if (frames < 1) continue;
                int64_t rows = vr_embedder_rows(e, frames, rates[ri]);
                CU_ASSERT_FATAL(rows >= 1 && rows < 64);
                for (int64_t i = 0; i < 64 * dim; i++) out[i] = NAN;
                TU_OK(vr_embedder_embed_pcm(e, pcm, frames, 1, rates[ri], out, rows, NULL));
                int written = 1;
                for (int64_t i = 0; i < rows * dim; i++) written &= !isnan(out[i]);
                CU_ASSERT(written);
                CU_ASSERT(isnan(out[rows * dim]));
                if (rows > 1) {
                    CU_ASSERT_EQUAL(vr_embedder_embed_pcm(e, pcm, frames, 1, rates[ri], out, rows - 1, NULL), VR_ERR_ARG);
                }
            }
    free(pcm);
    free(out);
    vr_embedder_close(e);
}

/* 1 when the last message contains both words. */
static int says(const char *a, const char *b)
{
    const char *msg = vr_last_error();
    int ok = strstr(msg, a) && strstr(msg, b);
    if (!ok) fprintf(stderr, "\n  message '%s' should say '%s' and '%s'\n", msg, a, b);
    return ok;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Each bad checkpoint, configuration, file and buffer fails with its status and names it. */
static void test_bad_inputs(void)
{
    vr_embedder_config c = config("wave", VR_EMBED_REPR, 0, 0, 0.0);
    vr_embedder *e = (vr_embedder *)1;
    const char *missing = tmp("missing.safetensors");
    CU_ASSERT_EQUAL(vr_embedder_open(missing, &c, &e), VR_ERR_IO);
    CU_ASSERT(says(missing, "cannot open"));
    CU_ASSERT_PTR_NULL(e);

    const char *bare = tmp("no_recipe.safetensors");
    write_checkpoint(bare, NULL);
    CU_ASSERT_EQUAL(vr_embedder_open(bare, &c, &e), VR_ERR_NOT_FOUND);
    CU_ASSERT(says(bare, "holds no recipe"));

    const char *image = tmp("image.safetensors");
    write_checkpoint(image, "[data]\nkind = idx\n");
    CU_ASSERT_EQUAL(vr_embedder_open(image, &c, &e), VR_ERR_UNSUPPORTED);
    CU_ASSERT(says(image, "image recipe"));

    char *text = fixture_recipe();
    /* the waveform branch's "expander = 16-32-32" emptied */
    char *with = strdup(text), *exp = strstr(with, "expander = 16-32-32");
    CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
    memset(exp + strlen("expander = "), ' ', strlen("16-32-32"));
    const char *noexp = tmp("no_expander.safetensors");
    write_checkpoint(noexp, with);
    c.output = VR_EMBED_EMBEDDING;
    CU_ASSERT_EQUAL(vr_embedder_open(noexp, &c, &e), VR_ERR_ARG);
    CU_ASSERT(says(noexp, "no expander"));
    c.output = VR_EMBED_REPR;
    TU_OK(vr_embedder_open(noexp, &c, &e)); /* the representation needs no expander */
    vr_embedder_close(e);
    free(with);
    free(text);

    c.branch = "image";
    CU_ASSERT_EQUAL(vr_embedder_open(ckpt, &c, &e), VR_ERR_ARG);
    CU_ASSERT(says(ckpt, "unknown branch 'image'"));
    c.branch = "spec";
    c.window_seconds = 0.01; /* 160 samples: no spectrogram frame with n_fft 400 */
    CU_ASSERT_EQUAL(vr_embedder_open(ckpt, &c, &e), VR_ERR_ARG);
    CU_ASSERT(says(ckpt, "too short"));
    c.window_seconds = 0.0;

    TU_OK(vr_embedder_open(ckpt, &c, &e));
    const float *rows;
    const double *starts;
    int64_t n;
    const char *nofile = tmp("nothing_here.wav");
    CU_ASSERT_EQUAL(vr_embedder_embed_file(e, nofile, &rows, &n, &starts, NULL), VR_ERR_NOT_FOUND);
    CU_ASSERT(says(nofile, "No such file"));
    const char *textfile = tmp("words.wav");
    write_bytes(textfile, "these are words, not audio\n", 27);
    CU_ASSERT_EQUAL(vr_embedder_embed_file(e, textfile, &rows, &n, &starts, NULL), VR_ERR_UNSUPPORTED);
    CU_ASSERT(says(textfile, "not an audio format"));
    const char *corrupt = tmp("corrupt.wav");
    write_bytes(corrupt, "RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x07\0", 22);
    CU_ASSERT_NOT_EQUAL(vr_embedder_embed_file(e, corrupt, &rows, &n, &starts, NULL), VR_OK);
    CU_ASSERT(says(corrupt, "audio"));
    const char *unreadable = tmp("locked.wav");
    write_signal("short");
    CU_ASSERT_EQUAL(rename(tmp("short.wav"), unreadable), 0);
    CU_ASSERT_EQUAL(chmod(unreadable, 0), 0);
    if (geteuid() != 0) { /* root reads any file */
        CU_ASSERT_EQUAL(vr_embedder_embed_file(e, unreadable, &rows, &n, &starts, NULL), VR_ERR_IO);
        CU_ASSERT(says(unreadable, "Permission denied"));
    }
    CU_ASSERT_EQUAL(vr_embedder_embed_file(e, dir, &rows, &n, &starts, NULL), VR_ERR_IO);
    CU_ASSERT(says(dir, "directory"));
    float pcm[8] = {0}, out[64];
    CU_ASSERT_EQUAL(vr_embedder_embed_pcm(e, pcm, 0, 1, 16000, out, 1, NULL), VR_ERR_ARG);
    CU_ASSERT(says("(pcm)", "0 frames"));
    CU_ASSERT_EQUAL(vr_embedder_embed_pcm(e, pcm, 4, 0, 16000, out, 1, NULL), VR_ERR_ARG);
    CU_ASSERT(says("(pcm)", "0 channels"));
    CU_ASSERT_EQUAL(vr_embedder_embed_pcm(e, pcm, 4, 1, 0, out, 1, NULL), VR_ERR_ARG);
    CU_ASSERT(says("(pcm)", "rate 0 Hz"));
    CU_ASSERT_EQUAL(vr_embedder_embed_pcm(e, pcm, 4, 1, 16000, out, 0, NULL), VR_ERR_ARG);
    CU_ASSERT(says("(pcm)", "the output holds 0"));
    CU_ASSERT_EQUAL(vr_embedder_rows(e, 0, 16000), 0);
    vr_embedder_close(e);
}

/* Runs the vicreg program with args (NULL-terminated, after "vicreg"); its exit status. */
static int run_cli(const char *const *args)
{
    const char *argv[32] = {cli};
    int n = 1;
    while (args[n - 1] && n < 31) argv[n] = args[n - 1], n++;
    argv[n] = NULL;
    pid_t pid;
    extern char **environ;
    if (posix_spawn(&pid, cli, NULL, NULL, (char *const *)argv, environ) != 0) return -1;
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* vicreg embed over a folder of two classes holding the fixture signals (and a text file
 * named .wav, skipped) equals the API's reference rows per window, file by file in bytewise
 * order, labelled by class folder; a folder with nothing readable fails. */
static void test_cli(void)
{
    char data[300], sub[320];
    snprintf(data, sizeof data, "%s", tmp("set"));
    CU_ASSERT_EQUAL_FATAL(mkdir(data, 0755), 0);
    /* class "a": long, short; class "b": stereo, three, and a file that is no audio */
    const char *order[N_SIGNALS] = {"long", "short", "stereo", "three"};
    const char *label_of[N_SIGNALS] = {"a", "a", "b", "b"};
    for (int k = 0; k < 2; k++) {
        snprintf(sub, sizeof sub, "%s/%s", data, k ? "b" : "a");
        CU_ASSERT_EQUAL_FATAL(mkdir(sub, 0755), 0);
    }
    for (int i = 0; i < N_SIGNALS; i++) {
        const char *written = write_signal(SIGNALS[i]);
        char to[400];
        snprintf(to, sizeof to, "%s/%s/%s.wav", data, !strcmp(SIGNALS[i], "short") || !strcmp(SIGNALS[i], "long") ? "a" : "b",
                 SIGNALS[i]);
        CU_ASSERT_EQUAL_FATAL(rename(written, to), 0);
    }
    char junk[400];
    snprintf(junk, sizeof junk, "%s/b/zz_notes.wav", data);
    write_bytes(junk, "not audio\n", 10);
    const char *out = tmp("set.npy");
    const char *args[] = {"embed", ckpt, "--branch", "spec", "--output", "embedding", "--pool", "none", "--hop", "0.1",
                          "--threads", "2", "--batch", "3", data, "-o", out, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(args), 0);
    vr_embedding_set set;
    TU_OK(vr_embedding_set_read(out, 1, &set));
    int64_t at = 0;
    for (int i = 0; i < N_SIGNALS; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s.spec.embedding", order[i]);
        int64_t n;
        int dim;
        const float *want = get_rows(key, &n, &dim);
        CU_ASSERT_EQUAL_FATAL(set.d, dim);
        CU_ASSERT_FATAL(at + n <= set.n);
        CU_ASSERT(tu_close(set.x + at * dim, want, (size_t)(n * dim), ATOL, RTOL, key));
        snprintf(key, sizeof key, "%s.starts", order[i]);
        const double *starts = vr_st_data(ref, vr_st_find(ref, key));
        clip s = get_signal(order[i]);
        double seconds = (double)s.frames / s.rate;
        for (int64_t r = 0; r < n; r++) {
            const vr_embedding_row *row = &set.rows[at + r];
            CU_ASSERT(strstr(row->file, order[i]) != NULL);
            CU_ASSERT_STRING_EQUAL(row->label, label_of[i]);
            CU_ASSERT_DOUBLE_EQUAL(row->start_s, starts[r], 1e-6);
            CU_ASSERT_DOUBLE_EQUAL(row->end_s, n == 1 ? seconds : fmin(starts[r] + 0.25, seconds), 1e-6);
        }
        at += n;
    }
    CU_ASSERT_EQUAL(at, set.n);
    cJSON *j = cJSON_Parse(set.meta_json ? set.meta_json : "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(cJSON_GetObjectItem(j, "branch")), "spec");
    CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(cJSON_GetObjectItem(j, "output")), "embedding");
    CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(cJSON_GetObjectItem(j, "pool")), "none");
    CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "normalize")));
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "window")), 0.25, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "hop")), 0.1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "rate")), 16000, 0);
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "rows")), (double)set.n, 0);
    const char *where = cJSON_GetStringValue(cJSON_GetObjectItem(j, "checkpoint"));
    CU_ASSERT(where && where[0] == '/' && strstr(where, "embed_ckpt.safetensors"));
    cJSON_Delete(j);
    vr_embedding_set_free(&set);

    const char *none[] = {"embed", ckpt, "--branch", "wave", junk, "-o", tmp("none.npy"), NULL};
    CU_ASSERT_EQUAL(run_cli(none), 1);
    CU_ASSERT_NOT_EQUAL(access(tmp("none.npy"), F_OK), 0);
}

/* The leave-one-out mAP of rows x (n, d) by labels, on cosine similarity (the library's
 * vr_label_retrieval, itself tested against naive loops in test_eval). */
static double map_of(const float *x, int64_t n, int d, const int *labels)
{
    float *c = malloc((size_t)n * d * sizeof(float));
    memcpy(c, x, (size_t)n * d * sizeof(float));
    vr_l2_normalise_rows(c, (int)n, d);
    double map = -1;
    CU_ASSERT_EQUAL(vr_label_retrieval(c, labels, (int)n, d, NULL, 0, NULL, &map), VR_OK);
    free(c);
    return map;
}

static double json_number(const cJSON *j, const char *obj, const char *key)
{
    return cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, obj), key));
}

/* vicreg eval retrieval on the set test_cli wrote (windows of four files, two labels): the
 * trained figures are those of the set's rows; the random-init baseline those of the same
 * files embedded here with random_init through the API, and the log-mel one those of branch
 * "logmel", both with the set's window and hop; a paired set of another dimension, a missing
 * set and a set without rows are refused. */
static void test_cli_eval_retrieval(void)
{
    const char *set_path = tmp("set.npy"), *json_path = tmp("retrieval.json");
    vr_embedding_set set;
    TU_OK(vr_embedding_set_read(set_path, 1, &set));
    int *labels, nclasses;
    TU_OK(vr_embedding_set_label_ids(&set, &labels, &nclasses));
    CU_ASSERT_EQUAL(nclasses, 2);
    const char *args[] = {"eval", "retrieval", set_path, "--baselines", "--threads", "2", "--json", json_path, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(args), 0);
    FILE *f = fopen(json_path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char text[4096];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    cJSON *j = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_DOUBLE_EQUAL(json_number(j, "trained", "map"), 100 * map_of(set.x, set.n, set.d, labels), 1e-9);

    const char *branches[2] = {"spec", "logmel"};
    const char *keys[2] = {"random_init", "logmel_mean"};
    for (int b = 0; b < 2; b++) {
        vr_embedder_config cfg = vr_embedder_defaults();
        cfg.branch = branches[b];
        cfg.output = VR_EMBED_EMBEDDING;
        cfg.random_init = b == 0;
        cfg.window_seconds = 0.25;
        cfg.hop_seconds = 0.1;
        vr_embedder *e;
        TU_OK(vr_embedder_open(ckpt, &cfg, &e));
        int d = vr_embedder_dim(e);
        float *x = malloc((size_t)set.n * d * sizeof(float));
        int64_t at = 0;
        while (at < set.n) { /* each file's windows follow its first row */
            const float *rows;
            const double *starts;
            int64_t n;
            TU_OK(vr_embedder_embed_file(e, set.rows[at].file, &rows, &n, &starts, NULL));
            CU_ASSERT_FATAL(n >= 1 && at + n <= set.n);
            memcpy(x + at * d, rows, (size_t)(n * d) * sizeof(float));
            at += n;
        }
        CU_ASSERT_EQUAL(at, set.n);
        CU_ASSERT_DOUBLE_EQUAL(json_number(j, keys[b], "map"), 100 * map_of(x, set.n, d, labels), 1e-9);
        free(x);
        vr_embedder_close(e);
    }
    cJSON_Delete(j);

    /* a paired set of another dimension; a missing set; a set without its rows file */
    const char *wave = tmp("wave_set.npy");
    const char *make_wave[] = {"embed", ckpt, "--branch", "wave", "--pool", "none", "--hop", "0.1", tmp("set"), "-o", wave, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(make_wave), 0);
    const char *paired[] = {"eval", "retrieval", set_path, "--paired", wave, NULL};
    CU_ASSERT_EQUAL(run_cli(paired), 1);
    const char *missing[] = {"eval", "retrieval", tmp("nothing.npy"), NULL};
    CU_ASSERT_EQUAL(run_cli(missing), 1);
    CU_ASSERT_EQUAL(unlink(tmp("wave_set.csv")), 0);
    const char *no_rows[] = {"eval", "retrieval", wave, NULL};
    CU_ASSERT_EQUAL(run_cli(no_rows), 1);
    vr_free(labels);
    vr_embedding_set_free(&set);
}

/* An IDX file of unsigned bytes with the given sizes. */
static void write_idx(const char *path, const uint32_t *dims, int rank, const uint8_t *body, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    uint8_t head[4] = {0, 0, 8, (uint8_t)rank};
    fwrite(head, 1, 4, f);
    for (int i = 0; i < rank; i++) {
        uint8_t be[4] = {(uint8_t)(dims[i] >> 24), (uint8_t)(dims[i] >> 16), (uint8_t)(dims[i] >> 8), (uint8_t)dims[i]};
        fwrite(be, 1, 4, f);
    }
    CU_ASSERT_EQUAL(fwrite(body, 1, len, f), len);
    fclose(f);
}

/* vicreg embed --branch image on IDX images of a small image checkpoint (saved here from a
 * seeded model) gives the representations of vr_represent_gray (the k-NN path: the same
 * centred input through the encoder in evaluation mode) within 1e-5 + 1e-5*|ref|, one row per
 * image named IMAGES#index and labelled by the label file. */
static void test_cli_image(void)
{
    const char *text = "[data]\nkind = idx\n[views]\nsize = 16\n[model]\nwidths = 4,8,8,16\nstem_kernel = 3\n"
                       "stem_stride = 1\nstem_pad = 1\npool_kernel = 0\nexpander = 16-32\n[train]\nseed = 3\n";
    vr_recipe r;
    TU_OK(vr_recipe_load_text(&r, text, "image test recipe", NULL, 0));
    vr_branch_config bc[VR_MAX_BRANCHES];
    int nb = vr_recipe_branches(&r, bc);
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    vr_model m;
    TU_OK(vr_model_create(&m, be, nb, bc));
    TU_OK(vr_model_init(&m, r.seed));
    const char *path = tmp("image.safetensors");
    TU_OK(vr_checkpoint_save(path, &m, NULL, NULL, text));

    enum { N = 7, H = 20, W = 18 };
    uint8_t images[N * H * W], labels[N];
    vr_rng rng;
    vr_rng_seed(&rng, 5);
    for (int i = 0; i < N * H * W; i++) images[i] = (uint8_t)vr_rng_below(&rng, 256);
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)(i % 3);
    const uint32_t idims[3] = {N, H, W}, ldims[1] = {N};
    const char *img = tmp("images.idx"), *lab = tmp("labels.idx"), *out = tmp("images.npy");
    write_idx(img, idims, 3, images, sizeof images);
    write_idx(lab, ldims, 1, labels, sizeof labels);
    const char *args[] = {"embed", path, "--branch", "image", "--labels", lab, "--batch", "4", img, "-o", out, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(args), 0);

    int n[1] = {3}, h[1] = {16}, w[1] = {16};
    TU_OK(vr_model_plan(&m, n, h, w));
    int dim = m.branch[0].enc.out_dim;
    float *want = malloc((size_t)N * dim * sizeof(float));
    TU_OK(vr_represent_gray(&m, 0, &r.views, images, N, H, W, 1, want));
    vr_embedding_set set;
    TU_OK(vr_embedding_set_read(out, 1, &set));
    CU_ASSERT_EQUAL_FATAL(set.n, N);
    CU_ASSERT_EQUAL_FATAL(set.d, dim);
    CU_ASSERT(tu_close(set.x, want, (size_t)N * dim, 1e-5, 1e-5, "image representations"));
    for (int i = 0; i < N; i++) {
        char name[400], label[8];
        snprintf(name, sizeof name, "%s#%d", img, i);
        snprintf(label, sizeof label, "%d", i % 3);
        CU_ASSERT_STRING_EQUAL(set.rows[i].file, name);
        CU_ASSERT_STRING_EQUAL(set.rows[i].label, label);
    }
    vr_embedding_set_free(&set);
    free(want);
    vr_model_free(&m);
    vr_backend_destroy(be);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_embed PATH/TO/vicreg\n");
        return 2;
    }
    cli = argv[1];
    snprintf(dir, sizeof dir, "/tmp/vr_test_embed_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(ckpt, sizeof ckpt, "%s/embed_ckpt.safetensors", VR_FIXTURE_DIR);
    ref = tu_open_fixture("embed.safetensors");
    if (!ref) return 2;
    static const tu_test tests[] = {
        {"parity_pcm", test_parity_pcm},
        {"parity_file", test_parity_file},
        {"threads", test_threads},
        {"random_init", test_random_init},
        {"rows", test_rows},
        {"bad_inputs", test_bad_inputs},
        {"cli", test_cli},
        {"cli_eval_retrieval", test_cli_eval_retrieval},
        {"cli_image", test_cli_image},
        {NULL, NULL},
    };
    int rc = tu_main("embed", tests);
    vr_st_close(ref);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
