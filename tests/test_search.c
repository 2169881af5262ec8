/* Search and the index file: exact search (include/vicreg/search.h), the index and its file
 * (include/vicreg/index.h), FAISS kinds when the build has FAISS, and the two commands.
 *
 * References and tolerances:
 *  - NumPy brute force in float64 (tests/reference/make_search_fixtures.py): on Gaussian rows
 *    whose 11 best scores per query are >= 1e-5 apart, the top-10 ids exactly and the scores
 *    within atol 1e-5 + rtol 1e-5 (float32 arithmetic is within about 1e-6 here); on rows of
 *    quarters, where every sum is exact in float32 and many scores tie, the ids exactly (ties to
 *    the lower id) and the scores exactly;
 *  - a naive double loop on rows of eighths (again exact in float32) over sizes that are not
 *    multiples of the blocks, k > n, single queries and one row: ids and scores exactly, and
 *    the same bits at 1, 2 and 3 threads;
 *  - FAISS: IVF with nprobe = nlist against the NumPy ids exactly and scores within 1e-5 +
 *    1e-5|ref|; HNSW recall@10 against the NumPy top 10 at least 0.95; every kind answers bit
 *    for bit the same after a save and a load. */
#include <cjson/cJSON.h>
#include <omp.h>
#include <sndfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "vicreg/embedding_set.h"
#include "vicreg/index.h"
#include "vicreg/npy.h"
#include "vicreg/search.h"
#include "vr_config.h"

#define K 10

static char dir[] = "/tmp/vr_search_XXXXXX";

static void path_of(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", dir, name); }

static void *alloc_z(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* One part of the NumPy fixture: base (n, d), queries (nq, d) and per metric the top K. */
typedef struct fixture {
    int64_t n, nq;
    int d;
    float *base, *queries;
    int64_t *ids[2];
    float *scores[2]; /* the float64 references rounded to float32, far below the tolerances */
} fixture;

static void fixture_read(const char *part, fixture *f)
{
    vr_safetensors *st = tu_open_fixture("search.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    char name[64];
    snprintf(name, sizeof name, "%s.base", part);
    const vr_st_entry *eb = vr_st_find(st, name);
    snprintf(name, sizeof name, "%s.queries", part);
    const vr_st_entry *eq = vr_st_find(st, name);
    CU_ASSERT_FATAL(eb && eq && eb->ndim == 2 && eq->ndim == 2 && eb->shape[1] == eq->shape[1]);
    f->n = eb->shape[0];
    f->nq = eq->shape[0];
    f->d = (int)eb->shape[1];
    f->base = alloc_z(sizeof(float) * f->n * f->d);
    f->queries = alloc_z(sizeof(float) * f->nq * f->d);
    TU_OK(vr_st_read(st, eb->name, VR_DTYPE_F32, f->base, (size_t)(f->n * f->d)));
    TU_OK(vr_st_read(st, eq->name, VR_DTYPE_F32, f->queries, (size_t)(f->nq * f->d)));
    for (int m = 0; m < 2; m++) {
        size_t cnt = (size_t)f->nq * K;
        double *s = alloc_z(sizeof(double) * cnt);
        f->ids[m] = alloc_z(sizeof(int64_t) * cnt);
        f->scores[m] = alloc_z(sizeof(float) * cnt);
        snprintf(name, sizeof name, "%s.%s.ids", part, m ? "l2" : "ip");
        TU_OK(vr_st_read(st, name, VR_DTYPE_I64, f->ids[m], cnt));
        snprintf(name, sizeof name, "%s.%s.scores", part, m ? "l2" : "ip");
        TU_OK(vr_st_read(st, name, VR_DTYPE_F64, s, cnt));
        for (size_t i = 0; i < cnt; i++) f->scores[m][i] = (float)s[i];
        free(s);
    }
    vr_st_close(st);
}

static void fixture_free(fixture *f)
{
    free(f->base);
    free(f->queries);
    for (int m = 0; m < 2; m++) free(f->ids[m]), free(f->scores[m]);
}

/* Number of places where ids differ, the first one printed. */
static int ids_differ(const int64_t *got, const int64_t *want, int64_t nq, int k, const char *what)
{
    int bad = 0;
    for (int64_t i = 0; i < nq * k; i++)
        if (got[i] != want[i] && !bad++)
            fprintf(stderr, "\n  %s: query %lld rank %lld: id %lld, want %lld\n", what, (long long)(i / k),
                    (long long)(i % k) + 1, (long long)got[i], (long long)want[i]);
    return bad;
}

/* 1 when got == want everywhere (infinities included); else the first difference printed. */
static int same_floats(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == want[i])) {
            fprintf(stderr, "\n  %s: element %zu of %zu: got %.9g want %.9g\n", what, i, n, (double)got[i],
                    (double)want[i]);
            return 0;
        }
    return 1;
}

/* ================================================================ exact search */

static void check_fixture(const char *part, double atol, double rtol)
{
    fixture f;
    fixture_read(part, &f);
    float *scores = alloc_z(sizeof(float) * f.nq * K);
    int64_t *ids = alloc_z(sizeof(int64_t) * f.nq * K);
    for (int m = 0; m < 2; m++) {
        char what[64];
        snprintf(what, sizeof what, "%s, %s, all queries", part, vr_metric_name((vr_metric)m));
        vr_search *s;
        TU_OK(vr_search_create(f.base, f.n, f.d, (vr_metric)m, 2, &s));
        TU_OK(vr_search_run(s, f.queries, f.nq, K, scores, ids));
        CU_ASSERT_EQUAL(ids_differ(ids, f.ids[m], f.nq, K, what), 0);
        CU_ASSERT(tu_close(scores, f.scores[m], (size_t)f.nq * K, atol, rtol, what));
        /* one query at a time: the base is split between the threads and merged */
        snprintf(what, sizeof what, "%s, %s, one query at a time", part, vr_metric_name((vr_metric)m));
        for (int64_t q = 0; q < f.nq; q++) TU_OK(vr_search_run(s, f.queries + q * f.d, 1, K, scores + q * K, ids + q * K));
        CU_ASSERT_EQUAL(ids_differ(ids, f.ids[m], f.nq, K, what), 0);
        CU_ASSERT(tu_close(scores, f.scores[m], (size_t)f.nq * K, atol, rtol, what));
        vr_search_free(s);
    }
    free(scores);
    free(ids);
    fixture_free(&f);
}

static void test_numpy_float(void) { check_fixture("float", 1e-5, 1e-5); }

static void test_numpy_ties(void) { check_fixture("ties", 0.0, 0.0); }

/* rows of eighths in -2..2: products are multiples of 1/64 and sums stay far below 2^24/64,
 * so float32 computes every score exactly in any order */
static void fill_eighths(float *x, size_t n, vr_rng *r)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)vr_rng_below(r, 33) - 16) / 8.0f;
}

