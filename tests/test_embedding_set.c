/* Embedding sets on disk (matrix, rows, settings): written sets read back exactly, names with
 * commas and quotes survive the CSV, labels number in order of appearance, and sidecars that
 * disagree with the matrix or are malformed are named and refused. A disk that fills while a
 * new set is written (a file size limit between the sizes of the rows and of the matrix) fails
 * with the path and the system's reason and leaves the three files of the previous set as
 * they were, byte for byte, with no temporary file beside them. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "vicreg/embedding_set.h"
#include "vicreg/npy.h"

static char dir[] = "/tmp/vr_eset_XXXXXX";

static void path_of(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", dir, name); }

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void expect_error(const char *npy, int need_rows, vr_status code, const char *needle)
{
    vr_embedding_set s;
    vr_status st = vr_embedding_set_read(npy, need_rows, &s);
    CU_ASSERT_EQUAL(st, code);
    if (st != code || !strstr(vr_last_error(), needle))
        fprintf(stderr, "\n  expected %d with \"%s\", got %d: %s\n", code, needle, st, vr_last_error());
    CU_ASSERT(strstr(vr_last_error(), needle) != NULL);
}

static const char *files[] = {"a.wav", "dir, with comma/b \"quoted\".flac", "c.ogg"};
static const char *labels[] = {"yes", "no", "yes"};

static void write_set(const char *npy, float *x)
{
    vr_embedding_row rows[3];
    for (int i = 0; i < 3; i++)
        rows[i] = (vr_embedding_row){(char *)files[i], 0.5 * i, 0.5 * i + 1.0, (char *)labels[i]};
    for (int i = 0; i < 12; i++) x[i] = (float)i / 7.0f - 0.3f;
    vr_embedding_set s = {.n = 3, .d = 4, .x = x, .rows = rows,
                          .meta_json = "{\"branch\": \"wave\", \"rows\": 3, \"dim\": 4}"};
    TU_OK(vr_embedding_set_write(npy, &s));
}

static void test_round_trip(void)
{
    char npy[256], csv[256];
    path_of(npy, sizeof npy, "set.npy");
    float x[12];
    write_set(npy, x);
    TU_OK(vr_embedding_set_sidecar(npy, ".csv", csv, sizeof csv));
    path_of(npy, sizeof npy, "set.csv");
    CU_ASSERT_STRING_EQUAL(csv, npy);
    path_of(npy, sizeof npy, "set.npy");
    vr_embedding_set s;
    TU_OK(vr_embedding_set_read(npy, 1, &s));
    CU_ASSERT(s.n == 3 && s.d == 4);
    CU_ASSERT(memcmp(s.x, x, sizeof x) == 0);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_STRING_EQUAL(s.rows[i].file, files[i]);
        CU_ASSERT_STRING_EQUAL(s.rows[i].label, labels[i]);
        CU_ASSERT_DOUBLE_EQUAL(s.rows[i].start_s, 0.5 * i, 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(s.rows[i].end_s, 0.5 * i + 1.0, 1e-9);
    }
    CU_ASSERT(s.meta_json && strstr(s.meta_json, "\"wave\""));
    int *ids, k;
    TU_OK(vr_embedding_set_label_ids(&s, &ids, &k));
    CU_ASSERT(k == 2 && ids[0] == 0 && ids[1] == 1 && ids[2] == 0);
    vr_free(ids);
    vr_embedding_set_free(&s);
}

static void test_label_ids(void)
{
    /* labels in order of first appearance, unlabelled rows -1, against a naive loop */
    enum { N = 500 };
    vr_embedding_row rows[N];
    char names[N][8];
    vr_rng r;
    vr_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        int c = (int)(vr_rng_uniform(&r) * 40);
        if (c == 0) names[i][0] = '\0';
        else snprintf(names[i], sizeof names[i], "c%d", c);
        rows[i] = (vr_embedding_row){"f", 0, 1, names[i]};
    }
    vr_embedding_set s = {.n = N, .d = 1, .rows = rows};
    int *ids, k;
    TU_OK(vr_embedding_set_label_ids(&s, &ids, &k));
    int seen = 0, first[N];
    for (int i = 0; i < N; i++) {
        int want = -1;
        if (names[i][0]) {
            for (int c = 0; c < seen && want < 0; c++)
                if (!strcmp(names[first[c]], names[i])) want = c;
            if (want < 0) first[want = seen++] = i;
        }
        CU_ASSERT_EQUAL(ids[i], want);
    }
    CU_ASSERT_EQUAL(k, seen);
    vr_free(ids);
}

