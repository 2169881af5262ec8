/* Training and evaluating on an image folder through the vicreg program (its path the first
 * argument, the recipes folder the second), on folders of small PNGs and JPEGs written here.
 *
 * - A run killed with SIGKILL while it writes its second checkpoint (the moment its temporary
 *   file appears, seen through inotify) leaves the first checkpoint loadable, at its step, and
 *   the half-written file unloadable; resumed from that checkpoint, the run logs the metrics of
 *   an uninterrupted run line for line (step, epoch, loss, the three terms, lr: equal as
 *   written, i.e. bit for bit at the %.6g the log keeps) and ends with the same parameters and
 *   buffers, byte for byte (tolerance 0: the data order and views are a function of the step,
 *   the kernels of the thread count, so nothing may differ).
 * - SIGINT (Ctrl-C) once step 6 is logged, between checkpoints: the run finishes the step under way,
 *   saves it (a checkpoint of that step), says so and ends with status 1; resumed, it ends as the
 *   uninterrupted run in the same two ways.
 * - A full disk (a file size limit below a checkpoint's size) while a resumed run writes its
 *   next checkpoint: the run ends non-zero naming the file and the system's reason, and the
 *   previous checkpoint is there byte for byte, loadable, with no temporary file beside it.
 * - A run that stops being finite (plain SGD at lr 1000 overflows within a few steps) ends
 *   non-zero naming the step whose loss or updated parameters were not finite; the checkpoint
 *   it names as the last good one is of an earlier step and loads with every parameter and
 *   buffer finite (a checkpoint of non-finite values is refused, not written).
 * - A truncated JPEG and a text file among the training images are each named once in a
 *   warning; the evaluation leaves the bad image out (36 of 37 training images).
 * - vicreg eval knn of the final checkpoint gives the figures the run ended with (within one
 *   test image of 12: the passes batch the rows differently); vicreg eval
 *   linear with --epochs and --lr reports them back, top-5 of 3 classes is 1 exactly, the best
 *   epoch is at least the last; bad arguments are usage errors.
 * - The folder kind's recipe keys resolve, round-trip and refuse bad values by name.
 * - The ImageNet recipes' dry runs without the data: every shared/SPEC.md value in the resolved
 *   recipe, the parameter counts of ResNet-50 (23,508,032 without fc, as torchvision's) and
 *   the 2048-8192-8192-8192 expander (151,044,096), steps per epoch for the assumed 1,281,167
 *   images; a missing folder without that assumption is an error naming it. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image_files.h"
#include "recipe.h"
#include "testutil.h"
#include "vicreg/checkpoint.h"

static const char *cli, *recipes;
static char dir[64];

static const char *tmp(const char *name)
{
    static char buf[8][400];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* Starts the vicreg program with args (NULL-terminated, after "vicreg"), its output and errors
 * into the files out and err; the child's pid, or -1. */
