/* The NCCL comm on device memory, run as `mpirun -np N test_nccl` with one GPU per rank, or
 * alone as one rank without MPI (tests/meson.build runs it so): every float collective of the
 * table,
 * called directly (the wrappers skip the collectives of a single rank), and the sums that
 * overlap other work on their side stream, each after a kernel that writes its buffer on the
 * compute stream. Values are small integers, so every result is exact. Without a CUDA device,
 * or in a build without NCCL, it says so and passes. */
#include "testutil.h"
#include "vicreg/comm.h"

static vr_comm *comm;
static vr_backend *be;

#define COUNT 100003 /* an odd count, not a multiple of any vector width */

/* A device buffer of count floats holding host values h. */
static float *dev_of(const float *h, size_t count)
{
    float *d = NULL;
    TU_OK(be->alloc(be, count * sizeof(float), &d));
    TU_OK(be->upload(be, d, h, count));
    return d;
}

/* rank r's value at i */
static float value(int r, size_t i) { return (float)((i * 7 + (size_t)r * 3) % 101); }

static void test_allreduce(void)
{
    float *h = malloc(COUNT * sizeof(float)), *want = malloc(COUNT * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    for (size_t i = 0; i < COUNT; i++) {
        h[i] = value(comm->rank, i);
        want[i] = 0.0f;
        for (int r = 0; r < comm->size; r++) want[i] += value(r, i);
    }
    float *d = dev_of(h, COUNT);
    TU_OK(comm->dev_allreduce(comm, be, d, COUNT));
    TU_OK(be->download(be, h, d, COUNT));
    CU_ASSERT_EQUAL(memcmp(h, want, COUNT * sizeof(float)), 0);
    be->free(be, d);
    free(h), free(want);
}

static void test_allgather_broadcast(void)
{
    const size_t all = (size_t)COUNT * comm->size;
    float *h = malloc(all * sizeof(float)), *got = malloc(all * sizeof(float)), *recv = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    for (size_t i = 0; i < COUNT; i++) h[i] = value(comm->rank, i);
    float *send = dev_of(h, COUNT);
    TU_OK(be->alloc(be, all * sizeof(float), &recv));
    TU_OK(be->fill(be, all, -1.0f, recv));
    TU_OK(comm->dev_allgather(comm, be, send, COUNT, recv));
    TU_OK(be->download(be, got, recv, all));
    int bad = 0;
    for (int r = 0; r < comm->size; r++)
        for (size_t i = 0; i < COUNT; i++) bad += got[(size_t)r * COUNT + i] != value(r, i);
    CU_ASSERT_EQUAL(bad, 0);
    /* the last rank's values to every rank */
    const int root = comm->size - 1;
    TU_OK(comm->dev_broadcast(comm, be, send, COUNT, root));
    TU_OK(be->download(be, got, send, COUNT));
    bad = 0;
    for (size_t i = 0; i < COUNT; i++) bad += got[i] != value(root, i);
    CU_ASSERT_EQUAL(bad, 0);
    be->free(be, send);
    be->free(be, recv);
    free(h), free(got);
}

/* Three sums started on slices of one buffer, each right after a fill of its slice queued on
 * the compute stream (the side stream must wait for it), then one finish. */
static void test_overlapping_sums(void)
{
    const size_t n = 3 * (size_t)COUNT;
    float *d = NULL, *got = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    TU_OK(be->alloc(be, n * sizeof(float), &d));
    TU_OK(be->fill(be, n, 0.0f, d));
    TU_OK(be->sync(be));
    for (int k = 0; k < 3; k++) {
        TU_OK(be->fill(be, COUNT, (float)(comm->rank + k + 1), d + (size_t)k * COUNT));
        TU_OK(comm->sum_start(comm, be, d + (size_t)k * COUNT, COUNT));
    }
    TU_OK(comm->sum_finish(comm, be));
    TU_OK(be->download(be, got, d, n));
    int bad = 0;
    for (int k = 0; k < 3; k++) {
        float want = 0.0f;
        for (int r = 0; r < comm->size; r++) want += (float)(r + k + 1);
        for (size_t i = 0; i < COUNT; i++) bad += got[(size_t)k * COUNT + i] != want;
    }
    CU_ASSERT_EQUAL(bad, 0);
    be->free(be, d);
    free(got);
}

int main(void)
{
    vr_status s = vr_backend_create("cuda", 0, &be);
    if (s != VR_OK) {
        printf("test_nccl: %s; skipping\n", vr_last_error());
        return s == VR_ERR_DEVICE || s == VR_ERR_UNSUPPORTED ? 0 : 1;
    }
    s = vr_comm_create("nccl", be, &comm);
    if (s == VR_ERR_UNSUPPORTED) {
        printf("test_nccl: %s; skipping\n", vr_last_error());
        vr_backend_destroy(be);
        return 0;
    }
    if (s != VR_OK) {
        fprintf(stderr, "test_nccl: %s\n", vr_last_error());
        return 1;
    }
    comm->timeout_s = 60;
    static const tu_test tests[] = {
        {"all-reduce of device floats", test_allreduce},
        {"all-gather and broadcast of device floats", test_allgather_broadcast},
        {"sums on the side stream after the compute stream's writes", test_overlapping_sums},
        {NULL, NULL},
    };
    int rc = tu_main("nccl", tests);
    vr_comm_destroy(comm);
    vr_backend_destroy(be);
    return rc;
}
