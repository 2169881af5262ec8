/* vicreg embed: a collection of audio (or IDX images) -> an embedding set on disk (OUT.npy,
 * OUT.csv, OUT.json; embedding_set.h), with one embedding handle per thread for audio. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "featurize.h"
#include "vicreg/checkpoint.h"
#include "vicreg/embed.h"
#include "vicreg/embedding_set.h"
#include "vicreg/knn.h"
#include "vicreg/safetensors.h"

static const char *embed_help =
    "usage: vicreg embed CHECKPOINT --branch wave|spec|logmel [options] INPUTS... -o OUT.npy\n"
    "       vicreg embed CHECKPOINT --branch image --labels LABELS.idx [options] IMAGES.idx -o OUT.npy\n"
    "\n"
    "Embeds audio with one branch of a trained checkpoint (its stored recipe gives the network,\n"
    "the sample rate and the front end). Every file is mixed to mono and resampled to the\n"
    "model's rate, cut into windows (the recipe's crop by default; a shorter file is one window\n"
    "with the file centred in zeros) and run through the network in evaluation mode. Writes\n"
    "OUT.npy (rows x dim, float32), OUT.csv (file,start,end,label per row) and OUT.json (the\n"
    "settings, so that queries can be embedded the same way).\n"
    "\n"
    "  INPUTS              audio files; folders, walked recursively (the audio files in them;\n"
    "                      label = the sub-folder directly under the folder given); CSV\n"
    "                      manifests with path,label[,split] columns (labels.csv)\n"
    "  --branch B          wave (waveform encoder), spec (spectrogram encoder), logmel (the\n"
    "                      baseline: the log-mel spectrogram averaged over time, no network), or\n"
    "                      image (the encoder of an image checkpoint, on IDX images)\n"
    "  --output O          repr (the encoder's output, default) or embedding (the expander's)\n"
    "  --normalize         scale each row to unit L2 norm (after pooling)\n"
    "  --pool P            mean (default: one row per file, the mean of its windows) or none\n"
    "                      (one row per window)\n"
    "  --window S          window length in seconds (default: the recipe's crop)\n"
    "  --hop S             hop between windows in seconds (default: the window)\n"
    "  --random-init       the recipe's network at its seeded initialisation (the untrained\n"
    "                      baseline) instead of the checkpoint's weights\n"
    "  --threads N         worker threads, each with its own network (default: every core)\n"
    "  --batch N           windows per forward pass (default 32)\n"
    "  --select V          manifests: keep the rows whose split column is V (e.g. test)\n"
    "  --labels PATH       image branch: the IDX label file of the images\n"
    "  -o OUT.npy          where to write\n"
    "\n"
    "Files that cannot be read are skipped with a warning each and counted; the exit status is\n"
    "0 when at least one row was written.\n";

typedef struct embed_args {
    const char *checkpoint, *out, *select, *labels;
    vr_embedder_config cfg;
    int threads;
    char **inputs;
    int ninputs;
} embed_args;

/* One file's outcome: its rows, or why it was skipped. */
typedef struct file_result {
    float *rows;     /* (n, dim) */
    double *starts;  /* (n) */
    int64_t n;
    double seconds;
    char *error;
} file_result;

static int parse_positive(const char *cmd, const char *opt, const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x > 0) || !isfinite(x)) return vr_cli_usage(cmd, "%s needs a positive number, not '%s'", opt, v), 0;
    *out = x;
    return 1;
}

static int parse_count(const char *cmd, const char *opt, const char *v, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 1 || x > 4096) return vr_cli_usage(cmd, "%s needs a whole number 1..4096, not '%s'", opt, v), 0;
    *out = (int)x;
    return 1;
}