static pid_t start_cli(const char *const *args, const char *out, const char *err)
{
    const char *argv[32] = {cli};
    int n = 1;
    while (args[n - 1] && n < 31) argv[n] = args[n - 1], n++;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    extern char **environ;
    int rc = posix_spawn(&pid, cli, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

/* start_cli with the size of any file it writes limited to fsize bytes (RLIMIT_FSIZE, which
 * the child inherits, with SIGXFSZ ignored so that a write past it fails with EFBIG as on a
 * full disk); the parent's own limit and signal disposition are restored. */
static pid_t start_cli_fsize(const char *const *args, const char *out, const char *err, rlim_t fsize)
{
    struct rlimit saved, rl;
    if (getrlimit(RLIMIT_FSIZE, &saved) != 0) return -1;
    rl = saved;
    rl.rlim_cur = fsize;
    void (*old)(int) = signal(SIGXFSZ, SIG_IGN);
    if (old == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0) return -1;
    pid_t pid = start_cli(args, out, err);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old);
    return pid;
}

static int wait_cli(pid_t pid)
{
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* Runs the program to its end; its exit status, or -1. */
static int run_cli(const char *const *args, const char *out, const char *err) { return wait_cli(start_cli(args, out, err)); }

static int count_of(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static double json_number(const char *path, const char *key)
{
    char *text = tu_read_file(path, NULL);
    cJSON *j = cJSON_Parse(text ? text : "");
    const cJSON *v = cJSON_GetObjectItem(j, key);
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v)) fprintf(stderr, "\n  %s: no number '%s'\n", path, key);
    cJSON_Delete(j);
    free(text);
    return x;
}

/* train/<3 classes of 12 pictures> with a truncated JPEG and a text file among them, and
 * test/<the same 3 classes of 4>; the recipe training on them. */
static void make_data(void)
{
    static const char *dirs[] = {"train", "test", "train/c0", "train/c1", "train/c2", "test/c0", "test/c1", "test/c2"};
    for (int i = 0; i < 8; i++) CU_ASSERT_EQUAL_FATAL(mkdir(tmp(dirs[i]), 0755), 0);
    vr_rng r;
    vr_rng_seed(&r, 3);
    for (int split = 0; split < 2; split++)
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < (split ? 4 : 12); i++) {
                char name[64];
                snprintf(name, sizeof name, "%s/c%d/%02d.%s", split ? "test" : "train", k, i, i % 2 ? "png" : "jpg");
                CU_ASSERT_FATAL(if_write_picture(tmp(name), &r, 18 + i % 5, 20 + k));
            }
    char from[512];
    snprintf(from, sizeof from, "%s/image/truncated.jpg", VR_FIXTURE_DIR);
    CU_ASSERT_FATAL(if_copy_head(from, tmp("train/c1/05_bad_truncated.jpg"), -1));
    CU_ASSERT_FATAL(if_write_bytes(tmp("train/c2/notes.txt"), "not an image\n", 13));
    char recipe[2048];
    snprintf(recipe, sizeof recipe,
             "[data]\nkind = folder\ntrain_folder = %s\ntest_folder = %s\nloader_threads = 2\n"
             "[image_views]\nsize = 16\nscale_min1 = 0.3\nscale_min2 = 0.3\n"
             "[model]\ndepth = 18\nwidths = 8,16,32,64\nstem_kernel = 3\nstem_stride = 1\nstem_pad = 1\n"
             "pool_kernel = 0\nexpander = 64-1024-1024\n"
             "[optim]\nbase_lr = 0.3\nwarmup_epochs = 1\n"
             "[train]\nepochs = 3\nbatch = 6\nseed = 7\nthreads = 2\ncheckpoint_every = 4\nlog_every = 1\n"
             "[eval]\nk = 5\n",
             tmp("train"), tmp("test"));
    CU_ASSERT_FATAL(if_write_bytes(tmp("recipe.ini"), recipe, strlen(recipe)));
}

/* The parameters and buffers of the checkpoint at path (host copies), in a model built from
 * the recipe; run (may be NULL) receives its run state. */
static vr_status load_checkpoint(const char *path, float **p, size_t *np, float **buf, size_t *nbuf, vr_run_state *run)
{
    vr_recipe r;
    VR_TRY(vr_recipe_load(&r, tmp("recipe.ini"), NULL, 0));
    vr_branch_config bc[VR_MAX_BRANCHES];
    int nb = vr_recipe_branches(&r, bc);
    vr_backend *be;
    VR_TRY(vr_backend_create("cpu", 1, &be));
    vr_model m;
    vr_status s = vr_model_create(&m, be, nb, bc);
    if (s == VR_OK) s = vr_checkpoint_load(path, &m, NULL, run);
    if (s == VR_OK && p) {
        *np = m.params.total;
        *nbuf = m.buffers.total;
        *p = malloc(*np * sizeof(float));
        *buf = malloc((*nbuf + 1) * sizeof(float));
        memcpy(*p, m.p, *np * sizeof(float)); /* the CPU backend's pointers are host memory */
        memcpy(*buf, m.buf, *nbuf * sizeof(float));
    }
    vr_model_free(&m);
    vr_backend_destroy(be);
    return s;
}

/* Lines in the file at path (0 where it cannot be read). */
static int lines_of(const char *path)
{
    char *text = tu_read_file(path, NULL);
    int n = text ? count_of(text, "\n") : 0;
    free(text);
    return n;
}

/* Starts a run in run_dir (its stderr to err) and sends it sig: with at_partial, the moment it
 * creates the temporary file of its second checkpoint, whose path goes to partial; else the
 * moment its metrics.jsonl holds 6 lines (steps 1 to 6; the first checkpoint is step 4's). Its
 * exit status goes to *rc. 1 once it was signalled, -1 when that moment never came. */
