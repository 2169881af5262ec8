/* CSV manifests of labelled audio files (ESC-50's esc50.csv, the project's labels.csv): libcsv
 * parses the records in strict mode, then the configured columns give paths, labels and the
 * row selection (see include/vicreg/audio_dataset.h). */
#include <csv.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list_build.h"

/* A guard against reading an absurd file as a manifest: ESC-50's is 160 KB. */
#define MANIFEST_MAX_BYTES ((long)64 << 20)
/* Integer labels above this are taken for names, not class indices. */
#define MAX_INT_LABEL 1000000

/* The parsed records: record r has fields cells[start[r] .. start[r + 1]). */
typedef struct table {
    char **cells;
    size_t ncells, cells_cap;
    size_t *start;
    int nrows, rows_cap;
    int nomem;
} table;

static void on_field(void *s, size_t len, void *user)
{
    table *t = user;
    if (t->nomem) return;
    if (t->ncells == t->cells_cap) {
        size_t cap = t->cells_cap ? 2 * t->cells_cap : 256;
        char **c = realloc(t->cells, cap * sizeof *c);
        if (!c) {
            t->nomem = 1;
            return;
        }
        t->cells = c;
        t->cells_cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        t->nomem = 1;
        return;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->cells[t->ncells++] = copy;
}

static void on_record(int c, void *user)
{
    (void)c;
    table *t = user;
    if (t->nomem) return;
    if (t->nrows + 2 > t->rows_cap) {
        int cap = t->rows_cap ? 2 * t->rows_cap : 256;
        size_t *s = realloc(t->start, (size_t)cap * sizeof *s);
        if (!s) {
            t->nomem = 1;
            return;
        }
        t->start = s;
        t->rows_cap = cap;
    }
    if (t->nrows == 0) t->start[0] = 0;
    t->start[++t->nrows] = t->ncells;
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->ncells; i++) free(t->cells[i]);
    free(t->cells);
    free(t->start);
}

static int row_len(const table *t, int r) { return (int)(t->start[r + 1] - t->start[r]); }
static const char *cell(const table *t, int r, int col) { return t->cells[t->start[r] + (size_t)col]; }

static vr_status read_all(const char *path, char **text, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, "manifest", "%s: cannot open: %s",
                       path, strerror(errno));
    vr_status status = VR_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
        status = vr_fail(VR_ERR_IO, "manifest", "%s: cannot seek: %s", path, strerror(errno));
    else if (size > MANIFEST_MAX_BYTES)
        status = vr_fail(VR_ERR_FORMAT, "manifest", "%s: %ld bytes, more than the %ld a manifest may have",
                         path, size, MANIFEST_MAX_BYTES);
    *text = status == VR_OK ? malloc((size_t)size + 1) : NULL;
    if (status == VR_OK && !*text) status = vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot hold %ld bytes", path, size);
    if (status == VR_OK && fread(*text, 1, (size_t)size, f) != (size_t)size)
        status = vr_fail(VR_ERR_IO, "manifest", "%s: short read", path);
    fclose(f);
    if (status != VR_OK) {
        free(*text);
        *text = NULL;
        return status;
    }
    *len = size;
    return VR_OK;
}

static vr_status parse(const char *path, table *t)
{
    memset(t, 0, sizeof *t);
    char *text = NULL;
    long len = 0;
    VR_TRY(read_all(path, &text, &len));
    /* a UTF-8 byte order mark (spreadsheet exports) is not part of the first column's name */
    size_t skip = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    struct csv_parser p;
    vr_status status = VR_OK;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        free(text);
        return vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot start the CSV parser", path);
    }
    size_t body = (size_t)len - skip;
    size_t done = csv_parse(&p, text + skip, body, on_field, on_record, t);
    if (done != body || csv_fini(&p, on_field, on_record, t) != 0 || csv_error(&p) != CSV_SUCCESS)
        status = vr_fail(csv_error(&p) == CSV_ENOMEM ? VR_ERR_NOMEM : VR_ERR_FORMAT, "manifest",
                         "%s: malformed CSV at byte %zu (after record %d): %s", path, done + skip,
                         t->nrows, csv_strerror(csv_error(&p)));
    else if (t->nomem)
        status = vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot hold its records", path);
    else if (t->nrows < 1)
        status = vr_fail(VR_ERR_FORMAT, "manifest", "%s: no header row", path);
    csv_free(&p);
    free(text);
    if (status != VR_OK) table_free(t);
    return status;
}

