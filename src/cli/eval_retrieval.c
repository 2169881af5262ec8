/* vicreg eval retrieval: how well an embedding set (vicreg embed) retrieves by label, and with
 * --paired how well its rows find their partners in a second set of the same files, beside
 * the two baselines that involve no training: the same network at its seeded initialisation
 * and each window's log-mel averaged over time. The baselines are embedded here from the
 * set's own rows and settings, so they see exactly the windows the trained rows saw. */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vicreg/embed.h"
#include "vicreg/embedding_set.h"
#include "vicreg/knn.h"
#include "vicreg/retrieval_metrics.h"

static const char *help =
    "usage: vicreg eval retrieval SET.npy [--paired OTHER.npy] [--baselines] [--k K,K,...]\n"
    "                             [--threads N] [--json PATH]\n"
    "\n"
    "Leave-one-out label retrieval inside an embedding set written by `vicreg embed`: every\n"
    "labelled row queries all other labelled rows by cosine similarity; recall@k is the share\n"
    "of queries with a row of their label among the k best, mAP the mean average precision.\n"
    "\n"
    "  --paired OTHER.npy  also cross-modal recall@k: row i of SET should find row i of OTHER\n"
    "                      (the same windows of the same files, e.g. the wave and spec branches)\n"
    "  --baselines         the same figures for the baselines, embedded here from the sets'\n"
    "                      rows and settings: the network at its seeded initialisation\n"
    "                      (random-init) and the mean over time of each window's log-mel\n"
    "  --k K,K,...         the recall cut-offs (default 1,5,10)\n"
    "  --threads N         threads for the baselines' embedding (default: all cores)\n"
    "  --json PATH         also write the figures as one JSON object\n";

#define MAX_K 8

typedef struct scores {
    double recall[MAX_K], map;
    double xrecall[MAX_K]; /* cross-modal, when paired */
} scores;

/* The rows of s embedded again with cfg: each run of consecutive rows from one file is that
 * file's embedding, which must give as many rows. x (n, dim of cfg) is vr_alloc'd. */
static vr_status embed_again(const char *path, const vr_embedding_set *s, const vr_embedding_settings *set,
                             const vr_embedder_config *cfg, int threads, float **x, int *dim)
{
    int64_t *group = malloc((size_t)(s->n + 1) * sizeof *group), ng = 0;
    if (!group) return vr_fail(VR_ERR_NOMEM, "eval", "out of memory");
    for (int64_t i = 0; i < s->n; i++)
        if (i == 0 || strcmp(s->rows[i].file, s->rows[i - 1].file)) group[ng++] = i;
    group[ng] = s->n;
    vr_embedder *probe;
    vr_status st = vr_embedder_open(set->checkpoint, cfg, &probe);
    if (st != VR_OK) {
        free(group);
        return st;
    }
    *dim = vr_embedder_dim(probe);
    vr_embedder_close(probe);
    *x = vr_alloc((size_t)s->n * *dim * sizeof(float));
    if (!*x) {
        free(group);
        return vr_fail(VR_ERR_NOMEM, "eval", "cannot hold %lld x %d baseline rows", (long long)s->n, *dim);
    }
    int failed = 0;
    vr_status first = VR_OK;
    char message[1024] = "";
#pragma omp parallel num_threads(threads)
    {
        vr_embedder *e = NULL;
        vr_status ts = vr_embedder_open(set->checkpoint, cfg, &e);
#pragma omp for schedule(dynamic, 4)
        for (int64_t g = 0; g < ng; g++) {
            if (ts != VR_OK) continue; /* this thread stops at its first error */
            const float *rows;
            int64_t nrows;
            const double *starts;
            ts = vr_embedder_embed_file(e, s->rows[group[g]].file, &rows, &nrows, &starts, NULL);
            if (ts == VR_OK && nrows != group[g + 1] - group[g])
                ts = vr_fail(VR_ERR_FORMAT, "eval", "%s: %lld rows of %s, embedding it again gives %lld", path,
                             (long long)(group[g + 1] - group[g]), s->rows[group[g]].file, (long long)nrows);
            if (ts == VR_OK) memcpy(*x + (size_t)group[g] * *dim, rows, (size_t)nrows * *dim * sizeof(float));
        }
        if (ts != VR_OK) {
#pragma omp critical(eval_retrieval_error)
            if (!failed) {
                failed = 1;
                first = ts;
                snprintf(message, sizeof message, "%s", vr_last_error());
            }
        }
        if (e) vr_embedder_close(e);
    }
    free(group);
    if (failed) {
        vr_free(*x);
        *x = NULL;
        return vr_fail(first, "eval", "%s", message);
    }
    return VR_OK;
}