static int run_and_signal(const char *run_dir, const char *err, int sig, int at_partial,
                          char *partial, size_t len, int *rc)
{
    CU_ASSERT_EQUAL_FATAL(mkdir(run_dir, 0755), 0);
    int fd = inotify_init1(IN_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0 && inotify_add_watch(fd, run_dir, IN_CREATE | IN_MOVED_TO | IN_MODIFY) >= 0);
    char set_dir[512], metrics[600];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run_dir);
    snprintf(set_dir, sizeof set_dir, "train.run_dir=%s", run_dir);
    const char *args[] = {"train", tmp("recipe.ini"), "--set", set_dir, NULL};
    pid_t pid = start_cli(args, tmp("signalled.out"), err);
    CU_ASSERT_FATAL(pid > 0);
    int committed = 0, signalled = 0;
    char tmp_name[600];
    snprintf(tmp_name, sizeof tmp_name, "checkpoint.safetensors.tmp.%ld", (long)pid);
    while (!signalled) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 120000) != 1) break; /* a run of seconds: two minutes means it hangs */
        char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t got = read(fd, events, sizeof events);
        for (char *e = events; e < events + got && !signalled;) {
            const struct inotify_event *ev = (const struct inotify_event *)e;
            if (ev->len && (ev->mask & IN_MOVED_TO) && !strcmp(ev->name, "checkpoint.safetensors")) committed++;
            int moment = at_partial ? ev->len && (ev->mask & IN_CREATE) && committed == 1 &&
                                          !strcmp(ev->name, tmp_name)
                                    : ev->len && (ev->mask & IN_MODIFY) &&
                                          !strcmp(ev->name, "metrics.jsonl") && lines_of(metrics) >= 6;
            if (moment) {
                kill(pid, sig);
                signalled = 1;
            }
            e += sizeof *ev + ev->len;
        }
    }
    close(fd);
    if (!signalled) kill(pid, SIGKILL);
    *rc = wait_cli(pid);
    if (!signalled) return -1;
    if (at_partial) snprintf(partial, len, "%s/%s", run_dir, tmp_name);
    return 1;
}

/* The metrics of a line of metrics.jsonl that a resumed run must repeat exactly. */
static const char *const LOGGED[] = {"step", "epoch", "loss", "invariance", "variance", "covariance", "lr"};

static void compare_metrics(const char *a_path, const char *b_path)
{
    char *a = tu_read_file(a_path, NULL), *b = tu_read_file(b_path, NULL);
    CU_ASSERT_FATAL(a && b);
    int lines = 0;
    char *sa, *sb;
    char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb);
    for (; la && lb; la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), lines++) {
        cJSON *ja = cJSON_Parse(la), *jb = cJSON_Parse(lb);
        CU_ASSERT_FATAL(ja && jb);
        for (int k = 0; k < 7; k++) {
            const cJSON *x = cJSON_GetObjectItem(ja, LOGGED[k]), *y = cJSON_GetObjectItem(jb, LOGGED[k]);
            int same = cJSON_IsNumber(x) && cJSON_IsNumber(y) && x->valuedouble == y->valuedouble;
            if (!same) fprintf(stderr, "\n  metrics line %d: %s differs:\n  %s\n  %s\n", lines + 1, LOGGED[k], la, lb);
            CU_ASSERT(same);
        }
        cJSON_Delete(ja);
        cJSON_Delete(jb);
    }
    CU_ASSERT(!la && !lb); /* as many lines */
    CU_ASSERT_EQUAL(lines, 18);
    free(a);
    free(b);
}

/* Resumes the run in tmp(name) from its checkpoint: the same log and the same final weights
 * as the uninterrupted run in tmp("a"). */
static void resume_to_the_end(const char *name)
{
    char set_dir[512], ckpt[512], metrics[512];
    snprintf(set_dir, sizeof set_dir, "train.run_dir=%s", tmp(name));
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", tmp(name));
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", tmp(name));
    const char *resume[] = {"train", tmp("recipe.ini"), "--set", set_dir, "--resume", ckpt, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(resume, tmp("resumed.out"), tmp("resumed.err")), 0);
    compare_metrics(tmp("a/metrics.jsonl"), metrics);
    float *pa, *pb, *ba, *bb;
    size_t npa, npb, nba, nbb;
    vr_run_state rs;
    TU_OK(load_checkpoint(tmp("a/checkpoint.safetensors"), &pa, &npa, &ba, &nba, &rs));
    CU_ASSERT_EQUAL(rs.step, 18);
    TU_OK(load_checkpoint(ckpt, &pb, &npb, &bb, &nbb, &rs));
    CU_ASSERT_EQUAL(rs.step, 18);
    CU_ASSERT_FATAL(npa == npb && nba == nbb);
    CU_ASSERT(memcmp(pa, pb, npa * sizeof(float)) == 0);
    CU_ASSERT(memcmp(ba, bb, nba * sizeof(float)) == 0);
    free(pa);
    free(pb);
    free(ba);
    free(bb);
}

