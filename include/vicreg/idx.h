/* IDX files (the MNIST / Fashion-MNIST container): a 4-byte magic (0, 0, element type, rank),
 * `rank` big-endian 32-bit sizes, then the elements in row-major order. Only unsigned bytes
 * (type 0x08) are read, the only type those data sets use. Files may be gzip-compressed or
 * plain: zlib reads both through the same calls. Every fact of the layout is checked and each
 * error names the file: wrong magic, unsupported type or rank, a size of 0, a body shorter or
 * longer than the sizes promise, and a label file whose count differs from its images. */
#ifndef VICREG_IDX_H
#define VICREG_IDX_H

#include <stdint.h>

#include "vicreg/status.h"

/* One labelled image set held in host memory. */
typedef struct vr_gray_dataset {
    uint8_t *images; /* (N, H, W), 0..255 */
    uint8_t *labels; /* (N) */
    int n, h, w;
    int nclasses;    /* max label + 1 */
} vr_gray_dataset;

/* Reads an IDX file of unsigned bytes with the given rank (1: labels, 3: images) into a new
 * vr_alloc'd block (free with vr_free); dims receives `rank` sizes. */
vr_status vr_idx_read(const char *path, int rank, int64_t *dims, uint8_t **data);

/* Reads and checks only the header: the sizes without the data. */
vr_status vr_idx_read_dims(const char *path, int rank, int64_t *dims);

/* Reads images (N,H,W) and labels (N) and checks that the counts agree. limit > 0 keeps only
 * the first `limit` samples (all of them when the file holds fewer). */
vr_status vr_gray_dataset_load(const char *images_path, const char *labels_path, int limit,
                               vr_gray_dataset *ds);
void vr_gray_dataset_free(vr_gray_dataset *ds);

#endif
