/* Listing an ImageFolder data set: class folders, their image files, what is left out (see
 * include/vicreg/image_folder.h). */
#include "vicreg/image_folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define DOMAIN "image folder"

static const char *const EXTENSIONS[] = {".jpg", ".jpeg", ".png"};

static int is_image_name(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof EXTENSIONS / sizeof EXTENSIONS[0]; i++) {
        size_t e = strlen(EXTENSIONS[i]);
        if (n > e && !strcasecmp(name + n - e, EXTENSIONS[i])) return 1;
    }
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

static int not_hidden(const struct dirent *e) { return e->d_name[0] != '.'; }

/* Bytewise, so the order (and with it every label) is the same in any locale. */
static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

/* 1 for a folder, 0 for a regular file, -1 for anything else; symbolic links followed. The
 * directory entry's type answers without a stat for all but links and unknown types, which
 * matters on a million files. */
static int entry_kind(const char *dir, const struct dirent *e)
{
    if (e->d_type == DT_DIR) return 1;
    if (e->d_type == DT_REG) return 0;
    if (e->d_type != DT_LNK && e->d_type != DT_UNKNOWN) return -1;
    char *full = join(dir, e->d_name);
    struct stat st;
    int kind = full && stat(full, &st) == 0 ? (S_ISDIR(st.st_mode) ? 1 : S_ISREG(st.st_mode) ? 0 : -1) : -1;
    free(full);
    return kind;
}

static vr_status add_skip(vr_image_folder *f, const char *path, const char *reason)
{
    if (f->nskipped == f->skipped_cap) {
        int cap = f->skipped_cap ? 2 * f->skipped_cap : 16;
        vr_image_skip *s = realloc(f->skipped, (size_t)cap * sizeof *s);
        if (!s) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot record a skipped file", f->root ? f->root : "");
        f->skipped = s;
        f->skipped_cap = cap;
    }
    vr_image_skip *s = &f->skipped[f->nskipped];
    s->path = strdup(path);
    s->reason = strdup(reason);
    if (!s->path || !s->reason) {
        free(s->path);
        free(s->reason);
        return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot record a skipped file", f->root ? f->root : "");
    }
    f->nskipped++;
    return VR_OK;
}

/* Records path as skipped with reason "PATH: why". */
static vr_status skip(vr_image_folder *f, const char *path, const char *why)
{
    size_t len = strlen(path) + strlen(why) + 3;
    char *reason = malloc(len);
    if (!reason) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot record a skipped file", f->root);
    snprintf(reason, len, "%s: %s", path, why);
    vr_status s = add_skip(f, path, reason);
    free(reason);
    return s;
}

vr_status vr_image_folder_mark_bad(vr_image_folder *f, int i, const char *reason)
{
    if (f->bad[i]) return VR_OK;
    VR_TRY(add_skip(f, f->paths[i], reason));
    f->bad[i] = 1;
    return VR_OK;
}

static vr_status push(vr_image_folder *f, int *cap, char *path, int label)
{
    if (f->n == *cap) {
        int c = *cap ? 2 * *cap : 256;
        char **paths = realloc(f->paths, (size_t)c * sizeof *paths);
        if (paths) f->paths = paths;
        int *labels = paths ? realloc(f->labels, (size_t)c * sizeof *labels) : NULL;
        if (labels) f->labels = labels;
        if (!paths || !labels) {
            free(path);
            return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot list %d files", f->root, c);
        }
        *cap = c;
    }
    f->paths[f->n] = path;
    f->labels[f->n] = label;
    f->n++;
    return VR_OK;
}