static void test_kill_and_resume(void)
{
    make_data();
    /* the uninterrupted run */
    const char *run_a[] = {"train", tmp("recipe.ini"), "--set", NULL, NULL};
    char set_a[512];
    snprintf(set_a, sizeof set_a, "train.run_dir=%s", tmp("a"));
    run_a[3] = set_a;
    CU_ASSERT_EQUAL_FATAL(run_cli(run_a, tmp("a.out"), tmp("a.err")), 0);
    char *err = tu_read_file(tmp("a.err"), NULL);
    CU_ASSERT_FATAL(err != NULL);
    CU_ASSERT_EQUAL(count_of(err, "warning: skipped"), 2);
    CU_ASSERT_EQUAL(count_of(err, "05_bad_truncated.jpg"), 1);
    CU_ASSERT_EQUAL(count_of(err, "notes.txt"), 1);
    free(err);
    CU_ASSERT_EQUAL(json_number(tmp("a/eval.json"), "train_samples"), 36);
    CU_ASSERT_EQUAL(json_number(tmp("a/eval.json"), "test_samples"), 12);

    /* killed while writing the checkpoint of step 8; a few tries in case a kill lands late */
    char run_b[64], partial[1200];
    int caught = 0;
    for (int attempt = 0; attempt < 4 && !caught; attempt++) {
        snprintf(run_b, sizeof run_b, "b%d", attempt);
        int rc;
        CU_ASSERT_FATAL(run_and_signal(tmp(run_b), tmp("killed.err"), SIGKILL, 1, partial,
                                       sizeof partial, &rc) == 1);
        caught = access(partial, F_OK) == 0; /* else the run renamed it first */
    }
    CU_ASSERT_FATAL(caught == 1);
    char ckpt_b[512];
    snprintf(ckpt_b, sizeof ckpt_b, "%s/checkpoint.safetensors", tmp(run_b));
    vr_run_state rs;
    TU_OK(load_checkpoint(ckpt_b, NULL, NULL, NULL, NULL, &rs));
    CU_ASSERT_EQUAL(rs.step, 4);
    /* the temporary file the kill left: half written it is no checkpoint; whole (the kill
     * landed between its last byte and the rename) it can only be step 8's */
    vr_run_state rp = {0};
    vr_status ps = load_checkpoint(partial, NULL, NULL, NULL, NULL, &rp);
    CU_ASSERT(ps != VR_OK || rp.step == 8);

    resume_to_the_end(run_b);
}

/* SIGINT (Ctrl-C) once step 6 is logged (the first checkpoint is step 4's, the next step 8's):
 * the run finishes the step under way, saves it and names it, and ends with status 1; resumed,
 * it ends as the uninterrupted run. SIGTERM and SIGUSR1 reach the same handler. */
static void test_interrupt_and_resume(void)
{
    int rc;
    CU_ASSERT_FATAL(run_and_signal(tmp("c"), tmp("c.err"), SIGINT, 0, NULL, 0, &rc) == 1);
    CU_ASSERT_EQUAL(rc, 1);
    char *err = tu_read_file(tmp("c.err"), NULL);
    CU_ASSERT_FATAL(err != NULL);
    const char *said = "vicreg: interrupted after step ", *at = strstr(err, said);
    long step = at ? atol(at + strlen(said)) : -1;
    fprintf(stderr, "\n  SIGINT after step 6 was logged: stopped after step %ld\n", step);
    CU_ASSERT(step >= 6 && step < 18);
    free(err);
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", tmp("c"));
    vr_run_state rs;
    TU_OK(load_checkpoint(ckpt, NULL, NULL, NULL, NULL, &rs));
    CU_ASSERT_EQUAL(rs.step, step);
    resume_to_the_end("c");
}

static int temporaries_in(const char *dir_path)
{
    int n = 0;
    DIR *d = opendir(dir_path);
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++, fprintf(stderr, "\n  left behind: %s\n", e->d_name);
    closedir(d);
    return n;
}