/* The reference: every score in double, then k selections of the best (score, then lower id). */
static void naive(const float *base, int64_t n, int d, const float *q, int64_t nq, vr_metric m, int k,
                  float *scores, int64_t *ids)
{
    double *s = alloc_z(sizeof(double) * n);
    char *taken = alloc_z((size_t)n);
    for (int64_t i = 0; i < nq; i++) {
        for (int64_t j = 0; j < n; j++) {
            double acc = 0.0;
            for (int c = 0; c < d; c++) {
                double a = q[i * d + c], b = base[j * d + c];
                acc += m == VR_METRIC_IP ? a * b : (a - b) * (a - b);
            }
            s[j] = acc;
            taken[j] = 0;
        }
        for (int r = 0; r < k; r++) {
            int64_t best = -1;
            for (int64_t j = 0; j < n; j++)
                if (!taken[j] && (best < 0 || (m == VR_METRIC_IP ? s[j] > s[best] : s[j] < s[best]))) best = j;
            ids[i * k + r] = best;
            scores[i * k + r] = best < 0 ? (m == VR_METRIC_IP ? -INFINITY : INFINITY) : (float)s[best];
            if (best >= 0) taken[best] = 1;
        }
    }
    free(s);
    free(taken);
}

static void test_naive_sizes(void)
{
    /* n not a multiple of the base block (1024 rows) nor nq of the query block (256 rows); a
     * last query block of one row (sgemv instead of sgemm); k > n; one query; one row; d of 1 */
    static const struct { int64_t n, nq; int d, k; } cases[] = {
        {5000, 70, 24, 10}, {4500, 1, 33, 7}, {7, 3, 5, 12},   {1, 2, 3, 4},
        {2049, 300, 1, 5},  {300, 65, 64, 300}, {3000, 513, 8, 3},
    };
    vr_rng r;
    vr_rng_seed(&r, 11);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t n = cases[c].n, nq = cases[c].nq;
        int d = cases[c].d, k = cases[c].k;
        float *base = alloc_z(sizeof(float) * n * d), *q = alloc_z(sizeof(float) * nq * d);
        fill_eighths(base, (size_t)(n * d), &r);
        fill_eighths(q, (size_t)(nq * d), &r);
        /* exact duplicates of row 0 further on, so that ties cross block and shard borders */
        for (int64_t j = n / 3; j < n; j += n / 3 + 1) memcpy(base + j * d, base, sizeof(float) * d);
        size_t cnt = (size_t)(nq * k);
        float *want_s = alloc_z(sizeof(float) * cnt), *got_s = alloc_z(sizeof(float) * cnt);
        float *one_s = alloc_z(sizeof(float) * cnt);
        int64_t *want_i = alloc_z(sizeof(int64_t) * cnt), *got_i = alloc_z(sizeof(int64_t) * cnt);
        int64_t *one_i = alloc_z(sizeof(int64_t) * cnt);
        for (int m = 0; m < 2; m++) {
            naive(base, n, d, q, nq, (vr_metric)m, k, want_s, want_i);
            for (int threads = 1; threads <= 3; threads++) {
                char what[96];
                snprintf(what, sizeof what, "n %lld nq %lld d %d k %d %s, %d threads", (long long)n, (long long)nq, d, k,
                         vr_metric_name((vr_metric)m), threads);
                vr_search *s;
                TU_OK(vr_search_create(base, n, d, (vr_metric)m, threads, &s));
                CU_ASSERT_EQUAL(vr_search_threads(s), threads);
                TU_OK(vr_search_run(s, q, nq, k, got_s, got_i));
                CU_ASSERT_EQUAL(ids_differ(got_i, want_i, nq, k, what), 0);
                CU_ASSERT(same_floats(got_s, want_s, cnt, what));
                if (threads == 1) {
                    memcpy(one_s, got_s, sizeof(float) * cnt);
                    memcpy(one_i, got_i, sizeof(int64_t) * cnt);
                } else {
                    CU_ASSERT(memcmp(one_s, got_s, sizeof(float) * cnt) == 0);
                    CU_ASSERT(memcmp(one_i, got_i, sizeof(int64_t) * cnt) == 0);
                }
                vr_search_free(s);
            }
        }
        free(base), free(q), free(want_s), free(got_s), free(one_s), free(want_i), free(got_i), free(one_i);
    }
}

