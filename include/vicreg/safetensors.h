/* safetensors files: checkpoints, fixtures and weight exchange with PyTorch.
 *
 * Format (huggingface/safetensors): 8-byte little-endian header length H, H bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value"}}, then the data bytes. Readers check every fact of that
 * layout (header inside the file, offsets inside the data and matching dtype x shape, no
 * overlap) and name the file and the tensor in each error. Writers write to PATH.tmp.PID,
 * fsync, and rename over PATH, so a kill never leaves half a file in place of a good one. */
#ifndef VICREG_SAFETENSORS_H
#define VICREG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"
#include "vicreg/tensor.h"

typedef enum vr_dtype {
    VR_DTYPE_F32, VR_DTYPE_F64, VR_DTYPE_F16, VR_DTYPE_BF16,
    VR_DTYPE_I64, VR_DTYPE_I32, VR_DTYPE_U64, VR_DTYPE_U8, VR_DTYPE_BOOL
} vr_dtype;

/* "F32", ... and its size in bytes */
const char *vr_dtype_name(vr_dtype t);
size_t vr_dtype_size(vr_dtype t);

typedef struct vr_st_entry {
    char *name;
    vr_dtype dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end; /* byte offsets into the data section */
} vr_st_entry;

typedef struct vr_safetensors vr_safetensors; /* an opened file, fully validated */

/* Opens and validates path; the file is mapped read-only (tensor data is read from the page
 * cache as it is touched). Headers over 100 MB refused. */
vr_status vr_st_open(const char *path, vr_safetensors **out);
void vr_st_close(vr_safetensors *st);

int vr_st_count(const vr_safetensors *st);
const vr_st_entry *vr_st_entry_at(const vr_safetensors *st, int i);
/* NULL when missing */
const vr_st_entry *vr_st_find(const vr_safetensors *st, const char *name);
/* The raw bytes of an entry */
const void *vr_st_data(const vr_safetensors *st, const vr_st_entry *e);
/* A __metadata__ value, NULL when missing */
const char *vr_st_metadata(const vr_safetensors *st, const char *key);

/* Copies tensor `name` into dst after checking it exists, has `dtype` and exactly `count`
 * elements (shape checks are the caller's, through vr_st_find). F32 may be read from F32 only. */
vr_status vr_st_read(const vr_safetensors *st, const char *name, vr_dtype dtype, void *dst,
                     size_t count);
/* As vr_st_read for F32, and also checks the shape (ndim dims). */
vr_status vr_st_read_f32(const vr_safetensors *st, const char *name, int ndim,
                         const int64_t *shape, float *dst);

typedef struct vr_st_writer vr_st_writer;

vr_status vr_st_writer_new(vr_st_writer **out);
void vr_st_writer_free(vr_st_writer *w);
/* Adds a tensor; `data` is NOT copied and must stay valid until vr_st_write returns.
 * Names must be unique (VR_ERR_ARG otherwise). */
vr_status vr_st_add(vr_st_writer *w, const char *name, vr_dtype dtype, int ndim,
                    const int64_t *shape, const void *data);
vr_status vr_st_add_metadata(vr_st_writer *w, const char *key, const char *value);
/* Writes atomically (temporary file, fsync, rename). The writer can be written again. */
vr_status vr_st_write(vr_st_writer *w, const char *path);

#endif
