/* Audio file lists: building and freeing them, and the class-per-folder layout (see
 * include/vicreg/audio_dataset.h). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "list_build.h"

char *vr_path_join(const char *dir, const char *name)
{
    if (name[0] == '/' || !dir || !dir[0]) return strdup(name);
    size_t a = strlen(dir), b = strlen(name);
    int slash = dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

vr_status vr_audio_list_push(vr_audio_list *list, int *capacity, const char *path, int label,
                             const char *owner)
{
    if (list->n == *capacity) {
        int cap = *capacity ? 2 * *capacity : 64;
        char **paths = realloc(list->paths, (size_t)cap * sizeof *paths);
        if (paths) list->paths = paths;
        int *labels = paths ? realloc(list->labels, (size_t)cap * sizeof *labels) : NULL;
        if (labels) list->labels = labels;
        if (!paths || !labels) return vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot list %d files", owner, cap);
        *capacity = cap;
    }
    char *copy = strdup(path);
    if (!copy) return vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot copy a path", owner);
    list->paths[list->n] = copy;
    list->labels[list->n] = label;
    list->n++;
    return VR_OK;
}

void vr_audio_list_free(vr_audio_list *list)
{
    for (int i = 0; i < list->n; i++) free(list->paths[i]);
    for (int k = 0; k < list->nclasses; k++) free(list->class_names[k]);
    free(list->paths);
    free(list->labels);
    free(list->class_names);
    memset(list, 0, sizeof *list);
}

static int not_hidden(const struct dirent *e) { return e->d_name[0] != '.'; }

/* Bytewise, so the order (and with it every label) is the same in any locale. */
static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* The sorted, non-hidden entries of dir that are directories (want_dirs) or regular files,
 * following symbolic links. *names receives n new strings. */
static vr_status entries(const char *dir, int want_dirs, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    struct dirent **all;
    int count = scandir(dir, &all, not_hidden, by_name);
    if (count < 0)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, "audio", "%s: cannot list: %s",
                       dir, strerror(errno));
    vr_status status = VR_OK;
    char **out = calloc((size_t)count + 1, sizeof *out);
    if (!out) status = vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot list %d entries", dir, count);
    for (int i = 0; i < count; i++) {
        if (status == VR_OK) {
            char *full = vr_path_join(dir, all[i]->d_name);
            struct stat st;
            if (!full) status = vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot build a path", dir);
            else if (stat(full, &st) == 0 && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode))) {
                out[*n] = strdup(all[i]->d_name);
                if (!out[*n]) status = vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot copy a name", dir);
                else (*n)++;
            }
            free(full);
        }
        free(all[i]);
    }
    free(all);
    if (status != VR_OK) {
        for (int i = 0; out && i < *n; i++) free(out[i]);
        free(out);
        *n = 0;
        return status;
    }
    *names = out;
    return VR_OK;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

vr_status vr_audio_list_folder(const char *root, vr_audio_list *list)
{
    memset(list, 0, sizeof *list);
    char **classes;
    int nclasses;
    VR_TRY(entries(root, 1, &classes, &nclasses));
    if (nclasses == 0) {
        free_names(classes, 0);
        return vr_fail(VR_ERR_NOT_FOUND, "audio", "%s: no class folders", root);
    }
    list->class_names = classes;
    list->nclasses = nclasses;
    int capacity = 0;
    vr_status status = VR_OK;
    for (int k = 0; k < nclasses && status == VR_OK; k++) {
        char *dir = vr_path_join(root, classes[k]);
        char **files = NULL;
        int nfiles = 0;
        if (!dir) status = vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot build a path", root);
        else status = entries(dir, 0, &files, &nfiles);
        for (int i = 0; i < nfiles && status == VR_OK; i++) {
            char *path = vr_path_join(dir, files[i]);
            status = path ? vr_audio_list_push(list, &capacity, path, k, root)
                          : vr_fail(VR_ERR_NOMEM, "audio", "%s: cannot build a path", root);
            free(path);
        }
        free_names(files, nfiles);
        free(dir);
    }
    if (status == VR_OK && list->n == 0)
        status = vr_fail(VR_ERR_NOT_FOUND, "audio", "%s: no files in its %d class folders", root, nclasses);
    if (status != VR_OK) vr_audio_list_free(list);
    return status;
}