/* Queries in batches of 1, 7, 64 and the rest, on one reused context. */
static void run_batches(vr_search *ctx, const float *q, int64_t nq, int d, int k, float *s, int64_t *ids)
{
    static const int64_t sizes[] = {1, 7, 64};
    for (int64_t b = 0, at = 0; at < nq; b++) {
        int64_t len = b < 3 && sizes[b] < nq - at ? sizes[b] : nq - at;
        TU_OK(vr_search_run(ctx, q + at * d, len, k, s + at * k, ids + at * k));
        at += len;
    }
}

/* Float rows: the same bits at 1 and 2 threads for the same batches, on contexts reused across
 * batches of different sizes. Other batches group the queries into other sgemm calls, whose
 * sums may round differently: the same ids, scores within 1e-6 + 1e-6|ref|. OpenMP's thread
 * count is left as it was. */
static void test_threads_and_reuse(void)
{
    enum { N = 6000, D = 40, NQ = 150, KK = 9 };
    vr_rng r;
    vr_rng_seed(&r, 5);
    float *base = alloc_z(sizeof(float) * N * D), *q = alloc_z(sizeof(float) * NQ * D);
    tu_fill_normal(base, N * D, &r, 1.0f);
    tu_fill_normal(q, NQ * D, &r, 1.0f);
    float *s[4];
    int64_t *ids[4];
    for (int i = 0; i < 4; i++) {
        s[i] = alloc_z(sizeof(float) * NQ * KK);
        ids[i] = alloc_z(sizeof(int64_t) * NQ * KK);
    }
    int before = omp_get_max_threads();
    for (int m = 0; m < 2; m++) {
        vr_search *one, *two;
        TU_OK(vr_search_create(base, N, D, (vr_metric)m, 1, &one));
        TU_OK(vr_search_create(base, N, D, (vr_metric)m, 2, &two));
        TU_OK(vr_search_run(one, q, NQ, KK, s[0], ids[0]));
        TU_OK(vr_search_run(two, q, NQ, KK, s[1], ids[1]));
        run_batches(one, q, NQ, D, KK, s[2], ids[2]);
        run_batches(two, q, NQ, D, KK, s[3], ids[3]);
        for (int i = 0; i < 4; i += 2) {
            CU_ASSERT(memcmp(s[i], s[i + 1], sizeof(float) * NQ * KK) == 0);
            CU_ASSERT(memcmp(ids[i], ids[i + 1], sizeof(int64_t) * NQ * KK) == 0);
        }
        CU_ASSERT_EQUAL(ids_differ(ids[2], ids[0], NQ, KK, "batches against one batch"), 0);
        CU_ASSERT(tu_close(s[2], s[0], NQ * KK, 1e-6, 1e-6, "batches against one batch"));
        /* best first, and the ids of a query distinct */
        for (int64_t i = 0; i < NQ; i++)
            for (int j = 1; j < KK; j++) {
                float a = s[0][i * KK + j - 1], b = s[0][i * KK + j];
                CU_ASSERT(m == VR_METRIC_IP ? a >= b : a <= b);
                CU_ASSERT(ids[0][i * KK + j - 1] != ids[0][i * KK + j]);
            }
        vr_search_free(one);
        vr_search_free(two);
    }
    CU_ASSERT_EQUAL(omp_get_max_threads(), before);
    for (int i = 0; i < 4; i++) free(s[i]), free(ids[i]);
    free(base), free(q);
}

static void test_search_bad_input(void)
{
    float base[6] = {1, 2, 3, 4, 5, 6}, q[2] = {1, NAN}, s[4];
    int64_t ids[4];
    vr_search *ctx;
    vr_metric m;
    CU_ASSERT_EQUAL(vr_metric_parse("cosine", &m), VR_ERR_ARG);
    CU_ASSERT(strstr(vr_last_error(), "cosine") != NULL);
    TU_OK(vr_metric_parse("l2", &m));
    CU_ASSERT_EQUAL(m, VR_METRIC_L2);
    CU_ASSERT_EQUAL(vr_search_create(base, 0, 2, VR_METRIC_IP, 1, &ctx), VR_ERR_SHAPE);
    base[3] = INFINITY;
    CU_ASSERT_EQUAL(vr_search_create(base, 3, 2, VR_METRIC_IP, 1, &ctx), VR_ERR_NUMERIC);
    CU_ASSERT(strstr(vr_last_error(), "row 1") != NULL);
    base[3] = 4;
    TU_OK(vr_search_create(base, 3, 2, VR_METRIC_IP, 1, &ctx));
    CU_ASSERT_EQUAL(vr_search_run(ctx, q, 1, 2, s, ids), VR_ERR_NUMERIC);
    q[1] = 0;
    CU_ASSERT_EQUAL(vr_search_run(ctx, q, 1, 0, s, ids), VR_ERR_ARG);
    TU_OK(vr_search_run(ctx, q, 0, 2, s, ids));
    TU_OK(vr_search_run(ctx, q, 1, 4, s, ids));
    /* q = (1, 0): scores 5, 3, 1, then nothing */
    CU_ASSERT(ids[0] == 2 && ids[1] == 1 && ids[2] == 0 && ids[3] == -1);
    CU_ASSERT(s[0] == 5 && s[1] == 3 && s[2] == 1 && s[3] == -INFINITY);
    vr_search_free(ctx);
}

/* ================================================================ the index */

static const char *row_files[] = {"a.wav", "dir/b \"quoted\", with comma.flac", "c.ogg"};
static const char *row_labels[] = {"yes", "", "no"};

