/* vicreg index build: an embedding set (OUT.npy with its .csv rows and .json settings) into one
 * index file that vicreg search answers from (include/vicreg/index.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vicreg/embedding_set.h"
#include "vicreg/index.h"

static const char *index_help =
    "usage: vicreg index build EMBEDDINGS.npy -o INDEX [--metric ip|l2] [--factory STR]\n"
    "                          [--nprobe N] [--ef-search N]\n"
    "\n"
    "Builds a search index over an embedding set: EMBEDDINGS.npy (N, D) float32 and, when they\n"
    "are beside it, EMBEDDINGS.csv (the file, window and label of each row) and EMBEDDINGS.json\n"
    "(how the rows were embedded). INDEX is one file holding the vectors or the FAISS index,\n"
    "the rows and the settings; vicreg search answers from it.\n"
    "  --metric ip|l2    inner product, higher is better (the default; the cosine of normalised\n"
    "                    rows), or squared Euclidean distance, lower is better\n"
    "  --factory STR     Flat (the default): exact search on matrix products. In a build with\n"
    "                    FAISS, any FAISS factory string for approximate search of large sets,\n"
    "                    e.g. IVF256,Flat  HNSW32  IVF256,PQ16 (IVF and PQ kinds are trained on\n"
    "                    the set itself: give it at least 39 rows per list or centroid)\n"
    "  --nprobe N        IVF kinds: lists a query visits unless vicreg search says otherwise\n"
    "                    (FAISS's default 1); more is slower and closer to exact\n"
    "  --ef-search N     HNSW kinds: candidates a query keeps (FAISS's default 16)\n";

/* A whole number > 0 from an option's value, or -1 after reporting a usage error. */
static int positive(const char *cmd, const char *opt, const char *v)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 1 || x > 1 << 30) return vr_cli_usage(cmd, "%s %s: expected a whole number >= 1", opt, v), -1;
    return (int)x;
}

int vr_cmd_index(int argc, char **argv)
{
    const char *cmd = "index", *in = NULL, *out = NULL;
    vr_index_config cfg = vr_index_defaults();
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) return fputs(index_help, stdout), VR_EXIT_OK;
    if (argc < 2 || strcmp(argv[1], "build")) return vr_cli_usage(cmd, "the only action is 'build'");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(index_help, stdout), VR_EXIT_OK;
        int takes = !strcmp(a, "-o") || !strcmp(a, "--metric") || !strcmp(a, "--factory") || !strcmp(a, "--nprobe") ||
                    !strcmp(a, "--ef-search");
        if (takes && i + 1 >= argc) return vr_cli_usage(cmd, "%s needs a value", a);
        if (!strcmp(a, "-o")) {
            out = argv[++i];
        } else if (!strcmp(a, "--metric")) {
            if (vr_metric_parse(argv[++i], &cfg.metric) != VR_OK) return vr_cli_usage(cmd, "--metric %s: expected ip or l2", argv[i]);
        } else if (!strcmp(a, "--factory")) {
            cfg.factory = argv[++i];
        } else if (!strcmp(a, "--nprobe") || !strcmp(a, "--ef-search")) {
            int v = positive(cmd, a, argv[++i]);
            if (v < 0) return VR_EXIT_USAGE;
            *(a[2] == 'n' ? &cfg.nprobe : &cfg.ef_search) = v;
        } else if (a[0] == '-' && a[1]) {
            return vr_cli_usage(cmd, "unknown option '%s'", a);
        } else if (in) {
            return vr_cli_usage(cmd, "one embedding set only ('%s' and '%s')", in, a);
        } else {
            in = a;
        }
    }
    if (!in || !out) return vr_cli_usage(cmd, "give an embedding set EMBEDDINGS.npy and -o INDEX");

    double t0 = vr_cli_now();
    vr_embedding_set set;
    if (vr_embedding_set_read(in, 0, &set) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, cmd);
    vr_index *ix = NULL;
    vr_status s = vr_index_build(set.x, set.n, set.d, set.rows, set.meta_json, &cfg, &ix);
    if (s == VR_OK) s = vr_index_save(ix, out);
    if (s == VR_OK)
        printf("%s: %lld x %d vectors, %s, %s%s%s -> %s (%.1f s)\n", in, (long long)set.n, set.d,
               vr_metric_name(cfg.metric), !strcmp(vr_index_kind(ix), "flat") ? "flat (exact)" : vr_index_kind(ix),
               set.rows ? ", with rows" : ", no rows (answers name ids only)", set.meta_json ? " and settings" : "", out,
               vr_cli_now() - t0);
    vr_index_free(ix);
    vr_embedding_set_free(&set);
    if (s == VR_OK) return VR_EXIT_OK;
    return vr_cli_fail(s == VR_ERR_ARG || s == VR_ERR_UNSUPPORTED ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, cmd);
}
