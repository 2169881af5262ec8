/* Core: status messages, arenas, the RNG and window arithmetic. */
#include "testutil.h"

static void test_status_message(void)
{
    vr_status s = vr_fail(VR_ERR_FORMAT, "safetensors", "%s: truncated", "a.st");
    CU_ASSERT_EQUAL(s, VR_ERR_FORMAT);
    CU_ASSERT_STRING_EQUAL(vr_last_error(), "safetensors: a.st: truncated");
    CU_ASSERT_STRING_EQUAL(vr_status_str(VR_ERR_NOMEM), "out of memory");
    vr_clear_error();
    CU_ASSERT_STRING_EQUAL(vr_last_error(), "");
}

static void test_arena(void)
{
    vr_arena a;
    TU_OK(vr_arena_init(&a, 1000));
    void *p, *q;
    TU_OK(vr_arena_take(&a, 10, &p));
    TU_OK(vr_arena_take(&a, 100, &q));
    CU_ASSERT_EQUAL(((size_t)p) % 64, 0);
    CU_ASSERT_EQUAL(((size_t)q) % 64, 0);
    CU_ASSERT_EQUAL((char *)q - (char *)p, 64);
    CU_ASSERT_EQUAL(vr_arena_take(&a, 5000, &p), VR_ERR_NOMEM);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "arena"));
    vr_arena_reset(&a);
    TU_OK(vr_arena_take(&a, 1000, &p));
    vr_arena_free(&a);
}

static void test_rng(void)
{
    vr_rng a, b;
    vr_rng_seed(&a, 42);
    vr_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(vr_rng_u64(&a), vr_rng_u64(&b));
    vr_rng_seed(&b, 43);
    CU_ASSERT_NOT_EQUAL(vr_rng_u64(&a), vr_rng_u64(&b));
    /* moments of 200k draws: uniform mean 1/2 var 1/12; normal mean 0 var 1 (5 sigma bounds) */
    const int n = 200000;
    double su = 0, su2 = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < n; i++) {
        double u = vr_rng_uniform(&a), z = vr_rng_normal(&a);
        CU_ASSERT(u >= 0.0 && u < 1.0);
        su += u; su2 += u * u; sn += z; sn2 += z * z;
    }
    CU_ASSERT(fabs(su / n - 0.5) < 5 * sqrt(1.0 / 12 / n));
    CU_ASSERT(fabs(su2 / n - su / n * su / n - 1.0 / 12) < 0.002);
    CU_ASSERT(fabs(sn / n) < 5 / sqrt(n));
    CU_ASSERT(fabs(sn2 / n - 1.0) < 5 * sqrt(2.0 / n));
    for (int i = 0; i < 1000; i++) CU_ASSERT(vr_rng_below(&a, 7) < 7);
}

static void test_window(void)
{
    vr_window w;
    int k2[2] = {7, 7}, s2[2] = {2, 2}, p2[2] = {3, 3};
    TU_OK(vr_window_init(&w, 2, 4, 3, 64, 224, 224, k2, s2, p2));
    CU_ASSERT_EQUAL(w.h_out, 112);
    CU_ASSERT_EQUAL(w.w_out, 112);
    int k1[1] = {80}, s1[1] = {4}, p1[1] = {38};
    TU_OK(vr_window_init(&w, 1, 2, 1, 48, 1, 16000, k1, s1, p1));
    CU_ASSERT_EQUAL(w.h_out, 1);
    CU_ASSERT_EQUAL(w.w_out, 4000);
    CU_ASSERT_EQUAL(w.kh, 1);
    int kbig[1] = {9}, p0[1] = {0};
    CU_ASSERT_EQUAL(vr_window_init(&w, 1, 1, 1, 1, 1, 5, kbig, s1, p0), VR_ERR_SHAPE);
    CU_ASSERT_EQUAL(vr_window_init(&w, 3, 1, 1, 1, 1, 5, kbig, s1, p0), VR_ERR_ARG);
}

int main(void)
{
    static const tu_test tests[] = {
        {"status message", test_status_message},
        {"arena", test_arena},
        {"rng", test_rng},
        {"window", test_window},
        {NULL, NULL},
    };
    return tu_main("core", tests);
}
