/* Reader and writer of safetensors files; the format and the guarantees are described in
 * include/vicreg/safetensors.h. The reader loads the whole file into one buffer and checks the
 * header completely in vr_st_open, so every later accessor can trust the entries. */
#include "vicreg/safetensors.h"

#include "vicreg/atomic_file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are copied between the file and memory unchanged, and safetensors stores
 * little-endian values. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c copies tensor bytes as is and needs a little-endian host");

#define ST_DOMAIN "safetensors"
#define ST_METADATA_KEY "__metadata__"
#define ST_MAX_DIMS 8
/* The limit of the reference implementation: a larger header is a corrupt length field. */
#define ST_MAX_HEADER_BYTES 100000000u
/* cJSON holds numbers as doubles, which represent every integer below 2^53 exactly; larger
 * values may have been rounded while parsing and are refused rather than trusted. */
#define ST_MAX_JSON_INT 9007199254740992.0
/* "[d0, d1, ...]" of 8 dimensions of up to 20 digits each */
#define ST_SHAPE_STR_LEN 192

static const struct {
    const char *name;
    size_t size; /* bytes per element */
} st_dtypes[] = {
    [VR_DTYPE_F32] = {"F32", 4},  [VR_DTYPE_F64] = {"F64", 8}, [VR_DTYPE_F16] = {"F16", 2},
    [VR_DTYPE_BF16] = {"BF16", 2}, [VR_DTYPE_I64] = {"I64", 8}, [VR_DTYPE_I32] = {"I32", 4},
    [VR_DTYPE_U64] = {"U64", 8},  [VR_DTYPE_U8] = {"U8", 1},   [VR_DTYPE_BOOL] = {"BOOL", 1},
};
#define ST_N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static int dtype_valid(vr_dtype t) { return (int)t >= 0 && (int)t < ST_N_DTYPES; }

const char *vr_dtype_name(vr_dtype t)
{
    VR_ASSERT(dtype_valid(t));
    return st_dtypes[t].name;
}

size_t vr_dtype_size(vr_dtype t)
{
    VR_ASSERT(dtype_valid(t));
    return st_dtypes[t].size;
}

static int dtype_from_name(const char *name, vr_dtype *out)
{
    for (int i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *out = (vr_dtype)i;
            return 1;
        }
    }
    return 0;
}

/* Bytes of numel elements of dtype t, given the shape; 0 when the count overflows 64 bits. */
static int shape_bytes(vr_dtype t, int ndim, const int64_t *shape, uint64_t *out)
{
    uint64_t n = vr_dtype_size(t);
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return 0;
    *out = n;
    return 1;
}

/* "[2, 3]"; a caller's shape of more than 8 dimensions is cut short rather than overflow. */
static const char *shape_str(int ndim, const int64_t *shape, char *buf)
{
    size_t n = (size_t)snprintf(buf, ST_SHAPE_STR_LEN, "[");
    for (int i = 0; i < ndim && n < ST_SHAPE_STR_LEN; i++)
        n += (size_t)snprintf(buf + n, ST_SHAPE_STR_LEN - n, i ? ", %" PRId64 : "%" PRId64,
                              shape[i]);
    if (n < ST_SHAPE_STR_LEN) snprintf(buf + n, ST_SHAPE_STR_LEN - n, "]");
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Reader                                                                                   */

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct vr_safetensors {
    char *path;
    const unsigned char *file;  /* the whole file, mapped read-only */
    size_t file_bytes;
    const unsigned char *data;  /* the data section: file + 8 + header length */
    uint64_t data_bytes;
    vr_st_entry *entries;       /* in header order */
    int count;
    const vr_st_entry **by_name; /* entries sorted by name, for vr_st_find */
    st_meta *meta;
    int n_meta;
};

static vr_status nomem(const char *path)
{
    return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "%s: out of memory", path);
}

/* A failed or short fread: an I/O error, or the file shrank after fstat. */
static vr_status read_error(const char *path, FILE *f)
{
    if (ferror(f))
        return vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: read failed: %s", path, strerror(errno));
    return vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: file ended early (changed while being read?)",
                   path);
}

/* Reads the 8-byte header length, checks it against the file size, then maps the file
 * read-only: a reader touches only the pages of the tensors it reads (one branch of a
 * checkpoint holding two and the optimiser state), and they come from the page cache, shared
 * by every handle that opens the file, instead of being copied into fresh memory. Checkpoints
 * are replaced by rename, which leaves an open mapping intact. */