/* The index of column `name` in the header; VR_ERR_FORMAT listing the columns there are. */
static vr_status find_column(const table *t, const char *path, const char *name, int *col)
{
    int n = row_len(t, 0);
    for (int c = 0; c < n; c++)
        if (strcmp(cell(t, 0, c), name) == 0) {
            *col = c;
            return VR_OK;
        }
    char have[256] = "";
    for (int c = 0; c < n; c++) {
        size_t used = strlen(have);
        snprintf(have + used, sizeof have - used, "%s%s", c ? ", " : "", cell(t, 0, c));
    }
    return vr_fail(VR_ERR_FORMAT, "manifest", "%s: no column '%s' in the header (columns: %s)", path, name, have);
}

/* 1 when s is a decimal integer in 0..MAX_INT_LABEL. */
static int small_int(const char *s, int *v)
{
    if (!*s) return 0;
    long x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        x = 10 * x + (*s - '0');
        if (x > MAX_INT_LABEL) return 0;
    }
    *v = (int)x;
    return 1;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Decides the classes from every row's label, as the header of audio_dataset.h says; *by_int
 * tells which way. */
static vr_status make_classes(const table *t, int col, const char *path, vr_audio_list *list,
                              int *by_int)
{
    int rows = t->nrows - 1, all_int = 1, max = -1, v;
    for (int r = 1; r <= rows && all_int; r++) {
        all_int = small_int(cell(t, r, col), &v);
        if (all_int && v > max) max = v;
    }
    *by_int = all_int;
    if (all_int) {
        list->class_names = calloc((size_t)max + 1, sizeof(char *));
        if (!list->class_names) return vr_fail(VR_ERR_NOMEM, "manifest", "%s: %d classes", path, max + 1);
        list->nclasses = max + 1;
        for (int k = 0; k <= max; k++) {
            char name[16];
            snprintf(name, sizeof name, "%d", k);
            if (!(list->class_names[k] = strdup(name)))
                return vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot name a class", path);
        }
        return VR_OK;
    }
    const char **sorted = malloc((size_t)rows * sizeof *sorted);
    list->class_names = calloc((size_t)rows, sizeof(char *));
    if (!sorted || !list->class_names) {
        free(sorted);
        return vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot sort %d labels", path, rows);
    }
    for (int r = 1; r <= rows; r++) sorted[r - 1] = cell(t, r, col);
    qsort(sorted, (size_t)rows, sizeof *sorted, by_string);
    vr_status status = VR_OK;
    for (int i = 0; i < rows && status == VR_OK; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0) continue;
        if (!(list->class_names[list->nclasses] = strdup(sorted[i])))
            status = vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot name a class", path);
        else list->nclasses++;
    }
    free(sorted);
    return status;
}

static int label_of(const vr_audio_list *list, int by_int, const char *value)
{
    int v;
    if (by_int) return small_int(value, &v) ? v : -1;
    const char *key = value;
    char **hit = bsearch(&key, list->class_names, (size_t)list->nclasses, sizeof(char *), by_string);
    return hit ? (int)(hit - list->class_names) : -1;
}

/* 1 when value is one of the ',' or '|' separated tokens of `select` (spaces around a token
 * do not count). */
