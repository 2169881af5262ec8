/* Image folders and their training loader (vision/image_folder.c, vision/image_loader.c), on
 * folders written here: good JPEGs and PNGs, and the committed broken files of
 * tests/fixtures/image (zero bytes, text named .jpg, a truncated JPEG, a PNG with corrupt data).
 *
 * Listing: classes and files in bytewise order with their labels, every left-out entry named;
 * a missing root, a file as root, a root without class folders and an empty class folder
 * refused with the folder named; the spread subset.
 * Loader: every batch against the same batch computed another way, from the documented rule
 * (vr_rng_permutation of the epoch, position (step mod steps) * N + i, the next good sample of
 * the order for a bad one, the views of vr_image_views_pair_file for index step * N + i): the
 * sample indices exactly and the views bit for bit (atol 0: the same code on the same bytes
 * must give the same floats); for 1 and 3 workers and depths 2 and 3; an epoch's samples are
 * distinct (a permutation cut by drop_last) and the next epoch's order differs; a loader
 * started at step k hands out the uninterrupted loader's batch k; each bad file is named once
 * and counted; a set of nothing but bad files fails naming the folder.
 * Files that vanish mid-epoch (removed while the workers run): every removed file is named once
 * in the skip list as missing and never handed out again, the batches stay full, and once
 * every file is gone the loader fails naming the folder instead of waiting. */
#include <ftw.h>
#include <unistd.h>

#include "image_files.h"
#include "testutil.h"
#include "vicreg/image_folder.h"
#include "vicreg/image_loader.h"

static char dir[64];

static const char *tmp(const char *name)
{
    static char buf[8][400];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static void make_dir(const char *name) { CU_ASSERT_EQUAL_FATAL(mkdir(tmp(name), 0755), 0); }

static void picture(const char *name, int h, int w, uint64_t seed)
{
    vr_rng r;
    vr_rng_seed(&r, seed);
    CU_ASSERT_FATAL(if_write_picture(tmp(name), &r, h, w));
}

static void fixture_copy(const char *fixture, const char *to)
{
    char from[512];
    snprintf(from, sizeof from, "%s/image/%s", VR_FIXTURE_DIR, fixture);
    CU_ASSERT_FATAL(if_copy_head(from, tmp(to), -1));
}

static int has_skip(const vr_image_folder *f, const char *name, const char *why)
{
    for (int i = 0; i < f->nskipped; i++)
        if (strstr(f->skipped[i].path, name) && strstr(f->skipped[i].reason, name) &&
            (!why || strstr(f->skipped[i].reason, why)))
            return 1;
    fprintf(stderr, "\n  no skip record for %s (%s)\n", name, why ? why : "any reason");
    return 0;
}

static void test_listing(void)
{
    make_dir("list");
    make_dir("list/b_cls");
    make_dir("list/a_cls");
    make_dir("list/a_cls/sub");
    picture("list/a_cls/2.jpg", 12, 10, 1);
    picture("list/a_cls/10.png", 12, 10, 2);
    picture("list/a_cls/x.JPEG", 12, 10, 3);
    picture("list/a_cls/.hidden.jpg", 12, 10, 4);
    CU_ASSERT_FATAL(if_write_bytes(tmp("list/a_cls/notes.txt"), "notes\n", 6));
    picture("list/stray.jpg", 12, 10, 5);
    picture("list/b_cls/z.png", 12, 10, 6);
    CU_ASSERT_EQUAL_FATAL(symlink("z.png", tmp("list/b_cls/y_link.png")), 0);

    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("list"), &f));
    CU_ASSERT_EQUAL_FATAL(f.nclasses, 2);
    CU_ASSERT_STRING_EQUAL(f.class_names[0], "a_cls");
    CU_ASSERT_STRING_EQUAL(f.class_names[1], "b_cls");
    static const char *want[] = {"a_cls/10.png", "a_cls/2.jpg", "a_cls/x.JPEG", "b_cls/y_link.png", "b_cls/z.png"};
    static const int labels[] = {0, 0, 0, 1, 1};
    CU_ASSERT_EQUAL_FATAL(f.n, 5);
    for (int i = 0; i < 5; i++) {
        char full[400];
        snprintf(full, sizeof full, "%s/%s", tmp("list"), want[i]);
        CU_ASSERT_STRING_EQUAL(f.paths[i], full);
        CU_ASSERT_EQUAL(f.labels[i], labels[i]);
        CU_ASSERT_EQUAL(f.bad[i], 0);
    }
    CU_ASSERT_EQUAL(f.nskipped, 3);
    CU_ASSERT(has_skip(&f, "notes.txt", "not a .jpg, .jpeg or .png file"));
    CU_ASSERT(has_skip(&f, "a_cls/sub", "folder inside a class folder"));
    CU_ASSERT(has_skip(&f, "stray.jpg", "outside every class folder"));

    /* marking a sample bad records it once */
    TU_OK(vr_image_folder_mark_bad(&f, 1, "2.jpg: broken"));
    TU_OK(vr_image_folder_mark_bad(&f, 1, "2.jpg: broken again"));
    CU_ASSERT_EQUAL(f.nskipped, 4);
    CU_ASSERT(f.bad[1] == 1 && has_skip(&f, "2.jpg", "broken"));
    vr_image_folder_free(&f);
}

