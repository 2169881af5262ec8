/* Embedding sets on disk: the .npy matrix, its .csv rows and its .json settings
 * (include/vicreg/embedding_set.h). The rows are parsed with libcsv in strict mode and written
 * with its quoting (csv_fwrite); the settings are checked to be one JSON object (cJSON). */
#include "vicreg/embedding_set.h"

#include <cjson/cJSON.h>
#include <csv.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/atomic_file.h"
#include "vicreg/npy.h"
#include "vicreg/tensor.h"

/* A guard against reading an absurd file as rows or settings. */
#define SIDECAR_MAX_BYTES ((long)1 << 30)

vr_status vr_embedding_set_sidecar(const char *npy_path, const char *suffix, char *out, size_t len)
{
    size_t n = strlen(npy_path);
    if (n >= 4 && !strcmp(npy_path + n - 4, ".npy")) n -= 4;
    if (n + strlen(suffix) + 1 > len)
        return vr_fail(VR_ERR_ARG, "embeddings", "%s: path too long", npy_path);
    memcpy(out, npy_path, n);
    strcpy(out + n, suffix);
    return VR_OK;
}

void vr_embedding_set_free(vr_embedding_set *s)
{
    if (s->rows)
        for (int64_t i = 0; i < s->n; i++) {
            free(s->rows[i].file);
            free(s->rows[i].label);
        }
    free(s->rows);
    vr_free(s->x);
    free(s->meta_json);
    memset(s, 0, sizeof *s);
}

/* ---- writing ---- */

static void write_rows(FILE *f, const vr_embedding_set *s)
{
    fputs("file,start,end,label\n", f);
    for (int64_t i = 0; i < s->n; i++) {
        const vr_embedding_row *r = &s->rows[i];
        const char *label = r->label ? r->label : "";
        csv_fwrite(f, r->file, strlen(r->file));
        fprintf(f, ",%.6f,%.6f,", r->start_s, r->end_s);
        csv_fwrite(f, label, strlen(label));
        fputc('\n', f);
    }
}

/* The set's files (matrix, then rows and settings where it has them) change together or not at
 * all: each is written whole to its temporary file first, and the renames come only when every
 * one of them is on disk. A full disk therefore leaves the previous set as it was; only a kill
 * in the microseconds between the renames could mix two sets, and the reader then refuses the
 * pair whose row counts differ. */
vr_status vr_embedding_set_write(const char *npy_path, const vr_embedding_set *s)
{
    if (s->n < 1 || s->d < 1 || !s->x)
        return vr_fail(VR_ERR_ARG, "embeddings", "%s: an embedding set needs at least one row and one column",
                       npy_path);
    if (s->rows)
        for (int64_t i = 0; i < s->n; i++)
            if (!s->rows[i].file)
                return vr_fail(VR_ERR_ARG, "embeddings", "%s: row %lld has no file", npy_path, (long long)i);
    if (s->meta_json) {
        cJSON *j = cJSON_Parse(s->meta_json);
        int object = cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!object) return vr_fail(VR_ERR_ARG, "embeddings", "%s: the settings are not a JSON object", npy_path);
    }
    char csv_path[4096], json_path[4096];
    const char *paths[3] = {npy_path, s->rows ? csv_path : NULL, s->meta_json ? json_path : NULL};
    if (s->rows) VR_TRY(vr_embedding_set_sidecar(npy_path, ".csv", csv_path, sizeof csv_path));
    if (s->meta_json) VR_TRY(vr_embedding_set_sidecar(npy_path, ".json", json_path, sizeof json_path));
    vr_atomic_file a[3] = {0};
    vr_status st = VR_OK;
    for (int k = 0; k < 3 && st == VR_OK; k++) {
        if (!paths[k]) continue;
        st = vr_atomic_open(&a[k], paths[k], "embeddings");
        if (st != VR_OK) break;
        if (k == 0) {
            int64_t shape[2] = {s->n, s->d};
            st = vr_npy_fwrite(a[k].f, npy_path, s->x, 2, shape);
        } else if (k == 1) {
            write_rows(a[k].f, s);
        } else if (fputs(s->meta_json, a[k].f) < 0 || fputc('\n', a[k].f) == EOF) {
            st = vr_fail(VR_ERR_IO, "embeddings", "%s: write failed: %s", paths[k], strerror(errno));
        }
        if (st == VR_OK) st = vr_atomic_finish(&a[k]); /* releases a[k] when it fails */
    }
    for (int i = 0; i < 3; i++) {
        if (!paths[i] || !a[i].path) continue;
        if (st == VR_OK) st = vr_atomic_publish(&a[i]);
        else vr_atomic_abort(&a[i]); /* releases one that was opened, with or without its file */
    }
    return st;
}

