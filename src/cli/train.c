/* vicreg train: the training loop of a recipe — data order, views, steps, schedule, progress,
 * metrics, checkpoints, resume — and the k-NN evaluation at its end.
 *
 * Determinism: the data order of epoch e is a shuffle seeded from (seed, e), and the views of
 * the sample at global position p = step * batch + i from (seed, 2p + view). Nothing else is
 * random after initialisation, so the state of a run is its weights, optimiser state and step:
 * a run resumed from a checkpoint continues bit for bit as if it had never stopped (same thread
 * count, same build). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <omp.h>
#include <unistd.h>

#include "cli.h"
#include "source.h"
#include "vicreg/checkpoint.h"
#include "vicreg/comm.h"
#include "vicreg/safetensors.h"
#include "vicreg/trainer.h"

static const char *train_help =
    "usage: vicreg train RECIPE.ini [--set section.key=value]... [--resume CHECKPOINT] [--dry-run]\n"
    "\n"
    "Trains a VICReg model as RECIPE.ini says (see recipes/ for examples; every key is listed\n"
    "with its meaning in the resolved recipe that --dry-run prints) and ends with a k-NN\n"
    "evaluation on the test split. The run directory ([train] run_dir) receives:\n"
    "  recipe.ini               the resolved recipe (defaults and --set included)\n"
    "  metrics.jsonl            one JSON object per logged step: step, epoch, loss, invariance,\n"
    "                           variance, covariance, lr, samples_per_s, elapsed_s\n"
    "  checkpoint.safetensors   weights, optimizer state, step and recipe; every\n"
    "                           [train] checkpoint_every steps and at the end\n"
    "  eval.json                k-NN top-1 / top-5 of the trained encoder\n"
    "\n"
    "  --set s.k=v          override one recipe key (repeatable), e.g. --set train.epochs=1\n"
    "  --resume CHECKPOINT  continue a run: weights, optimizer state, step and data order; the\n"
    "                       result equals an uninterrupted run (same recipe and threads)\n"
    "  --dry-run            print the resolved recipe, parameter count, memory estimate and\n"
    "                       steps per epoch; read no data beyond the image file's header\n"
    "\n"
    "A non-finite loss stops training with exit status 1; the last checkpoint stays as it was.\n"
    "Ctrl-C (SIGINT), SIGTERM or SIGUSR1 ends the step under way, saves a checkpoint and exits\n"
    "with 1.\n"
    "\n"
    "Data-parallel: mpirun -np N vicreg train RECIPE.ini runs N ranks, each on its share of every\n"
    "batch ([train] batch is the global batch); the loss is taken over the global batch and batch\n"
    "norm is synchronised ([dist] gather, sync_bn); rank 0 alone logs, writes metrics and\n"
    "checkpoints, and every rank resumes from rank 0's checkpoint. A rank that dies or stops\n"
    "answering ends the run within [dist] timeout_s with a message. SIGUSR1 to mpirun (kill -USR1\n"
    "PID; it passes the signal on to every rank, as it does a batch system's warning signal) or\n"
    "SIGINT to the ranks (pkill -INT -f 'vicreg train') ends the step under way on every rank and\n"
    "saves it; Ctrl-C to mpirun (it sends the ranks SIGTERM, then SIGKILL a second later), SIGTERM\n"
    "or a second signal ends every rank at once, and the last checkpoint written stays.\n";

#define PROGRESS_SECONDS 2.0

/* Set by SIGINT/SIGTERM/SIGUSR1: the loop finishes the step under way, saves and stops, so an
 * interrupted run can be resumed from exactly where it stopped. In a data-parallel run the
 * ranks finish that step together, so a wait for the others goes on after SIGINT or SIGUSR1
 * (which mpirun passes on to every rank); SIGTERM (what mpirun sends every rank, a second
 * before SIGKILL, when it is interrupted or a rank died) or a second signal sets stop_now,
 * which ends such waits at once. */
static volatile sig_atomic_t stop_requested, stop_now;

static void request_stop(int sig)
{
    if (stop_requested || sig == SIGTERM) stop_now = 1;
    stop_requested = 1;
}

/* Seeds of their own for views and shuffles, derived from train.seed, so their streams never
 * coincide with the streams of the initialisation (seeded from train.seed directly). */
static uint64_t derive_seed(uint64_t seed, uint64_t purpose)
{
    vr_rng r;
    vr_rng_seed_stream(&r, seed, ~purpose);
    return vr_rng_u64(&r);
}
enum { SEED_VIEWS = 1, SEED_SHUFFLE = 2 };

/* perm (N): the data order of `epoch`, a Fisher-Yates shuffle seeded from (seed, epoch), the
 * order the image loader takes too. */
static void shuffle(int *perm, int n, uint64_t seed, long epoch)
{
    vr_rng_permutation(perm, n, seed, (uint64_t)epoch);
}

typedef struct train_args {
    const char *recipe_path, *resume;
    const char *sets[VR_CLI_MAX_SETS];
    int n_sets, dry_run;
} train_args;

