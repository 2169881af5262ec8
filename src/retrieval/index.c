/* The index of an embedding set and its file (see include/vicreg/index.h): exact search over
 * its own copy of the vectors, or a FAISS index through the bridge (faiss_bridge.h). */
#include "vicreg/index.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vicreg/npy.h"
#include "vicreg/safetensors.h"
#include "vicreg/tensor.h"
#include "vr_config.h"
#if VR_HAVE_FAISS
#include "faiss_bridge.h"
#endif

#define FORMAT_NAME "vicreg-index"
#define FORMAT_VERSION "1"

struct vr_index {
    char *name;       /* the file it was loaded from or last saved to, for messages */
    vr_metric metric;
    char *kind;       /* "flat" or the factory string */
    int d;
    int64_t n;
    int nprobe, ef_search;
    float *x;         /* (n, d) flat only */
    vr_search *exact; /* over x, flat only */
#if VR_HAVE_FAISS
    vr_faiss *faiss;
#endif
    vr_embedding_row *rows; /* (n) or NULL; file and label point into the two texts below */
    char *files;            /* n NUL-terminated names */
    size_t files_bytes;
    char *labels;           /* n NUL-terminated labels */
    size_t labels_bytes;
    double *starts, *ends;  /* (n) each */
    char *settings;         /* JSON text or NULL */
};

vr_index_config vr_index_defaults(void)
{
    return (vr_index_config){.metric = VR_METRIC_IP, .factory = "Flat", .nprobe = 0, .ef_search = 0};
}

static int is_flat(const char *factory) { return !factory || !strcmp(factory, "Flat") || !strcmp(factory, "flat"); }

void vr_index_free(vr_index *ix)
{
    if (!ix) return;
    vr_search_free(ix->exact);
#if VR_HAVE_FAISS
    vr_faiss_free(ix->faiss);
#endif
    vr_free(ix->x);
    free(ix->rows);
    free(ix->files);
    free(ix->labels);
    free(ix->starts);
    free(ix->ends);
    free(ix->settings);
    free(ix->kind);
    free(ix->name);
    free(ix);
}

static vr_status set_name(vr_index *ix, const char *name)
{
    char *c = strdup(name);
    if (!c) return vr_fail(VR_ERR_NOMEM, "index", "%s: out of memory", name);
    free(ix->name);
    ix->name = c;
    return VR_OK;
}

/* ix->rows (n) pointing into the texts and the two window arrays; the texts must hold n
 * NUL-terminated strings each (checked by the caller). */
static vr_status point_rows(vr_index *ix)
{
    ix->rows = malloc((size_t)ix->n * sizeof *ix->rows);
    if (!ix->rows) return vr_fail(VR_ERR_NOMEM, "index", "%s: no room for %" PRId64 " rows", ix->name, ix->n);
    const char *f = ix->files, *l = ix->labels;
    for (int64_t i = 0; i < ix->n; i++) {
        ix->rows[i] = (vr_embedding_row){(char *)f, ix->starts[i], ix->ends[i], (char *)l};
        f += strlen(f) + 1;
        l += strlen(l) + 1;
    }
    return VR_OK;
}

/* The rows' names and labels into two texts of NUL-terminated strings. */
static vr_status copy_rows(vr_index *ix, const vr_embedding_row *rows)
{
    size_t fb = 0, lb = 0;
    for (int64_t i = 0; i < ix->n; i++) {
        if (!rows[i].file) return vr_fail(VR_ERR_ARG, "index", "row %" PRId64 " names no file", i);
        fb += strlen(rows[i].file) + 1;
        lb += strlen(rows[i].label ? rows[i].label : "") + 1;
    }
    ix->files = malloc(fb);
    ix->labels = malloc(lb);
    ix->starts = malloc((size_t)ix->n * sizeof(double));
    ix->ends = malloc((size_t)ix->n * sizeof(double));
    if (!ix->files || !ix->labels || !ix->starts || !ix->ends)
        return vr_fail(VR_ERR_NOMEM, "index", "no room for %" PRId64 " rows", ix->n);
    ix->files_bytes = fb;
    ix->labels_bytes = lb;
    char *f = ix->files, *l = ix->labels;
    for (int64_t i = 0; i < ix->n; i++) {
        const char *label = rows[i].label ? rows[i].label : "";
        f = stpcpy(f, rows[i].file) + 1;
        l = stpcpy(l, label) + 1;
        ix->starts[i] = rows[i].start_s;
        ix->ends[i] = rows[i].end_s;
    }
    return point_rows(ix);
}