/* ---- reading ---- */

static vr_status read_file(const char *path, char **text, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, "embeddings", "%s: cannot open: %s", path,
                       strerror(errno));
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return vr_fail(VR_ERR_IO, "embeddings", "%s: cannot read", path);
    }
    if (n > SIDECAR_MAX_BYTES) {
        fclose(f);
        return vr_fail(VR_ERR_FORMAT, "embeddings", "%s: %ld bytes, larger than any sidecar this writes", path, n);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return vr_fail(VR_ERR_NOMEM, "embeddings", "%s: cannot hold %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return vr_fail(VR_ERR_IO, "embeddings", "%s: short read", path);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return VR_OK;
}

/* The parser's state: fields of the current record, then rows as they complete. */
typedef struct rows_parse {
    vr_embedding_set *s;
    const char *path;
    char *field[4];
    int nfield, line;
    int64_t row;      /* rows filled */
    vr_status st;
} rows_parse;

static void on_field(void *data, size_t len, void *user)
{
    rows_parse *p = user;
    if (p->st != VR_OK) return;
    if (p->nfield >= 4) {
        p->st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s:%d: more than 4 fields (file,start,end,label)", p->path,
                        p->line);
        return;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        p->st = vr_fail(VR_ERR_NOMEM, "embeddings", "%s: out of memory", p->path);
        return;
    }
    memcpy(copy, data, len);
    copy[len] = '\0';
    p->field[p->nfield++] = copy;
}

static int parse_seconds(const char *text, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    return *text && !*end && errno == 0;
}

static void on_record(int c, void *user)
{
    (void)c;
    rows_parse *p = user;
    p->line++;
    if (p->st == VR_OK) {
        if (p->nfield != 4) {
            p->st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s:%d: %d fields, expected 4 (file,start,end,label)", p->path,
                            p->line, p->nfield);
        } else if (p->line == 1) {
            if (strcmp(p->field[0], "file") || strcmp(p->field[1], "start") || strcmp(p->field[2], "end") ||
                strcmp(p->field[3], "label"))
                p->st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s:1: the header is not file,start,end,label", p->path);
        } else if (p->row >= p->s->n) {
            p->st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: more rows than the matrix's %lld", p->path,
                            (long long)p->s->n);
        } else {
            vr_embedding_row *r = &p->s->rows[p->row];
            if (!parse_seconds(p->field[1], &r->start_s) || !parse_seconds(p->field[2], &r->end_s)) {
                p->st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s:%d: start and end must be numbers of seconds", p->path,
                                p->line);
            } else {
                r->file = p->field[0];
                r->label = p->field[3];
                p->field[0] = p->field[3] = NULL;
                p->row++;
            }
        }
    }
    for (int i = 0; i < p->nfield; i++) free(p->field[i]);
    memset(p->field, 0, sizeof p->field);
    p->nfield = 0;
}