/* VR_EXIT_OK when parsed; a usage error already reported otherwise. -1: --help was printed. */
static int parse_args(int argc, char **argv, embed_args *a)
{
    const char *cmd = "embed";
    memset(a, 0, sizeof *a);
    a->cfg = vr_embedder_defaults();
    a->cfg.branch = NULL;
    a->cfg.pool = 1;
    a->inputs = calloc((size_t)argc, sizeof *a->inputs);
    if (!a->inputs) return vr_cli_usage(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has_value = i + 1 < argc;
        const char *v = has_value ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) return fputs(embed_help, stdout), -1;
        if (!strcmp(o, "--normalize")) {
            a->cfg.normalize = 1;
        } else if (!strcmp(o, "--random-init")) {
            a->cfg.random_init = 1;
        } else if (!strcmp(o, "--branch") || !strcmp(o, "--output") || !strcmp(o, "--pool") || !strcmp(o, "--window") ||
                   !strcmp(o, "--hop") || !strcmp(o, "--threads") || !strcmp(o, "--batch") || !strcmp(o, "--select") ||
                   !strcmp(o, "--labels") || !strcmp(o, "-o")) {
            if (!has_value) return vr_cli_usage(cmd, "%s needs a value", o);
            i++;
            if (!strcmp(o, "--branch")) {
                a->cfg.branch = v;
            } else if (!strcmp(o, "--output")) {
                if (strcmp(v, "repr") && strcmp(v, "embedding")) return vr_cli_usage(cmd, "--output is repr or embedding, not '%s'", v);
                a->cfg.output = !strcmp(v, "embedding") ? VR_EMBED_EMBEDDING : VR_EMBED_REPR;
            } else if (!strcmp(o, "--pool")) {
                if (strcmp(v, "mean") && strcmp(v, "none")) return vr_cli_usage(cmd, "--pool is mean or none, not '%s'", v);
                a->cfg.pool = !strcmp(v, "mean");
            } else if (!strcmp(o, "--window")) {
                if (!parse_positive(cmd, o, v, &a->cfg.window_seconds)) return VR_EXIT_USAGE;
            } else if (!strcmp(o, "--hop")) {
                if (!parse_positive(cmd, o, v, &a->cfg.hop_seconds)) return VR_EXIT_USAGE;
            } else if (!strcmp(o, "--threads")) {
                if (!parse_count(cmd, o, v, &a->threads)) return VR_EXIT_USAGE;
            } else if (!strcmp(o, "--batch")) {
                if (!parse_count(cmd, o, v, &a->cfg.batch)) return VR_EXIT_USAGE;
            } else if (!strcmp(o, "--select")) {
                a->select = v;
            } else if (!strcmp(o, "--labels")) {
                a->labels = v;
            } else {
                a->out = v;
            }
        } else if (o[0] == '-' && o[1]) {
            return vr_cli_usage(cmd, "unknown option '%s'", o);
        } else if (!a->checkpoint) {
            a->checkpoint = o;
        } else {
            a->inputs[a->ninputs++] = argv[i];
        }
    }
    if (!a->checkpoint) return vr_cli_usage(cmd, "which checkpoint? (vicreg embed CHECKPOINT --branch B INPUTS... -o OUT.npy)");
    if (!a->cfg.branch) return vr_cli_usage(cmd, "which branch? (--branch wave, spec, logmel or image)");
    if (strcmp(a->cfg.branch, "wave") && strcmp(a->cfg.branch, "spec") && strcmp(a->cfg.branch, "logmel") &&
        strcmp(a->cfg.branch, "image"))
        return vr_cli_usage(cmd, "--branch is wave, spec, logmel or image, not '%s'", a->cfg.branch);
    if (!a->ninputs) return vr_cli_usage(cmd, "nothing to embed: give files, folders or manifests");
    if (!a->out) return vr_cli_usage(cmd, "where to? (-o OUT.npy)");
    if (!strcmp(a->cfg.branch, "image") && (!a->labels || a->ninputs != 1))
        return vr_cli_usage(cmd, "--branch image takes one IDX image file and its --labels file");
    if (a->threads == 0) a->threads = omp_get_num_procs();
    return VR_EXIT_OK;
}

/* The settings of the set as a JSON object (malloc'd text), so that a search can embed its
 * queries the same way. */
static char *settings_json(const embed_args *a, const char *branch, double window_s, double hop_s, int rate, int dim,
                           int64_t rows)
{
    char abs[PATH_MAX];
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "checkpoint", realpath(a->checkpoint, abs) ? abs : a->checkpoint);
    cJSON_AddStringToObject(j, "branch", branch);
    cJSON_AddStringToObject(j, "output", a->cfg.output == VR_EMBED_EMBEDDING ? "embedding" : "repr");
    cJSON_AddBoolToObject(j, "normalize", a->cfg.normalize);
    cJSON_AddStringToObject(j, "pool", a->cfg.pool ? "mean" : "none");
    cJSON_AddNumberToObject(j, "window", window_s);
    cJSON_AddNumberToObject(j, "hop", hop_s);
    cJSON_AddNumberToObject(j, "rate", rate);
    cJSON_AddBoolToObject(j, "random_init", a->cfg.random_init);
    cJSON_AddNumberToObject(j, "dim", dim);
    cJSON_AddNumberToObject(j, "rows", (double)rows);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