/* Everything a run holds. */
typedef struct run {
    vr_recipe r;
    char *recipe_text;
    vr_backend *be;
    vr_model m;
    vr_trainer t;
    int have_trainer;
    vr_comm *comm;        /* the run's processes (one: "single") */
    int n_local;          /* pairs per step on this rank: [train] batch / ranks */
    vr_source train;
    long steps_per_epoch, total_steps;
    vr_lr_schedule sched;
    int *perm;            /* (N) data order of the current epoch */
    /* each branch's input of a step (source.h) on the host; off the CPU also on the device, in
     * two slots: the next step's is copied while the current one computes */
    float *x_host[VR_MAX_BRANCHES], *x_dev[2][VR_MAX_BRANCHES];
    void *pinned[2 * 8 + VR_MAX_BRANCHES]; /* host buffers page-locked (or tried) for the copies */
    int npinned;
    char checkpoint[VR_RECIPE_PATH + 64], metrics[VR_RECIPE_PATH + 64];
    long last_saved;      /* step of the last checkpoint written or loaded; -1 none */
    long stopped_at;      /* the step a time limit stopped training at; 0: ran to the end */
} run;

static void run_free(run *u)
{
    if (u->have_trainer) vr_trainer_free(&u->t);
    vr_comm_destroy(u->comm);
    for (int b = 0; b < VR_MAX_BRANCHES; b++) {
        for (int k = 0; k < 2; k++)
            if (u->x_dev[k][b]) u->be->free(u->be, u->x_dev[k][b]);
        vr_free(u->x_host[b]);
    }
    vr_free(u->perm);
    vr_source_free(&u->train);
    vr_model_free(&u->m);
    if (u->be) vr_backend_destroy(u->be);
    free(u->recipe_text);
}

static int parse_args(int argc, char **argv, train_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        int took = vr_cli_take_set("train", argc, argv, &i, a->sets, &a->n_sets);
        if (took < 0) return VR_EXIT_USAGE;
        if (took) continue;
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(train_help, stdout);
            return -1;
        }
        if (!strcmp(s, "--dry-run")) {
            a->dry_run = 1;
        } else if (!strcmp(s, "--resume")) {
            if (i + 1 >= argc) return vr_cli_usage("train", "--resume needs a checkpoint path");
            a->resume = argv[++i];
        } else if (s[0] == '-' && s[1]) {
            return vr_cli_usage("train", "unknown option '%s'", s);
        } else if (a->recipe_path) {
            return vr_cli_usage("train", "one recipe only ('%s' and '%s')", a->recipe_path, s);
        } else {
            a->recipe_path = s;
        }
    }
    if (!a->recipe_path) return vr_cli_usage("train", "which recipe? (vicreg train RECIPE.ini)");
    return VR_EXIT_OK;
}

/* The model (unless the comm needed its backend first), its trainer for this rank's share of
 * the recipe's batch and the view size, and the loss coefficients. */
static vr_status build(run *u)
{
    if (!u->be) VR_TRY(vr_cli_open_model(&u->r, &u->be, &u->m));
    vr_optim_config oc = u->r.optim;
    VR_TRY(vr_trainer_create(&u->t, &u->m, &oc, u->n_local, u->train.in_h, u->train.in_w));
    u->have_trainer = 1;
    u->t.coeffs = u->r.coeffs;
    return VR_OK;
}

static long long prefix_params(const vr_model *m, const char *prefix)
{
    long long n = 0;
    for (int i = 0; i < m->params.count; i++)
        if (!strncmp(m->params.items[i].name, prefix, strlen(prefix))) n += (long long)m->params.items[i].count;
    return n;
}

/* Steps per epoch of n training samples: incomplete last batches are dropped, since BatchNorm
 * and the covariance term want full batches and a fixed plan. */
static vr_status plan_steps(run *u, int n)
{
    u->steps_per_epoch = n / u->r.batch;
    if (u->steps_per_epoch < 1)
        return vr_fail(VR_ERR_ARG, "train", "batch %d is larger than the %d training samples", u->r.batch, n);
    u->total_steps = u->steps_per_epoch * u->r.epochs;
    u->sched = vr_recipe_schedule(&u->r, u->steps_per_epoch);
    return VR_OK;
}

static void print_branch(const vr_model *m, int b, const vr_recipe_encoder *e, FILE *out)
{
    const vr_branch *br = &m->branch[b];
    const vr_resnet_config *c = &br->enc.cfg;
    char stem[32];
    if (c->rank == 2) snprintf(stem, sizeof stem, "%dx%d", c->stem_kernel, c->stem_kernel);
    else snprintf(stem, sizeof stem, "%d", c->stem_kernel);
    fprintf(out, "model:           %s%d-D ResNet-%d (widths %d,%d,%d,%d; stem %s stride %d; %s) -> %d features; "
                 "expander %s\n", m->nbranches > 1 ? (b ? "spectrogram: " : "waveform: ") : "", c->rank, c->depth,
            c->widths[0], c->widths[1], c->widths[2], c->widths[3], stem, c->stem_stride,
            c->pool_kernel ? "max pool" : "no max pool", br->enc.out_dim, e->expander[0] ? e->expander : "none");
}

