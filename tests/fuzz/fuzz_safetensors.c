/* libFuzzer target: the safetensors reader (src/io/safetensors.c). The input is a whole file,
 * opened by path (the reader maps it); every tensor it lists is looked up by name and read
 * through vr_st_read (and vr_st_read_f32 for F32), touching every data byte. What the reader
 * accepts must hold together: names found again, data inside the data section, sizes that
 * match dtype x shape. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "vicreg/safetensors.h"

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vr_safetensors *st;
    if (vr_st_open(fuzz_file_put(&file, data, size), &st) != VR_OK) return 0;
    int n = vr_st_count(st);
    for (int i = 0; i < n; i++) {
        const vr_st_entry *e = vr_st_entry_at(st, i);
        if (vr_st_find(st, e->name) != e) abort();
        if (e->end < e->begin || e->end > size) abort();
        size_t bytes = (size_t)(e->end - e->begin), count = bytes / vr_dtype_size(e->dtype);
        if (count * vr_dtype_size(e->dtype) != bytes) abort();
        unsigned char *dst = malloc(bytes ? bytes : 1);
        if (!dst) abort();
        if (vr_st_read(st, e->name, e->dtype, dst, count) != VR_OK) abort();
        if (bytes && memcmp(dst, vr_st_data(st, e), bytes) != 0) abort();
        if (e->dtype == VR_DTYPE_F32 && vr_st_read_f32(st, e->name, e->ndim, e->shape, (float *)dst) != VR_OK)
            abort();
        /* a wrong count is refused, not copied */
        if (vr_st_read(st, e->name, e->dtype, dst, count + 1) == VR_OK) abort();
        free(dst);
    }
    vr_st_find(st, "missing");
    vr_st_metadata(st, "format");
    vr_st_metadata(st, "step");
    vr_st_close(st);
    return 0;
}
