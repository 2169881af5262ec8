/* vicreg search: the k best rows of an index (vicreg index build) for each query, printed as a
 * table or as one JSON document. Queries are vectors from a .npy file, or audio embedded as the
 * index's rows were: the settings stored in the index name the checkpoint, branch, output,
 * normalisation, pooling, window and hop (embed.h). */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vicreg/embed.h"
#include "vicreg/embedding_set.h"
#include "vicreg/index.h"
#include "vicreg/tensor.h"

static const char *search_help =
    "usage: vicreg search INDEX --query Q.npy|FILE|DIR|MANIFEST [-k 10] [--json] [--nprobe N]\n"
    "                    [--ef-search N]\n"
    "\n"
    "Answers queries from an index made by vicreg index build: for each query the k best rows\n"
    "with their rank, id, score, and the file, window (start and end, seconds) and label of the\n"
    "row when the index holds the embedding set's rows.\n"
    "  --query Q.npy     float32 queries (n, D), or one query (D), D the index's dimension\n"
    "  --query FILE|DIR|MANIFEST\n"
    "                    audio: a file, the audio files under a folder, or a labels.csv\n"
    "                    manifest, embedded as the index's rows were (the checkpoint, branch,\n"
    "                    output, normalisation, pooling, window and hop of vicreg embed, kept in\n"
    "                    the index): one query per window, or per file when the rows were pooled\n"
    "  -k N              answers per query (default 10)\n"
    "  --json            print one JSON document instead of tables\n"
    "  --nprobe N        IVF indexes: lists to visit (default: the one stored at build time)\n"
    "  --ef-search N     HNSW indexes: candidates to keep (default: the stored one)\n"
    "Scores: the inner product (higher is better) or the squared L2 distance (lower is better),\n"
    "as the index was built.\n";

typedef struct search_args {
    const char *index;
    char *query;
    int k, json, nprobe, ef_search;
} search_args;

static int positive(const char *opt, const char *v)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 1 || x > 1 << 20) return vr_cli_usage("search", "%s %s: expected a whole number >= 1", opt, v), -1;
    return (int)x;
}

/* 0, VR_EXIT_OK after --help (*done set), or a usage error's status. */
static int parse(int argc, char **argv, search_args *a, int *done)
{
    *a = (search_args){.k = 10};
    *done = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            *done = 1;
            return fputs(search_help, stdout), VR_EXIT_OK;
        }
        if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        }
        int takes = !strcmp(o, "--query") || !strcmp(o, "-k") || !strcmp(o, "--nprobe") || !strcmp(o, "--ef-search");
        if (takes && i + 1 >= argc) return vr_cli_usage("search", "%s needs a value", o);
        if (!strcmp(o, "--query")) {
            a->query = argv[++i];
        } else if (takes) {
            int v = positive(o, argv[++i]);
            if (v < 0) return VR_EXIT_USAGE;
            *(!strcmp(o, "-k") ? &a->k : !strcmp(o, "--nprobe") ? &a->nprobe : &a->ef_search) = v;
        } else if (o[0] == '-' && o[1]) {
            return vr_cli_usage("search", "unknown option '%s'", o);
        } else if (a->index) {
            return vr_cli_usage("search", "one index only ('%s' and '%s')", a->index, o);
        } else {
            a->index = o;
        }
    }
    if (!a->index || !a->query) return vr_cli_usage("search", "give an INDEX and --query Q.npy|FILE|DIR");
    return 0;
}

/* The queries: rows of a .npy, or windows of audio files. */
typedef struct queries {
    int64_t n;
    int d;
    float *x;            /* (n, d) */
    int64_t *input;      /* (n) audio: the file of each row, an index into `in` */
    double *start;       /* (n) audio: the window's start, seconds */
    vr_cli_inputs in;    /* audio: the files */
} queries;

static void queries_free(queries *q)
{
    vr_free(q->x);
    free(q->input);
    free(q->start);
    vr_cli_inputs_free(&q->in);
}

static int is_npy(const char *path)
{
    size_t len = strlen(path);
    return len >= 4 && !strcmp(path + len - 4, ".npy");
}