static void test_listing_errors(void)
{
    vr_image_folder f;
    CU_ASSERT_EQUAL(vr_image_folder_list(tmp("no_such_root"), &f), VR_ERR_NOT_FOUND);
    CU_ASSERT(strstr(vr_last_error(), "no_such_root") && strstr(vr_last_error(), "no such folder"));
    CU_ASSERT_EQUAL(f.n, 0);

    CU_ASSERT_FATAL(if_write_bytes(tmp("a_file"), "x", 1));
    CU_ASSERT_EQUAL(vr_image_folder_list(tmp("a_file"), &f), VR_ERR_IO);
    CU_ASSERT(strstr(vr_last_error(), "a_file") && strstr(vr_last_error(), "not a folder"));

    make_dir("empty_root");
    CU_ASSERT_EQUAL(vr_image_folder_list(tmp("empty_root"), &f), VR_ERR_NOT_FOUND);
    CU_ASSERT(strstr(vr_last_error(), "empty_root") && strstr(vr_last_error(), "no class folders"));

    make_dir("empty_class");
    make_dir("empty_class/cat");
    make_dir("empty_class/dog");
    picture("empty_class/cat/1.jpg", 8, 8, 7);
    CU_ASSERT_FATAL(if_write_bytes(tmp("empty_class/dog/readme.txt"), "no images\n", 10));
    CU_ASSERT_EQUAL(vr_image_folder_list(tmp("empty_class"), &f), VR_ERR_FORMAT);
    CU_ASSERT(strstr(vr_last_error(), "empty_class/dog") && strstr(vr_last_error(), "empty class folder"));
    CU_ASSERT_EQUAL(f.n, 0);
    CU_ASSERT_EQUAL(f.nskipped, 0);
}

static void test_keep_spread(void)
{
    make_dir("spread");
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof name, "spread/c%d", k);
        make_dir(name);
        for (int i = 0; i < 5; i++) {
            snprintf(name, sizeof name, "spread/c%d/%d.png", k, i);
            picture(name, 6, 6, (uint64_t)(10 * k + i));
        }
    }
    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("spread"), &f));
    CU_ASSERT_EQUAL_FATAL(f.n, 10);
    char *keep[4];
    for (int i = 0; i < 4; i++) keep[i] = strdup(f.paths[i * 10 / 4]); /* 0, 2, 5, 7 */
    TU_OK(vr_image_folder_keep_spread(&f, 4));
    CU_ASSERT_EQUAL_FATAL(f.n, 4);
    static const int labels[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(f.paths[i], keep[i]);
        CU_ASSERT_EQUAL(f.labels[i], labels[i]);
        free(keep[i]);
    }
    TU_OK(vr_image_folder_keep_spread(&f, 0));
    CU_ASSERT_EQUAL(f.n, 4);
    vr_image_folder_free(&f);
}

/* ------------------------------------------------------------------ loader */

#define SIZE 16
#define VIEW_FLOATS (3 * SIZE * SIZE)
#define NB 4

static const char *const BAD[] = {"empty.jpg", "text.jpg", "truncated.jpg", "corrupt.png"};
#define NBAD 4

/* The loader's set: 3 classes of 7, 6 and 6 pictures (JPEG and PNG, sizes 14..30) and the
 * four broken files among them; 23 samples. */
