/* libFuzzer target: the search index reader (src/retrieval/index.c): one safetensors file with
 * the vectors, the rows and the metadata under a CRC-32. The input is a whole file; what loads
 * must answer for itself: its count and dimension positive, every row (when it has rows) with
 * a file name, and a search of its own first vector returns k valid ids whose first score is
 * finite. */
#include <math.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "vicreg/index.h"

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(&file, data, size);
    vr_index *ix;
    if (vr_index_load(path, &ix) != VR_OK) return 0;
    int64_t n = vr_index_count(ix);
    int d = vr_index_dim(ix);
    if (n < 1 || d < 1 || d > (1 << 20)) abort();
    if (vr_index_row(ix, 0) && !vr_index_row(ix, n - 1)->file) abort();
    if (vr_index_row(ix, n) != NULL) abort();
    float *q = calloc((size_t)d, sizeof(float)), scores[3];
    int64_t ids[3];
    if (!q) abort();
    q[0] = 1.0f;
    int k = n < 3 ? (int)n : 3;
    if (vr_index_search(ix, q, 1, d, k, scores, ids) == VR_OK) {
        for (int i = 0; i < k; i++)
            if (ids[i] < 0 || ids[i] >= n) abort();
    }
    free(q);
    vr_index_free(ix);
    return 0;
}