static vr_status check_settings(const char *name, const char *settings)
{
    cJSON *j = cJSON_Parse(settings);
    int ok = j && cJSON_IsObject(j);
    cJSON_Delete(j);
    if (!ok) return vr_fail(VR_ERR_FORMAT, "index", "%s: the settings are not a JSON object: %.60s", name, settings);
    return VR_OK;
}

#if VR_HAVE_FAISS
/* FAISS takes NaN and infinity without a word and answers nonsense; exact search checks its own. */
static vr_status check_finite(const float *x, int64_t n, int d, const char *what)
{
    for (size_t i = 0; i < (size_t)n * (size_t)d; i++)
        if (!isfinite(x[i]))
            return vr_fail(VR_ERR_NUMERIC, "index", "%s: row %zu holds %g", what, i / (size_t)d, (double)x[i]);
    return VR_OK;
}

static vr_status check_search_params(const vr_faiss *f, const char *kind, int nprobe, int ef_search)
{
    if (nprobe < 0 || ef_search < 0)
        return vr_fail(VR_ERR_ARG, "index", "%s: nprobe %d, efSearch %d: negative", kind, nprobe, ef_search);
    if (nprobe > 0 && vr_faiss_nlist(f) == 0)
        return vr_fail(VR_ERR_ARG, "index", "%s: nprobe applies to IVF indexes only", kind);
    if (ef_search > 0 && !vr_faiss_has_ef_search(f))
        return vr_fail(VR_ERR_ARG, "index", "%s: efSearch applies to HNSW indexes only", kind);
    return VR_OK;
}
#endif

static vr_status build_kind(vr_index *ix, const float *x, const vr_index_config *cfg)
{
    if (is_flat(cfg->factory)) {
        if (cfg->nprobe > 0 || cfg->ef_search > 0)
            return vr_fail(VR_ERR_ARG, "index", "flat: exact search has neither nprobe nor efSearch");
        size_t bytes = (size_t)ix->n * (size_t)ix->d * sizeof(float);
        if (!(ix->x = vr_alloc(bytes)))
            return vr_fail(VR_ERR_NOMEM, "index", "no room for %" PRId64 " x %d vectors", ix->n, ix->d);
        memcpy(ix->x, x, bytes);
        return vr_search_create(ix->x, ix->n, ix->d, ix->metric, 0, &ix->exact);
    }
#if VR_HAVE_FAISS
    VR_TRY(check_finite(x, ix->n, ix->d, "vectors"));
    VR_TRY(vr_faiss_create(cfg->factory, ix->d, ix->metric, &ix->faiss));
    VR_TRY(check_search_params(ix->faiss, cfg->factory, cfg->nprobe, cfg->ef_search));
    if (vr_faiss_needs_training(ix->faiss)) VR_TRY(vr_faiss_train(ix->faiss, x, ix->n));
    return vr_faiss_add(ix->faiss, x, ix->n);
#else
    return vr_fail(VR_ERR_UNSUPPORTED, "index", "'%s': this build has no FAISS; only Flat (exact search) is available",
                   cfg->factory);
#endif
}

vr_status vr_index_build(const float *x, int64_t n, int d, const vr_embedding_row *rows,
                         const char *settings, const vr_index_config *cfg, vr_index **out)
{
    *out = NULL;
    if (n < 1 || d < 1 || !x)
        return vr_fail(VR_ERR_SHAPE, "index", "%" PRId64 " vectors of %d dimensions", n, d);
    if (n > INT32_MAX) return vr_fail(VR_ERR_SHAPE, "index", "%" PRId64 " vectors, at most %d", n, INT32_MAX);
    if (cfg->metric != VR_METRIC_IP && cfg->metric != VR_METRIC_L2)
        return vr_fail(VR_ERR_ARG, "index", "unknown metric %d", (int)cfg->metric);
    if (cfg->factory && !cfg->factory[0]) return vr_fail(VR_ERR_ARG, "index", "an empty factory string");
    vr_index *ix = calloc(1, sizeof *ix);
    if (!ix) return vr_fail(VR_ERR_NOMEM, "index", "out of memory");
    ix->n = n;
    ix->d = d;
    ix->metric = cfg->metric;
    ix->nprobe = cfg->nprobe;
    ix->ef_search = cfg->ef_search;
    vr_status s = set_name(ix, "(unsaved index)");
    if (s == VR_OK && !(ix->kind = strdup(is_flat(cfg->factory) ? "flat" : cfg->factory)))
        s = vr_fail(VR_ERR_NOMEM, "index", "out of memory");
    if (s == VR_OK && settings) s = check_settings("settings", settings);
    if (s == VR_OK && settings && !(ix->settings = strdup(settings)))
        s = vr_fail(VR_ERR_NOMEM, "index", "out of memory");
    if (s == VR_OK && rows) s = copy_rows(ix, rows);
    if (s == VR_OK) s = build_kind(ix, x, cfg);
    if (s != VR_OK) {
        vr_index_free(ix);
        return s;
    }
    *out = ix;
    return VR_OK;
}