/* "done/total files, rate files/s, ETA" on stderr: rewritten in place on a terminal, a line
 * every few seconds otherwise. Called under the progress lock. */
typedef struct progress {
    int tty, total;
    double start, last;
} progress;

static void progress_show(progress *p, int done, int final)
{
    double now = vr_cli_now(), every = p->tty ? 0.2 : 5.0;
    if (!final && now - p->last < every) return;
    if (!p->tty && final) return;
    p->last = now;
    double elapsed = now - p->start, rate = elapsed > 0 ? done / elapsed : 0;
    char eta[32];
    vr_cli_duration(eta, sizeof eta, rate > 0 ? (p->total - done) / rate : 0);
    fprintf(stderr, "%sembed: %d/%d files, %.1f files/s, ETA %s%s", p->tty ? "\r" : "", done, p->total, rate, eta,
            p->tty && !final ? "\033[K" : "\n");
    fflush(stderr);
}

/* One file through the thread's handle into r (copies: the handle's buffers are reused). */
static void embed_one(vr_embedder *e, const char *path, int dim, file_result *r)
{
    const float *rows;
    const double *starts;
    if (vr_embedder_embed_file(e, path, &rows, &r->n, &starts, &r->seconds) != VR_OK) {
        r->error = strdup(vr_last_error());
        r->n = 0;
        return;
    }
    r->rows = malloc((size_t)r->n * dim * sizeof(float));
    r->starts = malloc((size_t)r->n * sizeof(double));
    if (!r->rows || !r->starts) {
        r->error = strdup("out of memory");
        r->n = 0;
        return;
    }
    memcpy(r->rows, rows, (size_t)r->n * dim * sizeof(float));
    memcpy(r->starts, starts, (size_t)r->n * sizeof(double));
}

/* Every file on a.threads threads, each with its own handle taking the next file from a
 * shared counter; results land at their file's index, so the output order is the input order.
 * *dim, *window_s, *hop_s, *rate from the handles; open_error receives the first failure to
 * open one. */
static void run_workers(const embed_args *a, const vr_cli_inputs *in, file_result *res, int *dim, double *window_s,
                        double *hop_s, int *rate, char *open_error, size_t error_len)
{
    int next = 0, done = 0;
    progress p = {.tty = isatty(fileno(stderr)), .total = in->n, .start = vr_cli_now()};
    p.last = p.start;
    vr_embedder_config cfg = a->cfg;
    cfg.threads = 1;
    int threads = a->threads < in->n ? a->threads : in->n;
#pragma omp parallel num_threads(threads)
    {
        vr_embedder *e = NULL;
        if (vr_embedder_open(a->checkpoint, &cfg, &e) != VR_OK) {
#pragma omp critical(embed_open)
            if (!open_error[0]) snprintf(open_error, error_len, "%s", vr_last_error());
        }
#pragma omp barrier
#pragma omp single
        if (!open_error[0]) {
            *dim = vr_embedder_dim(e);
            *rate = vr_embedder_rate_hz(e);
            *window_s = (double)vr_embedder_window_samples(e) / *rate;
            *hop_s = (double)vr_embedder_hop_samples(e) / *rate;
        }
        while (!open_error[0]) {
            int i;
#pragma omp atomic capture
            i = next++;
            if (i >= in->n) break;
            embed_one(e, in->items[i].path, *dim, &res[i]);
            int finished;
#pragma omp atomic capture
            finished = ++done;
#pragma omp critical(embed_progress)
            progress_show(&p, finished, 0);
        }
        vr_embedder_close(e);
    }
    if (!open_error[0]) progress_show(&p, done, 1);
}