/* q->x grown to hold `rows` rows of d (and their file and start). */
static vr_status reserve(queries *q, int64_t rows, int d, int64_t *cap)
{
    if (rows <= *cap) return VR_OK;
    int64_t c = *cap ? *cap : 64;
    while (c < rows) c *= 2;
    float *x = vr_alloc((size_t)c * d * sizeof *x);
    int64_t *input = realloc(q->input, (size_t)c * sizeof *input);
    if (input) q->input = input;
    double *start = realloc(q->start, (size_t)c * sizeof *start);
    if (start) q->start = start;
    if (!x || !input || !start) {
        vr_free(x);
        return vr_fail(VR_ERR_NOMEM, "search", "no room for %lld queries", (long long)rows);
    }
    if (q->n) memcpy(x, q->x, (size_t)q->n * d * sizeof *x);
    vr_free(q->x);
    q->x = x;
    *cap = c;
    return VR_OK;
}

/* Audio queries under `arg`, embedded with the index's settings. */
static vr_status embed_queries(const vr_index *ix, const char *index, char *arg, queries *q)
{
    if (!vr_index_settings(ix))
        return vr_fail(VR_ERR_ARG, "search", "%s: the index keeps no settings saying how its rows were embedded, so "
                       "audio queries cannot be; give --query Q.npy", index);
    vr_embedding_set holder = {.meta_json = (char *)vr_index_settings(ix)};
    vr_embedding_settings set;
    VR_TRY(vr_embedding_set_settings(index, &holder, &set));
    set.cfg.threads = omp_get_max_threads();
    VR_TRY(vr_cli_list_inputs(&arg, 1, NULL, &q->in));
    if (q->in.n == 0) return vr_fail(VR_ERR_NOT_FOUND, "search", "%s: no audio files", arg);
    vr_embedder *e;
    VR_TRY(vr_embedder_open(set.checkpoint, &set.cfg, &e));
    int d = q->d = vr_embedder_dim(e);
    vr_status s = VR_OK;
    int64_t cap = 0;
    for (int i = 0; i < q->in.n && s == VR_OK; i++) {
        const float *rows;
        const double *starts;
        int64_t nrows;
        s = vr_embedder_embed_file(e, q->in.items[i].path, &rows, &nrows, &starts, NULL);
        if (s == VR_OK) s = reserve(q, q->n + nrows, d, &cap);
        if (s != VR_OK) break;
        memcpy(q->x + q->n * d, rows, (size_t)nrows * d * sizeof *rows);
        for (int64_t r = 0; r < nrows; r++) {
            q->input[q->n + r] = i;
            q->start[q->n + r] = starts[r];
        }
        q->n += nrows;
    }
    vr_embedder_close(e);
    return s;
}

/* "Q.npy row 3" or "a.wav at 1.50 s" */
static void describe(const queries *q, const char *arg, int64_t i, char *buf, size_t len)
{
    if (q->input) snprintf(buf, len, "%s at %.2f s", q->in.items[q->input[i]].path, q->start[i]);
    else snprintf(buf, len, "%s row %lld", arg, (long long)i);
}

static void print_table(const vr_index *ix, const queries *qs, const char *arg, int k, const float *scores,
                        const int64_t *ids)
{
    int rows = vr_index_row(ix, 0) != NULL;
    int64_t nq = qs->n;
    for (int64_t q = 0; q < nq; q++) {
        char what[4200];
        describe(qs, arg, q, what, sizeof what);
        printf("%squery %lld of %lld: %s\n", q ? "\n" : "", (long long)q + 1, (long long)nq, what);
        printf("  %4s %10s %12s%s\n", "rank", "id", "score", rows ? "  file [start-end s] label" : "");
        for (int r = 0; r < k; r++) {
            int64_t id = ids[q * k + r];
            if (id < 0) break;
            printf("  %4d %10lld %12.6f", r + 1, (long long)id, (double)scores[q * k + r]);
            const vr_embedding_row *row = vr_index_row(ix, id);
            if (row) printf("  %s [%.2f-%.2f s] %s", row->file, row->start_s, row->end_s, row->label);
            putchar('\n');
        }
    }
}

