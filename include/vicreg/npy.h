/* NumPy .npy files of float32: embedding matrices, spectrograms and queries.
 *
 * Format (numpy.lib.format): the magic "\x93NUMPY", a version byte pair (1.0, 2.0 or 3.0), the
 * header length (2 bytes little-endian in 1.0, 4 in 2.0/3.0), a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (1000, 512), } padded with spaces to a
 * multiple of 64 bytes and ended by '\n', then the C-order data. The writer writes version
 * 1.0 through an atomic file (atomic_file.h); the reader accepts the three versions, little-
 * endian float32 in C order only, and names the file and what is wrong otherwise. */
#ifndef VICREG_NPY_H
#define VICREG_NPY_H

#include <stdint.h>
#include <stdio.h>

#include "vicreg/status.h"

#define VR_NPY_MAX_DIMS 8

typedef struct vr_npy {
    int ndim;
    int64_t shape[VR_NPY_MAX_DIMS];
    int64_t count; /* product of the shape */
    float *data;   /* (shape...), C order; vr_alloc'd */
} vr_npy;

/* data (shape[0], ..., shape[ndim-1]) -> path. */
vr_status vr_npy_write(const char *path, const float *data, int ndim, const int64_t *shape);
/* The same file's bytes into the stream f (path names it in messages); write errors show in
 * ferror(f) and at its flush, as with any stream. */
vr_status vr_npy_fwrite(FILE *f, const char *path, const float *data, int ndim, const int64_t *shape);
/* Reads path. ndim > 0 requires that rank (VR_ERR_SHAPE otherwise); 0 accepts any. Wrong dtype
 * or order: VR_ERR_FORMAT naming it. */
vr_status vr_npy_read(const char *path, int ndim, vr_npy *out);
void vr_npy_free(vr_npy *a);

#endif
