/* Queries per second of exact search (include/vicreg/search.h): 100,000 random unit vectors of
 * 512 dimensions, inner product, k = 10, in batches of 1 and of 1,000 queries. Built by meson;
 * from the repository root:
 *
 *   build/tests/bench/search_bench [threads] [seconds per batch size]
 *
 * tests/bench/search_bench.py is the NumPy/PyTorch brute force of the same sizes and
 * tests/bench/compare_search.sh runs the two alternately. Vectors: Gaussian rows scaled to unit
 * norm (seed 1), queries drawn the same way. Each batch size first runs once to warm up, then
 * as many batches as fit in the time given. Prints a RESULT line of JSON. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vicreg/rng.h"
#include "vicreg/search.h"
#include "vicreg/tensor.h"

enum { N = 100000, D = 512, K = 10, MAX_BATCH = 1000 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* rows (n, D) of Gaussian values scaled to unit norm, in parallel streams of the seed */
static void unit_rows(float *x, int64_t n, uint64_t seed)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, seed, (uint64_t)i);
        double s = 0.0;
        for (int j = 0; j < D; j++) {
            x[i * D + j] = vr_rng_normal(&r);
            s += (double)x[i * D + j] * x[i * D + j];
        }
        float inv = (float)(1.0 / sqrt(s));
        for (int j = 0; j < D; j++) x[i * D + j] *= inv;
    }
}

/* queries/s of batches of `batch`: one warm-up batch, then batches for about `seconds` */
static double rate(vr_search *s, const float *q, int batch, double seconds, float *scores, int64_t *ids)
{
    if (vr_search_run(s, q, batch, K, scores, ids) != VR_OK) return -1.0;
    long done = 0;
    double t0 = now(), t;
    do {
        if (vr_search_run(s, q + (size_t)(done * batch % MAX_BATCH) * D, batch, K, scores, ids) != VR_OK) return -1.0;
        done++;
        t = now() - t0;
    } while (t < seconds);
    return (double)done * batch / t;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    if (threads < 1 || !(seconds > 0)) {
        fprintf(stderr, "usage: search_bench [threads >= 1] [seconds > 0]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    float *base = vr_alloc((size_t)N * D * sizeof(float)), *q = vr_alloc((size_t)MAX_BATCH * D * sizeof(float));
    float *scores = vr_alloc((size_t)MAX_BATCH * K * sizeof(float));
    int64_t *ids = vr_alloc((size_t)MAX_BATCH * K * sizeof(int64_t));
    if (!base || !q || !scores || !ids) {
        fprintf(stderr, "search_bench: out of memory\n");
        return 1;
    }
    unit_rows(base, N, 1);
    unit_rows(q, MAX_BATCH, 2);
    vr_search *s;
    double t0 = now();
    if (vr_search_create(base, N, D, VR_METRIC_IP, threads, &s) != VR_OK) {
        fprintf(stderr, "search_bench: %s\n", vr_last_error());
        return 1;
    }
    double setup = now() - t0;
    double one = rate(s, q, 1, seconds, scores, ids);
    double many = rate(s, q, MAX_BATCH, seconds, scores, ids);
    if (one < 0 || many < 0) {
        fprintf(stderr, "search_bench: %s\n", vr_last_error());
        return 1;
    }
    printf("exact search, %d x %d unit vectors, inner product, k = %d, %d threads (context %.3f s)\n", N, D, K, threads,
           setup);
    printf("  batch of 1:     %8.1f queries/s (%.2f ms a query)\n", one, 1e3 / one);
    printf("  batch of %d: %8.1f queries/s\n", MAX_BATCH, many);
    printf("RESULT {\"n\": %d, \"d\": %d, \"k\": %d, \"threads\": %d, \"qps_batch1\": %.2f, \"qps_batch1000\": %.2f}\n", N,
           D, K, threads, one, many);
    vr_search_free(s);
    vr_free(base), vr_free(q), vr_free(scores), vr_free(ids);
    return 0;
}