static void print_plan(const run *u, const char *what, FILE *out)
{
    const vr_recipe *r = &u->r;
    const vr_model *m = &u->m;
    const vr_source *src = &u->train;
    /* optimiser state blocks of the parameters' size (optim.h): AdamW two moments, the others
     * one momentum */
    size_t state = (size_t)(r->optim.kind == VR_OPTIM_ADAMW ? 2 : 1) * m->params.total * sizeof(float);
    size_t trainer = 0, input = 0;
    /* a folder's loader holds [data] prefetch batches (and a device copy of one off the CPU) */
    int input_copies = r->kind != VR_DATA_FOLDER ? 1 : r->prefetch + (u->be->device != VR_DEVICE_CPU);
    for (int b = 0; b < m->nbranches; b++) {
        const vr_branch *br = &m->branch[b];
        int dim = br->has_expander ? br->exp.dims[br->exp.nlayers] : br->enc.out_dim;
        trainer += (size_t)(m->nbranches > 1 ? 1 : 2) * r->batch * ((size_t)dim + br->enc.out_dim) * sizeof(float);
        input += input_copies * src->step_floats[b] * sizeof(float);
    }
    /* a folder's images stay in their files */
    size_t data = r->kind == VR_DATA_AUDIO    ? (size_t)src->n * (size_t)vr_recipe_samples(r, r->clip_seconds) * sizeof(float)
                  : r->kind == VR_DATA_FOLDER ? 0
                                              : (size_t)src->n * r->views.size * r->views.size;
    size_t total = vr_model_bytes(m) + state + trainer + input + data;
    for (int b = 0; b < m->nbranches; b++) print_branch(m, b, b == 0 && m->nbranches > 1 ? &r->wave : &r->model, out);
    if (m->nbranches > 1)
        fprintf(out, "parameters:      %lld (waveform %lld, spectrogram %lld)\n", prefix_params(m, ""),
                prefix_params(m, "wave."), prefix_params(m, "spec."));
    else
        fprintf(out, "parameters:      %lld (backbone %lld, projector %lld)\n",
                prefix_params(m, ""), prefix_params(m, "backbone."), prefix_params(m, "projector."));
    fprintf(out, "memory estimate: %.0f MiB = model, gradients, buffers and activations %.0f MiB "
                 "+ %s state %.0f MiB + loss gradients %.0f MiB + inputs %.0f MiB + training set %.0f MiB "
                 "(backend scratch not included)\n",
            total / 1048576.0, vr_model_bytes(m) / 1048576.0, vr_optim_kind_name(r->optim.kind),
            state / 1048576.0, trainer / 1048576.0, input / 1048576.0, data / 1048576.0);
    fprintf(out, "training set:    %s\n", what);
    fprintf(out, "steps per epoch: %ld (batch %d pairs, %d samples left out per epoch); %ld steps over %d epochs\n",
            u->steps_per_epoch, r->batch, src->n - (int)(u->steps_per_epoch * r->batch), u->total_steps, r->epochs);
    if (u->comm && u->comm->size > 1)
        fprintf(out, "data-parallel:   %d ranks (%s), %d pairs each; loss over the global batch: %s; "
                     "SyncBN: %s; gradient buckets of %g MB; a rank that stops answering ends "
                     "the run after %g s\n",
                u->comm->size, u->comm->name, u->n_local, r->gather ? "yes" : "no",
                r->sync_bn ? "yes" : "no", (double)r->bucket_mb, (double)r->comm_timeout_s);
    fprintf(out, "learning rate:   %s, base %g%s = %g, warm-up %ld steps, cosine to %g\n",
            vr_optim_kind_name(r->optim.kind), (double)r->base_lr, r->scale_lr ? " x batch/256" : "",
            (double)u->sched.base, u->sched.warmup_steps, (double)(u->sched.base * r->final_lr_ratio));
}

/* The plan of a model declared, not allocated: ImageNet's parameters take seconds to touch,
 * and a batch of its views more memory than the machine printing the plan may have. */