static vr_status load_stream(vr_safetensors *st, FILE *f, uint64_t *header_bytes)
{
    const char *path = st->path;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0)
        return vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: not a regular file", path);
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: file is %" PRIu64 " bytes, too short for the 8-byte header length",
                       path, size);

    unsigned char len_le[8];
    if (fread(len_le, 1, 8, f) != 8) return read_error(path, f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len_le[i];
    if (n > size - 8)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: header length %" PRIu64 " exceeds file size %" PRIu64, path, n,
                       size);
    if (n > ST_MAX_HEADER_BYTES)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: header length %" PRIu64 " exceeds the limit of %u bytes", path, n,
                       ST_MAX_HEADER_BYTES);

    if (size > SIZE_MAX) return nomem(path);
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fileno(f), 0);
    if (map == MAP_FAILED) return vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: cannot map: %s", path, strerror(errno));
    st->file = map;
    st->file_bytes = (size_t)size;
    st->data = st->file + 8 + n;
    st->data_bytes = size - 8 - n;
    *header_bytes = n;
    return VR_OK;
}

/* A JSON number that is a non-negative integer held exactly (see ST_MAX_JSON_INT). */
static int json_uint(const cJSON *x, uint64_t *out)
{
    if (!cJSON_IsNumber(x)) return 0;
    double v = x->valuedouble;
    if (!(v >= 0.0 && v < ST_MAX_JSON_INT) || (double)(uint64_t)v != v) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* Fills e from one header entry and checks it on its own (overlaps are checked later). */
static vr_status parse_entry(const vr_safetensors *st, const cJSON *item, vr_st_entry *e)
{
    const char *path = st->path, *name = e->name;
    if (!cJSON_IsObject(item))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s': entry is not a JSON object",
                       path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s': dtype missing or not a string",
                       path, name);
    if (!dtype_from_name(dtype->valuestring, &e->dtype))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s' has unknown dtype '%s'", path,
                       name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s': shape missing or not an array",
                       path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: tensor '%s' has %d dimensions, at most %d are supported", path, name,
                       ndim, ST_MAX_DIMS);
    const cJSON *dim;
    e->ndim = 0;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                           "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name,
                           e->ndim);
        e->shape[e->ndim++] = (int64_t)v;
    }

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_uint(cJSON_GetArrayItem(offsets, 0), &e->begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &e->end) || e->begin > e->end)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: tensor '%s': data_offsets must be [begin, end], integers with "
                       "begin <= end",
                       path, name);
    if (e->end > st->data_bytes)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: tensor '%s' truncated: needs data bytes up to %" PRIu64
                       ", the data section holds %" PRIu64,
                       path, name, e->end, st->data_bytes);

    char sbuf[ST_SHAPE_STR_LEN];
    uint64_t need;
    if (!shape_bytes(e->dtype, e->ndim, e->shape, &need))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s': shape %s overflows", path,
                       name, shape_str(e->ndim, e->shape, sbuf));
    if (need != e->end - e->begin)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                       "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                       " bytes, but %s %s needs %" PRIu64,
                       path, name, e->begin, e->end, e->end - e->begin,
                       vr_dtype_name(e->dtype), shape_str(e->ndim, e->shape, sbuf), need);
    return VR_OK;
}

static vr_status parse_metadata(vr_safetensors *st, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: %s is not a JSON object", st->path,
                       ST_METADATA_KEY);
    st->meta = calloc((size_t)cJSON_GetArraySize(obj) + 1, sizeof *st->meta);
    if (!st->meta) return nomem(st->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, obj) {
        if (!cJSON_IsString(kv))
            return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: %s value of '%s' is not a string",
                           st->path, ST_METADATA_KEY, kv->string);
        st_meta *m = &st->meta[st->n_meta++];
        m->key = strdup(kv->string);
        m->value = strdup(kv->valuestring);
        if (!m->key || !m->value) return nomem(st->path);
    }
    return VR_OK;
}

