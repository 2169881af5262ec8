/* Named parameter layouts: one contiguous block per model, cut into named views.
 *
 * Layers declare their tensors here with the names PyTorch's state_dict would use
 * ("backbone.layer1.0.conv1.weight"); each gets an offset (in floats) into the block. Values,
 * gradients and optimiser state are separate blocks with the SAME layout, so the optimiser is
 * one flat loop over tensors and a checkpoint is one write. BatchNorm running statistics are
 * kept in a second set ("buffers") and the num_batches_tracked counters as 64-bit integers. */
#ifndef VICREG_PARAMS_H
#define VICREG_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"

#define VR_NAME_MAX 96

typedef struct vr_param {
    char name[VR_NAME_MAX];
    int ndim;
    int64_t shape[4];
    size_t offset; /* floats from the start of the block, a multiple of 16 (64 bytes) */
    size_t count;  /* floats */
} vr_param;

typedef struct vr_paramset {
    vr_param *items;
    int count, cap;
    size_t total; /* floats, including alignment padding */
} vr_paramset;

/* Declares a tensor; returns its offset in *offset. Duplicate names are a bug (asserted). */
vr_status vr_paramset_add(vr_paramset *ps, const char *name, int ndim, const int64_t *shape,
                          size_t *offset);
/* NULL when missing */
const vr_param *vr_paramset_find(const vr_paramset *ps, const char *name);
void vr_paramset_free(vr_paramset *ps);

/* BatchNorm's num_batches_tracked counters, by name, in declaration order. */
typedef struct vr_counters {
    char (*names)[VR_NAME_MAX];
    int64_t *values;
    int count, cap;
} vr_counters;

vr_status vr_counters_add(vr_counters *c, const char *name, int *index);
void vr_counters_free(vr_counters *c);

#endif
