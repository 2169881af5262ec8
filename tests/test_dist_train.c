/* `mpirun -np 2 vicreg train` end to end (the program is the first argument, mpirun the second),
 * on a small ResNet-18 over 256 Fashion-MNIST images (Debian's dataset-fashion-mnist):
 *  - two ranks of 8 pairs each log the same losses as one process of 16 (metrics.jsonl, every
 *    step) and end with the same checkpoint (|d| <= 1e-4 * (|ref| + rms(tensor)));
 *  - SIGKILL of rank 1 mid-run ends rank 0 with a message naming the failure and the last good
 *    checkpoint, within the recipe's 5 s timeout, and that checkpoint loads (vicreg info); both
 *    ranks resume from it and end as an uninterrupted run (every metrics line the same);
 *  - SIGUSR1 to mpirun, which passes it on to every rank: they finish the step under way, rank 0
 *    saves it, and the run resumed from it ends as an uninterrupted run;
 *  - a rank that stops answering (SIGSTOP) makes rank 0 say "did not complete within 5 s"
 *    within the timeout.
 * In both, the message is timed from the signal (within 5 s + 3 s for a step of an instrumented
 * build); the launcher's teardown after it is bounded apart (30 s). */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "vicreg/safetensors.h"

static const char *cli, *mpirun, *recipe;
static char dir[256];

#define RECIPE_SETS                                                                               \
    "--set", "data.train_limit=256", "--set", "model.widths=8,16,16,32", "--set",                 \
        "model.expander=32-64-64", "--set", "train.batch=16", "--set", "train.log_every=1",       \
        "--set", "eval.train_limit=200", "--set", "eval.test_limit=100", "--set", "train.threads=1", \
        "--set", "dist.timeout_s=5"

/* a run long enough to be killed in (16 steps per epoch) */
#define LONG_EPOCHS "30"

