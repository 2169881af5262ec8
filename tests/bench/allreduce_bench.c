/* The gradient all-reduce of a data-parallel step, alone: a parameter block of N floats (default
 * 174,509,440: ResNet-50 without fc, 23,508,032, plus the 2048-8192-8192-8192 expander with its
 * batch norms, 151,001,408) summed over the ranks in the trainer's 25 MB buckets, timed over
 * repeats. Run as: mpirun -np 2 allreduce_bench [FLOATS] [REPEATS]. Prints the median. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vicreg/comm.h"
#include "vicreg/tensor.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 174509440ull;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (reps < 1 || reps > 100) reps = 5;
    vr_comm *c;
    if (vr_comm_create("auto", NULL, &c) != VR_OK) {
        fprintf(stderr, "allreduce_bench: %s\n", vr_last_error());
        return 1;
    }
    float *g = vr_alloc(n * sizeof(float));
    if (!g) return fprintf(stderr, "allreduce_bench: out of memory\n"), 1;
    for (size_t i = 0; i < n; i++) g[i] = (float)(i % 7);
    const size_t bucket = (size_t)25 << 18;
    double t[100];
    for (int r = 0; r < reps; r++) {
        if (vr_comm_barrier(c) != VR_OK) return fprintf(stderr, "%s\n", vr_last_error()), 1;
        double t0 = now();
        for (size_t o = 0; o < n; o += bucket)
            if (vr_comm_allreduce(c, g + o, n - o < bucket ? n - o : bucket, VR_COMM_F32) != VR_OK)
                return fprintf(stderr, "allreduce_bench: %s\n", vr_last_error()), 1;
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    if (c->rank == 0)
        printf("all-reduce of %zu floats (%.1f MB) over %d ranks (%s), 25 MB buckets: median %.3f s "
               "(min %.3f, max %.3f, %d repeats); %.2f GB/s of gradient\n", n, n * 4e-6, c->size,
               c->name, t[reps / 2], t[0], t[reps - 1], reps, n * 4e-9 / t[reps / 2]);
    vr_free(g);
    vr_comm_destroy(c);
    return 0;
}
