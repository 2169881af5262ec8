/* The training loader of an image folder: worker threads that decode files and make the two
 * VICReg views of every pair (vicreg/image_views.h) into reused batch buffers ahead of the
 * training step, so that while the step runs on batch k the workers fill batch k + 1 (depth 2,
 * double buffering) or k + 1 and k + 2 (depth 3).
 *
 * Threads: POSIX threads, not OpenMP. The workers run while the training step runs its own
 * OpenMP parallel regions (kernels, OpenBLAS); OpenMP tasks would only run inside a parallel
 * region, i.e. inside or between the step's own, so they could not fill batch k + 1 while the
 * step computes, and an idle worker must block on a condition variable until a buffer comes
 * free, which OpenMP has no construct for. Each worker owns a decoder and view buffers
 * (vr_image_views_work) reused from pair to pair; nothing is allocated per batch.
 *
 * Order, deterministic whatever the thread count: batch `step` belongs to epoch
 * e = step / steps_per_epoch, where steps_per_epoch = n / N (drop_last: the n mod N samples at
 * the end of an epoch's order are left out, so every step has N pairs); the epoch's order is
 * vr_rng_permutation(shuffle_seed, e), and pair i of the batch takes position
 * p = (step mod steps_per_epoch) * N + i of it, its views drawn for sample index step * N + i of
 * views_seed (vr_image_views_pair). Every batch is thus a function of (seeds, step, files):
 * the same for 1 or 16 workers, and a loader started at step k (a resumed run) makes the
 * batches an uninterrupted one made from step k on.
 *
 * A file that cannot be decoded (zero bytes, truncated, corrupt, not an image, unreadable,
 * gone) is skipped: its slot is refilled with the sample at the next position of the epoch's
 * order (p + 1, p + 2, ... wrapping around), the first one that decodes, with the slot's own
 * views; batches never shrink. That next sample then appears twice in the epoch, once in its
 * own slot, which keeps every other pair where it was. Each bad file is marked in the set
 * (vr_image_folder_mark_bad: its name and the decoder's message, once) and not read again;
 * every refill is counted. Only when no file of the set decodes, or memory runs out, does the loader fail. */
#ifndef VICREG_IMAGE_LOADER_H
#define VICREG_IMAGE_LOADER_H

#include <stdint.h>

#include "vicreg/image_folder.h"
#include "vicreg/image_views.h"

#define VR_IMAGE_LOADER_MAX_DEPTH 8

typedef struct vr_image_loader_config {
    int batch;             /* N: pairs per batch */
    int threads;           /* worker threads, >= 1 */
    int depth;             /* batches in flight, the one handed out included: 2..8 */
    uint64_t shuffle_seed; /* the epochs' orders */
    uint64_t views_seed;   /* the pairs' views */
    long first_step;       /* the first batch handed out */
    long end_step;         /* one past the last batch made; 0: no end */
    int stride;            /* pairs per step over every rank of a data-parallel run (0: batch) */
    int offset;            /* this rank's first pair within the step's stride: rank * batch */
} vr_image_loader_config;

/* One batch, valid until the next vr_image_loader_next or vr_image_loader_free. */
typedef struct vr_image_batch {
    long step;
    int n;              /* N */
    const float *views; /* (2N, 3, S, S): view 1 of every pair, then view 2 of every pair */
    const int *index;   /* (N) the set's sample of each pair (after any refill) */
    const int *labels;  /* (N) */
} vr_image_batch;

typedef struct vr_image_loader vr_image_loader;

/* Starts the workers on set (which must outlive the loader; its skip list grows as bad files
 * are found) with views (both views of size S). VR_ERR_ARG when the set has fewer than N
 * samples, the views' sizes differ or a value is out of range. */
vr_status vr_image_loader_create(vr_image_loader **out, vr_image_folder *set, const vr_image_views_config *views,
                                 const vr_image_loader_config *c);
/* n / N */
long vr_image_loader_steps_per_epoch(const vr_image_loader *l);
/* Hands out the next batch in step order (first_step, first_step + 1, ...), waiting for the
 * workers when it is not complete yet; the batch handed out before is given back to them. */
vr_status vr_image_loader_next(vr_image_loader *l, vr_image_batch *b);
/* Copies the reason of record i of the set's skip list into buf (len bytes) and returns 1; 0
 * when there is no record i yet. Safe while the workers run. */
int vr_image_loader_skip_reason(vr_image_loader *l, int i, char *buf, size_t len);
/* Slots refilled so far because their file could not be decoded. */
long vr_image_loader_refills(vr_image_loader *l);
/* Stops and joins the workers and frees everything. */
void vr_image_loader_free(vr_image_loader *l);

#endif
