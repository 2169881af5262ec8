/* What the commands share: error reporting, clocks, --set collection, opening a model. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "vicreg/atomic_file.h"

int vr_cli_fail(int code, const char *context)
{
    fprintf(stderr, "vicreg: %s: %s\n", context, vr_last_error());
    return code;
}

int vr_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vicreg %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see: vicreg %s --help)\n", cmd);
    va_end(ap);
    return VR_EXIT_USAGE;
}

double vr_cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void vr_cli_duration(char *buf, size_t len, double seconds)
{
    long s = seconds > 0 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600) snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, len, "%lds", s);
}

int vr_cli_take_set(const char *cmd, int argc, char **argv, int *i, const char **sets, int *n_sets)
{
    const char *a = argv[*i];
    const char *value = NULL;
    if (!strcmp(a, "--set")) {
        if (*i + 1 >= argc) return vr_cli_usage(cmd, "--set needs section.key=value"), -1;
        value = argv[++*i];
    } else if (!strncmp(a, "--set=", 6)) {
        value = a + 6;
    } else {
        return 0;
    }
    if (*n_sets >= VR_CLI_MAX_SETS) return vr_cli_usage(cmd, "more than %d --set options", VR_CLI_MAX_SETS), -1;
    sets[(*n_sets)++] = value;
    return 1;
}

vr_status vr_cli_open_model(const vr_recipe *r, vr_backend **be, vr_model *m)
{
    memset(m, 0, sizeof *m);
    if (r->threads > 0) omp_set_num_threads(r->threads);
    VR_TRY(vr_backend_create(r->backend, r->threads, be));
    vr_branch_config bc[VR_MAX_BRANCHES];
    int nb = vr_recipe_branches(r, bc);
    vr_status s = vr_model_create(m, *be, nb, bc);
    if (s != VR_OK) {
        vr_model_free(m);
        vr_backend_destroy(*be);
        *be = NULL;
    }
    return s;
}

vr_status vr_cli_write_json(const char *path, const cJSON *j)
{
    char *text = cJSON_PrintUnformatted(j);
    if (!text) return vr_fail(VR_ERR_NOMEM, "eval", "cannot format %s", path);
    vr_atomic_file a;
    vr_status s = vr_atomic_open(&a, path, "eval");
    if (s == VR_OK) {
        fputs(text, a.f);
        fputc('\n', a.f);
        s = vr_atomic_commit(&a);
    }
    cJSON_free(text);
    return s;
}