static int dry_run(run *u)
{
    char what[VR_RECIPE_PATH + 200];
    if (vr_source_peek(&u->train, &u->r) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "dry run");
    vr_source_describe(&u->train, &u->r, what, sizeof what);
    vr_branch_config bc[VR_MAX_BRANCHES];
    int nb = vr_recipe_branches(&u->r, bc);
    int rows[VR_MAX_BRANCHES] = {u->train.nbranches == 1 ? 2 * u->r.batch : u->r.batch, u->r.batch};
    if (vr_backend_create(u->r.backend, u->r.threads, &u->be) != VR_OK || vr_model_declare(&u->m, u->be, nb, bc) != VR_OK ||
        vr_model_plan_size(&u->m, rows, u->train.in_h, u->train.in_w) != VR_OK || plan_steps(u, u->train.n) != VR_OK)
        return vr_cli_fail(VR_EXIT_RUNTIME, "dry run");
    fputs(u->recipe_text, stdout);
    printf("\n; dry run\n");
    print_plan(u, what, stdout);
    return VR_EXIT_OK;
}
static vr_status make_dirs(const char *path)
{
    char buf[VR_RECIPE_PATH];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        char c = *p;
        if (c != '/' && c != '\0') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return vr_fail(VR_ERR_IO, "train", "cannot create directory %s: %s", buf, strerror(errno));
        if (!c) return VR_OK;
        *p = c;
    }
}

static vr_status write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return vr_fail(VR_ERR_IO, "train", "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    if (fclose(f) != 0) return vr_fail(VR_ERR_IO, "train", "writing %s failed", path);
    return VR_OK;
}

/* metrics.jsonl of a resumed run: lines past the checkpoint's step were written by the part of
 * the run that is being redone, so they are dropped; the rest is kept. */
static vr_status trim_metrics(const char *path, long step)
{
    FILE *f = fopen(path, "r");
    if (!f) return VR_OK; /* nothing logged yet */
    char tmp[VR_RECIPE_PATH + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        return vr_fail(VR_ERR_IO, "train", "cannot write %s: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *s = j ? cJSON_GetObjectItem(j, "step") : NULL;
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)step) fputs(line, o);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (fclose(o) != 0 || rename(tmp, path) != 0)
        return vr_fail(VR_ERR_IO, "train", "cannot replace %s: %s", path, strerror(errno));
    return VR_OK;
}

/* The first line where two recipe texts differ, for the warning on resume. */
static void first_difference(const char *a, const char *b, char *out, size_t len)
{
    while (*a && *b) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la)) {
            snprintf(out, len, "'%.*s' (was '%.*s')", (int)la, a, (int)lb, b);
            return;
        }
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
    snprintf(out, len, "the length");
}

static int resume(run *u, const char *path, long *start)
{
    vr_run_state rs;
    if (vr_checkpoint_load(path, &u->m, &u->t.optim, &rs) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "resume");
    vr_rng expect;
    vr_rng_seed(&expect, u->r.seed);
    if (memcmp(&rs.rng, &expect, sizeof expect) != 0)
        return fprintf(stderr, "vicreg: resume: %s was trained with another train.seed than %llu\n", path,
                       (unsigned long long)u->r.seed), VR_EXIT_USAGE;
    if (rs.step > u->total_steps)
        return fprintf(stderr, "vicreg: resume: %s is at step %ld, past the recipe's %ld steps\n", path,
                       rs.step, u->total_steps), VR_EXIT_USAGE;
    vr_safetensors *st;
    if (vr_st_open(path, &st) == VR_OK) {
        const char *stored = vr_st_metadata(st, "recipe");
        if (stored && strcmp(stored, u->recipe_text) != 0) {
            char diff[400];
            first_difference(u->recipe_text, stored, diff, sizeof diff);
            fprintf(stderr, "vicreg: warning: the recipe differs from the one %s was trained with, first at %s;"
                            " the run will not equal an uninterrupted one\n", path, diff);
        }
        vr_st_close(st);
    }
    u->t.step = rs.step;
    u->last_saved = rs.step;
    *start = rs.step;
    return VR_EXIT_OK;
}

static vr_status save(run *u, long step)
{
    vr_run_state rs = {.step = step};
    vr_rng_seed(&rs.rng, u->r.seed); /* nothing draws from it: the step alone places the data */
    VR_TRY(vr_checkpoint_save(u->checkpoint, &u->m, &u->t.optim, &rs, u->recipe_text));
    u->last_saved = step;
    return VR_OK;
}

/* The progress line: on a terminal it rewrites itself, elsewhere one line each time. */
static void progress(const run *u, long done, const vr_vicreg_terms *tm, float lr, double rate, int tty)
{
    char eta[32];
    vr_cli_duration(eta, sizeof eta, rate > 0 ? (double)(u->total_steps - done) * u->r.batch / rate : 0);
    fprintf(stderr, "%sepoch %ld/%d  step %ld/%ld  loss %.4f (inv %.4f var %.4f cov %.4f)  lr %.4g  %.0f pairs/s  ETA %s%s",
            tty ? "\r" : "", done == 0 ? 1 : (done - 1) / u->steps_per_epoch + 1, u->r.epochs, done,
            u->total_steps, tm->loss, tm->invariance, tm->variance, tm->covariance, (double)lr, rate,
            eta, tty ? "\033[K" : "\n");
}

/* A step or a checkpoint failed (the message in vr_last_error): says so, and which checkpoint
 * the run can be taken up from. */