static vr_status read_rows(const char *path, vr_embedding_set *s)
{
    char *text;
    long len;
    VR_TRY(read_file(path, &text, &len));
    if (!(s->rows = calloc((size_t)s->n, sizeof *s->rows))) {
        free(text);
        return vr_fail(VR_ERR_NOMEM, "embeddings", "%s: cannot hold %lld rows", path, (long long)s->n);
    }
    struct csv_parser cp;
    rows_parse p = {.s = s, .path = path, .st = VR_OK};
    if (csv_init(&cp, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
        free(text);
        return vr_fail(VR_ERR_NOMEM, "embeddings", "%s: cannot start the CSV parser", path);
    }
    if (csv_parse(&cp, text, (size_t)len, on_field, on_record, &p) != (size_t)len && p.st == VR_OK)
        p.st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: not valid CSV near line %d: %s", path, p.line + 1,
                       csv_strerror(csv_error(&cp)));
    if (csv_fini(&cp, on_field, on_record, &p) != 0 && p.st == VR_OK)
        p.st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: not valid CSV at its end: %s", path,
                       csv_strerror(csv_error(&cp)));
    csv_free(&cp);
    free(text);
    for (int i = 0; i < p.nfield; i++) free(p.field[i]);
    if (p.st == VR_OK && p.row != s->n)
        p.st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: %lld rows, the matrix has %lld", path, (long long)p.row,
                       (long long)s->n);
    return p.st;
}

static vr_status read_meta(const char *path, vr_embedding_set *s)
{
    char *text;
    long len;
    VR_TRY(read_file(path, &text, &len));
    cJSON *j = cJSON_Parse(text);
    vr_status st = VR_OK;
    if (!cJSON_IsObject(j)) {
        st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: not a JSON object", path);
    } else {
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
        const cJSON *dim = cJSON_GetObjectItemCaseSensitive(j, "dim");
        if (cJSON_IsNumber(rows) && rows->valuedouble != (double)s->n)
            st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: says %.0f rows, the matrix has %lld", path,
                         rows->valuedouble, (long long)s->n);
        else if (cJSON_IsNumber(dim) && dim->valuedouble != (double)s->d)
            st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: says dimension %.0f, the matrix has %d", path,
                         dim->valuedouble, s->d);
    }
    cJSON_Delete(j);
    if (st == VR_OK) s->meta_json = text;
    else free(text);
    return st;
}

vr_status vr_embedding_set_settings(const char *npy_path, const vr_embedding_set *s, vr_embedding_settings *out)
{
    if (!s->meta_json)
        return vr_fail(VR_ERR_NOT_FOUND, "embeddings", "%s: has no settings file (.json) saying how it was embedded",
                       npy_path);
    cJSON *j = cJSON_Parse(s->meta_json);
    const cJSON *ck = cJSON_GetObjectItemCaseSensitive(j, "checkpoint");
    const cJSON *br = cJSON_GetObjectItemCaseSensitive(j, "branch");
    const cJSON *output = cJSON_GetObjectItemCaseSensitive(j, "output");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalize");
    const cJSON *pool = cJSON_GetObjectItemCaseSensitive(j, "pool");
    const cJSON *win = cJSON_GetObjectItemCaseSensitive(j, "window");
    const cJSON *hop = cJSON_GetObjectItemCaseSensitive(j, "hop");
    const cJSON *rnd = cJSON_GetObjectItemCaseSensitive(j, "random_init");
    vr_status st = VR_OK;
    if (!cJSON_IsString(ck) || !cJSON_IsString(br) || strlen(ck->valuestring) >= sizeof out->checkpoint ||
        strlen(br->valuestring) >= sizeof out->branch)
        st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: its settings name no checkpoint and branch", npy_path);
    else if ((output && !cJSON_IsString(output)) || (norm && !cJSON_IsBool(norm)) || (pool && !cJSON_IsString(pool)) ||
             (win && !cJSON_IsNumber(win)) || (hop && !cJSON_IsNumber(hop)) || (rnd && !cJSON_IsBool(rnd)))
        st = vr_fail(VR_ERR_FORMAT, "embeddings", "%s: a setting has the wrong type (output, pool: strings; "
                     "normalize, random_init: booleans; window, hop: seconds)", npy_path);
    if (st == VR_OK) {
        memset(out, 0, sizeof *out);
        strcpy(out->checkpoint, ck->valuestring);
        strcpy(out->branch, br->valuestring);
        out->cfg = vr_embedder_defaults();
        out->cfg.branch = out->branch;
        out->cfg.output = output && !strcmp(output->valuestring, "embedding") ? VR_EMBED_EMBEDDING : VR_EMBED_REPR;
        out->cfg.normalize = cJSON_IsTrue(norm);
        out->cfg.pool = pool && !strcmp(pool->valuestring, "mean");
        out->cfg.random_init = cJSON_IsTrue(rnd);
        if (win) out->cfg.window_seconds = win->valuedouble;
        if (hop) out->cfg.hop_seconds = hop->valuedouble;
    }
    cJSON_Delete(j);
    return st;
}