/* The rows of every embedded file, in input order, into the set; the files skipped reported. */
static vr_status assemble(const vr_cli_inputs *in, file_result *res, int dim, double window_s,
                          vr_embedding_set *set, int *skipped)
{
    int64_t n = 0;
    *skipped = 0;
    for (int i = 0; i < in->n; i++) {
        if (res[i].error) {
            fprintf(stderr, "vicreg embed: warning: skipped %s: %s\n", in->items[i].path, res[i].error);
            (*skipped)++;
        }
        n += res[i].n;
    }
    memset(set, 0, sizeof *set);
    if (n == 0) return VR_OK;
    set->n = n;
    set->d = dim;
    set->x = vr_alloc((size_t)n * dim * sizeof(float));
    set->rows = calloc((size_t)n, sizeof *set->rows);
    if (!set->x || !set->rows) return vr_fail(VR_ERR_NOMEM, "embed", "cannot hold %lld rows of %d", (long long)n, dim);
    int64_t at = 0;
    for (int i = 0; i < in->n; i++)
        for (int64_t k = 0; k < res[i].n; k++, at++) {
            memcpy(set->x + at * dim, res[i].rows + k * dim, (size_t)dim * sizeof(float));
            vr_embedding_row *row = &set->rows[at];
            row->start_s = res[i].starts[k];
            row->end_s = fmin(row->start_s + window_s, res[i].seconds);
            if (res[i].n == 1) row->end_s = res[i].seconds; /* pooled, or a file within one window */
            row->file = strdup(in->items[i].path);
            row->label = strdup(in->items[i].label);
            if (!row->file || !row->label) return vr_fail(VR_ERR_NOMEM, "embed", "cannot copy a path");
        }
    return VR_OK;
}

static int embed_audio(const embed_args *a)
{
    vr_cli_inputs in;
    if (vr_cli_list_inputs(a->inputs, a->ninputs, a->select, &in) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "embed");
    file_result *res = calloc((size_t)in.n, sizeof *res);
    if (!res) {
        vr_cli_inputs_free(&in);
        fprintf(stderr, "vicreg embed: out of memory\n");
        return VR_EXIT_RUNTIME;
    }
    double t0 = vr_cli_now(), window_s = 0, hop_s = 0;
    int dim = 0, rate = 0, skipped = 0, rc = VR_EXIT_OK;
    char open_error[1024] = "";
    run_workers(a, &in, res, &dim, &window_s, &hop_s, &rate, open_error, sizeof open_error);
    vr_embedding_set set = {0};
    if (open_error[0]) {
        fprintf(stderr, "vicreg embed: %s\n", open_error);
        rc = VR_EXIT_RUNTIME;
    } else if (assemble(&in, res, dim, window_s, &set, &skipped) != VR_OK) {
        rc = vr_cli_fail(VR_EXIT_RUNTIME, "embed");
    } else if (set.n == 0) {
        fprintf(stderr, "vicreg embed: none of the %d files could be read; nothing written\n", in.n);
        rc = VR_EXIT_RUNTIME;
    } else if (!(set.meta_json = settings_json(a, a->cfg.branch, window_s, hop_s, rate, dim, set.n))) {
        fprintf(stderr, "vicreg embed: out of memory\n");
        rc = VR_EXIT_RUNTIME;
    } else if (vr_embedding_set_write(a->out, &set) != VR_OK) {
        rc = vr_cli_fail(VR_EXIT_RUNTIME, "embed");
    } else {
        double secs = vr_cli_now() - t0;
        printf("embed: %d files -> %lld rows x %d (%s %s%s, %s) in %.1f s, %.1f files/s; %d skipped; wrote %s\n",
               in.n - skipped, (long long)set.n, dim, a->cfg.branch,
               a->cfg.output == VR_EMBED_EMBEDDING ? "embedding" : "repr", a->cfg.normalize ? ", normalized" : "",
               a->cfg.pool ? "one row per file" : "one row per window", secs, (in.n - skipped) / secs, skipped,
               a->out);
    }
    vr_embedding_set_free(&set);
    for (int i = 0; i < in.n; i++) {
        free(res[i].rows);
        free(res[i].starts);
        free(res[i].error);
    }
    free(res);
    vr_cli_inputs_free(&in);
    return rc;
}

/* The recipe stored in a checkpoint. */
static vr_status stored_recipe(const char *path, vr_recipe *r)
{
    vr_safetensors *st;
    VR_TRY(vr_st_open(path, &st));
    const char *text = vr_st_metadata(st, "recipe");
    char name[600];
    snprintf(name, sizeof name, "%s (stored recipe)", path);
    vr_status s = text ? vr_recipe_load_text(r, text, name, NULL, 0)
                       : vr_fail(VR_ERR_NOT_FOUND, "embed", "%s: holds no recipe; not written by vicreg train", path);
    vr_st_close(st);
    return s;
}