static void test_full_disk(void)
{
    /* one epoch (6 steps) to a first checkpoint, then resumed for three under the limit */
    char set_dir[512], ckpt[512];
    snprintf(set_dir, sizeof set_dir, "train.run_dir=%s", tmp("full"));
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", tmp("full"));
    const char *first[] = {"train", tmp("recipe.ini"), "--set", set_dir, "--set", "train.epochs=1", NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(first, tmp("full1.out"), tmp("full1.err")), 0);
    long good_len = 0;
    char *good = tu_read_file(ckpt, &good_len);
    CU_ASSERT_FATAL(good != NULL && good_len > (1 << 20));
    const char *resume[] = {"train", tmp("recipe.ini"), "--set", set_dir, "--resume", ckpt, NULL};
    int rc = wait_cli(start_cli_fsize(resume, tmp("full2.out"), tmp("full2.err"), 1 << 20));
    CU_ASSERT(rc > 0);
    char *err = tu_read_file(tmp("full2.err"), NULL);
    CU_ASSERT_FATAL(err != NULL);
    int named = strstr(err, ckpt) && strstr(err, strerror(EFBIG));
    CU_ASSERT(named);
    if (!named || rc <= 0) fprintf(stderr, "\n  exit %d, stderr:\n%s\n", rc, err);
    free(err);
    long len = -1;
    char *now = tu_read_file(ckpt, &len);
    CU_ASSERT(now && len == good_len && memcmp(now, good, (size_t)len) == 0);
    free(now);
    free(good);
    CU_ASSERT_EQUAL(temporaries_in(tmp("full")), 0);
    vr_run_state rs;
    TU_OK(load_checkpoint(ckpt, NULL, NULL, NULL, NULL, &rs));
    CU_ASSERT_EQUAL(rs.step, 6);
}

static void test_not_finite(void)
{
    char set_dir[512], ckpt[512];
    snprintf(set_dir, sizeof set_dir, "train.run_dir=%s", tmp("diverge"));
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", tmp("diverge"));
    const char *args[] = {"train", tmp("recipe.ini"), "--set", set_dir, "--set", "optim.name=sgd",
                          "--set", "optim.base_lr=1000", "--set", "optim.warmup_epochs=0",
                          "--set", "train.checkpoint_every=1", NULL};
    int rc = run_cli(args, tmp("diverge.out"), tmp("diverge.err"));
    CU_ASSERT(rc > 0);
    char *err = tu_read_file(tmp("diverge.err"), NULL);
    CU_ASSERT_FATAL(err != NULL);
    /* the stop names the step whose loss, or whose updated parameters, were not finite */
    const char *stop = strstr(err, "training stopped: ");
    long step = -1, good = -2;
    char line[1024] = "";
    if (stop) sscanf(stop, "%1023[^\n]", line);
    const char *at = strstr(line, "step ");
    if (at) sscanf(at, "step %ld", &step);
    int finite_named = strstr(line, "not finite") != NULL;
    const char *last = strstr(err, "the last good checkpoint is ");
    if (last && strstr(last, ckpt)) sscanf(strstr(last, ckpt) + strlen(ckpt), " (step %ld)", &good);
    int ok = finite_named && good >= 1 && good < step;
    CU_ASSERT(ok);
    if (!ok) fprintf(stderr, "\n  exit %d, step %ld, last good %ld; stderr:\n%s\n", rc, step, good, err);
    free(err);
    float *p, *buf;
    size_t np, nbuf;
    vr_run_state rs;
    TU_OK(load_checkpoint(ckpt, &p, &np, &buf, &nbuf, &rs));
    CU_ASSERT_EQUAL(rs.step, good);
    size_t finite = 0;
    for (size_t i = 0; i < np; i++) finite += isfinite(p[i]) != 0;
    for (size_t i = 0; i < nbuf; i++) finite += isfinite(buf[i]) != 0;
    CU_ASSERT_EQUAL(finite, np + nbuf);
    free(p);
    free(buf);
}