static int selected(const char *select, const char *value)
{
    size_t vlen = strlen(value);
    const char *s = select;
    while (*s) {
        while (*s == ' ' || *s == '\t') s++;
        const char *end = s + strcspn(s, ",|");
        const char *last = end;
        while (last > s && (last[-1] == ' ' || last[-1] == '\t')) last--;
        if ((size_t)(last - s) == vlen && memcmp(s, value, vlen) == 0) return 1;
        s = *end ? end + 1 : end;
    }
    return 0;
}

static int given(const char *s) { return s && s[0]; }

void vr_audio_manifest_esc50(vr_audio_manifest_config *m, const char *folds, const char *audio_root)
{
    *m = (vr_audio_manifest_config){.path_column = "filename", .label_column = "target",
                                    .select_column = "fold", .select = folds, .audio_root = audio_root};
}

void vr_audio_manifest_labels(vr_audio_manifest_config *m, const char *split)
{
    *m = (vr_audio_manifest_config){.path_column = "path", .label_column = "label",
                                    .select_column = given(split) ? "split" : NULL, .select = split};
}

static vr_status list_rows(const table *t, const char *path, const vr_audio_manifest_config *m,
                           vr_audio_list *list)
{
    int path_col, label_col, select_col = -1, width = row_len(t, 0);
    VR_TRY(find_column(t, path, m->path_column, &path_col));
    VR_TRY(find_column(t, path, m->label_column, &label_col));
    int selecting = given(m->select_column) && given(m->select);
    if (selecting) VR_TRY(find_column(t, path, m->select_column, &select_col));
    for (int r = 1; r < t->nrows; r++) {
        if (row_len(t, r) != width)
            return vr_fail(VR_ERR_FORMAT, "manifest", "%s: record %d has %d fields, the header %d", path,
                           r + 1, row_len(t, r), width);
        int empty_col = !cell(t, r, path_col)[0] ? path_col : !cell(t, r, label_col)[0] ? label_col : -1;
        if (empty_col >= 0)
            return vr_fail(VR_ERR_FORMAT, "manifest", "%s: record %d has an empty %s", path, r + 1,
                           cell(t, 0, empty_col));
    }
    if (t->nrows < 2) return vr_fail(VR_ERR_NOT_FOUND, "manifest", "%s: no records", path);
    int by_int;
    VR_TRY(make_classes(t, label_col, path, list, &by_int));

    char *dir = NULL;
    if (!given(m->audio_root)) {
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup("");
        if (!dir) return vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot build a path", path);
    }
    const char *base = dir ? dir : m->audio_root;
    int capacity = 0;
    vr_status status = VR_OK;
    for (int r = 1; r < t->nrows && status == VR_OK; r++) {
        if (selecting && !selected(m->select, cell(t, r, select_col))) continue;
        char *file = vr_path_join(base, cell(t, r, path_col));
        int label = label_of(list, by_int, cell(t, r, label_col));
        status = file ? vr_audio_list_push(list, &capacity, file, label, path)
                      : vr_fail(VR_ERR_NOMEM, "manifest", "%s: cannot build a path", path);
        free(file);
    }
    free(dir);
    if (status == VR_OK && list->n == 0) /* only a selection can leave nothing */
        status = vr_fail(VR_ERR_NOT_FOUND, "manifest", "%s: no record has %s in {%s}", path,
                         m->select_column, m->select);
    return status;
}

vr_status vr_audio_list_manifest(const char *manifest, const vr_audio_manifest_config *m,
                                 vr_audio_list *list)
{
    memset(list, 0, sizeof *list);
    if (!given(m->path_column) || !given(m->label_column))
        return vr_fail(VR_ERR_ARG, "manifest", "%s: the path and label columns must be named", manifest);
    table t;
    VR_TRY(parse(manifest, &t));
    vr_status status = list_rows(&t, manifest, m, list);
    table_free(&t);
    if (status != VR_OK) vr_audio_list_free(list);
    return status;
}