/* n rows naming three files in turn, windows of 1 s every 0.5 s */
static vr_embedding_row *make_rows(int64_t n)
{
    vr_embedding_row *rows = alloc_z(sizeof *rows * n);
    for (int64_t i = 0; i < n; i++)
        rows[i] = (vr_embedding_row){(char *)row_files[i % 3], 0.5 * (double)(i / 3), 0.5 * (double)(i / 3) + 1.0,
                                     (char *)row_labels[i % 3]};
    return rows;
}

static const char *settings = "{\"checkpoint\": \"/runs/a/last.safetensors\", \"branch\": \"spec\", \"pool\": \"none\"}";

/* answers of ix for the queries, before and after a save and a load: the same bits */
static void check_round_trip(vr_index *ix, const fixture *f, const char *file)
{
    char path[256];
    path_of(path, sizeof path, file);
    size_t cnt = (size_t)f->nq * K;
    float *s0 = alloc_z(sizeof(float) * cnt), *s1 = alloc_z(sizeof(float) * cnt);
    int64_t *i0 = alloc_z(sizeof(int64_t) * cnt), *i1 = alloc_z(sizeof(int64_t) * cnt);
    TU_OK(vr_index_search(ix, f->queries, f->nq, f->d, K, s0, i0));
    TU_OK(vr_index_save(ix, path));
    vr_index *back;
    TU_OK(vr_index_load(path, &back));
    CU_ASSERT_EQUAL(vr_index_dim(back), vr_index_dim(ix));
    CU_ASSERT_EQUAL(vr_index_count(back), vr_index_count(ix));
    CU_ASSERT_EQUAL(vr_index_metric(back), vr_index_metric(ix));
    CU_ASSERT_STRING_EQUAL(vr_index_kind(back), vr_index_kind(ix));
    TU_OK(vr_index_search(back, f->queries, f->nq, f->d, K, s1, i1));
    CU_ASSERT(memcmp(s0, s1, sizeof(float) * cnt) == 0);
    CU_ASSERT(memcmp(i0, i1, sizeof(int64_t) * cnt) == 0);
    /* rows and settings come back */
    CU_ASSERT_PTR_NULL(vr_index_row(back, -1));
    CU_ASSERT_PTR_NULL(vr_index_row(back, f->n));
    for (int64_t i = 0; i < f->n; i += 97) {
        const vr_embedding_row *a = vr_index_row(ix, i), *b = vr_index_row(back, i);
        CU_ASSERT_FATAL(a && b);
        CU_ASSERT_STRING_EQUAL(b->file, row_files[i % 3]);
        CU_ASSERT_STRING_EQUAL(b->label, row_labels[i % 3]);
        CU_ASSERT(a->start_s == b->start_s && b->start_s == 0.5 * (double)(i / 3) && b->end_s == b->start_s + 1.0);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(vr_index_settings(back));
    CU_ASSERT_STRING_EQUAL(vr_index_settings(back), settings);
    vr_index_free(back);
    free(s0), free(s1), free(i0), free(i1);
}

static void test_index_flat(void)
{
    fixture f;
    fixture_read("float", &f);
    vr_embedding_row *rows = make_rows(f.n);
    size_t cnt = (size_t)f.nq * K;
    float *s = alloc_z(sizeof(float) * cnt);
    int64_t *ids = alloc_z(sizeof(int64_t) * cnt);
    for (int m = 0; m < 2; m++) {
        vr_index_config cfg = vr_index_defaults();
        cfg.metric = (vr_metric)m;
        vr_index *ix;
        TU_OK(vr_index_build(f.base, f.n, f.d, rows, settings, &cfg, &ix));
        CU_ASSERT_STRING_EQUAL(vr_index_kind(ix), "flat");
        TU_OK(vr_index_search(ix, f.queries, f.nq, f.d, K, s, ids));
        CU_ASSERT_EQUAL(ids_differ(ids, f.ids[m], f.nq, K, "flat index"), 0);
        CU_ASSERT(tu_close(s, f.scores[m], cnt, 1e-5, 1e-5, "flat index"));
        check_round_trip(ix, &f, m ? "flat_l2.vri" : "flat_ip.vri");
        vr_index_free(ix);
    }
    /* without rows or settings */
    vr_index_config cfg = vr_index_defaults();
    vr_index *ix, *back;
    char path[256];
    path_of(path, sizeof path, "bare.vri");
    TU_OK(vr_index_build(f.base, f.n, f.d, NULL, NULL, &cfg, &ix));
    TU_OK(vr_index_save(ix, path));
    TU_OK(vr_index_load(path, &back));
    CU_ASSERT_PTR_NULL(vr_index_row(back, 0));
    CU_ASSERT_PTR_NULL(vr_index_settings(back));
    TU_OK(vr_index_search(back, f.queries, f.nq, f.d, K, s, ids));
    CU_ASSERT_EQUAL(ids_differ(ids, f.ids[0], f.nq, K, "flat index without rows"), 0);
    vr_index_free(ix);
    vr_index_free(back);
    free(rows), free(s), free(ids);
    fixture_free(&f);
}

#if VR_HAVE_FAISS
static void test_faiss_ivf_exact(void)
{
    fixture f;
    fixture_read("float", &f);
    vr_embedding_row *rows = make_rows(f.n);
    size_t cnt = (size_t)f.nq * K;
    float *s = alloc_z(sizeof(float) * cnt);
    int64_t *ids = alloc_z(sizeof(int64_t) * cnt);
    for (int m = 0; m < 2; m++) {
        vr_index_config cfg = vr_index_defaults();
        cfg.metric = (vr_metric)m;
        cfg.factory = "IVF32,Flat";
        cfg.nprobe = 32; /* every list: exact */
        vr_index *ix;
        TU_OK(vr_index_build(f.base, f.n, f.d, rows, settings, &cfg, &ix));
        TU_OK(vr_index_search(ix, f.queries, f.nq, f.d, K, s, ids));
        CU_ASSERT_EQUAL(ids_differ(ids, f.ids[m], f.nq, K, "IVF32,Flat nprobe 32"), 0);
        CU_ASSERT(tu_close(s, f.scores[m], cnt, 1e-5, 1e-5, "IVF32,Flat nprobe 32"));
        check_round_trip(ix, &f, "ivf.vri");
        /* one list a query is approximate, and still a valid answer */
        TU_OK(vr_index_set_search_params(ix, 1, 0));
        TU_OK(vr_index_search(ix, f.queries, f.nq, f.d, K, s, ids));
        for (size_t i = 0; i < cnt; i++) CU_ASSERT(ids[i] >= -1 && ids[i] < f.n);
        CU_ASSERT_EQUAL(vr_index_set_search_params(ix, 0, 16), VR_ERR_ARG);
        CU_ASSERT(strstr(vr_last_error(), "HNSW") != NULL);
        vr_index_free(ix);
    }
    free(rows), free(s), free(ids);
    fixture_free(&f);
}

/* |found ∩ reference| / (nq k) */
static double recall_at_k(const int64_t *got, const int64_t *ref, int64_t nq, int k)
{
    long hits = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) hits += got[q * k + i] == ref[q * k + j];
    return (double)hits / (double)(nq * k);
}

