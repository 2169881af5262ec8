/* Milliseconds per batch of the default log-mel front end (64 clips of one second at 16 kHz ->
 * (64, 64, 101), scaled to [0, 1]), the audio peer's LogMel workload. Built by meson; from the
 * repository root:
 *
 *   MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 build/tests/bench/bench_logmel [threads] [runs]
 *
 * Input: 0.1 * N(0, 1) noise, as the peer's random batch. Prints each run, then a RESULT line
 * of JSON with the median and fastest run (after 3 warm-up runs). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "vicreg/vicreg.h"
#include "vicreg/spectrogram.h"

enum { BATCH = 64, SAMPLES = 16000, WARMUP = 3 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int runs = argc > 2 ? atoi(argv[2]) : 10;
    if (threads < 1 || runs < 1) {
        fprintf(stderr, "usage: bench_logmel [threads >= 1] [runs >= 1]\n");
        return 2;
    }
    vr_spectrogram_config c;
    vr_spectrogram_default(&c);
    vr_spectrogram *sp = NULL;
    if (vr_spectrogram_create(&c, &sp) != VR_OK) {
        fprintf(stderr, "bench_logmel: %s\n", vr_last_error());
        return 1;
    }
    int64_t frames = vr_spectrogram_frames(sp, SAMPLES);
    float *wave = malloc((size_t)BATCH * SAMPLES * sizeof *wave);
    float *out = malloc((size_t)BATCH * c.n_mels * frames * sizeof *out);
    double *t = malloc((size_t)runs * sizeof *t);
    if (!wave || !out || !t) {
        fprintf(stderr, "bench_logmel: out of memory\n");
        return 1;
    }
    vr_rng r;
    vr_rng_seed(&r, 0);
    for (size_t i = 0; i < (size_t)BATCH * SAMPLES; i++) wave[i] = 0.1f * vr_rng_normal(&r);
    for (int i = -WARMUP; i < runs; i++) {
        double t0 = omp_get_wtime();
        vr_status s = vr_spectrogram_mel_batch(sp, wave, BATCH, SAMPLES, threads, out);
        double dt = omp_get_wtime() - t0;
        if (s != VR_OK) {
            fprintf(stderr, "bench_logmel: %s\n", vr_last_error());
            return 1;
        }
        if (i >= 0) {
            t[i] = dt;
            printf("run %2d: %.3f ms\n", i, dt * 1e3);
        }
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    printf("RESULT {\"config\": \"logmel_b%d_1s_16k\", \"shape\": [%d, %d, %lld], \"threads\": %d, "
           "\"runs\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f}\n",
           BATCH, BATCH, c.n_mels, (long long)frames, threads, runs, t[runs / 2] * 1e3, t[0] * 1e3);
    free(wave);
    free(out);
    free(t);
    vr_spectrogram_destroy(sp);
    return 0;
}