static void test_eval_commands(void)
{
    char ckpt[512]; /* a copy: tmp's buffers are reused */
    snprintf(ckpt, sizeof ckpt, "%s", tmp("a/checkpoint.safetensors"));
    const char *knn[] = {"eval", "knn", ckpt, "--json", tmp("knn.json"), NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(knn, tmp("knn.out"), tmp("knn.err")), 0);
    /* the same figures within one of the 12 test images: the run's evaluation passes its rows
     * through the network 12 at a time, eval knn 256 at a time, which may round differently */
    CU_ASSERT(fabs(json_number(tmp("knn.json"), "top1") - json_number(tmp("a/eval.json"), "top1")) <= 1.0 / 12 + 1e-9);
    CU_ASSERT(fabs(json_number(tmp("knn.json"), "top5") - json_number(tmp("a/eval.json"), "top5")) <= 1.0 / 12 + 1e-9);
    CU_ASSERT_EQUAL(json_number(tmp("knn.json"), "train_samples"), 36);

    const char *linear[] = {"eval", "linear", ckpt, "--epochs", "7", "--lr", "0.05", "--json", tmp("linear.json"), NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(linear, tmp("linear.out"), tmp("linear.err")), 0);
    const char *j = tmp("linear.json");
    CU_ASSERT_EQUAL(json_number(j, "epochs"), 7);
    CU_ASSERT_DOUBLE_EQUAL(json_number(j, "lr"), 0.05, 1e-7);
    CU_ASSERT_EQUAL(json_number(j, "train_samples"), 36);
    CU_ASSERT_EQUAL(json_number(j, "test_samples"), 12);
    CU_ASSERT_EQUAL(json_number(j, "classes"), 3);
    double top1 = json_number(j, "top1"), last = json_number(j, "last_top1");
    CU_ASSERT(top1 >= last && top1 <= 1.0 && last >= 0.0);
    CU_ASSERT_EQUAL(json_number(j, "top5"), 1.0); /* 3 classes: every row is a top-5 hit */
    char *out = tu_read_file(tmp("linear.out"), NULL);
    CU_ASSERT(out && strstr(out, "SGD 7 epochs, batch 256, lr 0.05 cosine"));
    free(out);

    const char *random[] = {"eval", "linear", "--random-init", tmp("recipe.ini"), "--epochs", "2", NULL};
    CU_ASSERT_EQUAL(run_cli(random, tmp("random.out"), tmp("random.err")), 0);
    const char *bad_epochs[] = {"eval", "linear", ckpt, "--epochs", "0", NULL};
    CU_ASSERT_EQUAL(run_cli(bad_epochs, tmp("bad.out"), tmp("bad.err")), 2);
    const char *bad_lr[] = {"eval", "linear", ckpt, "--lr", "x", NULL};
    CU_ASSERT_EQUAL(run_cli(bad_lr, tmp("bad.out"), tmp("bad.err")), 2);
}

/* The value of key in [section] of a resolved recipe's text, into value; 1 when found. */
static int recipe_value(const char *text, const char *section, const char *key, char *value, size_t len)
{
    char header[64];
    snprintf(header, sizeof header, "\n[%s]\n", section);
    const char *p = strstr(text, header);
    if (!p) return 0;
    p += strlen(header);
    size_t klen = strlen(key);
    while (*p && *p != '[') {
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        if (!strncmp(p, key, klen) && (p[klen] == ' ' || p[klen] == '=')) {
            const char *v = strchr(p, '=') + 1;
            while (*v == ' ') v++;
            size_t n = strcspn(v, " ;\n");
            snprintf(value, len, "%.*s", (int)n, v);
            return 1;
        }
        p = *eol ? eol + 1 : eol;
    }
    return 0;
}

typedef struct spec_value {
    const char *section, *key, *value;
} spec_value;

/* shared/SPEC.md's image setup, as the resolved recipe writes it (shortest float text) */
static const spec_value SPEC[] = {
    {"data", "kind", "folder"},
    {"image_views", "size", "224"},
    {"image_views", "mean", "0.485,0.456,0.406"},
    {"image_views", "std", "0.229,0.224,0.225"},
    {"image_views", "eval_crop_fraction", "0.875"},
    {"model", "depth", "50"},
    {"model", "widths", "64,128,256,512"},
    {"model", "stem_kernel", "7"},
    {"model", "stem_stride", "2"},
    {"model", "pool_kernel", "3"},
    {"model", "zero_init_residual", "true"},
    {"model", "expander", "2048-8192-8192-8192"},
    {"loss", "sim_coeff", "25"},
    {"loss", "std_coeff", "25"},
    {"loss", "cov_coeff", "1"},
    {"optim", "name", "lars"},
    {"optim", "weight_decay", "1e-06"},
    {"optim", "momentum", "0.9"},
    {"optim", "eta", "0.001"},
    {"optim", "exclude_1d", "true"},
    {"optim", "scale_lr", "true"},
    {"optim", "warmup_epochs", "10"},
    {"optim", "final_lr_ratio", "0.001"},
    {"eval", "k", "20"},
    {"eval", "linear", "sgd"},
};

