/* Images per second of the image loader's work on one core: read a JPEG file, decode it, and
 * make its two 224 x 224 VICReg views (shared/SPEC.md's default configuration, view 1 and
 * view 2, float CHW out), as tests/bench/image_views_peer.py times torchvision + PIL doing the
 * same. Built by meson; from the repository root, after making the set with
 * tests/bench/make_image_bench_set.py:
 *
 *   build/tests/bench/image_views_bench [DIR=data/image_bench] [SECONDS=4]
 *
 * Every *.jpg of DIR, in name order, over and over for about SECONDS after one untimed pass;
 * the page cache holds the files, so this is decode + views, not disk. Prints a RESULT line of
 * JSON: images_per_s (wall clock), images_per_cpu_s (the process's CPU time: the figure per
 * core that other work on a shared machine disturbs least), images, seconds, cpu_seconds. One
 * thread: the loader's threads each do exactly this. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vicreg/image_views.h"

static double clock_s(clockid_t which)
{
    struct timespec t;
    clock_gettime(which, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The paths of DIR's *.jpg files, sorted; NULL when none. */
static char **list_jpegs(const char *dir, int *n)
{
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    char **paths = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".jpg") != 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(paths, (size_t)cap * sizeof *paths);
            if (!grown) break;
            paths = grown;
        }
        size_t size = strlen(dir) + len + 2;
        paths[*n] = malloc(size);
        if (!paths[*n]) break;
        snprintf(paths[*n], size, "%s/%s", dir, e->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(paths, (size_t)*n, sizeof *paths, cmp_str);
    return paths;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "data/image_bench";
    double seconds = argc > 2 ? atof(argv[2]) : 4.0;
    int n = 0;
    char **paths = list_jpegs(dir, &n);
    if (!paths || n == 0 || !(seconds > 0)) {
        fprintf(stderr, "image_views_bench: no *.jpg in %s (make the set with tests/bench/make_image_bench_set.py)\n"
                        "usage: image_views_bench [DIR] [SECONDS > 0]\n", dir);
        return 2;
    }
    vr_image_views_config c;
    vr_image_views_config_default(&c);
    vr_image_views_work *w = NULL;
    float *out0 = malloc(3 * 224 * 224 * sizeof(float)), *out1 = malloc(3 * 224 * 224 * sizeof(float));
    if (!out0 || !out1 || vr_image_views_work_create(&w) != VR_OK) {
        fprintf(stderr, "image_views_bench: out of memory\n");
        return 1;
    }
    uint64_t index = 0;
    double sum = 0; /* kept, so no work can be optimised away */
    for (int i = 0; i < n; i++, index++) {
        if (vr_image_views_pair_file(&c, w, paths[i], 0, index, out0, out1, NULL) != VR_OK) {
            fprintf(stderr, "image_views_bench: %s\n", vr_last_error());
            return 1;
        }
    }
    int images = 0;
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), elapsed = 0;
    while (elapsed < seconds) {
        for (int i = 0; i < n; i++, index++, images++) {
            if (vr_image_views_pair_file(&c, w, paths[i], 0, index, out0, out1, NULL) != VR_OK) {
                fprintf(stderr, "image_views_bench: %s\n", vr_last_error());
                return 1;
            }
            sum += out0[images % 1000] + out1[images % 1000];
        }
        elapsed = clock_s(CLOCK_MONOTONIC) - t0;
    }
    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("%d images of %s (%d files), two 224x224 views each: %.1f images/s, %.1f per CPU second (checksum %.3f)\n",
           images, dir, n, images / elapsed, images / cpu, sum);
    printf("RESULT {\"images_per_s\": %.2f, \"images_per_cpu_s\": %.2f, \"images\": %d, \"seconds\": %.3f, "
           "\"cpu_seconds\": %.3f}\n", images / elapsed, images / cpu, images, elapsed, cpu);
    vr_image_views_work_free(w);
    free(out0);
    free(out1);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    return 0;
}