/* The image branch: the recipe's evaluation input of every image (the whole image resized to
 * the views' size and normalised), the encoder (and expander) in evaluation mode. Rows are
 * named IMAGES#index, labelled by the label file. */
static int embed_images(const embed_args *a)
{
    const char *cmd = "embed";
    double t0 = vr_cli_now();
    vr_recipe r;
    if (stored_recipe(a->checkpoint, &r) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, cmd);
    if (r.kind == VR_DATA_AUDIO)
        return vr_cli_usage(cmd, "%s is an audio checkpoint: --branch wave, spec or logmel", a->checkpoint);
    if (r.kind != VR_DATA_IDX)
        return vr_cli_usage(cmd, "%s was trained on an image folder; --branch image reads IDX images only",
                            a->checkpoint);
    snprintf(r.test_images, sizeof r.test_images, "%s", a->inputs[0]);
    snprintf(r.test_labels, sizeof r.test_labels, "%s", a->labels);
    r.threads = a->threads;
    vr_backend *be;
    vr_model m;
    if (vr_cli_open_model(&r, &be, &m) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "model");
    vr_source s;
    vr_features f = {0};
    vr_embedding_set set = {0};
    int emb = a->cfg.output == VR_EMBED_EMBEDDING;
    vr_status st = vr_source_open(&s, &r, VR_SPLIT_TEST, 0);
    if (st == VR_OK) st = vr_features_plan(&m, &s, a->cfg.batch > 0 ? a->cfg.batch : 32);
    if (st == VR_OK) st = a->cfg.random_init ? vr_model_init(&m, r.seed) : vr_checkpoint_load(a->checkpoint, &m, NULL, NULL);
    if (st == VR_OK && emb && !m.branch[0].has_expander)
        st = vr_fail(VR_ERR_ARG, "embed", "%s: the image branch has no expander, so no embedding output", a->checkpoint);
    if (st == VR_OK) st = vr_features_compute(&m, &s, &r, 0, emb, &f);
    if (st == VR_OK) {
        set.n = f.n;
        set.d = emb ? f.emb_dim[0] : f.repr_dim[0];
        set.x = emb ? f.emb[0] : f.repr[0];
        if (emb) f.emb[0] = NULL;
        else f.repr[0] = NULL;
        if (a->cfg.normalize) vr_l2_normalise_rows(set.x, (int)set.n, set.d);
        set.rows = calloc((size_t)set.n, sizeof *set.rows);
        if (!set.rows) st = vr_fail(VR_ERR_NOMEM, "embed", "cannot hold %lld rows", (long long)set.n);
    }
    for (int64_t i = 0; st == VR_OK && i < set.n; i++) {
        char name[VR_RECIPE_PATH + 32], label[16];
        snprintf(name, sizeof name, "%s#%lld", a->inputs[0], (long long)i);
        snprintf(label, sizeof label, "%d", s.labels[i]);
        set.rows[i].file = strdup(name);
        set.rows[i].label = strdup(label);
        if (!set.rows[i].file || !set.rows[i].label) st = vr_fail(VR_ERR_NOMEM, "embed", "cannot name a row");
    }
    embed_args one_row_each = *a; /* an image is one row: nothing to pool */
    one_row_each.cfg.pool = 0;
    if (st == VR_OK && !(set.meta_json = settings_json(&one_row_each, "image", 0, 0, 0, set.d, set.n)))
        st = vr_fail(VR_ERR_NOMEM, "embed", "cannot write the settings");
    if (st == VR_OK) st = vr_embedding_set_write(a->out, &set);
    int rc = VR_EXIT_OK;
    if (st != VR_OK) rc = vr_cli_fail(VR_EXIT_RUNTIME, cmd);
    else
        printf("embed: %lld images -> %lld rows x %d (image %s%s) in %.1f s; wrote %s\n", (long long)set.n,
               (long long)set.n, set.d, emb ? "embedding" : "repr", a->cfg.normalize ? ", normalized" : "",
               vr_cli_now() - t0, a->out);
    vr_embedding_set_free(&set);
    vr_features_free(&f);
    vr_source_free(&s);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return rc;
}

int vr_cmd_embed(int argc, char **argv)
{
    embed_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == VR_EXIT_OK) rc = !strcmp(a.cfg.branch, "image") ? embed_images(&a) : embed_audio(&a);
    else if (rc < 0) rc = VR_EXIT_OK;
    free(a.inputs);
    return rc;
}