/* The answers as one JSON document: {"index", "kind", "metric", "dim", "k", "queries": [{"query",
 * "row" (a .npy's) or "start" (audio), "answers": [{"rank", "id", "score", "file", "start",
 * "end", "label"}]}]}; NULL when out of memory. */
static char *answers_json(const vr_index *ix, const char *index, const queries *qs, const char *arg, int k,
                          const float *scores, const int64_t *ids)
{
    int64_t nq = qs->n;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "index", index);
    cJSON_AddStringToObject(doc, "kind", vr_index_kind(ix));
    cJSON_AddStringToObject(doc, "metric", vr_metric_name(vr_index_metric(ix)));
    cJSON_AddNumberToObject(doc, "dim", vr_index_dim(ix));
    cJSON_AddNumberToObject(doc, "k", k);
    cJSON *queries = cJSON_AddArrayToObject(doc, "queries");
    for (int64_t q = 0; q < nq && queries; q++) {
        cJSON *jq = cJSON_CreateObject();
        cJSON_AddItemToArray(queries, jq);
        if (qs->input) {
            cJSON_AddStringToObject(jq, "query", qs->in.items[qs->input[q]].path);
            cJSON_AddNumberToObject(jq, "start", qs->start[q]);
        } else {
            cJSON_AddStringToObject(jq, "query", arg);
            cJSON_AddNumberToObject(jq, "row", (double)q);
        }
        cJSON *answers = cJSON_AddArrayToObject(jq, "answers");
        for (int r = 0; r < k && answers && ids[q * k + r] >= 0; r++) {
            int64_t id = ids[q * k + r];
            cJSON *ja = cJSON_CreateObject();
            cJSON_AddItemToArray(answers, ja);
            cJSON_AddNumberToObject(ja, "rank", r + 1);
            cJSON_AddNumberToObject(ja, "id", (double)id);
            cJSON_AddNumberToObject(ja, "score", scores[q * k + r]);
            const vr_embedding_row *row = vr_index_row(ix, id);
            if (!row) continue;
            cJSON_AddStringToObject(ja, "file", row->file);
            cJSON_AddNumberToObject(ja, "start", row->start_s);
            cJSON_AddNumberToObject(ja, "end", row->end_s);
            cJSON_AddStringToObject(ja, "label", row->label);
        }
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    return text;
}

int vr_cmd_search(int argc, char **argv)
{
    search_args a;
    int done, rc = parse(argc, argv, &a, &done);
    if (done || rc) return rc;
    vr_index *ix = NULL;
    queries q = {0};
    float *scores = NULL;
    int64_t *ids = NULL;
    vr_status s = vr_index_load(a.index, &ix);
    if (s == VR_OK) s = vr_index_set_search_params(ix, a.nprobe, a.ef_search);
    if (s == VR_OK && is_npy(a.query)) {
        s = vr_index_read_queries(ix, a.query, &q.x, &q.n);
        q.d = vr_index_dim(ix);
    } else if (s == VR_OK) {
        s = embed_queries(ix, a.index, a.query, &q);
    }
    if (s == VR_OK) {
        scores = vr_alloc((size_t)q.n * a.k * sizeof *scores);
        ids = vr_alloc((size_t)q.n * a.k * sizeof *ids);
        if (!scores || !ids) s = vr_fail(VR_ERR_NOMEM, "search", "no room for %lld x %d answers", (long long)q.n, a.k);
    }
    if (s == VR_OK) s = vr_index_search(ix, q.x, q.n, q.d, a.k, scores, ids);
    if (s == VR_OK && a.json) {
        char *text = answers_json(ix, a.index, &q, a.query, a.k, scores, ids);
        if (text) puts(text);
        else s = vr_fail(VR_ERR_NOMEM, "search", "cannot format the answers as JSON");
        cJSON_free(text);
    } else if (s == VR_OK) {
        print_table(ix, &q, a.query, a.k, scores, ids);
    }
    queries_free(&q);
    vr_free(scores);
    vr_free(ids);
    vr_index_free(ix);
    if (s == VR_OK) return VR_EXIT_OK;
    return vr_cli_fail(s == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, "search");
}
