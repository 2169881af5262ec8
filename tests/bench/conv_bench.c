/* GFLOP/s of the CPU convolution kernels on the ResNet-18 layers of a 64x64 input, next to the
 * sgemm ceiling of the same threads. Built by meson; from the repository root:
 *
 *   MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 build/tests/bench/conv_bench [batch] [threads]
 *
 * Each figure is the median of 11 timed runs after 2 warm-up runs, then the GFLOP/s of the
 * fastest of them in brackets. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/vicreg.h"

typedef struct layer {
    const char *name;
    int cin, cout, hw, k, s, p;
    int count; /* how many times ResNet-18 runs this shape */
} layer;

static const layer layers[] = {
    {"stem 3-64 7x7/2 @64", 3, 64, 64, 7, 2, 3, 1},
    {"l1 64 3x3 @16", 64, 64, 16, 3, 1, 1, 4},
    {"l2 64-128 3x3/2 @16", 64, 128, 16, 3, 2, 1, 1},
    {"l2 ds 1x1/2 @16", 64, 128, 16, 1, 2, 0, 1},
    {"l2 128 3x3 @8", 128, 128, 8, 3, 1, 1, 3},
    {"l3 128-256 3x3/2 @8", 128, 256, 8, 3, 2, 1, 1},
    {"l3 ds 1x1/2 @8", 128, 256, 8, 1, 2, 0, 1},
    {"l3 256 3x3 @4", 256, 256, 4, 3, 1, 1, 3},
    {"l4 256-512 3x3/2 @4", 256, 512, 4, 3, 2, 1, 1},
    {"l4 ds 1x1/2 @4", 256, 512, 4, 1, 2, 0, 1},
    {"l4 512 3x3 @2", 512, 512, 2, 3, 1, 1, 3},
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { REPS = 11 };

/* Median seconds of one call of kind 0 forward, 1 backward data, 2 backward weight; the
 * fastest run in *best (other processes on a shared machine only ever add time). */
static double time_op(vr_backend *be, const vr_window *d, int kind, float *x, float *w, float *y,
                      float *dy, float *dx, float *dw, double *best)
{
    double t[REPS];
    for (int r = -2; r < REPS; r++) {
        double t0 = omp_get_wtime();
        vr_status s = kind == 0   ? be->conv_forward(be, d, x, w, NULL, y)
                      : kind == 1 ? be->conv_backward_data(be, d, dy, w, dx)
                                  : be->conv_backward_weight(be, d, x, dy, dw, NULL);
        double dt = omp_get_wtime() - t0;
        if (s != VR_OK) {
            fprintf(stderr, "conv: %s\n", vr_last_error());
            exit(1);
        }
        if (r >= 0) t[r] = dt;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    *best = t[0];
    return t[REPS / 2];
}

static double sgemm_ceiling(int threads)
{
    const int n = 2048;
    float *a = vr_alloc(sizeof(float) * n * n), *b = vr_alloc(sizeof(float) * n * n);
    float *c = vr_alloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) {
        a[i] = 1e-3f * (float)(i % 7);
        b[i] = 1e-3f * (float)(i % 5);
    }
    double t[5];
    omp_set_num_threads(threads); /* OpenBLAS (OpenMP build) follows this outside a region */
    for (int r = -1; r < 5; r++) {
        double t0 = omp_get_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        if (r >= 0) t[r] = omp_get_wtime() - t0;
    }
    qsort(t, 5, sizeof t[0], cmp_double);
    vr_free(a);
    vr_free(b);
    vr_free(c);
    return 2.0 * n * n * n / t[2] * 1e-9;
}

int main(int argc, char **argv)
{
    int batch = argc > 1 ? atoi(argv[1]) : 64, threads = argc > 2 ? atoi(argv[2]) : 2;
    printf("sgemm 2048^3 ceiling on %d threads: %.1f GFLOP/s\n", threads, sgemm_ceiling(threads));
    vr_backend *be;
    if (vr_cpu_backend_create(threads, &be) != VR_OK) return 1;
    printf("batch %d, %d threads; per call: median ms, GFLOP/s (GFLOP/s of the fastest)\n",
           batch, threads);
    printf("%-22s %23s %23s %23s\n", "layer", "forward", "backward data", "backward weight");
    double total[3] = {0, 0, 0}, total_best[3] = {0, 0, 0};
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        const layer *l = &layers[i];
        vr_window d;
        int k[2] = {l->k, l->k}, s[2] = {l->s, l->s}, p[2] = {l->p, l->p};
        if (vr_window_init(&d, 2, batch, l->cin, l->cout, l->hw, l->hw, k, s, p) != VR_OK)
            return 1;
        size_t nx = (size_t)batch * l->cin * l->hw * l->hw;
        size_t ny = (size_t)batch * l->cout * d.h_out * d.w_out;
        size_t nw = (size_t)l->cout * l->cin * l->k * l->k;
        float *x = vr_alloc(nx * 4), *dx = vr_alloc(nx * 4), *y = vr_alloc(ny * 4);
        float *dy = vr_alloc(ny * 4), *w = vr_alloc(nw * 4), *dw = vr_alloc(nw * 4);
        vr_rng r;
        vr_rng_seed(&r, i);
        for (size_t j = 0; j < nx; j++) x[j] = vr_rng_range(&r, -1, 1);
        for (size_t j = 0; j < ny; j++) dy[j] = vr_rng_range(&r, -1, 1);
        for (size_t j = 0; j < nw; j++) w[j] = vr_rng_range(&r, -0.1f, 0.1f);
        double flop = 2.0 * ny * l->cin * l->k * l->k;
        printf("%-22s", l->name);
        for (int kind = 0; kind < 3; kind++) {
            double best, sec = time_op(be, &d, kind, x, w, y, dy, dx, dw, &best);
            total[kind] += sec * l->count;
            total_best[kind] += best * l->count;
            printf(" %6.2f %5.1f (%5.1f)", sec * 1e3, flop / sec * 1e-9, flop / best * 1e-9);
        }
        printf("\n");
        vr_free(x);
        vr_free(dx);
        vr_free(y);
        vr_free(dy);
        vr_free(w);
        vr_free(dw);
    }
    printf("ResNet-18 conv total (shapes x count) ms: forward %.1f, backward data %.1f, "
           "backward weight %.1f (fastest runs: %.1f, %.1f, %.1f)\n", total[0] * 1e3,
           total[1] * 1e3, total[2] * 1e3, total_best[0] * 1e3, total_best[1] * 1e3,
           total_best[2] * 1e3);
    vr_backend_destroy(be);
    return 0;
}