static int stopped(const run *u, int tty)
{
    if (u->comm->rank != 0) return VR_EXIT_RUNTIME; /* rank 0 says it for every rank */
    if (tty) fputc('\n', stderr);
    fprintf(stderr, "vicreg: training stopped: %s\n", vr_last_error());
    if (u->last_saved >= 0)
        fprintf(stderr, "vicreg: the last good checkpoint is %s (step %ld)\n", u->checkpoint, u->last_saved);
    else
        fprintf(stderr, "vicreg: no checkpoint was written before the failure\n");
    return VR_EXIT_RUNTIME;
}

/* A collective failed (another rank died or hangs, or a signal came while waiting), or this
 * rank alone failed (own: its device, memory or loader; the others would wait for it in their
 * next collective until [dist] timeout_s): this rank says so with the last good checkpoint,
 * naming itself where the failure is its own, and every process of the run is ended. */
static int comm_failed(const run *u, int tty, int own)
{
    if (tty) fputc('\n', stderr);
    if (own) fprintf(stderr, "vicreg: training stopped on rank %d of %d: %s\n", u->comm->rank, u->comm->size, vr_last_error());
    else fprintf(stderr, "vicreg: training stopped: %s\n", vr_last_error());
    if (u->last_saved >= 0)
        fprintf(stderr, "vicreg: the last good checkpoint is %s (step %ld)\n", u->checkpoint, u->last_saved);
    fflush(stderr);
    vr_comm_abort(u->comm, VR_EXIT_RUNTIME);
    return VR_EXIT_RUNTIME;
}

/* What the ranks decide together after a step: rank 0's checkpoint failed, rank 0's clock
 * reached max_minutes, a signal asked some rank to stop. Every rank gets every rank's flags. */
enum { AGREE_SAVE_FAILED, AGREE_TIME_UP, AGREE_STOP, AGREE_N };

static vr_status agree(run *u, int64_t *flags)
{
    return vr_comm_allreduce(u->comm, flags, AGREE_N, VR_COMM_I64);
}

/* Where a step's inputs come from: the data order of the epoch at hand and the seeds. */
typedef struct feed {
    uint64_t views_seed, shuffle_seed;
    long perm_epoch;      /* the epoch u->perm holds; -1 none */
} feed;

/* The host inputs of `step` into host: made here, or handed over by the folder's loader (valid
 * until the next batch is asked for); this rank's pairs are [rank*n, (rank+1)*n) of the
 * step's batch. */
static vr_status step_inputs(run *u, feed *f, long step, const float **host)
{
    const vr_recipe *r = &u->r;
    const int rank = u->comm->rank, n = u->n_local;
    host[0] = u->x_host[0];
    host[1] = u->x_host[1];
    if (u->train.loader) {
        vr_status s = vr_source_loader_batch(&u->train, step, host);
        if (rank == 0) vr_cli_report_skipped(&u->train);
        return s;
    }
    long epoch = step / u->steps_per_epoch, in_epoch = step % u->steps_per_epoch;
    if (epoch != f->perm_epoch) {
        shuffle(u->perm, u->train.n, f->shuffle_seed, epoch);
        f->perm_epoch = epoch;
    }
    return vr_source_views(&u->train, r, u->perm + in_epoch * r->batch + rank * n, n, f->views_seed,
                           (int64_t)step * r->batch + rank * n, u->x_host);
}

/* Off the CPU: the host inputs of `step`, page-locked on first sight, on their way to device
 * slot `slot` (copy_start; the copy overlaps what the compute stream does meanwhile). */
static vr_status stage(run *u, feed *f, long step, int slot)
{
    const float *host[VR_MAX_BRANCHES];
    VR_TRY(step_inputs(u, f, step, host));
    vr_backend *be = u->be;
    for (int b = 0; b < u->train.nbranches; b++) {
        size_t count = u->train.step_floats[b] / u->comm->size;
        int known = 0;
        for (int i = 0; i < u->npinned; i++) known |= u->pinned[i] == host[b];
        if (!known && u->npinned < (int)(sizeof u->pinned / sizeof u->pinned[0])) {
            /* memory that cannot be pinned is copied more slowly, not wrongly: not an error */
            if (be->pin(be, (void *)host[b], count * sizeof(float)) == VR_OK)
                u->pinned[u->npinned++] = (void *)host[b];
            vr_clear_error();
        }
        VR_TRY(be->copy_start(be, slot, u->x_dev[slot][b], host[b], count));
    }
    return VR_OK;
}

/* After the last step: the copies still in flight (a step ahead) end, then the host buffers
 * are released. */
static void unpin_all(run *u)
{
    vr_backend *be = u->be;
    if (!be->copy_wait) return;
    for (int slot = 0; slot < 2; slot++) be->copy_wait(be, slot);
    for (int i = 0; i < u->npinned; i++) be->unpin(be, u->pinned[i]);
    u->npinned = 0;
}

/* The inputs of `step` where the trainer reads them: the host buffers on the CPU; off it the
 * device slot whose copy was started a step ahead (by stage), after which the next step's copy
 * is started into the other slot, to run while this step computes. */