static void test_bad_sidecars(void)
{
    char npy[256], csv[256], json[256];
    path_of(npy, sizeof npy, "bad.npy");
    path_of(csv, sizeof csv, "bad.csv");
    path_of(json, sizeof json, "bad.json");
    float x[12];
    write_set(npy, x);
    write_text(csv, "file,start,end,label\na.wav,0,1,yes\n");
    expect_error(npy, 1, VR_ERR_FORMAT, "1 rows, the matrix has 3");
    write_text(csv, "path,start,end,label\na,0,1,x\nb,0,1,x\nc,0,1,x\n");
    expect_error(npy, 1, VR_ERR_FORMAT, "header");
    write_text(csv, "file,start,end,label\na,0,1,x\nb,zero,1,x\nc,0,1,x\n");
    expect_error(npy, 1, VR_ERR_FORMAT, "bad.csv:3");
    write_text(csv, "file,start,end,label\na,0,1\n");
    expect_error(npy, 1, VR_ERR_FORMAT, "3 fields");
    write_text(csv, "file,start,end,label\n\"a,0,1,x\n");
    expect_error(npy, 1, VR_ERR_FORMAT, "not valid CSV");
    unlink(csv);
    expect_error(npy, 1, VR_ERR_NOT_FOUND, "bad.csv");
    vr_embedding_set s;
    TU_OK(vr_embedding_set_read(npy, 0, &s)); /* rows optional */
    CU_ASSERT(s.rows == NULL && s.meta_json != NULL);
    vr_embedding_set_free(&s);
    write_text(json, "{\"rows\": 3, \"dim\": 5}");
    expect_error(npy, 0, VR_ERR_FORMAT, "dimension 5");
    write_text(json, "[1, 2]");
    expect_error(npy, 0, VR_ERR_FORMAT, "not a JSON object");
    unlink(json);
    /* rank 1 and a file that is no .npy at all */
    const int64_t shape1[1] = {12};
    TU_OK(vr_npy_write(npy, x, 1, shape1));
    expect_error(npy, 0, VR_ERR_SHAPE, "bad.npy");
    write_text(npy, "not numpy");
    expect_error(npy, 0, VR_ERR_FORMAT, "bad.npy");
    unlink(npy);
    expect_error(npy, 0, VR_ERR_NOT_FOUND, "bad.npy");
    vr_embedding_set bad = {.n = 1, .d = 1, .x = x, .meta_json = "not json"};
    CU_ASSERT_EQUAL(vr_embedding_set_write(npy, &bad), VR_ERR_ARG);
    CU_ASSERT(access(npy, F_OK) != 0); /* nothing written */
}

static void test_full_disk(void)
{
    static const char *names[3] = {"full.npy", "full.csv", "full.json"};
    char paths[3][256];
    for (int k = 0; k < 3; k++) path_of(paths[k], sizeof paths[k], names[k]);
    float x[12];
    write_set(paths[0], x);
    char *good[3];
    long good_len[3];
    for (int k = 0; k < 3; k++) CU_ASSERT_PTR_NOT_NULL_FATAL(good[k] = tu_read_file(paths[k], &good_len[k]));

    /* a bigger set: its rows (~1.5 KiB) and settings fit under the limit, its matrix (32 KiB) not */
    enum { N = 64, D = 128, LIMIT = 8192 };
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        static float big[N * D];
        static vr_embedding_row rows[N];
        for (int i = 0; i < N; i++) rows[i] = (vr_embedding_row){"clip.wav", i, i + 1.0, "word"};
        vr_embedding_set s = {.n = N, .d = D, .x = big, .rows = rows, .meta_json = "{\"rows\": 64}"};
        struct rlimit rl;
        if (getrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(10);
        rl.rlim_cur = LIMIT;
        if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(11);
        if (vr_embedding_set_write(paths[0], &s) != VR_ERR_IO) _exit(12);
        if (!strstr(vr_last_error(), paths[0]) || !strstr(vr_last_error(), strerror(EFBIG))) {
            fprintf(stderr, "\n  message: %s\n", vr_last_error());
            _exit(13);
        }
        _exit(0);
    }
    int status = 0;
    CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fprintf(stderr, "\n  writer child status %d\n", status);
    for (int k = 0; k < 3; k++) {
        long len = -1;
        char *now = tu_read_file(paths[k], &len);
        int same = now && len == good_len[k] && memcmp(now, good[k], (size_t)len) == 0;
        CU_ASSERT(same);
        if (!same) fprintf(stderr, "\n  %s was replaced (%ld bytes, was %ld)\n", paths[k], len, good_len[k]);
        free(now);
        free(good[k]);
    }
    DIR *d = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (struct dirent *e; (e = readdir(d));) {
        CU_ASSERT(strstr(e->d_name, ".tmp.") == NULL);
        if (strstr(e->d_name, ".tmp.")) fprintf(stderr, "\n  left behind: %s\n", e->d_name);
    }
    closedir(d);
    vr_embedding_set s;
    TU_OK(vr_embedding_set_read(paths[0], 1, &s));
    CU_ASSERT(s.n == 3 && s.d == 4 && memcmp(s.x, x, sizeof x) == 0);
    vr_embedding_set_free(&s);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    static const tu_test tests[] = {
        {"write and read back", test_round_trip},
        {"labels numbered by first appearance", test_label_ids},
        {"bad sidecars named and refused", test_bad_sidecars},
        {"a full disk leaves the previous set", test_full_disk},
        {NULL, NULL},
    };
    int rc = tu_main("embedding_set", tests);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) rc = rc ? rc : 1;
    return rc;
}