int vr_index_dim(const vr_index *ix) { return ix->d; }
int64_t vr_index_count(const vr_index *ix) { return ix->n; }
vr_metric vr_index_metric(const vr_index *ix) { return ix->metric; }
const char *vr_index_kind(const vr_index *ix) { return ix->kind; }
const char *vr_index_settings(const vr_index *ix) { return ix->settings; }

const vr_embedding_row *vr_index_row(const vr_index *ix, int64_t id)
{
    return ix->rows && id >= 0 && id < ix->n ? &ix->rows[id] : NULL;
}

vr_status vr_index_set_search_params(vr_index *ix, int nprobe, int ef_search)
{
#if VR_HAVE_FAISS
    if (ix->faiss) {
        VR_TRY(check_search_params(ix->faiss, ix->kind, nprobe, ef_search));
        if (nprobe > 0) ix->nprobe = nprobe;
        if (ef_search > 0) ix->ef_search = ef_search;
        return VR_OK;
    }
#endif
    if (nprobe > 0 || ef_search > 0)
        return vr_fail(VR_ERR_ARG, "index", "%s: exact search has neither nprobe nor efSearch", ix->name);
    return VR_OK;
}

vr_status vr_index_search(vr_index *ix, const float *queries, int64_t nq, int qdim, int k,
                          float *scores, int64_t *ids)
{
    if (qdim != ix->d)
        return vr_fail(VR_ERR_SHAPE, "index", "%s: queries of %d dimensions, the index holds %d-dimensional vectors",
                       ix->name, qdim, ix->d);
    if (k < 1) return vr_fail(VR_ERR_ARG, "index", "%s: k = %d, must be at least 1", ix->name, k);
    if (nq < 0) return vr_fail(VR_ERR_ARG, "index", "%s: %" PRId64 " queries", ix->name, nq);
    if (ix->exact) return vr_search_run(ix->exact, queries, nq, k, scores, ids);
#if VR_HAVE_FAISS
    VR_TRY(check_finite(queries, nq, ix->d, "queries"));
    return vr_faiss_search(ix->faiss, queries, nq, k, ix->nprobe, ix->ef_search, scores, ids);
#else
    return vr_fail(VR_ERR_UNSUPPORTED, "index", "%s: no search for kind '%s'", ix->name, ix->kind);
#endif
}

/* ---- the file ---- */

typedef struct payload {
    const char *name;
    vr_dtype dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t bytes;
} payload;

/* The tensors of ix in file order; returns their number. */
static int payloads(const vr_index *ix, const uint8_t *blob, size_t blob_bytes, payload *p)
{
    int m = 0;
    if (ix->x)
        p[m++] = (payload){"vectors", VR_DTYPE_F32, 2, {ix->n, ix->d}, ix->x, (size_t)ix->n * ix->d * sizeof(float)};
    else
        p[m++] = (payload){"faiss", VR_DTYPE_U8, 1, {(int64_t)blob_bytes}, blob, blob_bytes};
    if (ix->rows) {
        size_t nb = (size_t)ix->n * sizeof(double);
        p[m++] = (payload){"rows.start", VR_DTYPE_F64, 1, {ix->n}, ix->starts, nb};
        p[m++] = (payload){"rows.end", VR_DTYPE_F64, 1, {ix->n}, ix->ends, nb};
        p[m++] = (payload){"rows.file", VR_DTYPE_U8, 1, {(int64_t)ix->files_bytes}, ix->files, ix->files_bytes};
        p[m++] = (payload){"rows.label", VR_DTYPE_U8, 1, {(int64_t)ix->labels_bytes}, ix->labels, ix->labels_bytes};
    }
    return m;
}

static uint32_t crc_of(const payload *p, int m)
{
    uLong crc = crc32_z(0L, Z_NULL, 0);
    for (int i = 0; i < m; i++) crc = crc32_z(crc, p[i].data, p[i].bytes);
    return (uint32_t)crc;
}