static vr_status inputs_of(run *u, feed *f, long start, long step, const float **inputs)
{
    vr_backend *be = u->be;
    if (be->device == VR_DEVICE_CPU) return step_inputs(u, f, step, inputs);
    const int slot = (int)((step - start) & 1);
    if (step == start) VR_TRY(stage(u, f, step, slot));
    VR_TRY(be->copy_join(be, slot));
    if (step + 1 < u->total_steps) {
        VR_TRY(be->copy_wait(be, slot)); /* the host inputs of `step` may now go */
        VR_TRY(stage(u, f, step + 1, slot ^ 1));
    }
    inputs[0] = u->x_dev[slot][0];
    inputs[1] = u->x_dev[slot][1];
    return VR_OK;
}

static int train_loop(run *u, long start, FILE *metrics)
{
    const vr_recipe *r = &u->r;
    vr_status s = VR_OK;
    uint64_t views_seed = derive_seed(r->seed, SEED_VIEWS), shuffle_seed = derive_seed(r->seed, SEED_SHUFFLE);
    long last_log = start;
    int tty = isatty(fileno(stderr));
    double t0 = vr_cli_now(), t_log = t0, t_progress = t0;
    vr_vicreg_terms tm = {0};
    float lr = 0;
    const int rank = u->comm->rank, lead = rank == 0;
    feed f = {views_seed, shuffle_seed, -1};
    if (u->train.kind == VR_DATA_FOLDER &&
        vr_source_start_loader(&u->train, r, rank, u->comm->size, start, u->total_steps, shuffle_seed,
                               views_seed) != VR_OK)
        return u->comm->size > 1 ? comm_failed(u, 0, 1) : vr_cli_fail(VR_EXIT_RUNTIME, "loader");
    for (long step = start; step < u->total_steps; step++) {
        long epoch = step / u->steps_per_epoch;
        const float *inputs[VR_MAX_BRANCHES];
        if (inputs_of(u, &f, start, step, inputs) != VR_OK)
            return u->comm->size > 1 ? comm_failed(u, tty, 1) : vr_cli_fail(VR_EXIT_RUNTIME, "views");
        lr = vr_lr_at(&u->sched, step);
        s = vr_trainer_step(&u->t, inputs, lr, &tm);
        if (s == VR_ERR_COMM) return comm_failed(u, tty, 0);
        /* a non-finite loss is the global batch's: every rank stops on it alike */
        if (s != VR_OK && s != VR_ERR_NUMERIC && u->comm->size > 1) return comm_failed(u, tty, 1);
        if (s != VR_OK) return stopped(u, tty);
        long done = step + 1;
        double now = vr_cli_now();
        if (lead && (done % r->log_every == 0 || done == u->total_steps)) {
            double rate = (double)(done - last_log) * r->batch / (now - t_log);
            fprintf(metrics, "{\"step\": %ld, \"epoch\": %ld, \"loss\": %.6g, \"invariance\": %.6g, "
                             "\"variance\": %.6g, \"covariance\": %.6g, \"lr\": %.6g, "
                             "\"samples_per_s\": %.2f, \"elapsed_s\": %.2f",
                    done, epoch, tm.loss, tm.invariance, tm.variance, tm.covariance, (double)lr, rate, now - t0);
            if (u->comm->size > 1) /* the step's wait for the gradient sums after its backward */
                fprintf(metrics, ", \"comm_wait_s\": %.4f", u->t.comm_seconds);
            fputs("}\n", metrics);
            fflush(metrics);
            last_log = done;
            t_log = now;
        }
        if (lead && (now - t_progress >= PROGRESS_SECONDS || done == u->total_steps)) {
            progress(u, done, &tm, lr, (double)(done - start) * r->batch / (now - t0), tty);
            t_progress = now;
        }
        int64_t flags[AGREE_N] = {0};
        if (r->checkpoint_every > 0 && done % r->checkpoint_every == 0 && done < u->total_steps) {
            if (!lead) u->last_saved = done; /* what rank 0 writes, known to every rank */
            else if (save(u, done) != VR_OK) flags[AGREE_SAVE_FAILED] = 1;
        }
        flags[AGREE_TIME_UP] = lead && r->max_minutes > 0 && now - t0 >= 60.0 * r->max_minutes && done < u->total_steps;
        flags[AGREE_STOP] = stop_requested && done < u->total_steps;
        if (u->comm->size > 1 && agree(u, flags) != VR_OK) return comm_failed(u, tty, 0);
        if (flags[AGREE_SAVE_FAILED]) return stopped(u, tty);
        if (flags[AGREE_TIME_UP]) {
            if (lead && u->last_saved != done && save(u, done) != VR_OK) return stopped(u, tty);
            if (lead && tty) fputc('\n', stderr);
            if (lead)
                fprintf(stderr, "vicreg: stopped after step %ld of %ld: [train] max_minutes %g reached; checkpoint %s\n",
                        done, u->total_steps, (double)r->max_minutes, u->checkpoint);
            u->stopped_at = done;
            return VR_EXIT_OK;
        }
        if (flags[AGREE_STOP]) {
            if (lead && u->last_saved != done && save(u, done) != VR_OK) return stopped(u, tty);
            if (lead && tty) fputc('\n', stderr);
            if (lead) fprintf(stderr, "vicreg: interrupted after step %ld; continue with --resume %s\n", done, u->checkpoint);
            return VR_EXIT_RUNTIME;
        }
    }
    if (!lead) return VR_EXIT_OK;
    if (tty && start < u->total_steps) fputc('\n', stderr);
    if ((start < u->total_steps || u->last_saved != u->total_steps) && save(u, u->total_steps) != VR_OK)
        return stopped(u, 0);
    char took[32];
    vr_cli_duration(took, sizeof took, vr_cli_now() - t0);
    fprintf(stderr, "vicreg: trained %ld steps in %s; checkpoint %s\n", u->total_steps - start, took, u->checkpoint);
    return VR_EXIT_OK;
}

