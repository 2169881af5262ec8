/* libFuzzer target: the .npy reader (src/io/npy.c). The input is a whole file, read by path
 * at any rank and at rank 2 (what embedding sets ask for). What the reader accepts must hold
 * together: a shape of at most VR_NPY_MAX_DIMS sizes (none for a 0-d array) whose product is
 * the count, and exactly that many floats after the header, the last of them the file's last
 * 4 bytes. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "vicreg/npy.h"

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(&file, data, size);
    for (int rank = 0; rank <= 2; rank += 2) {
        vr_npy a;
        if (vr_npy_read(path, rank, &a) != VR_OK) continue;
        if (a.ndim < 0 || a.ndim > VR_NPY_MAX_DIMS || (rank && a.ndim != rank)) abort();
        int64_t count = 1;
        for (int i = 0; i < a.ndim; i++) count *= a.shape[i];
        if (count != a.count || (uint64_t)count * sizeof(float) > size || !a.data) abort();
        if (count && memcmp(&a.data[count - 1], data + size - 4, 4) != 0) abort();
        vr_npy_free(&a);
    }
    return 0;
}