vr_status vr_index_save(vr_index *ix, const char *path)
{
    uint8_t *blob = NULL;
    size_t blob_bytes = 0;
#if VR_HAVE_FAISS
    if (ix->faiss) VR_TRY(vr_faiss_serialize(ix->faiss, &blob, &blob_bytes));
#endif
    payload p[5];
    int m = payloads(ix, blob, blob_bytes, p);
    char crc[16], dim[16], count[32], nprobe[16], ef[16];
    snprintf(crc, sizeof crc, "%08" PRIx32, crc_of(p, m));
    snprintf(dim, sizeof dim, "%d", ix->d);
    snprintf(count, sizeof count, "%" PRId64, ix->n);
    snprintf(nprobe, sizeof nprobe, "%d", ix->nprobe);
    snprintf(ef, sizeof ef, "%d", ix->ef_search);
    const char *meta[][2] = {{"format", FORMAT_NAME}, {"version", FORMAT_VERSION}, {"metric", vr_metric_name(ix->metric)},
                             {"kind", ix->kind},      {"dim", dim},                 {"count", count},
                             {"nprobe", nprobe},      {"ef_search", ef},            {"crc32", crc}};
    vr_st_writer *w = NULL;
    vr_status s = vr_st_writer_new(&w);
    for (int i = 0; s == VR_OK && i < m; i++) s = vr_st_add(w, p[i].name, p[i].dtype, p[i].ndim, p[i].shape, p[i].data);
    for (size_t i = 0; s == VR_OK && i < sizeof meta / sizeof *meta; i++) s = vr_st_add_metadata(w, meta[i][0], meta[i][1]);
    if (s == VR_OK && ix->settings) s = vr_st_add_metadata(w, "settings", ix->settings);
    if (s == VR_OK) s = vr_st_write(w, path);
    if (s == VR_OK) s = set_name(ix, path);
    vr_st_writer_free(w);
    free(blob);
    return s;
}

/* A metadata value that must be a whole number in [lo, hi]. */
static vr_status meta_int(const vr_safetensors *st, const char *path, const char *key, int64_t lo, int64_t hi,
                          int64_t *out)
{
    const char *v = vr_st_metadata(st, key);
    if (!v) return vr_fail(VR_ERR_FORMAT, "index", "%s: no '%s' in the metadata", path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return vr_fail(VR_ERR_FORMAT, "index", "%s: %s '%s' is not a whole number in %" PRId64 "..%" PRId64, path, key,
                       v, lo, hi);
    *out = x;
    return VR_OK;
}

/* The tensor `name` with the given dtype and shape (a rank-1 U8 text: any length >= 1). */
static vr_status tensor_of(const vr_safetensors *st, const char *path, const char *name, vr_dtype dtype, int ndim,
                           const int64_t *shape, const vr_st_entry **out)
{
    const vr_st_entry *e = vr_st_find(st, name);
    if (!e) return vr_fail(VR_ERR_FORMAT, "index", "%s: no tensor '%s'", path, name);
    int ok = e->dtype == dtype && e->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = shape ? e->shape[i] == shape[i] : e->shape[i] >= 1;
    if (!ok) {
        char want[64] = "", got[64] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, i ? ", " : "", shape ? shape[i] : 1);
        for (int i = 0; i < e->ndim && i < 4; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, i ? ", " : "", e->shape[i]);
        return vr_fail(VR_ERR_FORMAT, "index", "%s: tensor '%s' is %s [%s], expected %s [%s%s]", path, name,
                       vr_dtype_name(e->dtype), got, vr_dtype_name(dtype), want, shape ? "" : " or more");
    }
    *out = e;
    return VR_OK;
}

/* The last error again, prefixed with the index file's name. */
static vr_status in_file(vr_status s, const char *path)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", vr_last_error());
    return vr_fail(s, "index", "%s: %s", path, msg);
}

/* A copy of the text tensor e after checking that it holds exactly n NUL-terminated strings. */
static vr_status read_text(const vr_safetensors *st, const char *path, const vr_st_entry *e, int64_t n, char **text,
                           size_t *bytes)
{
    const char *src = vr_st_data(st, e);
    size_t len = (size_t)e->shape[0];
    int64_t strings = 0;
    for (size_t i = 0; i < len; i++) strings += src[i] == '\0';
    if (strings != n || src[len - 1] != '\0')
        return vr_fail(VR_ERR_FORMAT, "index", "%s: tensor '%s' holds %" PRId64 " NUL-terminated strings%s, expected %" PRId64,
                       path, e->name, strings, src[len - 1] ? " and an unterminated tail" : "", n);
    if (!(*text = malloc(len))) return vr_fail(VR_ERR_NOMEM, "index", "%s: no room for '%s'", path, e->name);
    memcpy(*text, src, len);
    *bytes = len;
    return VR_OK;
}