/* The image files of class folder `dir` (label k) appended to f; the rest recorded. */
static vr_status list_class(vr_image_folder *f, const char *dir, int k, int *cap)
{
    struct dirent **all;
    int count = scandir(dir, &all, not_hidden, by_name);
    if (count < 0) return vr_fail(VR_ERR_IO, DOMAIN, "%s: cannot list the class folder: %s", dir, strerror(errno));
    vr_status s = VR_OK;
    int images = 0;
    for (int i = 0; i < count; i++) {
        if (s == VR_OK) {
            char *path = join(dir, all[i]->d_name);
            int kind = path ? entry_kind(dir, all[i]) : -1;
            if (!path) s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot build a path", dir);
            else if (kind == 0 && is_image_name(all[i]->d_name)) {
                s = push(f, cap, path, k);
                path = NULL;
                images++;
            } else {
                s = skip(f, path, kind == 1 ? "a folder inside a class folder (not searched)"
                                  : kind == 0 ? "not a .jpg, .jpeg or .png file" : "not a regular file");
            }
            free(path);
        }
        free(all[i]);
    }
    free(all);
    if (s == VR_OK && images == 0)
        s = vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: empty class folder: no .jpg, .jpeg or .png file in it", dir);
    return s;
}

vr_status vr_image_folder_list(const char *root, vr_image_folder *f)
{
    memset(f, 0, sizeof *f);
    struct stat st;
    if (stat(root, &st) != 0)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, DOMAIN, "%s: %s", root,
                       errno == ENOENT ? "no such folder" : strerror(errno));
    if (!S_ISDIR(st.st_mode)) return vr_fail(VR_ERR_IO, DOMAIN, "%s: not a folder", root);
    f->root = strdup(root);
    if (!f->root) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: out of memory", root);
    struct dirent **all;
    int count = scandir(root, &all, not_hidden, by_name);
    if (count < 0) {
        vr_status s = vr_fail(VR_ERR_IO, DOMAIN, "%s: cannot list: %s", root, strerror(errno));
        vr_image_folder_free(f);
        return s;
    }
    vr_status s = VR_OK;
    int cap = 0;
    f->class_names = calloc((size_t)count + 1, sizeof *f->class_names);
    if (!f->class_names) s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot list %d entries", root, count);
    for (int i = 0; i < count; i++) {
        if (s == VR_OK) {
            int kind = entry_kind(root, all[i]);
            char *path = join(root, all[i]->d_name);
            if (!path) s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot build a path", root);
            else if (kind != 1) s = skip(f, path, "outside every class folder");
            else if (!(f->class_names[f->nclasses] = strdup(all[i]->d_name)))
                s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot copy a name", root);
            else s = list_class(f, path, f->nclasses++, &cap);
            free(path);
        }
        free(all[i]);
    }
    free(all);
    if (s == VR_OK && f->nclasses == 0)
        s = vr_fail(VR_ERR_NOT_FOUND, DOMAIN, "%s: no class folders (expected %s/CLASS/IMAGE.jpg)", root, root);
    if (s == VR_OK && !(f->bad = calloc((size_t)f->n, 1)))
        s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot hold %d flags", root, f->n);
    if (s != VR_OK) vr_image_folder_free(f);
    return s;
}

vr_status vr_image_folder_keep_spread(vr_image_folder *f, int limit)
{
    if (limit <= 0 || limit >= f->n) return VR_OK;
    int n = f->n;
    for (int i = 0; i < limit; i++) {
        int from = (int)((int64_t)i * n / limit); /* increasing, and >= i: moves never overwrite */
        if (from == i) continue;
        free(f->paths[i]);
        f->paths[i] = f->paths[from];
        f->paths[from] = NULL;
        f->labels[i] = f->labels[from];
        f->bad[i] = f->bad[from];
    }
    for (int i = limit; i < n; i++) free(f->paths[i]);
    f->n = limit;
    return VR_OK;
}

void vr_image_folder_free(vr_image_folder *f)
{
    for (int i = 0; i < f->n; i++) free(f->paths[i]);
    for (int k = 0; k < f->nclasses; k++) free(f->class_names[k]);
    for (int i = 0; i < f->nskipped; i++) {
        free(f->skipped[i].path);
        free(f->skipped[i].reason);
    }
    free(f->paths);
    free(f->labels);
    free(f->bad);
    free(f->class_names);
    free(f->skipped);
    free(f->root);
    memset(f, 0, sizeof *f);
}