/* ---- the figures ---- */

/* Label retrieval among the labelled rows of x (n, d) and, with y (n, d), cross-modal recall.
 * x and y are normalised in place. */
static vr_status measure(float *x, float *y, int64_t n, int d, const int *labels, const int *ks, int nk,
                         scores *out)
{
    vr_l2_normalise_rows(x, (int)n, d);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += labels[i] >= 0;
    float *lx = x;
    int *ll = (int *)labels;
    if (m < n) { /* only the labelled rows take part */
        lx = vr_alloc((size_t)m * d * sizeof(float));
        ll = vr_alloc((size_t)m * sizeof(int));
        if (!lx || !ll) return vr_fail(VR_ERR_NOMEM, "eval", "out of memory");
        for (int64_t i = 0, k = 0; i < n; i++)
            if (labels[i] >= 0) {
                memcpy(lx + (size_t)k * d, x + (size_t)i * d, (size_t)d * sizeof(float));
                ll[k++] = labels[i];
            }
    }
    vr_status st = m >= 2 ? vr_label_retrieval(lx, ll, (int)m, d, ks, nk, out->recall, &out->map)
                          : vr_fail(VR_ERR_ARG, "eval", "label retrieval needs at least 2 labelled rows, the set has %lld",
                                    (long long)m);
    if (lx != x) {
        vr_free(lx);
        vr_free(ll);
    }
    if (st == VR_OK && y) {
        vr_l2_normalise_rows(y, (int)n, d);
        st = vr_crossmodal_recall(x, y, (int)n, d, ks, nk, out->xrecall);
    }
    return st;
}

static void print_row(const char *name, const scores *s, int nk, int paired)
{
    printf("  %-14s", name);
    for (int i = 0; i < nk; i++) printf("  %7.2f", 100 * s->recall[i]);
    printf("  %7.2f", 100 * s->map);
    if (paired)
        for (int i = 0; i < nk; i++) printf("  %7.2f", 100 * s->xrecall[i]);
    printf("\n");
}

static cJSON *json_scores(const scores *s, const int *ks, int nk, int paired)
{
    cJSON *o = cJSON_CreateObject();
    char key[32];
    for (int i = 0; i < nk; i++) {
        snprintf(key, sizeof key, "r%d", ks[i]);
        cJSON_AddNumberToObject(o, key, 100 * s->recall[i]);
    }
    cJSON_AddNumberToObject(o, "map", 100 * s->map);
    for (int i = 0; paired && i < nk; i++) {
        snprintf(key, sizeof key, "xmodal_r%d", ks[i]);
        cJSON_AddNumberToObject(o, key, 100 * s->xrecall[i]);
    }
    return o;
}

static int parse_ks(const char *text, int *ks, int *nk)
{
    *nk = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > 1000000 || *nk == MAX_K || (*end && *end != ',')) return 0;
        ks[(*nk)++] = (int)k;
        p = *end ? end + 1 : end;
    }
    return *nk > 0;
}

/* The rows of a and b must be the same windows of the same files. */
static vr_status check_paired(const char *pa, const vr_embedding_set *a, const char *pb, const vr_embedding_set *b)
{
    if (a->n != b->n)
        return vr_fail(VR_ERR_SHAPE, "eval", "%s has %lld rows, %s %lld: not the same windows", pa, (long long)a->n,
                       pb, (long long)b->n);
    for (int64_t i = 0; i < a->n; i++)
        if (strcmp(a->rows[i].file, b->rows[i].file) || a->rows[i].start_s != b->rows[i].start_s)
            return vr_fail(VR_ERR_FORMAT, "eval", "row %lld: %s has %s at %.3f s, %s has %s at %.3f s", (long long)i,
                           pa, a->rows[i].file, a->rows[i].start_s, pb, b->rows[i].file, b->rows[i].start_s);
    return VR_OK;
}