static vr_status read_doubles(const vr_safetensors *st, const char *path, const vr_st_entry *e, int64_t n, double **out)
{
    if (!(*out = malloc((size_t)n * sizeof(double))))
        return vr_fail(VR_ERR_NOMEM, "index", "%s: no room for '%s'", path, e->name);
    memcpy(*out, vr_st_data(st, e), (size_t)n * sizeof(double));
    return VR_OK;
}

static vr_status load_from(const vr_safetensors *st, const char *path, vr_index *ix)
{
    const char *format = vr_st_metadata(st, "format"), *version = vr_st_metadata(st, "version");
    if (!format || strcmp(format, FORMAT_NAME))
        return vr_fail(VR_ERR_FORMAT, "index", "%s: not a vicreg index (format '%s')", path, format ? format : "none");
    if (!version || strcmp(version, FORMAT_VERSION))
        return vr_fail(VR_ERR_FORMAT, "index", "%s: index version '%s', this build reads %s", path,
                       version ? version : "none", FORMAT_VERSION);
    const char *metric = vr_st_metadata(st, "metric"), *kind = vr_st_metadata(st, "kind");
    if (!metric || vr_metric_parse(metric, &ix->metric) != VR_OK)
        return vr_fail(VR_ERR_FORMAT, "index", "%s: metric '%s', expected ip or l2", path, metric ? metric : "none");
    if (!kind || !kind[0]) return vr_fail(VR_ERR_FORMAT, "index", "%s: no kind in the metadata", path);
    if (!(ix->kind = strdup(kind))) return vr_fail(VR_ERR_NOMEM, "index", "%s: out of memory", path);
    int64_t d, n, nprobe, ef;
    VR_TRY(meta_int(st, path, "dim", 1, 1 << 24, &d));
    VR_TRY(meta_int(st, path, "count", 1, INT32_MAX, &n));
    VR_TRY(meta_int(st, path, "nprobe", 0, INT32_MAX, &nprobe));
    VR_TRY(meta_int(st, path, "ef_search", 0, INT32_MAX, &ef));
    ix->d = (int)d;
    ix->n = n;
    ix->nprobe = (int)nprobe;
    ix->ef_search = (int)ef;
    const char *settings = vr_st_metadata(st, "settings");
    if (settings) {
        VR_TRY(check_settings(path, settings));
        if (!(ix->settings = strdup(settings))) return vr_fail(VR_ERR_NOMEM, "index", "%s: out of memory", path);
    }

    /* the tensors' names and shapes, then the checksum over their bytes, then their contents */
    int flat = !strcmp(kind, "flat"), has_rows = vr_st_find(st, "rows.file") != NULL;
    int64_t shape[2] = {n, d};
    const vr_st_entry *e[5];
    int m = 0;
    VR_TRY(flat ? tensor_of(st, path, "vectors", VR_DTYPE_F32, 2, shape, &e[m++])
                : tensor_of(st, path, "faiss", VR_DTYPE_U8, 1, NULL, &e[m++]));
    static const char *row_parts[] = {"rows.start", "rows.end", "rows.file", "rows.label"};
    for (int i = 0; i < 4; i++) {
        if (!has_rows) {
            if (vr_st_find(st, row_parts[i]))
                return vr_fail(VR_ERR_FORMAT, "index", "%s: tensor '%s' without 'rows.file'", path, row_parts[i]);
            continue;
        }
        VR_TRY(i < 2 ? tensor_of(st, path, row_parts[i], VR_DTYPE_F64, 1, &n, &e[m++])
                     : tensor_of(st, path, row_parts[i], VR_DTYPE_U8, 1, NULL, &e[m++]));
    }
    if (vr_st_count(st) != m)
        return vr_fail(VR_ERR_FORMAT, "index", "%s: %d tensors, a %s index with%s rows has %d", path, vr_st_count(st),
                       flat ? "flat" : "FAISS", has_rows ? "" : "out", m);
    uLong crc = crc32_z(0L, Z_NULL, 0);
    for (int i = 0; i < m; i++) crc = crc32_z(crc, vr_st_data(st, e[i]), (size_t)(e[i]->end - e[i]->begin));
    const char *crc_text = vr_st_metadata(st, "crc32");
    char want[16];
    snprintf(want, sizeof want, "%08" PRIx32, (uint32_t)crc);
    if (!crc_text || strcmp(crc_text, want))
        return vr_fail(VR_ERR_FORMAT, "index", "%s: the contents' checksum is %s, the file says %s: the file is corrupt",
                       path, want, crc_text ? crc_text : "none");

    if (has_rows) {
        VR_TRY(read_doubles(st, path, e[1], n, &ix->starts));
        VR_TRY(read_doubles(st, path, e[2], n, &ix->ends));
        VR_TRY(read_text(st, path, e[3], n, &ix->files, &ix->files_bytes));
        VR_TRY(read_text(st, path, e[4], n, &ix->labels, &ix->labels_bytes));
        VR_TRY(point_rows(ix));
    }
    if (flat) {
        size_t bytes = (size_t)n * (size_t)d * sizeof(float);
        if (!(ix->x = vr_alloc(bytes))) return vr_fail(VR_ERR_NOMEM, "index", "%s: no room for the vectors", path);
        memcpy(ix->x, vr_st_data(st, e[0]), bytes);
        vr_status s = vr_search_create(ix->x, n, (int)d, ix->metric, 0, &ix->exact);
        return s == VR_OK ? s : in_file(s, path);
    }
#if VR_HAVE_FAISS
    vr_status s = vr_faiss_deserialize(vr_st_data(st, e[0]), (size_t)e[0]->shape[0], &ix->faiss);
    if (s != VR_OK) return in_file(s, path);
    if (vr_faiss_dim(ix->faiss) != d || vr_faiss_count(ix->faiss) != n || vr_faiss_metric(ix->faiss) != ix->metric)
        return vr_fail(VR_ERR_FORMAT, "index",
                       "%s: the FAISS index holds %" PRId64 " vectors of %d dimensions by %s; the metadata says %" PRId64
                       " of %" PRId64 " by %s",
                       path, vr_faiss_count(ix->faiss), vr_faiss_dim(ix->faiss),
                       vr_metric_name(vr_faiss_metric(ix->faiss)), n, d, vr_metric_name(ix->metric));
    s = check_search_params(ix->faiss, kind, ix->nprobe, ix->ef_search);
    return s == VR_OK ? s : in_file(VR_ERR_FORMAT, path);
#else
    return vr_fail(VR_ERR_UNSUPPORTED, "index", "%s: a FAISS index ('%s') and this build has no FAISS", path, kind);
#endif
}