static void make_loader_set(void)
{
    make_dir("set");
    int sample = 0;
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "set/class%d", k);
        make_dir(name);
        for (int i = 0; i < (k ? 6 : 7); i++, sample++) {
            snprintf(name, sizeof name, "set/class%d/img%02d.%s", k, i, i % 3 ? "jpg" : "png");
            picture(name, 14 + (sample * 5) % 17, 14 + (sample * 3) % 13, 100 + (uint64_t)sample);
        }
    }
    fixture_copy("empty.jpg", "set/class0/bad_empty.jpg");
    fixture_copy("text.jpg", "set/class1/bad_text.jpg");
    fixture_copy("truncated.jpg", "set/class1/bad_truncated.jpg");
    fixture_copy("corrupt.png", "set/class2/bad_corrupt.png");
}

static void views_config(vr_image_views_config *v)
{
    vr_image_views_config_default(v);
    for (int i = 0; i < 2; i++) {
        v->view[i].size = SIZE;
        v->view[i].scale_min = 0.3f;
    }
}

static int is_bad_path(const char *path) { return strstr(path, "/bad_") != NULL; }

/* Batch `step` as the header documents it, computed without the loader: index (N) and views
 * (2N, 3, S, S); met[j] is set for every bad sample j tried on the way. Returns the refills it
 * takes. */
static int expected_batch(const vr_image_folder *f, const vr_image_views_config *v, uint64_t shuffle_seed,
                          uint64_t views_seed, long step, int *index, float *views, int *met)
{
    int n = f->n, refills = 0;
    long steps = n / NB, epoch = step / steps;
    int *perm = malloc((size_t)n * sizeof(int));
    vr_rng_permutation(perm, n, shuffle_seed, (uint64_t)epoch);
    vr_image_views_work *w;
    TU_OK(vr_image_views_work_create(&w));
    for (int i = 0; i < NB; i++) {
        long p = (step % steps) * NB + i;
        int t = 0;
        while (is_bad_path(f->paths[perm[(p + t) % n]])) met[perm[(p + t++) % n]] = 1;
        refills += t > 0;
        index[i] = perm[(p + t) % n];
        TU_OK(vr_image_views_pair_file(v, w, f->paths[index[i]], views_seed, (uint64_t)step * NB + (uint64_t)i,
                                       views + (size_t)i * VIEW_FLOATS, views + (size_t)(NB + i) * VIEW_FLOATS, NULL));
    }
    vr_image_views_work_free(w);
    free(perm);
    return refills;
}

/* Runs a loader over steps [first, end) and checks every batch against expected_batch. */
static void check_loader(int threads, int depth, long first, long end)
{
    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("set"), &f));
    CU_ASSERT_EQUAL_FATAL(f.n, 23);
    vr_image_views_config v;
    views_config(&v);
    vr_image_loader_config c = {.batch = NB, .threads = threads, .depth = depth, .shuffle_seed = 11,
                                .views_seed = 12, .first_step = first, .end_step = end};
    vr_image_loader *l;
    TU_OK(vr_image_loader_create(&l, &f, &v, &c));
    long steps = vr_image_loader_steps_per_epoch(l);
    CU_ASSERT_EQUAL(steps, 23 / NB); /* drop_last: 5 steps, 3 samples left out per epoch */
    static float want[2 * NB * VIEW_FLOATS];
    int want_index[NB], refills = 0;
    int *met = calloc((size_t)f.n, sizeof(int));
    for (long step = first; step < end; step++) {
        vr_image_batch b;
        TU_OK(vr_image_loader_next(l, &b));
        CU_ASSERT_EQUAL(b.step, step);
        CU_ASSERT_EQUAL(b.n, NB);
        refills += expected_batch(&f, &v, 11, 12, step, want_index, want, met);
        for (int i = 0; i < NB; i++) {
            CU_ASSERT_EQUAL(b.index[i], want_index[i]);
            CU_ASSERT_EQUAL(b.labels[i], f.labels[want_index[i]]);
            CU_ASSERT(!is_bad_path(f.paths[b.index[i]]));
        }
        CU_ASSERT(memcmp(b.views, want, sizeof want) == 0);
    }
    /* exactly the bad files met are marked and named, once each, whatever the number of slots
     * they emptied; every refill counted */
    int named = 0, met_count = 0;
    char reason[512];
    while (vr_image_loader_skip_reason(l, named, reason, sizeof reason)) {
        int matches = 0;
        for (int i = 0; i < f.n; i++) matches += met[i] && strstr(reason, f.paths[i]) != NULL;
        CU_ASSERT_EQUAL(matches, 1);
        named++;
    }
    for (int i = 0; i < f.n; i++) {
        met_count += met[i];
        CU_ASSERT_EQUAL(f.bad[i], met[i]);
    }
    CU_ASSERT(met_count > 0);
    CU_ASSERT_EQUAL(named, met_count);
    CU_ASSERT_EQUAL(vr_image_loader_refills(l), refills);
    vr_image_batch b;
    CU_ASSERT_EQUAL(vr_image_loader_next(l, &b), VR_ERR_ARG); /* past end_step */
    free(met);
    vr_image_loader_free(l);
    vr_image_folder_free(&f);
}