int vr_cmd_eval_retrieval(int argc, char **argv)
{
    const char *cmd = "eval retrieval", *path = NULL, *paired = NULL, *json = NULL;
    int ks[MAX_K] = {1, 5, 10}, nk = 3, baselines = 0, threads = omp_get_num_procs();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(help, stdout), VR_EXIT_OK;
        if (!strcmp(a, "--baselines")) {
            baselines = 1;
        } else if (!strcmp(a, "--paired") || !strcmp(a, "--json") || !strcmp(a, "--k") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) return vr_cli_usage(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (a[2] == 'p') paired = v;
            else if (a[2] == 'j') json = v;
            else if (a[2] == 'k' && !parse_ks(v, ks, &nk)) return vr_cli_usage(cmd, "--k takes up to %d positive integers, e.g. 1,5,10", MAX_K);
            else if (a[2] == 't' && (threads = atoi(v)) < 1) return vr_cli_usage(cmd, "--threads takes a positive number");
        } else if (a[0] == '-' && a[1]) {
            return vr_cli_usage(cmd, "unknown option '%s'", a);
        } else if (path) {
            return vr_cli_usage(cmd, "one embedding set only ('%s' and '%s'; the second goes after --paired)", path, a);
        } else {
            path = a;
        }
    }
    if (!path) return vr_cli_usage(cmd, "give an embedding set SET.npy (from vicreg embed)");

    vr_embedding_set s = {0}, p = {0};
    int *labels = NULL, nclasses = 0, rc = VR_EXIT_RUNTIME;
    float *base[3] = {NULL}, *pbase[3] = {NULL}; /* trained, random-init, log-mel; and their partners */
    int dims[3] = {0}, pdims[3] = {0};
    vr_embedding_settings set, pset;
    vr_status st = vr_embedding_set_read(path, 1, &s);
    if (st == VR_OK && paired) st = vr_embedding_set_read(paired, 1, &p);
    if (st == VR_OK && paired && p.d != s.d)
        st = vr_fail(VR_ERR_SHAPE, "eval", "%s has dimension %d, %s %d: cross-modal recall compares rows of one space",
                     path, s.d, paired, p.d);
    if (st == VR_OK && paired) st = check_paired(path, &s, paired, &p);
    if (st == VR_OK) st = vr_embedding_set_label_ids(&s, &labels, &nclasses);
    int nb = baselines ? 3 : 1;
    if (st == VR_OK) {
        base[0] = s.x;
        dims[0] = s.d;
        pbase[0] = paired ? p.x : NULL;
        pdims[0] = p.d;
    }
    if (st == VR_OK && baselines) st = vr_embedding_set_settings(path, &s, &set);
    if (st == VR_OK && baselines && paired) st = vr_embedding_set_settings(paired, &p, &pset);
    for (int b = 1; b < nb && st == VR_OK; b++) {
        vr_embedder_config cfg = set.cfg;
        if (b == 1) cfg.random_init = 1;
        else cfg.branch = "logmel";
        cfg.threads = 1;
        st = embed_again(path, &s, &set, &cfg, threads, &base[b], &dims[b]);
        if (st == VR_OK && paired && b == 1) {
            vr_embedder_config pcfg = pset.cfg;
            pcfg.random_init = 1;
            pcfg.threads = 1;
            st = embed_again(paired, &p, &pset, &pcfg, threads, &pbase[b], &pdims[b]);
        }
    }
    scores sc[3];
    memset(sc, 0, sizeof sc);
    for (int b = 0; b < nb && st == VR_OK; b++) {
        /* cross-modal needs partners of the same dimension: not for log-mel, which has one space */
        float *y = paired && pbase[b] && pdims[b] == dims[b] ? pbase[b] : NULL;
        st = measure(base[b], y, s.n, dims[b], labels, ks, nk, &sc[b]);
    }
    if (st == VR_OK) {
        static const char *names[3] = {"trained", "random-init", "log-mel mean"};
        static const char *keys[3] = {"trained", "random_init", "logmel_mean"};
        printf("%s: %lld rows, %d labels; leave-one-out label retrieval, cosine%s\n", path, (long long)s.n, nclasses,
               paired ? "; cross-modal: row i finds row i of the paired set" : "");
        printf("  %-14s", "");
        for (int i = 0; i < nk; i++) printf("  %6s%d", "R@", ks[i]);
        printf("  %7s", "mAP");
        for (int i = 0; paired && i < nk; i++) printf("  %5s%d", "x R@", ks[i]);
        printf("\n");
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "set", path);
        if (paired) cJSON_AddStringToObject(j, "paired", paired);
        cJSON_AddNumberToObject(j, "rows", (double)s.n);
        cJSON_AddNumberToObject(j, "labels", nclasses);
        for (int b = 0; b < nb; b++) {
            int has_x = paired && b < 2;
            print_row(names[b], &sc[b], nk, has_x);
            cJSON_AddItemToObject(j, keys[b], json_scores(&sc[b], ks, nk, has_x));
        }
        st = json ? vr_cli_write_json(json, j) : VR_OK;
        cJSON_Delete(j);
        if (st == VR_OK) rc = VR_EXIT_OK;
    }
    if (st != VR_OK) rc = vr_cli_fail(st == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, cmd);
    for (int b = 1; b < 3; b++) {
        vr_free(base[b]);
        vr_free(pbase[b]);
    }
    vr_free(labels);
    vr_embedding_set_free(&s);
    vr_embedding_set_free(&p);
    return rc;
}
