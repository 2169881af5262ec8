/* libFuzzer target: the IDX reader (vision/idx.c), plain or gzip-compressed, as the
 * Fashion-MNIST files come. The input is a whole file, read by path at rank 1 (labels) and
 * rank 3 (images), header only and whole. What the reader accepts must hold together: the
 * header's sizes equal the whole read's, none of them 0, and their product fits the bytes a
 * plain file holds after its header (a gzip file may expand, so only plain files are held to
 * that). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "vicreg/idx.h"
#include "vicreg/tensor.h"

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(&file, data, size);
    int gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    for (int rank = 1; rank <= 3; rank += 2) {
        int64_t head[3], dims[3];
        vr_status hs = vr_idx_read_dims(path, rank, head);
        uint8_t *x = NULL;
        if (vr_idx_read(path, rank, dims, &x) != VR_OK) continue;
        if (hs != VR_OK || !x) abort();
        uint64_t count = 1;
        for (int i = 0; i < rank; i++) {
            if (dims[i] < 1 || dims[i] != head[i]) abort();
            count *= (uint64_t)dims[i];
        }
        if (!gzip && count + 4 + 4 * (uint64_t)rank != size) abort();
        if (!gzip && memcmp(x + count - 1, data + size - 1, 1) != 0) abort();
        vr_free(x);
    }
    return 0;
}