static void test_loader_order(void)
{
    make_loader_set();
    check_loader(1, 2, 0, 12); /* two epochs and two steps */
}

static void test_loader_threads(void)
{
    check_loader(3, 3, 0, 12);
    check_loader(3, 2, 7, 11); /* resumed in the second epoch */
}

/* An epoch's pairs come from distinct samples apart from refills, the first steps * N entries
 * of the order, and the orders of two epochs differ. */
static void test_loader_epochs(void)
{
    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("set"), &f));
    vr_image_views_config v;
    views_config(&v);
    vr_image_loader_config c = {.batch = NB, .threads = 2, .depth = 2, .shuffle_seed = 5, .views_seed = 6};
    vr_image_loader *l;
    TU_OK(vr_image_loader_create(&l, &f, &v, &c));
    long steps = vr_image_loader_steps_per_epoch(l);
    int n = f.n, *perm = malloc((size_t)n * sizeof(int)), *count = malloc((size_t)n * sizeof(int));
    int orders_differ = 0, *first = malloc((size_t)n * sizeof(int));
    for (int e = 0; e < 3; e++) {
        vr_rng_permutation(perm, n, 5, (uint64_t)e);
        memset(count, 0, (size_t)n * sizeof(int));
        for (int i = 0; i < n; i++) count[perm[i]]++;
        for (int i = 0; i < n; i++) CU_ASSERT_EQUAL(count[i], 1); /* a permutation */
        if (e == 0) memcpy(first, perm, (size_t)n * sizeof(int));
        else orders_differ += memcmp(first, perm, (size_t)n * sizeof(int)) != 0;
        memset(count, 0, (size_t)n * sizeof(int));
        int duplicates = 0;
        for (long s = 0; s < steps; s++) {
            vr_image_batch b;
            TU_OK(vr_image_loader_next(l, &b));
            CU_ASSERT_EQUAL(b.step, e * steps + s);
            for (int i = 0; i < NB; i++) {
                long p = s * NB + i;
                /* the order's sample, or after a bad one the next good one of the order */
                int t = 0;
                while (is_bad_path(f.paths[perm[(p + t) % n]])) t++;
                CU_ASSERT_EQUAL(b.index[i], perm[(p + t) % n]);
                duplicates += count[b.index[i]]++ > 0;
            }
        }
        /* drop_last: the last n - steps * N positions of the order are not used */
        for (long p = steps * NB; p < n; p++)
            if (!is_bad_path(f.paths[perm[p]])) CU_ASSERT(count[perm[p]] <= 1);
        int bad_in_epoch = 0;
        for (long p = 0; p < steps * NB; p++) bad_in_epoch += is_bad_path(f.paths[perm[p]]);
        CU_ASSERT(duplicates <= bad_in_epoch);
    }
    CU_ASSERT_EQUAL(orders_differ, 2);
    free(perm);
    free(count);
    free(first);
    vr_image_loader_free(l);
    vr_image_folder_free(&f);
}