static void test_faiss_hnsw_recall(void)
{
    fixture f;
    fixture_read("float", &f);
    vr_embedding_row *rows = make_rows(f.n);
    size_t cnt = (size_t)f.nq * K;
    float *s = alloc_z(sizeof(float) * cnt);
    int64_t *ids = alloc_z(sizeof(int64_t) * cnt);
    for (int m = 0; m < 2; m++) {
        vr_index_config cfg = vr_index_defaults();
        cfg.metric = (vr_metric)m;
        cfg.factory = "HNSW32";
        cfg.ef_search = 64;
        vr_index *ix;
        TU_OK(vr_index_build(f.base, f.n, f.d, rows, settings, &cfg, &ix));
        TU_OK(vr_index_search(ix, f.queries, f.nq, f.d, K, s, ids));
        double recall = recall_at_k(ids, f.ids[m], f.nq, K);
        if (recall < 0.95) fprintf(stderr, "\n  HNSW32 %s recall@10 %.3f\n", vr_metric_name((vr_metric)m), recall);
        CU_ASSERT(recall >= 0.95);
        check_round_trip(ix, &f, "hnsw.vri");
        CU_ASSERT_EQUAL(vr_index_set_search_params(ix, 8, 0), VR_ERR_ARG);
        CU_ASSERT(strstr(vr_last_error(), "IVF") != NULL);
        vr_index_free(ix);
    }
    free(rows), free(s), free(ids);
    fixture_free(&f);
}

static void test_faiss_pq_round_trip(void)
{
    fixture f;
    fixture_read("float", &f);
    vr_embedding_row *rows = make_rows(f.n);
    vr_index_config cfg = vr_index_defaults();
    cfg.factory = "IVF16,PQ16x4"; /* 16 centroids per sub-quantiser: enough rows to train them */
    cfg.nprobe = 4;
    vr_index *ix;
    TU_OK(vr_index_build(f.base, f.n, f.d, rows, settings, &cfg, &ix));
    CU_ASSERT_STRING_EQUAL(vr_index_kind(ix), "IVF16,PQ16x4");
    check_round_trip(ix, &f, "pq.vri");
    vr_index_free(ix);
    free(rows);
    fixture_free(&f);
}
#endif

/* ================================================================ bad input */

static void expect(vr_status got, vr_status want, const char *needle)
{
    CU_ASSERT_EQUAL(got, want);
    if (got != want || !strstr(vr_last_error(), needle))
        fprintf(stderr, "\n  expected %s with \"%s\", got %s: %s\n", vr_status_str(want), needle, vr_status_str(got),
                vr_last_error());
    CU_ASSERT(strstr(vr_last_error(), needle) != NULL);
}

static void test_factory_errors(void)
{
    float x[2 * 64] = {0};
    vr_index_config cfg = vr_index_defaults();
    vr_index *ix = NULL;
    cfg.nprobe = 4;
    expect(vr_index_build(x, 2, 64, NULL, NULL, &cfg, &ix), VR_ERR_ARG, "neither nprobe nor efSearch");
    cfg.nprobe = 0;
    expect(vr_index_build(x, 2, 64, NULL, "[1, 2]", &cfg, &ix), VR_ERR_FORMAT, "not a JSON object");
    cfg.factory = "HNSW32";
#if VR_HAVE_FAISS
    cfg.nprobe = 4;
    expect(vr_index_build(x, 2, 64, NULL, NULL, &cfg, &ix), VR_ERR_ARG, "nprobe applies to IVF");
    cfg.factory = "Nonsense";
    expect(vr_index_build(x, 2, 64, NULL, NULL, &cfg, &ix), VR_ERR_ARG, "Nonsense");
    cfg.factory = "IVF256,Flat"; /* more lists than rows to train them */
    cfg.nprobe = 0;
    expect(vr_index_build(x, 2, 64, NULL, NULL, &cfg, &ix), VR_ERR_SHAPE, "training");
#else
    expect(vr_index_build(x, 2, 64, NULL, NULL, &cfg, &ix), VR_ERR_UNSUPPORTED, "no FAISS");
#endif
    CU_ASSERT_PTR_NULL(ix);
}

