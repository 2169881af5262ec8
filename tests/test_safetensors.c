/* safetensors: round trips of every dtype, byte-exact agreement with the reference layout,
 * every malformed file the reader must refuse (with the path and the tensor in the message),
 * and the writer's promise that a failed write leaves the old file and no temporary behind.
 * Files live in a fresh directory under $TMPDIR, removed at the end. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_dir[512];

/* tmp_dir/name; a ring of buffers so that a test can hold a few paths at once. */
static const char *tp(const char *name)
{
    static char ring[8][768];
    static int next;
    char *p = ring[next++ % 8];
    snprintf(p, sizeof ring[0], "%s/%s", tmp_dir, name);
    return p;
}

static int write_bytes(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(bytes, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* The whole file in a malloc'd buffer (NULL if it cannot be read), its length as a size_t. */
static unsigned char *read_bytes(const char *path, size_t *len)
{
    long n = 0;
    unsigned char *b = (unsigned char *)tu_read_file(path, &n);
    *len = (size_t)n;
    return b;
}

static void put_u64_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file built by hand: 8-byte length of `json` (unpadded), json, then data. */
static int write_st(const char *path, const char *json, const void *data, size_t data_len)
{
    size_t n = strlen(json);
    unsigned char *b = malloc(8 + n + data_len);
    if (!b) return 0;
    put_u64_le(b, n);
    memcpy(b + 8, json, n);
    if (data_len) memcpy(b + 8 + n, data, data_len);
    int ok = write_bytes(path, b, 8 + n + data_len);
    free(b);
    return ok;
}

/* 1 when the last error message contains `word`; prints the message otherwise. */
static int msg_has(const char *word)
{
    if (strstr(vr_last_error(), word)) return 1;
    fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", vr_last_error(), word);
    return 0;
}

/* Opening path must fail with `want`, and the message name the path and the two words. */
#define EXPECT_OPEN_FAIL(path, want, word1, word2)                                            \
    do {                                                                                      \
        vr_safetensors *st_ = NULL;                                                           \
        vr_status s_ = vr_st_open((path), &st_);                                              \
        if (s_ != (want))                                                                     \
            fprintf(stderr, "\n  %s: got %s (%s)\n", (path), vr_status_str(s_),               \
                    vr_last_error());                                                         \
        CU_ASSERT_EQUAL(s_, (want));                                                          \
        CU_ASSERT_PTR_NULL(st_);                                                              \
        CU_ASSERT(msg_has(path));                                                             \
        CU_ASSERT(msg_has(word1));                                                            \
        CU_ASSERT(msg_has(word2));                                                            \
        vr_st_close(st_);                                                                     \
    } while (0)

/* Number of entries of tmp_dir whose name contains ".tmp." (the writer's temporaries). */
static int count_temporaries(void)
{
    DIR *d = opendir(tmp_dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) n += strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------------------------------- */

static void test_dtypes(void)
{
    static const struct {
        vr_dtype t;
        const char *name;
        size_t size;
    } want[] = {{VR_DTYPE_F32, "F32", 4}, {VR_DTYPE_F64, "F64", 8}, {VR_DTYPE_F16, "F16", 2},
                {VR_DTYPE_BF16, "BF16", 2}, {VR_DTYPE_I64, "I64", 8}, {VR_DTYPE_I32, "I32", 4},
                {VR_DTYPE_U64, "U64", 8}, {VR_DTYPE_U8, "U8", 1}, {VR_DTYPE_BOOL, "BOOL", 1}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CU_ASSERT_STRING_EQUAL(vr_dtype_name(want[i].t), want[i].name);
        CU_ASSERT_EQUAL(vr_dtype_size(want[i].t), want[i].size);
    }
}

/* The tensors of the round trip: every dtype, a 0-element tensor, two scalars, 8 dims. */
static float rt_conv[2 * 3 * 2 * 2], rt_scalar = 3.5f, rt_empty[1];
static double rt_var[5] = {1.0, 0.25, -3e300, 4.9e-324, 7.0};
static int64_t rt_step = -123456789012345;
static uint16_t rt_half[3] = {0x3c00, 0xc000, 0x7bff}, rt_bhalf[4] = {0x3f80, 0xbf80, 1, 0x7f7f};
static int32_t rt_labels[4] = {0, -1, 2147483647, -2147483647 - 1};
static uint64_t rt_counts[2] = {0, UINT64_MAX};
static uint8_t rt_pixels[6] = {0, 1, 127, 128, 254, 255}, rt_mask[3] = {1, 0, 1}, rt_deep[8];

static const struct {
    const char *name;
    vr_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t bytes;
} rt[] = {
    {"conv.weight", VR_DTYPE_F32, 4, {2, 3, 2, 2}, rt_conv, sizeof rt_conv},
    {"bn.running_var", VR_DTYPE_F64, 1, {5}, rt_var, sizeof rt_var},
    {"step", VR_DTYPE_I64, 0, {0}, &rt_step, sizeof rt_step},
    {"half", VR_DTYPE_F16, 1, {3}, rt_half, sizeof rt_half},
    {"bhalf", VR_DTYPE_BF16, 2, {2, 2}, rt_bhalf, sizeof rt_bhalf},
    {"labels", VR_DTYPE_I32, 1, {4}, rt_labels, sizeof rt_labels},
    {"counts", VR_DTYPE_U64, 1, {2}, rt_counts, sizeof rt_counts},
    {"pixels", VR_DTYPE_U8, 3, {2, 3, 1}, rt_pixels, sizeof rt_pixels},
    {"mask", VR_DTYPE_BOOL, 1, {3}, rt_mask, sizeof rt_mask},
    {"empty", VR_DTYPE_F32, 2, {0, 4}, rt_empty, 0},
    {"scalar", VR_DTYPE_F32, 0, {0}, &rt_scalar, sizeof rt_scalar},
    {"deep", VR_DTYPE_U8, 8, {1, 2, 1, 2, 1, 2, 1, 1}, rt_deep, sizeof rt_deep},
};
#define N_RT ((int)(sizeof rt / sizeof rt[0]))

static vr_st_writer *rt_writer(void)
{
    vr_rng r;
    vr_rng_seed(&r, 7);
    tu_fill(rt_conv, sizeof rt_conv / sizeof rt_conv[0], &r, -2.0f, 2.0f);
    for (int i = 0; i < 8; i++) rt_deep[i] = (uint8_t)(3 * i + 1);
    vr_st_writer *w = NULL;
    if (vr_st_writer_new(&w) != VR_OK) return NULL;
    for (int i = 0; i < N_RT; i++)
        if (vr_st_add(w, rt[i].name, rt[i].dtype, rt[i].ndim, rt[i].shape, rt[i].data) != VR_OK)
            break;
    vr_st_add_metadata(w, "format", "pt");
    vr_st_add_metadata(w, "note", "quote \" backslash \\ newline \n utf-8 \xc3\xa9");
    vr_st_add_metadata(w, "epoch", "1");
    vr_st_add_metadata(w, "epoch", "2"); /* replaces the value */
    return w;
}

/* Checks that the file at path holds exactly the rt tensors, in insertion order. */
static void check_rt_file(const char *path)
{
    vr_safetensors *st;
    TU_OK(vr_st_open(path, &st));
    CU_ASSERT_EQUAL_FATAL(vr_st_count(st), N_RT);
    uint64_t offset = 0;
    for (int i = 0; i < N_RT; i++) {
        const vr_st_entry *e = vr_st_entry_at(st, i);
        CU_ASSERT_STRING_EQUAL(e->name, rt[i].name);
        CU_ASSERT_PTR_EQUAL(vr_st_find(st, rt[i].name), e);
        CU_ASSERT_EQUAL(e->dtype, rt[i].dtype);
        CU_ASSERT_EQUAL(e->ndim, rt[i].ndim);
        for (int d = 0; d < rt[i].ndim; d++) CU_ASSERT_EQUAL(e->shape[d], rt[i].shape[d]);
        /* the data section follows insertion order without gaps */
        CU_ASSERT_EQUAL(e->begin, offset);
        CU_ASSERT_EQUAL(e->end, offset + rt[i].bytes);
        offset = e->end;
        CU_ASSERT(rt[i].bytes == 0 || memcmp(vr_st_data(st, e), rt[i].data, rt[i].bytes) == 0);

        unsigned char got[128];
        memset(got, 0xa5, sizeof got);
        size_t count = rt[i].bytes / vr_dtype_size(rt[i].dtype);
        TU_OK(vr_st_read(st, rt[i].name, rt[i].dtype, got, count));
        CU_ASSERT(rt[i].bytes == 0 || memcmp(got, rt[i].data, rt[i].bytes) == 0);
        CU_ASSERT_EQUAL(got[rt[i].bytes], 0xa5); /* nothing written past the tensor */
    }
    float conv[24], scalar = 0.0f;
    TU_OK(vr_st_read_f32(st, "conv.weight", 4, rt[0].shape, conv));
    CU_ASSERT(tu_close(conv, rt_conv, 24, 0.0, 0.0, "conv.weight"));
    TU_OK(vr_st_read_f32(st, "scalar", 0, NULL, &scalar));
    CU_ASSERT_EQUAL(scalar, 3.5f);
    const int64_t empty_shape[2] = {0, 4};
    TU_OK(vr_st_read_f32(st, "empty", 2, empty_shape, NULL));

    CU_ASSERT_STRING_EQUAL(vr_st_metadata(st, "format"), "pt");
    CU_ASSERT_STRING_EQUAL(vr_st_metadata(st, "note"),
                           "quote \" backslash \\ newline \n utf-8 \xc3\xa9");
    CU_ASSERT_STRING_EQUAL(vr_st_metadata(st, "epoch"), "2");
    CU_ASSERT_PTR_NULL(vr_st_metadata(st, "missing"));
    CU_ASSERT_PTR_NULL(vr_st_find(st, "missing"));
    vr_st_close(st);
}

static void test_round_trip(void)
{
    vr_st_writer *w = rt_writer();
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    TU_OK(vr_st_write(w, tp("rt.safetensors")));
    check_rt_file(tp("rt.safetensors"));

    /* The writer keeps pointers, so a second write sees the caller's new values, and the
     * first file keeps the old ones. */
    float keep = rt_conv[5];
    rt_conv[5] = 1234.5f;
    TU_OK(vr_st_write(w, tp("rt2.safetensors")));
    check_rt_file(tp("rt2.safetensors"));
    rt_conv[5] = keep;
    check_rt_file(tp("rt.safetensors"));
    CU_ASSERT_EQUAL(count_temporaries(), 0);
    vr_st_writer_free(w);
}

/* Reads the writer's output with an independent parser: cJSON on the raw bytes. */
static void test_writer_layout(void)
{
    vr_st_writer *w = rt_writer();
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    TU_OK(vr_st_write(w, tp("layout.safetensors")));
    vr_st_writer_free(w);
    size_t len;
    unsigned char *b = read_bytes(tp("layout.safetensors"), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    CU_ASSERT_EQUAL((8 + n) % 8, 0); /* the data section starts 8-aligned */
    size_t total = 0;
    for (int i = 0; i < N_RT; i++) total += rt[i].bytes;
    CU_ASSERT_EQUAL_FATAL(len, 8 + n + total);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)b + 8, n, &end, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    for (const char *p = end; p < (const char *)b + 8 + n; p++) CU_ASSERT_EQUAL(*p, ' ');
    for (int i = 0; i < N_RT; i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, rt[i].name);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        CU_ASSERT_FATAL(cJSON_IsString(dt) && cJSON_IsArray(shape) && cJSON_IsArray(off));
        CU_ASSERT_STRING_EQUAL(dt->valuestring, vr_dtype_name(rt[i].dtype));
        CU_ASSERT_EQUAL(cJSON_GetArraySize(shape), rt[i].ndim);
        for (int d = 0; d < rt[i].ndim; d++)
            CU_ASSERT_EQUAL(cJSON_GetArrayItem(shape, d)->valuedouble, (double)rt[i].shape[d]);
        CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(off), 2);
        uint64_t begin = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        uint64_t stop = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        CU_ASSERT_EQUAL(stop - begin, rt[i].bytes);
        CU_ASSERT(rt[i].bytes == 0 || memcmp(b + 8 + n + begin, rt[i].data, rt[i].bytes) == 0);
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(meta), 3);
    CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(cJSON_GetObjectItem(meta, "epoch")), "2");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(root), N_RT + 1);
    cJSON_Delete(root);
    free(b);
}