static void test_loader_errors(void)
{
    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("set"), &f));
    vr_image_views_config v;
    views_config(&v);
    vr_image_loader *l;
    vr_image_loader_config c = {.batch = 24, .threads = 1, .depth = 2};
    CU_ASSERT_EQUAL(vr_image_loader_create(&l, &f, &v, &c), VR_ERR_ARG);
    CU_ASSERT(strstr(vr_last_error(), "fewer than a batch of 24") != NULL);
    c.batch = 4;
    c.depth = 1;
    CU_ASSERT_EQUAL(vr_image_loader_create(&l, &f, &v, &c), VR_ERR_ARG);
    c.depth = 2;
    v.view[1].size = SIZE + 1;
    CU_ASSERT_EQUAL(vr_image_loader_create(&l, &f, &v, &c), VR_ERR_ARG);
    CU_ASSERT(strstr(vr_last_error(), "sizes differ") != NULL);
    vr_image_folder_free(&f);

    /* nothing decodes */
    make_dir("all_bad");
    make_dir("all_bad/c");
    for (int k = 0; k < NBAD; k++) {
        char to[64];
        snprintf(to, sizeof to, "all_bad/c/%s", BAD[k]);
        fixture_copy(BAD[k], to);
    }
    TU_OK(vr_image_folder_list(tmp("all_bad"), &f));
    views_config(&v);
    c.batch = 2;
    c.threads = 2;
    TU_OK(vr_image_loader_create(&l, &f, &v, &c));
    vr_image_batch b;
    CU_ASSERT_EQUAL(vr_image_loader_next(l, &b), VR_ERR_NOT_FOUND);
    CU_ASSERT(strstr(vr_last_error(), "all_bad") && strstr(vr_last_error(), "none of its 4 images"));
    CU_ASSERT_EQUAL(f.nskipped, NBAD);
    vr_image_loader_free(l);
    vr_image_folder_free(&f);
}

static void test_loader_vanishing(void)
{
    enum { N = 24, GONE = 6 };
    make_dir("vanish");
    make_dir("vanish/c0");
    make_dir("vanish/c1");
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "vanish/c%d/%02d.%s", i % 2, i, i % 3 ? "jpg" : "png");
        picture(name, 14 + i % 5, 16 + i % 7, 100 + (uint64_t)i);
    }
    vr_image_folder f;
    TU_OK(vr_image_folder_list(tmp("vanish"), &f));
    CU_ASSERT_EQUAL_FATAL(f.n, N);
    vr_image_views_config v;
    views_config(&v);
    vr_image_loader_config c = {.batch = NB, .threads = 2, .depth = 2, .shuffle_seed = 7, .views_seed = 8};
    vr_image_loader *l;
    TU_OK(vr_image_loader_create(&l, &f, &v, &c));
    long steps = vr_image_loader_steps_per_epoch(l);
    vr_image_batch b;
    TU_OK(vr_image_loader_next(l, &b));
    /* every fourth file goes while the workers fill the next batches */
    int gone[N] = {0};
    for (int i = 0; i < N; i += N / GONE) {
        CU_ASSERT_EQUAL_FATAL(unlink(f.paths[i]), 0);
        gone[i] = 1;
    }
    /* the rest of this epoch (its prefetched batches may still hold removed files) and two
     * more, in which no removed file may appear */
    for (long s = 1; s < 3 * steps; s++) {
        vr_status st = vr_image_loader_next(l, &b);
        TU_OK(st);
        if (st != VR_OK) break;
        CU_ASSERT_EQUAL(b.n, NB);
        if (s >= 2 * steps)
            for (int i = 0; i < NB; i++) CU_ASSERT(!gone[b.index[i]]);
    }
    CU_ASSERT_EQUAL(f.nskipped, GONE);
    CU_ASSERT(vr_image_loader_refills(l) >= GONE);
    for (int i = 0; i < N; i++)
        if (gone[i]) {
            const char *base = strrchr(f.paths[i], '/') + 1;
            CU_ASSERT(has_skip(&f, base, "No such file"));
        }
    /* all gone: an error naming the folder, not a wait */
    for (int i = 0; i < N; i++)
        if (!gone[i]) CU_ASSERT_EQUAL(unlink(f.paths[i]), 0);
    vr_status st = VR_OK;
    for (long s = 0; s < 2 * steps + 2 && st == VR_OK; s++) st = vr_image_loader_next(l, &b);
    CU_ASSERT_EQUAL(st, VR_ERR_NOT_FOUND);
    CU_ASSERT(strstr(vr_last_error(), "vanish") && strstr(vr_last_error(), "none of its 24 images"));
    vr_image_loader_free(l);
    vr_image_folder_free(&f);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/vr_image_folder_XXXXXX");
    if (!mkdtemp(dir)) return 2;
    static const tu_test tests[] = {
        {"listing", test_listing},
        {"listing_errors", test_listing_errors},
        {"keep_spread", test_keep_spread},
        {"loader_order", test_loader_order},
        {"loader_threads", test_loader_threads},
        {"loader_epochs", test_loader_epochs},
        {"loader_errors", test_loader_errors},
        {"loader_vanishing", test_loader_vanishing},
        {NULL, NULL},
    };
    int rc = tu_main("image_folder", tests);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