vr_status vr_index_load(const char *path, vr_index **out)
{
    *out = NULL;
    vr_safetensors *st;
    VR_TRY(vr_st_open(path, &st));
    vr_index *ix = calloc(1, sizeof *ix);
    vr_status s = ix ? set_name(ix, path) : vr_fail(VR_ERR_NOMEM, "index", "%s: out of memory", path);
    if (s == VR_OK) s = load_from(st, path, ix);
    vr_st_close(st);
    if (s != VR_OK) {
        vr_index_free(ix);
        return s;
    }
    *out = ix;
    return VR_OK;
}

vr_status vr_index_read_queries(const vr_index *ix, const char *npy_path, float **queries, int64_t *nq)
{
    *queries = NULL;
    *nq = 0;
    vr_npy a;
    VR_TRY(vr_npy_read(npy_path, 0, &a));
    int64_t cols = a.ndim == 1 ? a.shape[0] : a.ndim == 2 ? a.shape[1] : -1;
    vr_status s = VR_OK;
    if (cols < 0)
        s = vr_fail(VR_ERR_SHAPE, "index", "%s: queries of rank %d; expected (n, %d) or (%d)", npy_path, a.ndim, ix->d,
                    ix->d);
    else if (cols != ix->d)
        s = vr_fail(VR_ERR_SHAPE, "index", "%s: queries of %" PRId64 " dimensions, the index %s holds %d-dimensional vectors",
                    npy_path, cols, ix->name, ix->d);
    else if (a.ndim == 2 && a.shape[0] < 1)
        s = vr_fail(VR_ERR_SHAPE, "index", "%s: no queries", npy_path);
    if (s != VR_OK) {
        vr_npy_free(&a);
        return s;
    }
    *queries = a.data;
    *nq = a.ndim == 1 ? 1 : a.shape[0];
    return VR_OK;
}