/* Per view (1, 2): SPEC's crop, flip, jitter, grayscale, blur and solarisation. */
static const char *const VIEW_KEYS[][3] = {
    {"scale_min", "0.08", "0.08"},  {"scale_max", "1", "1"},        {"ratio_min", "0.75", "0.75"},
    {"ratio_max", "1.3333334", "1.3333334"}, {"flip_p", "0.5", "0.5"}, {"jitter_p", "0.8", "0.8"},
    {"brightness", "0.4", "0.4"},   {"contrast", "0.4", "0.4"},     {"saturation", "0.2", "0.2"},
    {"hue", "0.1", "0.1"},          {"gray_p", "0.2", "0.2"},       {"blur_p", "1", "0.1"},
    {"blur_sigma_min", "0.1", "0.1"}, {"blur_sigma_max", "2", "2"}, {"solarize_p", "0", "0.2"},
    {"solarize_threshold", "128", "128"},
};

static int check_value(const char *text, const char *section, const char *key, const char *want)
{
    char got[128] = "";
    int ok = recipe_value(text, section, key, got, sizeof got) && !strcmp(got, want);
    if (!ok) fprintf(stderr, "\n  [%s] %s = '%s', SPEC: '%s'\n", section, key, got, want);
    return ok;
}

static void check_dry_run(const char *recipe, const char *epochs, const char *batch, const char *base_lr,
                          const char *steps)
{
    char path[512], set[512];
    snprintf(path, sizeof path, "%s/%s", recipes, recipe);
    snprintf(set, sizeof set, "data.train_folder=%s", tmp("no_imagenet_here"));
    const char *args[] = {"train", path, "--dry-run", "--set", set, NULL};
    CU_ASSERT_EQUAL_FATAL(run_cli(args, tmp("dry.out"), tmp("dry.err")), 0);
    char *out = tu_read_file(tmp("dry.out"), NULL);
    CU_ASSERT_FATAL(out != NULL);
    for (size_t i = 0; i < sizeof SPEC / sizeof SPEC[0]; i++)
        CU_ASSERT(check_value(out, SPEC[i].section, SPEC[i].key, SPEC[i].value));
    for (size_t i = 0; i < sizeof VIEW_KEYS / sizeof VIEW_KEYS[0]; i++)
        for (int v = 1; v <= 2; v++) {
            char key[64];
            snprintf(key, sizeof key, "%s%d", VIEW_KEYS[i][0], v);
            CU_ASSERT(check_value(out, "image_views", key, VIEW_KEYS[i][v]));
        }
    CU_ASSERT(check_value(out, "train", "epochs", epochs));
    CU_ASSERT(check_value(out, "train", "batch", batch));
    CU_ASSERT(check_value(out, "optim", "base_lr", base_lr));
    CU_ASSERT(strstr(out, "parameters:      174552128 (backbone 23508032, projector 151044096)") != NULL);
    CU_ASSERT(strstr(out, "1281167 images ASSUMED") != NULL);
    CU_ASSERT(strstr(out, steps) != NULL);
    CU_ASSERT(strstr(out, "memory estimate:") != NULL);
    free(out);
}

static void test_dry_run_imagenet(void)
{
    check_dry_run("imagenet_resnet50_100ep.ini", "100", "512", "0.3", "steps per epoch: 2502 (batch 512 pairs");
    check_dry_run("imagenet_resnet50_1000ep.ini", "1000", "2048", "0.2", "steps per epoch: 625 (batch 2048 pairs");
    /* without the assumption, a missing folder is an error that names it */
    char path[512], set[512];
    snprintf(path, sizeof path, "%s/imagenet_resnet50_100ep.ini", recipes);
    snprintf(set, sizeof set, "data.train_folder=%s", tmp("no_imagenet_here"));
    const char *args[] = {"train", path, "--dry-run", "--set", set, "--set", "data.assumed_train_size=0", NULL};
    CU_ASSERT_EQUAL(run_cli(args, tmp("dry.out"), tmp("dry.err")), 1);
    char *err = tu_read_file(tmp("dry.err"), NULL);
    CU_ASSERT(err && strstr(err, "no_imagenet_here: no such folder"));
    free(err);
}

