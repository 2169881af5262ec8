/* vicreg search: the k best rows of an index (vicreg index build) for each query, printed as a
 * table or as one JSON document. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vicreg/index.h"
#include "vicreg/tensor.h"

static const char *search_help =
    "usage: vicreg search INDEX --query Q.npy [-k 10] [--json] [--nprobe N] [--ef-search N]\n"
    "\n"
    "Answers queries from an index made by vicreg index build: for each query the k best rows\n"
    "with their rank, id, score, and the file, window (start and end, seconds) and label of the\n"
    "row when the index holds the embedding set's rows.\n"
    "  --query Q.npy     float32 queries (n, D), or one query (D), D the index's dimension\n"
    "  -k N              answers per query (default 10)\n"
    "  --json            print one JSON document instead of tables\n"
    "  --nprobe N        IVF indexes: lists to visit (default: the one stored at build time)\n"
    "  --ef-search N     HNSW indexes: candidates to keep (default: the stored one)\n"
    "Scores: the inner product (higher is better) or the squared L2 distance (lower is better),\n"
    "as the index was built.\n";

typedef struct search_args {
    const char *index, *query;
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
    if (!a->index || !a->query) return vr_cli_usage("search", "give an INDEX and --query Q.npy");
    size_t len = strlen(a->query);
    if (len < 4 || strcmp(a->query + len - 4, ".npy"))
        return vr_cli_usage("search", "--query %s: queries are a .npy file of vectors", a->query);
    return 0;
}

static void print_table(const vr_index *ix, const char *query, int64_t nq, int k, const float *scores,
                        const int64_t *ids)
{
    int rows = vr_index_row(ix, 0) != NULL;
    for (int64_t q = 0; q < nq; q++) {
        printf("%squery %lld of %lld: %s row %lld\n", q ? "\n" : "", (long long)q + 1, (long long)nq, query, (long long)q);
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
 * "row", "answers": [{"rank", "id", "score", "file", "start", "end", "label"}]}]}; NULL when out
 * of memory. */
static char *answers_json(const vr_index *ix, const char *index, const char *query, int64_t nq, int k,
                          const float *scores, const int64_t *ids)
{
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
        cJSON_AddStringToObject(jq, "query", query);
        cJSON_AddNumberToObject(jq, "row", (double)q);
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
    float *queries = NULL, *scores = NULL;
    int64_t *ids = NULL, nq = 0;
    vr_status s = vr_index_load(a.index, &ix);
    if (s == VR_OK) s = vr_index_set_search_params(ix, a.nprobe, a.ef_search);
    if (s == VR_OK) s = vr_index_read_queries(ix, a.query, &queries, &nq);
    if (s == VR_OK) {
        scores = vr_alloc((size_t)nq * a.k * sizeof *scores);
        ids = vr_alloc((size_t)nq * a.k * sizeof *ids);
        if (!scores || !ids) s = vr_fail(VR_ERR_NOMEM, "search", "no room for %lld x %d answers", (long long)nq, a.k);
    }
    if (s == VR_OK) s = vr_index_search(ix, queries, nq, vr_index_dim(ix), a.k, scores, ids);
    if (s == VR_OK && a.json) {
        char *text = answers_json(ix, a.index, a.query, nq, a.k, scores, ids);
        if (text) puts(text);
        else s = vr_fail(VR_ERR_NOMEM, "search", "cannot format the answers as JSON");
        cJSON_free(text);
    } else if (s == VR_OK) {
        print_table(ix, a.query, nq, a.k, scores, ids);
    }
    vr_free(queries);
    vr_free(scores);
    vr_free(ids);
    vr_index_free(ix);
    if (s == VR_OK) return VR_EXIT_OK;
    return vr_cli_fail(s == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, "search");
}