/* Files laid out byte for byte as the reference implementation (huggingface/safetensors)
 * writes them: u64 LE header length, compact JSON with keys dtype, shape, data_offsets and
 * __metadata__ first, padded with spaces to a multiple of 8, then little-endian data. */
static const char ref_json[] =
    "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
static const unsigned char ref_data[24] = {0, 0, 0,   0,  0, 0, 128, 63, 0, 0, 0,   64,
                                           0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
static const char ref_meta_json[] = "{\"__metadata__\":{\"framework\":\"pt\"}}     ";

/* ref_json + ref_data as one buffer; returns its length. */
static size_t ref_file(unsigned char *b)
{
    size_t n = strlen(ref_json);
    put_u64_le(b, n);
    memcpy(b + 8, ref_json, n);
    memcpy(b + 8 + n, ref_data, sizeof ref_data);
    return 8 + n + sizeof ref_data;
}

static void test_reference_layout_read(void)
{
    unsigned char b[256];
    size_t len = ref_file(b);
    CU_ASSERT_EQUAL(len, 8 + 72 + 24); /* the reference pads this header to 72 bytes */
    CU_ASSERT_FATAL(write_bytes(tp("ref.safetensors"), b, len));
    vr_safetensors *st;
    TU_OK(vr_st_open(tp("ref.safetensors"), &st));
    CU_ASSERT_EQUAL_FATAL(vr_st_count(st), 1);
    const vr_st_entry *e = vr_st_find(st, "attn0");
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_EQUAL(e->dtype, VR_DTYPE_F32);
    CU_ASSERT_EQUAL(e->begin, 0);
    CU_ASSERT_EQUAL(e->end, 24);
    const int64_t shape[4] = {1, 1, 2, 3};
    float got[6];
    const float want[6] = {0, 1, 2, 3, 4, 5};
    TU_OK(vr_st_read_f32(st, "attn0", 4, shape, got));
    CU_ASSERT(tu_close(got, want, 6, 0.0, 0.0, "attn0"));
    vr_st_close(st);

    /* metadata only, no tensor */
    put_u64_le(b, strlen(ref_meta_json));
    memcpy(b + 8, ref_meta_json, strlen(ref_meta_json));
    CU_ASSERT_FATAL(write_bytes(tp("ref_meta.safetensors"), b, 8 + strlen(ref_meta_json)));
    TU_OK(vr_st_open(tp("ref_meta.safetensors"), &st));
    CU_ASSERT_EQUAL(vr_st_count(st), 0);
    CU_ASSERT_STRING_EQUAL(vr_st_metadata(st, "framework"), "pt");
    vr_st_close(st);

    /* Tensors listed out of data order, scalars, and a header padded with mixed whitespace:
     * all legal. b (I64 scalar) sits before a (F32 [2]) in the data section. */
    static const char mixed[] =
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
        "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}} \n\t ";
    static const unsigned char mixed_data[16] = {7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 192};
    CU_ASSERT_FATAL(write_st(tp("mixed.safetensors"), mixed, mixed_data, sizeof mixed_data));
    TU_OK(vr_st_open(tp("mixed.safetensors"), &st));
    CU_ASSERT_STRING_EQUAL(vr_st_entry_at(st, 0)->name, "a"); /* header order is kept */
    int64_t seven = 0;
    TU_OK(vr_st_read(st, "b", VR_DTYPE_I64, &seven, 1));
    CU_ASSERT_EQUAL(seven, 7);
    CU_ASSERT_EQUAL(vr_st_find(st, "b")->ndim, 0);
    const int64_t two = 2;
    TU_OK(vr_st_read_f32(st, "a", 1, &two, got));
    CU_ASSERT_EQUAL(got[0], 1.0f);
    CU_ASSERT_EQUAL(got[1], -2.0f);
    vr_st_close(st);
}

static void test_reference_layout_write(void)
{
    unsigned char want[256];
    size_t want_len = ref_file(want);
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    const float data[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[4] = {1, 1, 2, 3};
    TU_OK(vr_st_add(w, "attn0", VR_DTYPE_F32, 4, shape, data));
    TU_OK(vr_st_write(w, tp("ours.safetensors")));
    vr_st_writer_free(w);
    size_t len;
    unsigned char *got = read_bytes(tp("ours.safetensors"), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(len, want_len);
    CU_ASSERT(len == want_len && memcmp(got, want, len) == 0);
    free(got);

    TU_OK(vr_st_writer_new(&w));
    TU_OK(vr_st_add_metadata(w, "framework", "pt"));
    TU_OK(vr_st_write(w, tp("ours_meta.safetensors")));
    vr_st_writer_free(w);
    got = read_bytes(tp("ours_meta.safetensors"), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(len, 8 + strlen(ref_meta_json));
    CU_ASSERT(len == 8 + strlen(ref_meta_json) && got[0] == strlen(ref_meta_json) &&
              memcmp(got + 8, ref_meta_json, len - 8) == 0);
    free(got);

    /* an empty writer writes "{}" and six spaces, as the reference does */
    TU_OK(vr_st_writer_new(&w));
    TU_OK(vr_st_write(w, tp("ours_empty.safetensors")));
    vr_st_writer_free(w);
    got = read_bytes(tp("ours_empty.safetensors"), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT(len == 16 && memcmp(got, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(got);
}

static void test_truncated(void)
{
    vr_st_writer *w = rt_writer();
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    const char *path = tp("cut.safetensors");
    TU_OK(vr_st_write(w, path));
    vr_st_writer_free(w);
    struct stat sb;
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    CU_ASSERT_FATAL(truncate(path, sb.st_size - 3) == 0);
    /* the last tensor, "deep" (8 bytes), now lacks 3 of them */
    EXPECT_OPEN_FAIL(path, VR_ERR_FORMAT, "truncated", "'deep'");

    /* a hand-built one: 16 bytes promised, 10 present */
    static const unsigned char ten[10];
    CU_ASSERT_FATAL(write_st(tp("short_data.safetensors"),
                             "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                             ten, sizeof ten));
    EXPECT_OPEN_FAIL(tp("short_data.safetensors"), VR_ERR_FORMAT, "truncated", "'w'");
    CU_ASSERT(msg_has("16"));
    CU_ASSERT(msg_has("10"));
}

static void test_header_length(void)
{
    unsigned char b[32] = {0};
    memcpy(b + 8, "{}", 2);
    put_u64_le(b, 100); /* a 32-byte file cannot hold a 100-byte header */
    CU_ASSERT_FATAL(write_bytes(tp("hl100.safetensors"), b, sizeof b));
    EXPECT_OPEN_FAIL(tp("hl100.safetensors"), VR_ERR_FORMAT, "header length 100",
                     "exceeds file size 32");
    put_u64_le(b, 25); /* one byte too many: 8 + 25 > 32 */
    CU_ASSERT_FATAL(write_bytes(tp("hl25.safetensors"), b, sizeof b));
    EXPECT_OPEN_FAIL(tp("hl25.safetensors"), VR_ERR_FORMAT, "header length 25", "32");
    put_u64_le(b, (uint64_t)1 << 60);
    CU_ASSERT_FATAL(write_bytes(tp("hl2e60.safetensors"), b, sizeof b));
    EXPECT_OPEN_FAIL(tp("hl2e60.safetensors"), VR_ERR_FORMAT, "1152921504606846976", "exceeds");
    put_u64_le(b, UINT64_MAX); /* 8 + N wraps around in 64 bits */
    CU_ASSERT_FATAL(write_bytes(tp("hlmax.safetensors"), b, sizeof b));
    EXPECT_OPEN_FAIL(tp("hlmax.safetensors"), VR_ERR_FORMAT, "18446744073709551615", "exceeds");

    /* A header over the 100 MB limit inside a file large enough to hold it (sparse, so
     * cheap): refused before anything is read past the length field. */
    const char *big = tp("hlbig.safetensors");
    put_u64_le(b, 100000001);
    CU_ASSERT_FATAL(write_bytes(big, b, sizeof b));
    CU_ASSERT_FATAL(truncate(big, 100000100) == 0);
    EXPECT_OPEN_FAIL(big, VR_ERR_FORMAT, "header length 100000001", "limit");
    unlink(big);
}

static void test_short_and_missing_files(void)
{
    CU_ASSERT_FATAL(write_bytes(tp("empty.safetensors"), "", 0));
    EXPECT_OPEN_FAIL(tp("empty.safetensors"), VR_ERR_FORMAT, "0 bytes", "too short");
    CU_ASSERT_FATAL(write_bytes(tp("seven.safetensors"), "\x02\0\0\0\0\0\0", 7));
    EXPECT_OPEN_FAIL(tp("seven.safetensors"), VR_ERR_FORMAT, "7 bytes", "too short");
    EXPECT_OPEN_FAIL(tp("does_not_exist.safetensors"), VR_ERR_IO, "cannot open",
                     strerror(ENOENT));
    EXPECT_OPEN_FAIL(tmp_dir, VR_ERR_IO, "not a regular file", "");
}

/* One malformed header: opening must fail with VR_ERR_FORMAT naming `word1` and `word2`. */
typedef struct bad_header {
    const char *file, *json;
    size_t data_bytes;
    const char *word1, *word2;
} bad_header;

static void check_bad_headers(const bad_header *cases, size_t n)
{
    static const unsigned char zeros[64];
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_FATAL(cases[i].data_bytes <= sizeof zeros);
        CU_ASSERT_FATAL(write_st(tp(cases[i].file), cases[i].json, zeros, cases[i].data_bytes));
        EXPECT_OPEN_FAIL(tp(cases[i].file), VR_ERR_FORMAT, cases[i].word1, cases[i].word2);
    }
}

#define ENTRY(name, dtype, shape, offsets)                                                    \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

static void test_bad_json(void)
{
    static const bad_header cases[] = {
        {"json_cut.st", "{\"w\":{\"dtype\":\"F32\",", 0, "not valid JSON", ""},
        {"json_garbage.st", "{} x", 0, "unexpected bytes", ""},
        {"json_array.st", "[1, 2]", 0, "not a JSON object", ""},
        {"json_entry.st", "{\"w\": 3}", 0, "'w'", "not a JSON object"},
        {"json_nodtype.st", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'", "dtype"},
        {"json_noshape.st", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "'w'",
         "shape"},
        {"json_nooffsets.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w'",
         "data_offsets"},
        {"json_meta_value.st", "{\"__metadata__\":{\"lr\":0.1}}", 0, "__metadata__", "'lr'"},
        {"json_meta_array.st", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__", "object"},
        {"json_duplicate.st", "{" ENTRY("a", "F32", "[1]", "[0,4]") "," ENTRY("a", "F32", "[1]",
                                                                              "[4,8]") "}",
         8, "'a'", "twice"},
    };
    check_bad_headers(cases, sizeof cases / sizeof cases[0]);
    /* an embedded NUL is not whitespace, so it may not pad a header */
    static const char with_nul[] = "{}\0     ";
    unsigned char b[16];
    put_u64_le(b, 8);
    memcpy(b + 8, with_nul, 8);
    CU_ASSERT_FATAL(write_bytes(tp("json_nul.st"), b, 16));
    EXPECT_OPEN_FAIL(tp("json_nul.st"), VR_ERR_FORMAT, "unexpected bytes", "byte 2");
}

static void test_bad_entries(void)
{
    static const bad_header cases[] = {
        {"dtype_unknown.st", "{" ENTRY("w", "F8_E4M3", "[2]", "[0,2]") "}", 2, "'w'",
         "unknown dtype 'F8_E4M3'"},
        {"dtype_lower.st", "{" ENTRY("w", "f32", "[1]", "[0,4]") "}", 4, "'w'", "'f32'"},
        {"offsets_short.st", "{" ENTRY("w", "F32", "[2,2]", "[0,12]") "}", 16, "'w'",
         "needs 16"},
        {"offsets_long.st", "{" ENTRY("w", "F64", "[1]", "[0,16]") "}", 16, "'w'", "needs 8"},
        {"offsets_reversed.st", "{" ENTRY("w", "U8", "[4]", "[8,4]") "}", 8, "'w'",
         "begin <= end"},
        {"offsets_three.st", "{" ENTRY("w", "U8", "[4]", "[0,4,4]") "}", 8, "'w'",
         "data_offsets"},
        {"offsets_negative.st", "{" ENTRY("w", "U8", "[0]", "[-1,-1]") "}", 8, "'w'",
         "data_offsets"},
        {"overlap.st", "{" ENTRY("a", "F32", "[2]", "[0,8]") "," ENTRY("b", "F32", "[2]",
                                                                      "[4,12]") "}",
         12, "'a'", "overlap"},
        {"overlap_empty.st", "{" ENTRY("a", "F32", "[2]", "[0,8]") "," ENTRY("b", "F32", "[0]",
                                                                            "[4,4]") "}",
         8, "'b'", "overlap"},
        {"shape_negative.st", "{" ENTRY("w", "F32", "[-1]", "[0,4]") "}", 4, "'w'",
         "shape[0]"},
        {"shape_fraction.st", "{" ENTRY("w", "F32", "[2,1.5]", "[0,12]") "}", 12, "'w'",
         "shape[1]"},
        {"shape_string.st", "{" ENTRY("w", "F32", "[\"2\"]", "[0,8]") "}", 8, "'w'",
         "shape[0]"},
        {"shape_huge.st", "{" ENTRY("w", "U8", "[9007199254740993]", "[0,8]") "}", 8, "'w'",
         "shape[0]"},
        {"shape_overflow.st", "{" ENTRY("w", "F32", "[4294967296,4294967296]", "[0,8]") "}", 8,
         "'w'", "overflows"},
        {"shape_9dims.st", "{" ENTRY("w", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1, "'w'",
         "9 dimensions"},
        {"shape_object.st", "{" ENTRY("w", "U8", "{}", "[0,1]") "}", 1, "'w'", "shape"},
    };
    check_bad_headers(cases, sizeof cases / sizeof cases[0]);

    /* the limits themselves are accepted: 8 dims, zero-sized tensors sharing an offset */
    static const unsigned char one[1] = {42};
    CU_ASSERT_FATAL(write_st(tp("edges.st"),
                             "{" ENTRY("w", "U8", "[1,1,1,1,1,1,1,1]", "[0,1]") ","
                             ENTRY("e", "F64", "[3,0]", "[1,1]") "," ENTRY("f", "F32", "[0]",
                                                                           "[1,1]") "}",
                             one, 1));
    vr_safetensors *st;
    TU_OK(vr_st_open(tp("edges.st"), &st));
    CU_ASSERT_EQUAL(vr_st_find(st, "w")->ndim, 8);
    CU_ASSERT_EQUAL(*(const unsigned char *)vr_st_data(st, vr_st_find(st, "w")), 42);
    vr_st_close(st);
}

static void test_read_errors(void)
{
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    const double d[6] = {1, 2, 3, 4, 5, 6};
    const float f[6] = {1, 2, 3, 4, 5, 6};
    const int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6};
    TU_OK(vr_st_add(w, "w64", VR_DTYPE_F64, 2, s23, d));
    TU_OK(vr_st_add(w, "w32", VR_DTYPE_F32, 2, s23, f));
    const char *path = tp("read_errors.safetensors");
    TU_OK(vr_st_write(w, path));
    vr_st_writer_free(w);
    vr_safetensors *st;
    TU_OK(vr_st_open(path, &st));

    float out[8];
    for (int i = 0; i < 8; i++) out[i] = -1.0f;
    CU_ASSERT_EQUAL(vr_st_read(st, "w64", VR_DTYPE_F32, out, 6), VR_ERR_FORMAT);
    CU_ASSERT(msg_has("tensor 'w64' in "));
    CU_ASSERT(msg_has(path));
    CU_ASSERT(msg_has("has dtype F64, expected F32"));
    CU_ASSERT_EQUAL(vr_st_read_f32(st, "w64", 2, s23, out), VR_ERR_FORMAT);
    CU_ASSERT(msg_has("'w64'"));

    CU_ASSERT_EQUAL(vr_st_read(st, "w32", VR_DTYPE_F32, out, 5), VR_ERR_SHAPE);
    CU_ASSERT(msg_has("'w32'"));
    CU_ASSERT(msg_has("6 elements (shape [2, 3]), expected 5"));
    CU_ASSERT_EQUAL(vr_st_read_f32(st, "w32", 2, s32, out), VR_ERR_SHAPE);
    CU_ASSERT(msg_has("has shape [2, 3], expected [3, 2]"));
    CU_ASSERT_EQUAL(vr_st_read_f32(st, "w32", 1, s6, out), VR_ERR_SHAPE);
    CU_ASSERT(msg_has("expected [6]"));
    const int64_t many[12] = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN,
                              INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};
    CU_ASSERT_EQUAL(vr_st_read_f32(st, "w32", 12, many, out), VR_ERR_SHAPE); /* message cut */
    CU_ASSERT(msg_has("expected [-9223372036854775808, "));
    for (int i = 0; i < 8; i++) CU_ASSERT_EQUAL(out[i], -1.0f); /* failed reads write nothing */

    CU_ASSERT_EQUAL(vr_st_read(st, "nope", VR_DTYPE_F32, out, 6), VR_ERR_NOT_FOUND);
    CU_ASSERT(msg_has("tensor 'nope' not found in "));
    CU_ASSERT(msg_has(path));
    CU_ASSERT_EQUAL(vr_st_read_f32(st, "nope", 2, s23, out), VR_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(vr_st_find(st, "nope"));

    TU_OK(vr_st_read_f32(st, "w32", 2, s23, out));
    CU_ASSERT(tu_close(out, f, 6, 0.0, 0.0, "w32"));
    vr_st_close(st);
}

static void test_writer_arguments(void)
{
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    const float x[4] = {1, 2, 3, 4};
    const int64_t s4[1] = {4}, neg[2] = {2, -2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
    const int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 1 << 20};
    TU_OK(vr_st_add(w, "x", VR_DTYPE_F32, 1, s4, x));
    CU_ASSERT_EQUAL(vr_st_add(w, "x", VR_DTYPE_F32, 1, s4, x), VR_ERR_ARG);
    CU_ASSERT(msg_has("'x'"));
    CU_ASSERT_EQUAL(vr_st_add(w, "__metadata__", VR_DTYPE_F32, 1, s4, x), VR_ERR_ARG);
    CU_ASSERT_EQUAL(vr_st_add(w, "n", VR_DTYPE_F32, 2, neg, x), VR_ERR_ARG);
    CU_ASSERT(msg_has("'n'"));
    CU_ASSERT_EQUAL(vr_st_add(w, "nine", VR_DTYPE_F32, 9, nine, x), VR_ERR_ARG);
    CU_ASSERT_EQUAL(vr_st_add(w, "huge", VR_DTYPE_F32, 3, huge, x), VR_ERR_ARG);
    CU_ASSERT(msg_has("overflows"));
    CU_ASSERT_EQUAL(vr_st_add(w, "null", VR_DTYPE_F32, 1, s4, NULL), VR_ERR_ARG);
    CU_ASSERT_EQUAL(vr_st_add(w, "bad_dtype", (vr_dtype)99, 1, s4, x), VR_ERR_ARG);
    TU_OK(vr_st_add(w, "empty_null", VR_DTYPE_F32, 1, (const int64_t[]){0}, NULL));

    /* the refused tensors left nothing behind */
    TU_OK(vr_st_write(w, tp("args.safetensors")));
    vr_st_writer_free(w);
    vr_safetensors *st;
    TU_OK(vr_st_open(tp("args.safetensors"), &st));
    CU_ASSERT_EQUAL(vr_st_count(st), 2);
    vr_st_close(st);
}

/* A good file at `path` and its bytes, to check later that a failed write left it alone. */
static unsigned char *make_good_file(const char *path, size_t *len)
{
    unsigned char b[256];
    size_t n = ref_file(b);
    *len = 0;
    if (!write_bytes(path, b, n)) return NULL;
    return read_bytes(path, len);
}

static int file_equals(const char *path, const unsigned char *want, size_t want_len)
{
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    int same = got && len == want_len && memcmp(got, want, len) == 0;
    free(got);
    return same;
}

static void test_atomic_write(void)
{
    vr_st_writer *w;
    TU_OK(vr_st_writer_new(&w));
    const float x[4] = {1, 2, 3, 4};
    TU_OK(vr_st_add(w, "x", VR_DTYPE_F32, 1, (const int64_t[]){4}, x));

    /* the directory does not exist: nothing can be created */
    const char *nodir = tp("no/such/dir/out.safetensors");
    CU_ASSERT_EQUAL(vr_st_write(w, nodir), VR_ERR_IO);
    CU_ASSERT(msg_has(nodir));
    CU_ASSERT(msg_has(strerror(ENOENT)));

    /* the target is a non-empty directory: the temporary is written, rename(2) fails, and
     * the temporary must be removed */
    const char *dir = tp("a_directory");
    CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
    size_t good_len;
    unsigned char *good = make_good_file(tp("a_directory/inside.safetensors"), &good_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    CU_ASSERT_EQUAL(vr_st_write(w, dir), VR_ERR_IO);
    CU_ASSERT(msg_has(dir));
    CU_ASSERT(msg_has("rename"));
    CU_ASSERT_EQUAL(count_temporaries(), 0);
    CU_ASSERT(file_equals(tp("a_directory/inside.safetensors"), good, good_len));

    /* an existing good file in a directory we may not write to (root ignores the mode) */
    const char *ro = tp("read_only");
    CU_ASSERT_FATAL(mkdir(ro, 0755) == 0);
    const char *kept = tp("read_only/kept.safetensors");
    free(good);
    good = make_good_file(kept, &good_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    if (geteuid() != 0) {
        CU_ASSERT_FATAL(chmod(ro, 0555) == 0);
        CU_ASSERT_EQUAL(vr_st_write(w, kept), VR_ERR_IO);
        CU_ASSERT(msg_has(kept));
        CU_ASSERT(msg_has(strerror(EACCES)));
        CU_ASSERT(file_equals(kept, good, good_len));
        chmod(ro, 0755);
    }

    /* success replaces the old file and leaves no temporary */
    TU_OK(vr_st_write(w, kept));
    CU_ASSERT(!file_equals(kept, good, good_len));
    CU_ASSERT_EQUAL(count_temporaries(), 0);
    free(good);
    vr_st_writer_free(w);
}

/* A write that fails part way, as on a full disk: RLIMIT_FSIZE makes write(2) fail with
 * EFBIG once the temporary passes 4 KiB. The child process takes the limit, so the test
 * process and its log are not affected. */
static void test_failed_write_keeps_old_file(void)
{
    const char *path = tp("full.safetensors");
    size_t good_len;
    unsigned char *good = make_good_file(path, &good_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    CU_ASSERT_FATAL(good_len < 4096);

    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        free(good); /* the child's copy */
        static float big[64 * 1024]; /* 256 KiB: far past the limit */
        struct rlimit rl;
        if (getrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(10);
        rl.rlim_cur = 4096;
        if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(11);
        vr_st_writer *w;
        if (vr_st_writer_new(&w) != VR_OK) _exit(12);
        if (vr_st_add(w, "big", VR_DTYPE_F32, 1, (const int64_t[]){64 * 1024}, big) != VR_OK)
            _exit(13);
        if (vr_st_write(w, path) != VR_ERR_IO) _exit(14);
        if (!strstr(vr_last_error(), path) || !strstr(vr_last_error(), strerror(EFBIG)))
            _exit(15);
        vr_st_writer_free(w);
        _exit(0);
    }
    int status = 0;
    CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "\n  child failed: status %d (14: write did not fail, 15: message)\n",
                status);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT(file_equals(path, good, good_len));
    CU_ASSERT_EQUAL(count_temporaries(), 0);
    free(good);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/vr_safetensors_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    static const tu_test tests[] = {
        {"dtype names and sizes", test_dtypes},
        {"round trip of every dtype, empty and scalar tensors, metadata", test_round_trip},
        {"writer layout read back with cJSON", test_writer_layout},
        {"reads the reference layout byte for byte", test_reference_layout_read},
        {"writes the reference layout byte for byte", test_reference_layout_write},
        {"truncated data section", test_truncated},
        {"header length beyond the file or the limit", test_header_length},
        {"short, empty, missing files and directories", test_short_and_missing_files},
        {"malformed JSON header", test_bad_json},
        {"malformed tensor entries", test_bad_entries},
        {"read: wrong dtype, count, shape, missing name", test_read_errors},
        {"writer argument checks", test_writer_arguments},
        {"atomic write: failed create or rename", test_atomic_write},
        {"atomic write: disk full keeps the old file", test_failed_write_keeps_old_file},
        {NULL, NULL},
    };
    int rc = tu_main("safetensors", tests);
    nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