/* A flat index of 64 dimensions with rows, saved as `file`. */
static void save_small(const char *file, char *path, size_t len)
{
    enum { N = 40, D = 64 };
    float x[N * D];
    vr_rng r;
    vr_rng_seed(&r, 9);
    tu_fill_normal(x, N * D, &r, 1.0f);
    vr_embedding_row *rows = make_rows(N);
    vr_index_config cfg = vr_index_defaults();
    vr_index *ix;
    TU_OK(vr_index_build(x, N, D, rows, settings, &cfg, &ix));
    path_of(path, len, file);
    TU_OK(vr_index_save(ix, path));
    vr_index_free(ix);
    free(rows);
}

static void test_query_errors(void)
{
    char path[256], npy[512];
    save_small("small.vri", path, sizeof path);
    vr_index *ix;
    TU_OK(vr_index_load(path, &ix));
    float *q = NULL;
    int64_t nq;
    /* dtype, rank and dimension of a .npy of queries */
    snprintf(npy, sizeof npy, "%s/npy/f64_3x5.npy", VR_FIXTURE_DIR);
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_FORMAT, "f64_3x5.npy: dtype '<f8'");
    snprintf(npy, sizeof npy, "%s/npy/i32_3x5.npy", VR_FIXTURE_DIR);
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_FORMAT, "i32_3x5.npy: dtype '<i4'");
    snprintf(npy, sizeof npy, "%s/npy/f32_2x3x4.npy", VR_FIXTURE_DIR);
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_SHAPE, "f32_2x3x4.npy: queries of rank 3");
    snprintf(npy, sizeof npy, "%s/npy/f32_3x5.npy", VR_FIXTURE_DIR);
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_SHAPE, "f32_3x5.npy: queries of 5 dimensions, the index");
    CU_ASSERT(strstr(vr_last_error(), "small.vri holds 64-dimensional") != NULL);
    snprintf(npy, sizeof npy, "%s/npy/f32_vec.npy", VR_FIXTURE_DIR);
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_SHAPE, "f32_vec.npy: queries of 3 dimensions");
    CU_ASSERT_PTR_NULL(q);
    /* missing and unreadable */
    path_of(npy, sizeof npy, "missing.npy");
    expect(vr_index_read_queries(ix, npy, &q, &nq), VR_ERR_NOT_FOUND, "missing.npy");
    expect(vr_index_read_queries(ix, dir, &q, &nq), VR_ERR_FORMAT, "not a .npy file"); /* a folder */
    CU_ASSERT(strstr(vr_last_error(), dir) != NULL);
    /* rank 1 of the right dimension: one query; rank 2: as many as rows */
    float one[64] = {1}, two[2 * 64] = {0, 1};
    path_of(npy, sizeof npy, "one.npy");
    TU_OK(vr_npy_write(npy, one, 1, (int64_t[]){64}));
    TU_OK(vr_index_read_queries(ix, npy, &q, &nq));
    CU_ASSERT(nq == 1 && q[0] == 1.0f);
    vr_free(q);
    path_of(npy, sizeof npy, "two.npy");
    TU_OK(vr_npy_write(npy, two, 2, (int64_t[]){2, 64}));
    TU_OK(vr_index_read_queries(ix, npy, &q, &nq));
    CU_ASSERT(nq == 2 && q[1] == 1.0f);
    vr_free(q);
    /* a query of the wrong dimension through the search itself */
    float s[4];
    int64_t ids[4];
    expect(vr_index_search(ix, two, 2, 32, 2, s, ids), VR_ERR_SHAPE, "queries of 32 dimensions, the index holds 64");
    CU_ASSERT(strstr(vr_last_error(), "small.vri") != NULL);
    vr_index_free(ix);
}

