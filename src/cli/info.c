/* vicreg info: what a checkpoint holds — tensors, parameter counts, metadata, the recipe. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vicreg/safetensors.h"

static const char *info_help =
    "usage: vicreg info CHECKPOINT [--tensors]\n"
    "\n"
    "Prints a checkpoint's metadata (format, step, optimizer), its tensor and parameter counts\n"
    "per prefix (backbone., projector., optimizer.), and the recipe it was trained with.\n"
    "  --tensors   also list every tensor with its dtype and shape\n";

typedef struct group {
    char prefix[64];
    int tensors;
    long long elements;
} group;

/* "backbone.layer1.0.conv1.weight" -> "backbone."; "optimizer.exp_avg.x" -> "optimizer.exp_avg." */
static void prefix_of(const char *name, char *out, size_t len)
{
    const char *dot = strchr(name, '.');
    if (dot && !strncmp(name, "optimizer.", 10)) dot = strchr(dot + 1, '.');
    size_t n = dot ? (size_t)(dot - name) + 1 : strlen(name);
    if (n >= len) n = len - 1;
    memcpy(out, name, n);
    out[n] = '\0';
}

int vr_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return fputs(info_help, stdout), VR_EXIT_OK;
        if (!strcmp(argv[i], "--tensors")) list = 1;
        else if (argv[i][0] == '-') return vr_cli_usage("info", "unknown option '%s'", argv[i]);
        else if (path) return vr_cli_usage("info", "one checkpoint only");
        else path = argv[i];
    }
    if (!path) return vr_cli_usage("info", "which checkpoint?");
    vr_safetensors *st;
    if (vr_st_open(path, &st) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "info");

    static const char *meta[] = {"format", "step", "optimizer", "optimizer_step", "rng"};
    printf("%s\n", path);
    for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) {
        const char *v = vr_st_metadata(st, meta[i]);
        if (v) printf("  %-15s %s\n", meta[i], v);
    }
    group groups[16] = {0};
    int ngroups = 0;
    long long params = 0, stats = 0;
    int count = vr_st_count(st);
    for (int i = 0; i < count; i++) {
        const vr_st_entry *e = vr_st_entry_at(st, i);
        long long n = 1;
        for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
        char prefix[64];
        prefix_of(e->name, prefix, sizeof prefix);
        int g = 0;
        while (g < ngroups && strcmp(groups[g].prefix, prefix)) g++;
        if (g == ngroups && ngroups < 16) snprintf(groups[ngroups++].prefix, sizeof groups[0].prefix, "%s", prefix);
        if (g < ngroups) {
            groups[g].tensors++;
            groups[g].elements += n;
        }
        if (!strncmp(e->name, "optimizer.", 10) || e->dtype != VR_DTYPE_F32) continue;
        size_t len = strlen(e->name);
        int running = (len > 13 && !strcmp(e->name + len - 13, ".running_mean")) ||
                      (len > 12 && !strcmp(e->name + len - 12, ".running_var"));
        *(running ? &stats : &params) += n;
    }
    printf("  %-15s %d\n", "tensors", count);
    for (int g = 0; g < ngroups; g++)
        printf("    %-30s %5d tensors %12lld values\n", groups[g].prefix, groups[g].tensors, groups[g].elements);
    printf("  %-15s %lld (%.2f M)\n", "parameters", params, params / 1e6);
    printf("  %-15s %lld (BatchNorm running statistics)\n", "buffers", stats);
    if (list) {
        for (int i = 0; i < count; i++) {
            const vr_st_entry *e = vr_st_entry_at(st, i);
            printf("    %-60s %-4s [", e->name, vr_dtype_name(e->dtype));
            for (int d = 0; d < e->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)e->shape[d]);
            printf("]\n");
        }
    }
    const char *recipe = vr_st_metadata(st, "recipe");
    if (recipe) printf("  recipe:\n%s", recipe);
    else printf("  recipe: none stored\n");
    vr_st_close(st);
    return VR_EXIT_OK;
}
