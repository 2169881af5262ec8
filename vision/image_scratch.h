/* The growing scratch buffer of the image operations (internal to vision/). */
#ifndef VR_IMAGE_SCRATCH_H
#define VR_IMAGE_SCRATCH_H

#include <stdlib.h>

#include "vicreg/image_ops.h"

/* Pieces carved from the scratch buffer start on 64-byte boundaries. */
#define VR_SCRATCH_ALIGN ((size_t)64)

static inline size_t vr_scratch_round(size_t bytes)
{
    return (bytes + VR_SCRATCH_ALIGN - 1) / VR_SCRATCH_ALIGN * VR_SCRATCH_ALIGN;
}

/* At least `bytes` of scratch at s->buf; the old contents are not kept. */
static inline vr_status vr_scratch_reserve(vr_image_scratch *s, size_t bytes, const char *who)
{
    if (bytes <= s->capacity) return VR_OK;
    free(s->buf);
    size_t rounded = vr_scratch_round(bytes);
    s->buf = aligned_alloc(VR_SCRATCH_ALIGN, rounded);
    s->capacity = s->buf ? rounded : 0;
    if (!s->buf) return vr_fail(VR_ERR_NOMEM, "image", "%s: cannot allocate %zu bytes of scratch", who, rounded);
    return VR_OK;
}

#endif