/* Whether every rank's setup went well (rc of each); the ranks whose own went well leave quietly
 * when another's did not, since that one says why. */
static int setup_agreed(run *u, int rc)
{
    if (u->comm->size == 1) return rc;
    int64_t bad = rc != VR_EXIT_OK;
    if (vr_comm_allreduce(u->comm, &bad, 1, VR_COMM_I64) != VR_OK) return comm_failed(u, 0, 0);
    return rc != VR_EXIT_OK ? rc : bad ? VR_EXIT_RUNTIME : VR_EXIT_OK;
}

/* The comm of the run ([dist] comm; NCCL binds the backend's GPU, so it comes after the model),
 * the share of the batch of each rank, and the threads of each rank where several share a
 * machine and the recipe leaves them to the program (its cores divided among them). */
static int open_comm(run *u)
{
    if (vr_comm_create(u->r.comm, u->be, &u->comm) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "data-parallel");
    u->comm->timeout_s = u->r.comm_timeout_s;
    u->comm->interrupt = &stop_now;
    if (u->r.batch % u->comm->size != 0 || u->r.batch / u->comm->size < 2) {
        if (u->comm->rank == 0)
            fprintf(stderr, "vicreg train: [train] batch %d cannot be shared by %d ranks: it must be a "
                            "multiple of the ranks, at least 2 pairs each\n", u->r.batch, u->comm->size);
        return VR_EXIT_USAGE;
    }
    u->n_local = u->r.batch / u->comm->size;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int sharing = local ? atoi(local) : 1;
    if (u->r.threads == 0 && sharing > 1) {
        int t = omp_get_num_procs() / sharing;
        u->r.threads = t < 1 ? 1 : t;
    }
    return VR_EXIT_OK;
}