/* Parses the JSON header into st->entries and st->meta. */
static vr_status parse_header(vr_safetensors *st, uint64_t header_bytes)
{
    const char *json = (const char *)st->file + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, header_bytes, &end, 0);
    if (!root)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: header is not valid JSON (error at byte %td)",
                       st->path, end ? end - json : (ptrdiff_t)0);

    vr_status s = VR_OK;
    /* Only the writer's space padding (or other JSON whitespace) may follow the value. */
    for (const char *p = end; s == VR_OK && p < json + header_bytes; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            s = vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                        "%s: header has unexpected bytes after its JSON, at byte %td", st->path,
                        p - json);
    if (s == VR_OK && !cJSON_IsObject(root))
        s = vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: header is not a JSON object", st->path);
    if (s == VR_OK &&
        !(st->entries = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *st->entries)))
        s = nomem(st->path);

    int have_meta = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (s != VR_OK) break;
        if (strcmp(item->string, ST_METADATA_KEY) == 0) {
            s = have_meta++ ? vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: %s appears twice",
                                      st->path, ST_METADATA_KEY)
                            : parse_metadata(st, item);
            continue;
        }
        vr_st_entry *e = &st->entries[st->count++]; /* counted now so close frees the name */
        e->name = strdup(item->string);
        s = e->name ? parse_entry(st, item, e) : nomem(st->path);
    }
    cJSON_Delete(root);
    return s;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const vr_st_entry *const *)a)->name, (*(const vr_st_entry *const *)b)->name);
}

