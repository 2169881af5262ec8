/* The seeded random number generator: xoshiro256** seeded through splitmix64.
 *
 * Every random choice of a run (initialisation, views, shuffles) draws from a vr_rng derived
 * from the run's seed, so the same seed and thread count give the same run bit for bit. The
 * state is four words, saved in checkpoints so a resumed run continues the same stream. */
#ifndef VICREG_RNG_H
#define VICREG_RNG_H

#include <stdint.h>

typedef struct vr_rng {
    uint64_t s[4];
} vr_rng;

void vr_rng_seed(vr_rng *r, uint64_t seed);
/* An independent stream for a sub-task (a worker, a layer): seeded from seed and stream id. */
void vr_rng_seed_stream(vr_rng *r, uint64_t seed, uint64_t stream);
uint64_t vr_rng_u64(vr_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float vr_rng_uniform(vr_rng *r);
/* Uniform in [lo, hi). */
float vr_rng_range(vr_rng *r, float lo, float hi);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t vr_rng_below(vr_rng *r, uint64_t n);
/* Standard normal (Box-Muller on doubles). */
float vr_rng_normal(vr_rng *r);
/* perm (n): 0..n-1 shuffled by Fisher-Yates on the stream vr_rng_seed_stream(seed, stream),
 * every permutation equally likely: the data order of one epoch (stream = the epoch). */
void vr_rng_permutation(int *perm, int n, uint64_t seed, uint64_t stream);

#endif
