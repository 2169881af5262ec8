/* The audio inputs of a command (vicreg embed): files, folders walked recursively and CSV
 * manifests, listed in the order given, each file with its label. */
#include <dirent.h>
#include <errno.h>
#include <sndfile.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"
#include "vicreg/audio_dataset.h"

/* Symbolic links may loop; no real collection nests deeper. */
#define MAX_DEPTH 64
#define MAX_EXTENSIONS 64

/* The file extensions a folder walk takes: those of libsndfile's formats and their usual
 * aliases, so that manifests, notes and other files beside the audio are left alone. */
typedef struct extensions {
    char name[MAX_EXTENSIONS][16];
    int n;
} extensions;

static void add_extension(extensions *x, const char *e)
{
    if (x->n < MAX_EXTENSIONS && e && e[0]) snprintf(x->name[x->n++], sizeof x->name[0], "%s", e);
}

static void audio_extensions(extensions *x)
{
    x->n = 0;
    int count = 0;
    sf_command(NULL, SFC_GET_FORMAT_MAJOR_COUNT, &count, sizeof count);
    for (int i = 0; i < count; i++) {
        SF_FORMAT_INFO info = {.format = i};
        if (sf_command(NULL, SFC_GET_FORMAT_MAJOR, &info, sizeof info) == 0) add_extension(x, info.extension);
    }
    static const char *const aliases[] = {"wave", "aif", "ogg", "opus", "mp3"};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) add_extension(x, aliases[i]);
}

static int has_extension(const extensions *x, const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (int i = 0; i < x->n; i++)
        if (!strcasecmp(dot + 1, x->name[i])) return 1;
    return 0;
}

static vr_status push(vr_cli_inputs *in, const char *path, const char *label)
{
    if (in->n == in->cap) {
        int cap = in->cap ? 2 * in->cap : 256;
        vr_cli_input *p = realloc(in->items, (size_t)cap * sizeof *p);
        if (!p) return vr_fail(VR_ERR_NOMEM, "inputs", "cannot list %d files", cap);
        in->items = p;
        in->cap = cap;
    }
    vr_cli_input *it = &in->items[in->n];
    it->path = strdup(path);
    it->label = strdup(label ? label : "");
    if (!it->path || !it->label) {
        free(it->path);
        free(it->label);
        return vr_fail(VR_ERR_NOMEM, "inputs", "cannot copy a path");
    }
    in->n++;
    return VR_OK;
}

static int not_hidden(const struct dirent *e) { return e->d_name[0] != '.'; }

/* Bytewise, so the order is the same in any locale. */
static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

/* The audio files under dir, sorted bytewise at each level; label: the class folder (the first
 * level under the folder given) or the label handed down. */
static vr_status walk(const char *dir, const char *label, int depth, const extensions *x, vr_cli_inputs *in)
{
    if (depth > MAX_DEPTH) return vr_fail(VR_ERR_ARG, "inputs", "%s: folders nested deeper than %d", dir, MAX_DEPTH);
    struct dirent **all;
    int count = scandir(dir, &all, not_hidden, by_name);
    if (count < 0)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, "inputs", "%s: cannot list: %s", dir,
                       strerror(errno));
    vr_status s = VR_OK;
    for (int i = 0; i < count; i++) {
        char path[4096];
        struct stat st;
        int len = snprintf(path, sizeof path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", all[i]->d_name);
        if (s == VR_OK && (len < 0 || (size_t)len >= sizeof path))
            s = vr_fail(VR_ERR_ARG, "inputs", "%s/%s: path too long", dir, all[i]->d_name);
        if (s == VR_OK && stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode)) s = walk(path, depth == 0 ? all[i]->d_name : label, depth + 1, x, in);
            else if (S_ISREG(st.st_mode) && has_extension(x, all[i]->d_name)) s = push(in, path, label);
        }
        free(all[i]);
    }
    free(all);
    return s;
}

static int is_manifest(const char *path)
{
    size_t n = strlen(path);
    return n > 4 && !strcasecmp(path + n - 4, ".csv");
}

static vr_status manifest(const char *path, const char *select, vr_cli_inputs *in)
{
    vr_audio_manifest_config mc;
    vr_audio_manifest_labels(&mc, select);
    vr_audio_list list;
    VR_TRY(vr_audio_list_manifest(path, &mc, &list));
    vr_status s = VR_OK;
    for (int i = 0; i < list.n && s == VR_OK; i++)
        s = push(in, list.paths[i], list.labels[i] >= 0 ? list.class_names[list.labels[i]] : "");
    vr_audio_list_free(&list);
    return s;
}

vr_status vr_cli_list_inputs(char *const *args, int nargs, const char *select, vr_cli_inputs *in)
{
    memset(in, 0, sizeof *in);
    extensions x;
    audio_extensions(&x);
    vr_status s = VR_OK;
    for (int a = 0; a < nargs && s == VR_OK; a++) {
        struct stat st;
        int is_dir = stat(args[a], &st) == 0 && S_ISDIR(st.st_mode);
        if (is_dir) {
            int before = in->n;
            s = walk(args[a], "", 0, &x, in);
            if (s == VR_OK && in->n == before)
                s = vr_fail(VR_ERR_NOT_FOUND, "inputs", "%s: no audio files in this folder", args[a]);
        } else if (is_manifest(args[a])) {
            s = manifest(args[a], select, in);
        } else {
            s = push(in, args[a], ""); /* read later: a file that cannot be read is skipped then */
        }
    }
    if (s != VR_OK) vr_cli_inputs_free(in);
    return s;
}

void vr_cli_inputs_free(vr_cli_inputs *in)
{
    for (int i = 0; i < in->n; i++) {
        free(in->items[i].path);
        free(in->items[i].label);
    }
    free(in->items);
    memset(in, 0, sizeof *in);
}
