/* .npy files: what NumPy writes reads back exactly (fixtures from make_npy_fixtures.py), our
 * files round trip and parse as NumPy's header grammar, bad files are named and refused. */
#include <unistd.h>

#include "testutil.h"
#include "vicreg/npy.h"

#define NPY_DIR VR_FIXTURE_DIR "/npy/"

static void test_numpy_written(void)
{
    vr_npy a;
    TU_OK(vr_npy_read(NPY_DIR "f32_3x5.npy", 2, &a));
    CU_ASSERT(a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 5 && a.count == 15);
    for (int i = 0; i < 15; i++) CU_ASSERT_EQUAL(a.data[i], (i - 7) / 4.0f);
    vr_npy_free(&a);
    TU_OK(vr_npy_read(NPY_DIR "f32_v2.npy", 2, &a)); /* version 2.0, 4-byte header length */
    for (int i = 0; i < 15; i++) CU_ASSERT_EQUAL(a.data[i], (i - 7) / 4.0f);
    vr_npy_free(&a);
    TU_OK(vr_npy_read(NPY_DIR "f32_vec.npy", 0, &a));
    CU_ASSERT(a.ndim == 1 && a.shape[0] == 3 && a.data[1] == -2.25f);
    vr_npy_free(&a);
    TU_OK(vr_npy_read(NPY_DIR "f32_2x3x4.npy", 3, &a));
    CU_ASSERT(a.shape[0] == 2 && a.shape[1] == 3 && a.shape[2] == 4 && a.data[23] == 23.0f);
    vr_npy_free(&a);
}

static void test_round_trip(void)
{
    char path[] = "/tmp/vr_npy_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    float x[2 * 3 * 7];
    for (int i = 0; i < 42; i++) x[i] = (float)i * 0.37f - 3.0f;
    const int64_t shapes[][3] = {{42, 0, 0}, {6, 7, 0}, {2, 3, 7}, {0, 5, 0}};
    const int ranks[] = {1, 2, 3, 2};
    for (int t = 0; t < 4; t++) {
        TU_OK(vr_npy_write(path, x, ranks[t], shapes[t]));
        FILE *f = fopen(path, "rb");
        unsigned char pre[10];
        CU_ASSERT(fread(pre, 1, 10, f) == 10);
        fclose(f);
        CU_ASSERT_EQUAL((10 + (pre[8] | pre[9] << 8)) % 64, 0); /* NumPy's alignment */
        vr_npy a;
        TU_OK(vr_npy_read(path, ranks[t], &a));
        CU_ASSERT_EQUAL(a.ndim, ranks[t]);
        for (int d = 0; d < ranks[t]; d++) CU_ASSERT_EQUAL(a.shape[d], shapes[t][d]);
        for (int64_t i = 0; i < a.count; i++) CU_ASSERT_EQUAL(a.data[i], x[i]);
        vr_npy_free(&a);
    }
    unlink(path);
}

static void expect_error(const char *path, int ndim, vr_status code, const char *needle)
{
    vr_npy a;
    vr_status s = vr_npy_read(path, ndim, &a);
    CU_ASSERT_EQUAL(s, code);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), needle));
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), strrchr(path, '/') + 1));
    if (s == VR_OK) vr_npy_free(&a);
}

static void test_bad_files(void)
{
    expect_error(NPY_DIR "f64_3x5.npy", 2, VR_ERR_FORMAT, "'<f8'");
    expect_error(NPY_DIR "i32_3x5.npy", 2, VR_ERR_FORMAT, "'<i4'");
    expect_error(NPY_DIR "f32_bigendian.npy", 2, VR_ERR_FORMAT, "'>f4'");
    expect_error(NPY_DIR "f32_fortran.npy", 2, VR_ERR_FORMAT, "Fortran");
    expect_error(NPY_DIR "f32_vec.npy", 2, VR_ERR_SHAPE, "rank 1, expected 2");
    expect_error(NPY_DIR "missing.npy", 2, VR_ERR_NOT_FOUND, "cannot open");

    /* truncated data, trailing bytes, and not a .npy at all */
    char path[] = "/tmp/vr_npy_bad_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    float x[12] = {0};
    const int64_t shape[2] = {3, 4};
    TU_OK(vr_npy_write(path, x, 2, shape));
    CU_ASSERT_EQUAL(truncate(path, 128 + 40), 0);
    expect_error(path, 2, VR_ERR_FORMAT, "truncated");
    TU_OK(vr_npy_write(path, x, 2, shape));
    FILE *f = fopen(path, "ab");
    fputc(0, f);
    fclose(f);
    expect_error(path, 2, VR_ERR_FORMAT, "trailing bytes");
    f = fopen(path, "wb");
    fputs("path,label\n", f);
    fclose(f);
    expect_error(path, 2, VR_ERR_FORMAT, "not a .npy file");
    unlink(path);
}

int main(void)
{
    static const tu_test tests[] = {
        {"files NumPy wrote", test_numpy_written},
        {"write and read back", test_round_trip},
        {"bad files named and refused", test_bad_files},
        {NULL, NULL},
    };
    return tu_main("npy", tests);
}
