/* Tensors and arenas.
 *
 * A tensor is a view: float32 data owned by an arena, a shape of rank 1..4 (N,C,L or N,C,H,W
 * for activations; PyTorch's layout for parameters) and the device the data lives on. Arenas
 * are allocated once and cut into views; nothing on the training step path calls malloc, since
 * first touch of fresh memory is slow (about 12 us per 4 KiB page on our machines). */
#ifndef VICREG_TENSOR_H
#define VICREG_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"

typedef enum vr_device { VR_DEVICE_CPU = 0, VR_DEVICE_CUDA = 1 } vr_device;

#define VR_MAX_DIMS 4

typedef struct vr_tensor {
    float *data;
    int ndim;
    int64_t shape[VR_MAX_DIMS];
    vr_device device;
} vr_tensor;

/* Number of elements (1 for rank 0). */
int64_t vr_tensor_numel(const vr_tensor *t);

/* A view of `data` with the given shape. */
vr_tensor vr_tensor_view(float *data, vr_device dev, int ndim, const int64_t *shape);

/* Writes "[64, 3, 224, 224]" into buf. */
const char *vr_shape_str(const vr_tensor *t, char *buf, size_t len);

/* A bump allocator over one block of host memory. Views stay valid until vr_arena_free. */
typedef struct vr_arena {
    char *base;
    size_t capacity; /* bytes */
    size_t used;     /* bytes */
} vr_arena;

/* Allocates `bytes` (64-byte aligned) and touches every page once, so later use is fast. */
vr_status vr_arena_init(vr_arena *a, size_t bytes);
/* Cuts `bytes` (rounded up to 64) from the arena; VR_ERR_NOMEM names the arena if full. */
vr_status vr_arena_take(vr_arena *a, size_t bytes, void **out);
/* Forgets every view (the memory is kept for reuse). */
void vr_arena_reset(vr_arena *a);
void vr_arena_free(vr_arena *a);

/* Host allocation helpers for one-time setup (64-byte aligned, zeroed). NULL on failure. */
void *vr_alloc(size_t bytes);
void vr_free(void *p);

#endif