/* A copy of `src` into `dst`, cut to `keep` bytes, with byte `flip` (if >= 0) inverted. */
static void copy_damaged(const char *src, const char *dst, long keep, long flip)
{
    FILE *f = fopen(src, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *buf = alloc_z((size_t)len);
    CU_ASSERT_FATAL(fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    if (flip >= 0) buf[flip] ^= 0xff;
    f = fopen(dst, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fwrite(buf, 1, (size_t)(keep < len ? keep : len), f);
    fclose(f);
    free(buf);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* safetensors written by hand: tensors and metadata that do not agree */
static void write_fake(const char *path, int64_t rows, int64_t cols, const char *dim, const char *format)
{
    float x[64] = {0};
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    TU_OK(vr_st_add(w, "vectors", VR_DTYPE_F32, 2, (int64_t[]){rows, cols}, x));
    const char *meta[][2] = {{"format", format}, {"version", "1"}, {"metric", "ip"}, {"kind", "flat"}, {"dim", dim},
                             {"count", "4"},     {"nprobe", "0"},  {"ef_search", "0"}, {"crc32", "00000000"}};
    for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) TU_OK(vr_st_add_metadata(w, meta[i][0], meta[i][1]));
    TU_OK(vr_st_write(w, path));
    vr_st_writer_free(w);
}

static void test_index_file_errors(void)
{
    char path[256], bad[256];
    save_small("good.vri", path, sizeof path);
    long len = file_size(path);
    CU_ASSERT_FATAL(len > 1000);
    vr_index *ix = NULL;
    path_of(bad, sizeof bad, "missing.vri");
    expect(vr_index_load(bad, &ix), VR_ERR_IO, "missing.vri");
    path_of(bad, sizeof bad, "bad.vri");
    copy_damaged(path, bad, len / 2, -1);
    vr_status s = vr_index_load(bad, &ix);
    CU_ASSERT(s == VR_ERR_FORMAT || s == VR_ERR_IO);
    CU_ASSERT(strstr(vr_last_error(), "bad.vri") != NULL);
    expect(vr_index_load(dir, &ix), VR_ERR_IO, "not a regular file");
    /* one byte changed inside each tensor: the checksum */
    vr_safetensors *st;
    TU_OK(vr_st_open(path, &st));
    uint64_t data_bytes = 0;
    for (int i = 0; i < vr_st_count(st); i++)
        if (vr_st_entry_at(st, i)->end > data_bytes) data_bytes = vr_st_entry_at(st, i)->end;
    for (int i = 0; i < vr_st_count(st); i++) {
        const vr_st_entry *e = vr_st_entry_at(st, i);
        copy_damaged(path, bad, len, len - (long)data_bytes + (long)(e->begin + e->end) / 2);
        expect(vr_index_load(bad, &ix), VR_ERR_FORMAT, "bad.vri: the contents' checksum");
        if (!strstr(vr_last_error(), "the file is corrupt")) fprintf(stderr, "\n  tensor %s\n", e->name);
    }
    vr_st_close(st);
    char other[512];
    snprintf(other, sizeof other, "%s/linear.safetensors", VR_FIXTURE_DIR);
    expect(vr_index_load(other, &ix), VR_ERR_FORMAT, "not a vicreg index");
    write_fake(bad, 4, 16, "8", "vicreg-index");
    expect(vr_index_load(bad, &ix), VR_ERR_FORMAT, "tensor 'vectors' is F32 [4, 16], expected F32 [4, 8]");
    write_fake(bad, 4, 16, "16", "vicreg-index");
    expect(vr_index_load(bad, &ix), VR_ERR_FORMAT, "checksum");
    write_fake(bad, 4, 16, "sixteen", "vicreg-index");
    expect(vr_index_load(bad, &ix), VR_ERR_FORMAT, "dim 'sixteen'");
    CU_ASSERT_PTR_NULL(ix);
}

/* ================================================================ the commands */

static const char *vicreg_cli; /* the program, from the command line */

/* Runs the vicreg command with `args`, its output (stdout and stderr) into out; the exit status. */
static int run(const char *args, char *out, size_t len)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", vicreg_cli, args);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A 1.5 s clip at 16 kHz: a tone of `hz` with a little noise. */
static void write_clip(const char *path, double hz, vr_rng *r)
{
    enum { FRAMES = 24000 };
    static float pcm[FRAMES];
    for (int i = 0; i < FRAMES; i++) pcm[i] = 0.3f * sinf(6.2831853f * (float)(hz * i / 16000.0)) + 0.05f * vr_rng_normal(r);
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(sf_writef_float(f, pcm, FRAMES), FRAMES);
    sf_close(f);
}

static void test_commands(void)
{
    fixture f;
    fixture_read("float", &f);
    char npy[256], vri[256], q[256], args[1024];
    static char out[1 << 20];
    path_of(npy, sizeof npy, "set.npy");
    path_of(vri, sizeof vri, "set.vri");
    path_of(q, sizeof q, "q.npy");
    vr_embedding_row *rows = make_rows(f.n);
    vr_embedding_set set = {.n = f.n, .d = f.d, .x = f.base, .rows = rows, .meta_json = (char *)settings};
    TU_OK(vr_embedding_set_write(npy, &set));
    TU_OK(vr_npy_write(q, f.queries, 2, (int64_t[]){3, f.d}));
    snprintf(args, sizeof args, "index build '%s' -o '%s' --metric l2", npy, vri);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 0);
    snprintf(args, sizeof args, "search '%s' --query '%s' -k 10 --json", vri, q);
    CU_ASSERT_EQUAL_FATAL(run(args, out, sizeof out), 0);
    cJSON *doc = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    cJSON *queries = cJSON_GetObjectItem(doc, "queries");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(queries), 3);
    for (int i = 0; i < 3; i++) {
        cJSON *answers = cJSON_GetObjectItem(cJSON_GetArrayItem(queries, i), "answers");
        CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(answers), K);
        for (int r = 0; r < K; r++) {
            cJSON *a = cJSON_GetArrayItem(answers, r);
            int64_t id = (int64_t)cJSON_GetObjectItem(a, "id")->valuedouble;
            CU_ASSERT_EQUAL(id, f.ids[1][i * K + r]);
            CU_ASSERT_EQUAL(cJSON_GetObjectItem(a, "rank")->valueint, r + 1);
            float score = (float)cJSON_GetObjectItem(a, "score")->valuedouble;
            CU_ASSERT(tu_close(&score, &f.scores[1][i * K + r], 1, 1e-5, 1e-5, "score through the command"));
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(a, "file")->valuestring, row_files[id % 3]);
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(a, "label")->valuestring, row_labels[id % 3]);
            CU_ASSERT(cJSON_GetObjectItem(a, "start")->valuedouble == 0.5 * (double)(id / 3));
        }
    }
    cJSON_Delete(doc);
    /* the table names the files */
    snprintf(args, sizeof args, "search '%s' --query '%s' -k 2", vri, q);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "query 3 of 3") != NULL && strstr(out, "c.ogg") != NULL);
    /* errors: a clear message and a non-zero status */
    snprintf(args, sizeof args, "search '%s' --query '%s/npy/f32_3x5.npy'", vri, VR_FIXTURE_DIR);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "f32_3x5.npy: queries of 5 dimensions, the index") != NULL);
    snprintf(args, sizeof args, "search '%s' --query '%s/npy/f64_3x5.npy'", vri, VR_FIXTURE_DIR);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "dtype '<f8'") != NULL);
    snprintf(args, sizeof args, "search '%s/nothing.vri' --query '%s'", dir, q);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "nothing.vri") != NULL);
    snprintf(args, sizeof args, "index build '%s' -o '%s' --metric cosine", npy, vri);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 2);
    CU_ASSERT(strstr(out, "cosine") != NULL);
    /* audio queries need the settings of a checkpoint that exists */
    char wav[300];
    path_of(wav, sizeof wav, "tone.wav");
    vr_rng r;
    vr_rng_seed(&r, 1);
    write_clip(wav, 440.0, &r);
    snprintf(args, sizeof args, "search '%s' --query '%s'", vri, wav);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "/runs/a/last.safetensors") != NULL);
    CU_ASSERT_EQUAL(run("search --help", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "usage: vicreg search") != NULL);
    CU_ASSERT_EQUAL(run("index --help", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "usage: vicreg index build") != NULL);
    free(rows);
    fixture_free(&f);
}