static int train(run *u, const train_args *a)
{
    const vr_recipe *r = &u->r;
    long start = 0;
    u->last_saved = -1;
    int rc = strcmp(r->comm, "nccl") != 0 ? open_comm(u) : VR_EXIT_OK;
    if (rc != VR_EXIT_OK) return rc;
    snprintf(u->checkpoint, sizeof u->checkpoint, "%s/checkpoint.safetensors", r->run_dir);
    snprintf(u->metrics, sizeof u->metrics, "%s/metrics.jsonl", r->run_dir);
    if (!a->resume && access(u->checkpoint, F_OK) == 0) {
        if (!u->comm || u->comm->rank == 0)
            fprintf(stderr, "vicreg train: %s already holds a run (%s); continue it with --resume %s, "
                            "or choose another directory with --set train.run_dir=DIR\n",
                    r->run_dir, u->checkpoint, u->checkpoint);
        return VR_EXIT_USAGE;
    }
    double t_load = vr_cli_now();
    vr_status ls = vr_source_open(&u->train, r, VR_SPLIT_TRAIN, r->train_limit);
    vr_cli_report_skipped(&u->train);
    if (ls != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "training data");
    if (!u->comm) { /* nccl: the model's backend first */
        if (vr_cli_open_model(&u->r, &u->be, &u->m) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "model");
        if ((rc = open_comm(u)) != VR_EXIT_OK) return rc;
    }
    if (build(u) != VR_OK || plan_steps(u, u->train.n) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "model");
    if (vr_trainer_distribute(&u->t, u->comm, r->gather, r->sync_bn) != VR_OK)
        return vr_cli_fail(VR_EXIT_RUNTIME, "data-parallel");
    u->t.bucket = (size_t)ceil(r->bucket_mb * 1048576.0 / sizeof(float));
    /* a folder's loader keeps the data order itself */
    if (r->kind != VR_DATA_FOLDER && !(u->perm = vr_alloc((size_t)u->train.n * sizeof(int))))
        return fprintf(stderr, "vicreg: out of memory for the data order\n"), VR_EXIT_RUNTIME;
    for (int b = 0; b < u->train.nbranches; b++) {
        size_t bytes = u->train.step_floats[b] * sizeof(float);
        /* a folder's loader has batch buffers of its own */
        if (r->kind != VR_DATA_FOLDER && !(u->x_host[b] = vr_alloc(bytes)))
            return fprintf(stderr, "vicreg: out of memory for the batch\n"), VR_EXIT_RUNTIME;
        for (int k = 0; k < 2 && u->be->device != VR_DEVICE_CPU; k++)
            if (u->be->alloc(u->be, bytes / u->comm->size, &u->x_dev[k][b]) != VR_OK)
                return vr_cli_fail(VR_EXIT_RUNTIME, "batch");
    }

    /* rank 0 reads the checkpoint (or every rank initialises from the seed), rank 0 alone owns
     * the run directory, then every rank takes rank 0's state */
    const int lead = u->comm->rank == 0;
    rc = VR_EXIT_OK;
    if (a->resume && lead) rc = resume(u, a->resume, &start);
    else if (!a->resume && vr_model_init(&u->m, r->seed) != VR_OK) rc = vr_cli_fail(VR_EXIT_RUNTIME, "model");
    char recipe_copy[VR_RECIPE_PATH + 64];
    snprintf(recipe_copy, sizeof recipe_copy, "%s/recipe.ini", r->run_dir);
    FILE *metrics = NULL;
    if (rc == VR_EXIT_OK && lead) {
        if (make_dirs(r->run_dir) != VR_OK || write_text(recipe_copy, u->recipe_text) != VR_OK ||
            (a->resume && trim_metrics(u->metrics, start) != VR_OK))
            rc = vr_cli_fail(VR_EXIT_RUNTIME, "run directory");
        else if (!(metrics = fopen(u->metrics, a->resume ? "a" : "w"))) {
            fprintf(stderr, "vicreg: cannot write %s: %s\n", u->metrics, strerror(errno));
            rc = VR_EXIT_RUNTIME;
        }
    }
    if ((rc = setup_agreed(u, rc)) != VR_EXIT_OK) {
        if (metrics) fclose(metrics);
        return rc;
    }
    if (u->comm->size > 1) {
        if (vr_trainer_broadcast(&u->t) != VR_OK) return comm_failed(u, 0, 0);
        start = u->t.step;
        u->last_saved = a->resume ? start : -1;
    }

    if (lead) {
        fprintf(stderr, "vicreg train: %s -> %s (data loaded in %.1f s)\n", a->recipe_path, r->run_dir,
                vr_cli_now() - t_load);
        char what[VR_RECIPE_PATH + 200];
        vr_source_describe(&u->train, r, what, sizeof what);
        print_plan(u, what, stderr);
        if (start) fprintf(stderr, "resuming at step %ld (epoch %ld)\n", start, start / u->steps_per_epoch + 1);
    }
    struct sigaction sa = {.sa_handler = request_stop};
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    rc = train_loop(u, start, metrics);
    if (metrics) fclose(metrics);
    unpin_all(u);
    if (u->train.kind == VR_DATA_FOLDER) {
        vr_source_stop_loader(&u->train);
        if (lead) vr_cli_report_skipped(&u->train);
        if (lead && (u->train.folder.nskipped || u->train.refills))
            fprintf(stderr, "vicreg: %d files of %s skipped; %ld batch slots refilled with the next image of the epoch\n",
                    u->train.folder.nskipped, r->train_folder, u->train.refills);
    }
    /* the ranks leave the comm together (MPI's and NCCL's ends wait for every rank) before rank 0
     * evaluates alone */
    vr_comm_destroy(u->comm);
    u->comm = NULL;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    if (rc != VR_EXIT_OK || !lead) return rc; /* rank 0 evaluates */
    if (stop_requested) {
        fprintf(stderr, "vicreg: interrupted; training is complete, the k-NN evaluation was skipped "
                        "(run it with: vicreg eval knn %s)\n", u->checkpoint);
        return VR_EXIT_RUNTIME;
    }

    char eval_path[VR_RECIPE_PATH + 64];
    snprintf(eval_path, sizeof eval_path, "%s/eval.json", r->run_dir);
    return vr_cli_evaluate(r, &u->m, &u->train, "trained", u->stopped_at ? u->stopped_at : u->total_steps,
                           eval_path);
}

int vr_cmd_train(int argc, char **argv)
{
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? VR_EXIT_OK : rc;
    run u;
    memset(&u, 0, sizeof u);
    vr_status s = vr_recipe_load(&u.r, a.recipe_path, a.sets, a.n_sets);
    if (s != VR_OK) return vr_cli_fail(s == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, "train");
    u.recipe_text = vr_recipe_format(&u.r);
    if (!u.recipe_text) return fprintf(stderr, "vicreg: out of memory\n"), VR_EXIT_RUNTIME;
    rc = a.dry_run ? dry_run(&u) : train(&u, &a);
    run_free(&u);
    return rc;
}