static int cmp_entry_offsets(const void *a, const void *b)
{
    const vr_st_entry *x = *(const vr_st_entry *const *)a, *y = *(const vr_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Checks names are unique and data ranges do not overlap; builds the name index. Sorting
 * keeps both checks O(n log n) even for a hostile header of a million entries. */
static vr_status check_layout(vr_safetensors *st)
{
    size_t n = (size_t)st->count;
    st->by_name = malloc((n + 1) * sizeof *st->by_name);
    const vr_st_entry **by_offset = malloc((n + 1) * sizeof *by_offset);
    vr_status s = VR_OK;
    if (!st->by_name || !by_offset) {
        free(by_offset);
        return nomem(st->path);
    }
    for (size_t i = 0; i < n; i++) st->by_name[i] = by_offset[i] = &st->entries[i];

    qsort(st->by_name, n, sizeof *st->by_name, cmp_entry_name);
    for (size_t i = 1; s == VR_OK && i < n; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            s = vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "%s: tensor '%s' appears twice in the header",
                        st->path, st->by_name[i]->name);

    qsort(by_offset, n, sizeof *by_offset, cmp_entry_offsets);
    for (size_t i = 1; s == VR_OK && i < n; i++) {
        const vr_st_entry *a = by_offset[i - 1], *b = by_offset[i];
        if (b->begin < a->end)
            s = vr_fail(VR_ERR_FORMAT, ST_DOMAIN,
                        "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64
                        ", %" PRIu64 "] overlap in the data section",
                        st->path, a->name, a->begin, a->end, b->name, b->begin, b->end);
    }
    free(by_offset);
    return s;
}

vr_status vr_st_open(const char *path, vr_safetensors **out)
{
    *out = NULL;
    vr_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return nomem(path);
    }
    vr_status s;
    FILE *f = fopen(path, "rb");
    if (!f) {
        s = vr_fail(VR_ERR_IO, ST_DOMAIN, "%s: cannot open: %s", path, strerror(errno));
    } else {
        uint64_t header_bytes = 0;
        s = load_stream(st, f, &header_bytes);
        fclose(f); /* read-only: a close error cannot lose data */
        if (s == VR_OK) s = parse_header(st, header_bytes);
        if (s == VR_OK) s = check_layout(st);
    }
    if (s != VR_OK) {
        vr_st_close(st);
        return s;
    }
    *out = st;
    return VR_OK;
}

void vr_st_close(vr_safetensors *st)
{
    if (!st) return;
    for (int i = 0; i < st->count; i++) free(st->entries[i].name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->entries);
    free(st->by_name);
    free(st->meta);
    if (st->file) munmap((void *)st->file, st->file_bytes);
    free(st->path);
    free(st);
}

int vr_st_count(const vr_safetensors *st) { return st->count; }

const vr_st_entry *vr_st_entry_at(const vr_safetensors *st, int i)
{
    VR_ASSERT(i >= 0 && i < st->count);
    return &st->entries[i];
}

const vr_st_entry *vr_st_find(const vr_safetensors *st, const char *name)
{
    vr_st_entry key = {.name = (char *)name};
    const vr_st_entry *kp = &key;
    const vr_st_entry **hit =
        bsearch(&kp, st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_entry_name);
    return hit ? *hit : NULL;
}

const void *vr_st_data(const vr_safetensors *st, const vr_st_entry *e)
{
    return st->data + e->begin;
}

const char *vr_st_metadata(const vr_safetensors *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

/* The entry `name`, checked to exist and to have `dtype`. */
static vr_status find_typed(const vr_safetensors *st, const char *name, vr_dtype dtype,
                            const vr_st_entry **out)
{
    const vr_st_entry *e = vr_st_find(st, name);
    if (!e)
        return vr_fail(VR_ERR_NOT_FOUND, ST_DOMAIN, "tensor '%s' not found in %s", name,
                       st->path);
    if (e->dtype != dtype)
        return vr_fail(VR_ERR_FORMAT, ST_DOMAIN, "tensor '%s' in %s has dtype %s, expected %s",
                       name, st->path, vr_dtype_name(e->dtype), vr_dtype_name(dtype));
    *out = e;
    return VR_OK;
}

vr_status vr_st_read(const vr_safetensors *st, const char *name, vr_dtype dtype, void *dst,
                     size_t count)
{
    const vr_st_entry *e;
    VR_TRY(find_typed(st, name, dtype, &e));
    uint64_t numel = (e->end - e->begin) / vr_dtype_size(dtype);
    if (numel != count) {
        char sbuf[ST_SHAPE_STR_LEN];
        return vr_fail(VR_ERR_SHAPE, ST_DOMAIN,
                       "tensor '%s' in %s has %" PRIu64 " elements (shape %s), expected %zu", name,
                       st->path, numel, shape_str(e->ndim, e->shape, sbuf), count);
    }
    if (count) memcpy(dst, vr_st_data(st, e), e->end - e->begin);
    return VR_OK;
}

vr_status vr_st_read_f32(const vr_safetensors *st, const char *name, int ndim,
                         const int64_t *shape, float *dst)
{
    const vr_st_entry *e;
    VR_TRY(find_typed(st, name, VR_DTYPE_F32, &e));
    int same = ndim == e->ndim;
    for (int i = 0; same && i < ndim; i++) same = shape[i] == e->shape[i];
    if (!same) {
        char have[ST_SHAPE_STR_LEN], want[ST_SHAPE_STR_LEN];
        return vr_fail(VR_ERR_SHAPE, ST_DOMAIN, "tensor '%s' in %s has shape %s, expected %s",
                       name, st->path, shape_str(e->ndim, e->shape, have),
                       shape_str(ndim, shape, want));
    }
    return vr_st_read(st, name, VR_DTYPE_F32, dst, (e->end - e->begin) / sizeof(float));
}

/* ---------------------------------------------------------------------------------------- */
/* Writer                                                                                   */

typedef struct st_item {
    char *name;
    vr_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* the caller's, not copied */
    uint64_t bytes;
} st_item;

struct vr_st_writer {
    st_item *items; /* in insertion order, which is also the order of the data section */
    int count, cap;
    st_meta *meta;
    int n_meta, meta_cap;
};

/* arr (cap elements of elem bytes, used in use) with room for one more: arr itself, a
 * larger copy (cap updated), or NULL when out of memory (arr is then left as it was). */
static void *grow(void *arr, int *cap, int used, size_t elem)
{
    if (used < *cap) return arr;
    int ncap = *cap ? 2 * *cap : 16;
    void *p = realloc(arr, (size_t)ncap * elem);
    if (p) *cap = ncap;
    return p;
}

vr_status vr_st_writer_new(vr_st_writer **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? VR_OK : vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot allocate a writer");
}

void vr_st_writer_free(vr_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->count; i++) free(w->items[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->items);
    free(w->meta);
    free(w);
}

vr_status vr_st_add(vr_st_writer *w, const char *name, vr_dtype dtype, int ndim,
                    const int64_t *shape, const void *data)
{
    if (!name || strcmp(name, ST_METADATA_KEY) == 0)
        return vr_fail(VR_ERR_ARG, ST_DOMAIN, "'%s' cannot name a tensor",
                       name ? name : "(null)");
    if (!dtype_valid(dtype))
        return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s': %d dimensions, at most %d allowed",
                       name, ndim, ST_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s': shape[%d] = %" PRId64 " < 0",
                           name, i, shape[i]);
    st_item it = {.dtype = dtype, .ndim = ndim, .data = data};
    if (ndim) memcpy(it.shape, shape, (size_t)ndim * sizeof *shape);
    if (!shape_bytes(dtype, ndim, it.shape, &it.bytes))
        return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s': byte size overflows", name);
    if (it.bytes && !data)
        return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s': data is NULL", name);
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return vr_fail(VR_ERR_ARG, ST_DOMAIN, "tensor '%s' added twice", name);
    st_item *items = grow(w->items, &w->cap, w->count, sizeof *w->items);
    if (items) w->items = items;
    if (!items || !(it.name = strdup(name)))
        return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot add tensor '%s'", name);
    w->items[w->count++] = it;
    return VR_OK;
}

/* A key added again replaces its value, so one writer can save, say, a new step count
 * with each vr_st_write. */
vr_status vr_st_add_metadata(vr_st_writer *w, const char *key, const char *value)
{
    char *v = strdup(value);
    if (!v) return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot add metadata '%s'", key);
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return VR_OK;
        }
    }
    char *k = strdup(key);
    st_meta *meta = grow(w->meta, &w->meta_cap, w->n_meta, sizeof *w->meta);
    if (meta) w->meta = meta;
    if (!k || !meta) {
        free(k);
        free(v);
        return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot add metadata '%s'", key);
    }
    w->meta[w->n_meta++] = (st_meta){k, v};
    return VR_OK;
}