static const char *tmp(const char *name)
{
    static char paths[8][512];
    static int k;
    char *p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts argv (argv[0] a path) with stdout and stderr into err. */
static pid_t start(const char *const *argv, const char *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    extern char **environ;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

static int wait_exit(pid_t pid)
{
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* mpirun -np 2 vicreg train ... into run_dir, with `epochs` and `every` (checkpoints), resuming
 * from `resume` unless NULL */
static pid_t start_ranks(const char *run_dir, const char *epochs, const char *every,
                         const char *resume, const char *err)
{
    char d[512], e[64], c[64];
    snprintf(d, sizeof d, "train.run_dir=%s", run_dir);
    snprintf(e, sizeof e, "train.epochs=%s", epochs);
    snprintf(c, sizeof c, "train.checkpoint_every=%s", every);
    const char *argv[] = {mpirun, "-np", "2", "--oversubscribe", "--mca",
                          "btl_vader_single_copy_mechanism", "none", cli, "train",
                          recipe, RECIPE_SETS, "--set", d,
                          "--set", e, "--set", c, resume ? "--resume" : NULL, resume, NULL};
    return start(argv, err);
}

static int run_one(const char *run_dir, const char *err)
{
    char d[512];
    snprintf(d, sizeof d, "train.run_dir=%s", run_dir);
    const char *argv[] = {cli, "train", recipe, RECIPE_SETS,
                          "--set", d, NULL};
    return wait_exit(start(argv, err));
}

static int compare_checkpoints(const char *got_path, const char *ref_path)
{
    vr_safetensors *got, *ref;
    if (vr_st_open(got_path, &got) != VR_OK || vr_st_open(ref_path, &ref) != VR_OK) return -1;
    int bad = 0, n = vr_st_count(ref);
    for (int i = 0; i < n; i++) {
        const vr_st_entry *t = vr_st_entry_at(ref, i);
        /* parameters and batch norm buffers; the optimiser's momentum of a bias that a batch norm
         * follows is rounding noise about 0 (its true gradient is 0) */
        if (t->dtype != VR_DTYPE_F32 || !strncmp(t->name, "optimizer.", 10)) continue;
        size_t count = (size_t)((t->end - t->begin) / sizeof(float));
        float *a = malloc(count * sizeof(float)), *b = malloc(count * sizeof(float));
        if (!a || !b || vr_st_read(got, t->name, VR_DTYPE_F32, a, count) != VR_OK ||
            vr_st_read(ref, t->name, VR_DTYPE_F32, b, count) != VR_OK) {
            bad++;
        } else {
            double ss = 0.0;
            for (size_t j = 0; j < count; j++) ss += (double)b[j] * b[j];
            if (!tu_close(a, b, count, 1e-4 * sqrt(ss / (double)count), 1e-4, t->name)) bad++;
        }
        free(a);
        free(b);
    }
    vr_st_close(got);
    vr_st_close(ref);
    return bad;
}

static void test_two_ranks_equal_one(void)
{
    CU_ASSERT_EQUAL_FATAL(run_one(tmp("one"), tmp("one.err")), 0);
    CU_ASSERT_EQUAL_FATAL(wait_exit(start_ranks(tmp("two"), "1", "1000", NULL, tmp("two.err"))), 0);
    char *a = tu_read_file(tmp("one/metrics.jsonl"), NULL), *b = tu_read_file(tmp("two/metrics.jsonl"), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* the same 16 steps with the same losses (rtol 1e-4 on the logged 6 digits); the timings
     * differ */
    int lines = 0, same = 0;
    static const char *keys[] = {"step", "loss", "invariance", "variance", "covariance", "lr"};
    char *ea = a + strlen(a), *eb = b + strlen(b);
    for (char *p = a, *q = b; p < ea && q < eb; lines++) {
        size_t lp = strcspn(p, "\n"), lq = strcspn(q, "\n");
        p[lp] = q[lq] = '\0';
        cJSON *jp = cJSON_Parse(p), *jq = cJSON_Parse(q);
        int ok = jp && jq;
        for (int k = 0; ok && k < 6; k++) {
            const cJSON *x = cJSON_GetObjectItem(jp, keys[k]), *y = cJSON_GetObjectItem(jq, keys[k]);
            ok = cJSON_IsNumber(x) && cJSON_IsNumber(y) &&
                 fabs(x->valuedouble - y->valuedouble) <= 1e-4 * fabs(y->valuedouble);
        }
        if (ok) same++;
        else fprintf(stderr, "\n  %s\n  %s\n", p, q);
        cJSON_Delete(jp);
        cJSON_Delete(jq);
        p += lp + 1;
        q += lq + 1;
    }
    CU_ASSERT_EQUAL(lines, 16);
    CU_ASSERT_EQUAL(same, lines);
    free(a);
    free(b);
    CU_ASSERT_EQUAL(compare_checkpoints(tmp("two/checkpoint.safetensors"), tmp("one/checkpoint.safetensors")), 0);
    char *err = tu_read_file(tmp("two.err"), NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err ? err : "", "data-parallel:   2 ranks (mpi), 8 pairs each"));
    free(err);
}

/* The pid of rank `rank` among mpirun's children. */
static pid_t rank_pid(pid_t launcher, int rank)
{
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = -1;
    while (d && found < 0 && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *close = strrchr(stat, ')');
        int ppid = 0;
        if (!close || sscanf(close + 2, "%*c %d", &ppid) != 1 || ppid != launcher) continue;
        snprintf(path, sizeof path, "/proc/%d/environ", pid);
        static char env[65536]; /* /proc files have no size to ask for: read what comes */
        f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(env, 1, sizeof env - 1, f);
        fclose(f);
        env[len] = '\0';
        for (size_t o = 0; o < len; o += strlen(env + o) + 1)
            if (!strcmp(env + o, want)) found = pid;
    }
    if (d) closedir(d);
    return found;
}

/* Starts a long 2-rank run into tmp(name) (run_dir, its output in err, its checkpoint path in
 * ckpt) and returns the launcher once the first checkpoint is written, with the ranks' pids;
 * fails the test where none comes within 2 minutes. */
static pid_t run_to_checkpoint(const char *name, char *run_dir, char *err, char *ckpt,
                               pid_t ranks[2])
{
    snprintf(run_dir, 500, "%s", tmp(name));
    snprintf(err, 512, "%s.err", run_dir);
    snprintf(ckpt, 600, "%s/checkpoint.safetensors", run_dir);
    pid_t pid = start_ranks(run_dir, LONG_EPOCHS, "4", NULL, err);
    CU_ASSERT_FATAL(pid > 0);
    double t0 = now();
    while (access(ckpt, F_OK) != 0 && now() - t0 < 120) usleep(20000);
    int ok = access(ckpt, F_OK) == 0;
    for (int r = 0; r < 2; r++) ranks[r] = ok ? rank_pid(pid, r) : -1;
    if (ranks[0] <= 0 || ranks[1] <= 0) {
        kill(pid, SIGKILL);
        wait_exit(pid);
        CU_FAIL_FATAL("no checkpoint within 2 minutes, or no ranks to find");
    }
    return pid;
}

/* Waits for pid to end, noting when `file` first holds `text` (-1 if never): seconds after t0. */
static int wait_exit_noting(pid_t pid, const char *file, const char *text, double t0,
                            double *seen, double *ended)
{
    *seen = *ended = -1;
    for (;;) {
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (*seen < 0) {
            char *out = tu_read_file(file, NULL);
            if (out && strstr(out, text)) *seen = now() - t0;
            free(out);
        }
        if (w == pid) {
            *ended = now() - t0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (w < 0) return -1;
        usleep(20000);
    }
}

/* Starts a long run, waits for its first checkpoint, sends sig to rank 1; rank 0 must print
 * `expect` within the 5 s timeout (plus a step of an instrumented build), and the launcher end
 * the run soon after (its teardown: SIGCONT, SIGTERM, SIGKILL to what is left). */
static void break_a_rank(const char *name, int sig, const char *expect)
{
    char run_dir[500], err[512], ckpt[600];
    pid_t ranks[2];
    pid_t pid = run_to_checkpoint(name, run_dir, err, ckpt, ranks);
    pid_t victim = ranks[1];
    double t_kill = now(), said, took;
    CU_ASSERT_EQUAL(kill(victim, sig), 0);
    int rc = wait_exit_noting(pid, err, "vicreg: training stopped", t_kill, &said, &took);
    fprintf(stderr, "\n  %s: rank 0 said so %.2f s after the signal, the run ended after %.2f s, "
                    "status %d\n", name, said, took, rc);
    CU_ASSERT(rc != 0);
    CU_ASSERT(said >= 0 && said < 5.0 + 3.0);
    CU_ASSERT(took >= 0 && took < 5.0 + 30.0);
    char *out = tu_read_file(err, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    if (out && (!strstr(out, expect) || !strstr(out, "the last good checkpoint is")))
        fprintf(stderr, "  output:\n%s\n", out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, expect));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "vicreg: the last good checkpoint is"));
    free(out);
    /* the checkpoint left behind loads */
    const char *info[] = {cli, "info", ckpt, NULL};
    CU_ASSERT_EQUAL(wait_exit(start(info, tmp("info.out"))), 0);
    if (sig == SIGSTOP) kill(victim, SIGKILL); /* in case the launcher left it */
}

/* metrics.jsonl of two runs: the same steps with the same losses and learning rates, bit for
 * bit as logged (the timings differ); returns the lines compared, -1 on a difference. */
static int same_metrics(const char *got_path, const char *ref_path)
{
    char *a = tu_read_file(got_path, NULL), *b = tu_read_file(ref_path, NULL);
    int lines = 0;
    for (char *p = a, *q = b; p && q && *p && *q; lines++) {
        char *cp = strstr(p, "\"samples_per_s\""), *cq = strstr(q, "\"samples_per_s\"");
        if (!cp || !cq || cp - p != cq - q || memcmp(p, q, (size_t)(cp - p))) {
            fprintf(stderr, "\n  %.*s\n  %.*s\n", (int)strcspn(p, "\n"), p, (int)strcspn(q, "\n"), q);
            lines = -1;
            break;
        }
        p += strcspn(p, "\n");
        q += strcspn(q, "\n");
        p += *p == '\n';
        q += *q == '\n';
    }
    free(a);
    free(b);
    return lines;
}

/* ... and the run taken up again from that checkpoint by both ranks ends as a run that was never
 * interrupted. */
static void test_killed_rank(void)
{
    break_a_rank("killed", SIGKILL, "vicreg: training stopped: comm: rank 0 of 2:");
    char ckpt[600];
    snprintf(ckpt, sizeof ckpt, "%s", tmp("killed/checkpoint.safetensors"));
    CU_ASSERT_EQUAL(wait_exit(start_ranks(tmp("killed"), LONG_EPOCHS, "4", ckpt, tmp("resumed.err"))), 0);
    CU_ASSERT_EQUAL(wait_exit(start_ranks(tmp("whole"), LONG_EPOCHS, "4", NULL, tmp("whole.err"))), 0);
    int lines = same_metrics(tmp("killed/metrics.jsonl"), tmp("whole/metrics.jsonl"));
    fprintf(stderr, "  resumed after the kill: %d metrics lines equal to the uninterrupted run's\n", lines);
    CU_ASSERT_EQUAL(lines, 16 * 30);
}

/* SIGUSR1 to mpirun (kill -USR1), which passes it on to every rank: they finish the step under
 * way together; rank 0 saves it and names it, the run ends with status 1, and both ranks resume
 * from that checkpoint to the uninterrupted run's metrics, line for line (test_killed_rank's
 * "whole" run). SIGINT to the ranks themselves reaches the same handler. */
static void test_interrupted_ranks(void)
{
    char run_dir[500], err[512], ckpt[600];
    pid_t ranks[2];
    pid_t pid = run_to_checkpoint("stopped", run_dir, err, ckpt, ranks);
    CU_ASSERT_EQUAL(kill(pid, SIGUSR1), 0);
    double t_sig = now();
    int rc = wait_exit(pid);
    char *out = tu_read_file(err, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    const char *said = "vicreg: interrupted after step ", *at = strstr(out, said);
    long step = at ? atol(at + strlen(said)) : -1;
    fprintf(stderr, "\n  SIGUSR1 to mpirun: stopped after step %ld, the run over %.2f s after "
                    "the signal, status %d\n", step, now() - t_sig, rc);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(step > 0 && step < 16 * 30);
    free(out);
    CU_ASSERT_EQUAL(wait_exit(start_ranks(run_dir, LONG_EPOCHS, "4", ckpt, tmp("stopped-resumed.err"))), 0);
    int lines = same_metrics(tmp("stopped/metrics.jsonl"), tmp("whole/metrics.jsonl"));
    fprintf(stderr, "  resumed after the interruption: %d metrics lines equal to the uninterrupted "
                    "run's\n", lines);
    CU_ASSERT_EQUAL(lines, 16 * 30);
}

static void test_hung_rank(void)
{
    break_a_rank("hung", SIGSTOP, "did not complete within 5 s: another rank has died or hangs");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: test_dist_train VICREG MPIRUN RECIPE\n");
        return 2;
    }
    cli = argv[1];
    mpirun = argv[2];
    recipe = argv[3];
    snprintf(dir, sizeof dir, "/tmp/vicreg_test_dist_train.XXXXXX");
    if (!mkdtemp(dir)) return 2;
    static const tu_test tests[] = {
        {"mpirun -np 2 equals one process: losses of every step, the checkpoint", test_two_ranks_equal_one},
        {"a killed rank ends the run within the timeout, the checkpoint loads", test_killed_rank},
        {"SIGUSR1 to mpirun: the step finished and saved, resumed as if never stopped",
         test_interrupted_ranks},
        {"a rank that stops answering ends the run within the timeout", test_hung_rank},
        {NULL, NULL},
    };
    int rc = tu_main("dist_train", tests);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (rc == 0 && system(cmd) != 0) rc = 1;
    return rc;
}