static int exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL || errno != ENOENT;
}

vr_status vr_embedding_set_read(const char *npy_path, int need_rows, vr_embedding_set *s)
{
    memset(s, 0, sizeof *s);
    vr_npy a;
    VR_TRY(vr_npy_read(npy_path, 2, &a));
    if (a.shape[0] < 1 || a.shape[1] < 1 || a.shape[1] > (1 << 24)) {
        vr_npy_free(&a);
        return vr_fail(VR_ERR_SHAPE, "embeddings", "%s: shape (%lld, %lld) is not a matrix of embeddings", npy_path,
                       (long long)a.shape[0], (long long)a.shape[1]);
    }
    s->n = a.shape[0];
    s->d = (int)a.shape[1];
    s->x = a.data;
    char path[4096];
    vr_status st = vr_embedding_set_sidecar(npy_path, ".csv", path, sizeof path);
    if (st == VR_OK && (need_rows || exists(path))) st = read_rows(path, s);
    if (st == VR_OK) st = vr_embedding_set_sidecar(npy_path, ".json", path, sizeof path);
    if (st == VR_OK && exists(path)) st = read_meta(path, s);
    if (st != VR_OK) vr_embedding_set_free(s);
    return st;
}

/* Row indices ordered by label, then by row: each label's rows together, its first row first. */
static int by_label(const void *a, const void *b, void *set)
{
    const vr_embedding_set *s = set;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int c = strcmp(s->rows[i].label, s->rows[j].label);
    return c ? c : (i > j) - (i < j);
}
static int by_first_row(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    return (i > j) - (i < j);
}

vr_status vr_embedding_set_label_ids(const vr_embedding_set *s, int **labels, int *nclasses)
{
    if (!s->rows) return vr_fail(VR_ERR_ARG, "embeddings", "the embedding set has no rows file, so no labels");
    int *ids = vr_alloc((size_t)s->n * sizeof *ids);
    int64_t *order = malloc((size_t)s->n * sizeof *order), *first = malloc((size_t)s->n * sizeof *first);
    if (!ids || !order || !first) {
        vr_free(ids);
        free(order);
        free(first);
        return vr_fail(VR_ERR_NOMEM, "embeddings", "cannot hold %lld labels", (long long)s->n);
    }
    int64_t m = 0;
    for (int64_t i = 0; i < s->n; i++) {
        ids[i] = -1;
        if (s->rows[i].label && s->rows[i].label[0]) order[m++] = i;
    }
    qsort_r(order, (size_t)m, sizeof *order, by_label, (void *)s);
    int64_t k = 0;
    for (int64_t i = 0; i < m; i++)
        if (i == 0 || strcmp(s->rows[order[i]].label, s->rows[order[i - 1]].label)) first[k++] = order[i];
    /* classes numbered by their first row: the order in which the labels appear */
    qsort(first, (size_t)k, sizeof *first, by_first_row);
    for (int64_t c = 0; c < k; c++) ids[first[c]] = (int)c;
    for (int64_t i = 0; i < m; i++) {
        int64_t r = order[i];
        if (ids[r] < 0) ids[r] = ids[order[i - 1]];
    }
    free(order);
    free(first);
    *labels = ids;
    *nclasses = (int)k;
    return VR_OK;
}