/* A JSON array of integers printed as integers: cJSON prints doubles with %g, which turns
 * 10^15 into "1e+15", a token strict readers (the Rust reference) refuse for a size. */
static cJSON *uint_array(const uint64_t *v, int n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        char digits[24];
        snprintf(digits, sizeof digits, "%" PRIu64, v[i]);
        cJSON *x = cJSON_CreateRaw(digits);
        if (!x || !cJSON_AddItemToArray(arr, x)) {
            cJSON_Delete(x);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* Adds item to obj under key, taking ownership of item either way; 0 on failure. */
static int add_owned(cJSON *obj, const char *key, cJSON *item)
{
    if (item && cJSON_AddItemToObject(obj, key, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes so that the data section
 * starts 8-aligned in the file (as the reference writer does). */
static vr_status build_header(const vr_st_writer *w, char **out, size_t *out_len)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && w->n_meta) {
        cJSON *meta = cJSON_CreateObject();
        for (int i = 0; meta && i < w->n_meta; i++)
            if (!cJSON_AddStringToObject(meta, w->meta[i].key, w->meta[i].value)) {
                cJSON_Delete(meta);
                meta = NULL;
            }
        ok = add_owned(root, ST_METADATA_KEY, meta);
    }
    uint64_t offset = 0;
    for (int i = 0; ok && i < w->count; i++) {
        const st_item *it = &w->items[i];
        uint64_t dims[ST_MAX_DIMS], range[2] = {offset, offset + it->bytes};
        for (int d = 0; d < it->ndim; d++) dims[d] = (uint64_t)it->shape[d];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddStringToObject(e, "dtype", vr_dtype_name(it->dtype)) &&
             add_owned(e, "shape", uint_array(dims, it->ndim)) &&
             add_owned(e, "data_offsets", uint_array(range, 2));
        ok = ok ? add_owned(root, it->name, e) : (cJSON_Delete(e), 0);
        offset += it->bytes;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot build the header");

    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    *out = malloc(padded ? padded : 1);
    if (*out) {
        memcpy(*out, json, len);
        memset(*out + len, ' ', padded - len);
    }
    cJSON_free(json);
    if (!*out) return vr_fail(VR_ERR_NOMEM, ST_DOMAIN, "cannot build the header");
    *out_len = padded;
    return VR_OK;
}

vr_status vr_st_write(vr_st_writer *w, const char *path)
{
    char *header = NULL;
    size_t header_len = 0;
    VR_TRY(build_header(w, &header, &header_len));
    vr_atomic_file a;
    vr_status s = vr_atomic_open(&a, path, ST_DOMAIN);
    if (s == VR_OK) {
        unsigned char len_le[8];
        for (int i = 0; i < 8; i++) len_le[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
        fwrite(len_le, 1, 8, a.f);
        fwrite(header, 1, header_len, a.f);
        for (int i = 0; i < w->count; i++)
            if (w->items[i].bytes) fwrite(w->items[i].data, 1, w->items[i].bytes, a.f);
        s = vr_atomic_commit(&a); /* checks every write through the stream's error flag */
    }
    free(header);
    return s;
}