/* The folder kind's recipe keys: [image_views] size, mean and std reach both views and the
 * evaluation input, per-view keys reach their view only, the text round-trips, the branch takes
 * 3 channels; bad values are named. */
static void test_recipe_folder(void)
{
    const char *text = "[data]\nkind = folder\ntrain_folder = x/train\n[image_views]\nsize = 32\n"
                       "mean = 0.5, 0.25,0.125\nstd = 0.2,0.2,0.2\nblur_p2 = 0.3\nsolarize_threshold1 = 100\n"
                       "eval_crop_fraction = 0.5\n";
    vr_recipe r, back;
    TU_OK(vr_recipe_load_text(&r, text, "folder.ini", NULL, 0));
    CU_ASSERT_EQUAL(r.kind, VR_DATA_FOLDER);
    const vr_image_view_config *v = r.image_views.view;
    CU_ASSERT(v[0].size == 32 && v[1].size == 32 && r.image_eval.size == 32);
    CU_ASSERT(v[1].mean[0] == 0.5f && v[1].mean[1] == 0.25f && v[1].mean[2] == 0.125f);
    CU_ASSERT(r.image_eval.mean[2] == 0.125f && r.image_eval.std[0] == 0.2f && v[1].std[1] == 0.2f);
    CU_ASSERT(v[0].blur_p == 1.0f && v[1].blur_p == 0.3f);
    CU_ASSERT(v[0].solarize_threshold == 100 && v[1].solarize_threshold == 128);
    CU_ASSERT(r.image_eval.crop_fraction == 0.5f);
    char *canon = vr_recipe_format(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(canon);
    TU_OK(vr_recipe_load_text(&back, canon, "resolved", NULL, 0));
    CU_ASSERT(memcmp(&r.image_views, &back.image_views, sizeof r.image_views) == 0);
    CU_ASSERT(memcmp(&r.image_eval, &back.image_eval, sizeof r.image_eval) == 0);
    free(canon);
    vr_branch_config bc[VR_MAX_BRANCHES];
    CU_ASSERT_EQUAL(vr_recipe_branches(&r, bc), 1);
    CU_ASSERT_EQUAL(bc[0].encoder.in_channels, 3);

    static const struct {
        const char *text, *says;
    } bad[] = {
        {"[data]\nkind = folder\ntrain_folder = x\n[image_views]\nmean = 0.1,0.2\n", "three numbers"},
        {"[data]\nkind = folder\ntrain_folder = x\n[image_views]\nstd = 0.1,0,0.1\n", "three numbers"},
        {"[data]\nkind = folder\ntrain_folder = x\n[image_views]\nhue2 = 0.6\n", "hue2"},
        {"[data]\nkind = folder\ntrain_folder = x\n[image_views]\nscale_min1 = 0.9\nscale_max1 = 0.5\n",
         "view 1: bad crop scale"},
        {"[data]\nkind = folder\n", "needs [data] train_folder"},
        {"[data]\nkind = folders\n", "idx, audio, folder"},
        {"[data]\nkind = folder\ntrain_folder = x\nprefetch = 1\n", "prefetch"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(vr_recipe_load_text(&r, bad[i].text, "bad.ini", NULL, 0), VR_ERR_ARG);
        int named = strstr(vr_last_error(), bad[i].says) != NULL;
        if (!named) fprintf(stderr, "\n  case %zu: '%s' does not say '%s'\n", i, vr_last_error(), bad[i].says);
        CU_ASSERT(named);
    }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_image_train PATH/TO/vicreg PATH/TO/recipes\n");
        return 2;
    }
    cli = argv[1];
    recipes = argv[2];
    snprintf(dir, sizeof dir, "/tmp/vr_image_train_XXXXXX");
    if (!mkdtemp(dir)) return 2;
    static const tu_test tests[] = {
        {"kill_and_resume", test_kill_and_resume},
        {"interrupt_and_resume", test_interrupt_and_resume},
        {"full_disk", test_full_disk},
        {"not_finite", test_not_finite},
        {"eval_commands", test_eval_commands},
        {"dry_run_imagenet", test_dry_run_imagenet},
        {"recipe_folder", test_recipe_folder},
        {NULL, NULL},
    };
    int rc = tu_main("image_train", tests);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