/* Audio queries: vicreg embed of a folder with normalised rows, an index of them, and the same
 * folder as queries: every file finds its own row first, at the score of a unit row against
 * itself, 1 (within 1e-5: float32 sums of 16 squares). */
static void test_audio_queries(void)
{
    char aud[256], sub[300], wav[320], npy[256], vri[256], args[2048];
    static char out[1 << 20];
    path_of(aud, sizeof aud, "audio");
    CU_ASSERT_EQUAL_FATAL(mkdir(aud, 0755), 0);
    vr_rng r;
    vr_rng_seed(&r, 3);
    static const char *names[] = {"a/one.wav", "a/two.wav", "b/three.wav", "b/four.wav"};
    for (int i = 0; i < 4; i++) {
        snprintf(sub, sizeof sub, "%s/%c", aud, names[i][0]);
        mkdir(sub, 0755);
        snprintf(wav, sizeof wav, "%s/%s", aud, names[i]);
        write_clip(wav, 220.0 * (i + 1), &r);
    }
    path_of(npy, sizeof npy, "audio.npy");
    path_of(vri, sizeof vri, "audio.vri");
    snprintf(args, sizeof args, "embed '%s/embed_ckpt.safetensors' --branch wave --normalize '%s' -o '%s'",
             VR_FIXTURE_DIR, aud, npy);
    CU_ASSERT_EQUAL_FATAL(run(args, out, sizeof out), 0);
    snprintf(args, sizeof args, "index build '%s' -o '%s'", npy, vri);
    CU_ASSERT_EQUAL_FATAL(run(args, out, sizeof out), 0);
    snprintf(args, sizeof args, "search '%s' --query '%s' -k 2 --json", vri, aud);
    CU_ASSERT_EQUAL_FATAL(run(args, out, sizeof out), 0);
    cJSON *doc = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    cJSON *queries = cJSON_GetObjectItem(doc, "queries");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(queries), 4);
    for (int i = 0; i < 4; i++) {
        cJSON *q = cJSON_GetArrayItem(queries, i);
        cJSON *best = cJSON_GetArrayItem(cJSON_GetObjectItem(q, "answers"), 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(best);
        CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(best, "file")->valuestring, cJSON_GetObjectItem(q, "query")->valuestring);
        float score = (float)cJSON_GetObjectItem(best, "score")->valuedouble, one = 1.0f;
        CU_ASSERT(tu_close(&score, &one, 1, 1e-5, 0.0, "a query against its own row"));
    }
    cJSON_Delete(doc);
    /* one file; and an index without settings cannot embed audio */
    snprintf(args, sizeof args, "search '%s' --query '%s/b/four.wav' -k 1", vri, aud);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "query 1 of 1") != NULL && strstr(out, "four.wav [") != NULL);
    path_of(vri, sizeof vri, "bare.vri");
    snprintf(args, sizeof args, "search '%s' --query '%s'", vri, aud);
    CU_ASSERT_EQUAL(run(args, out, sizeof out), 2);
    CU_ASSERT(strstr(out, "keeps no settings") != NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_search PATH/TO/vicreg\n");
        return 2;
    }
    vicreg_cli = argv[1];
    if (!mkdtemp(dir)) return 2;
    static const tu_test tests[] = {
        {"exact search = NumPy, Gaussian rows", test_numpy_float},
        {"exact search = NumPy, exact ties", test_numpy_ties},
        {"exact search = naive loop, odd sizes, 1-3 threads", test_naive_sizes},
        {"same bits at any thread count and batch, context reused", test_threads_and_reuse},
        {"exact search: bad input", test_search_bad_input},
        {"flat index: NumPy answers, save and load", test_index_flat},
#if VR_HAVE_FAISS
        {"FAISS IVF, nprobe = nlist: exact", test_faiss_ivf_exact},
        {"FAISS HNSW recall@10 >= 0.95", test_faiss_hnsw_recall},
        {"FAISS IVF-PQ: save and load", test_faiss_pq_round_trip},
#endif
        {"index: factory and settings errors", test_factory_errors},
        {"index: query errors", test_query_errors},
        {"index file: missing, truncated, corrupt, inconsistent", test_index_file_errors},
        {"vicreg index build and vicreg search", test_commands},
        {"vicreg search with audio queries", test_audio_queries},
        {NULL, NULL}};
    int rc = tu_main("search", tests);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) rc = rc ? rc : 2;
    return rc;
}
