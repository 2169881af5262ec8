/* The image front end against Pillow 9.4 and torchvision 0.14 (fixtures written by
 * tests/reference/make_image_fixtures.py) and against the distributions of the random views.
 *
 * Decoding: every committed JPEG (4:2:0, 4:4:4, progressive, grayscale, CMYK) and PNG (RGB,
 * RGBA, gray, gray + alpha, 1-bit, 16-bit gray and RGB, palette, palette + tRNS, interlaced)
 * equals PIL's convert("RGB") byte for byte (tolerance 0: PIL decodes JPEGs with the same
 * libjpeg-turbo and the same settings, accurate integer IDCT and fancy upsampling, so no IDCT
 * difference is left to allow for); DCT-scaled decodes equal PIL's draft mode at 1/2, 1/4 and
 * 1/8, also byte for byte; file and memory input agree; every broken file (empty, text,
 * truncated, corrupt header, corrupt scan, corrupt PNG data, tables only, missing, a folder) is
 * refused with a message naming the file and what is wrong.
 *
 * Transforms with fixed parameters: resized crop, flip, the four jitter adjustments, grayscale,
 * solarisation and Pillow's Gaussian blur give torchvision's bytes exactly (atol 0 on 8-bit
 * outputs); ToTensor + Normalize and whole views with fixed parameters match within
 * |got - ref| <= 1e-6 + 0 * |ref| (float rounding of the last step).
 *
 * Random parameters: over 20000 draws per view configuration the crop's area fraction and log
 * aspect ratio, its position, the flip, jitter, grayscale, blur and solarisation rates, the
 * jitter order and factors and the blur sigma follow their distributions: means within 4.5
 * standard errors, quantiles within 4.5 standard errors plus the crop's pixel rounding, every
 * permutation of the jitter order by a chi-square bound; with a reference simulation of
 * torchvision's rejection sampling where no closed form exists. */
#include <math.h>
#include <sys/stat.h>

#include "image_files.h"
#include "testutil.h"
#include "vicreg/image.h"
#include "vicreg/image_ops.h"
#include "vicreg/image_views.h"

#define DRAWS 20000
/* standard errors allowed between a sample statistic and its expected value: the tests
 * check about 200 statistics, and a normal deviate beyond 4.5 has probability 7e-6 */
#define NSE 4.5

static const char *image_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/image/%s", VR_FIXTURE_DIR, name);
    return p;
}

/* The U8 fixture tensor `name` of (h, w, 3), its size checked; NULL after a failed assertion. */
static const uint8_t *u8_fixture(const vr_safetensors *st, const char *name, int h, int w)
{
    const vr_st_entry *e = vr_st_find(st, name);
    if (!e) fprintf(stderr, "\n  fixture %s missing\n", name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    int ok = e->dtype == VR_DTYPE_U8 && e->ndim == 3 && e->shape[2] == 3 && (h < 0 || e->shape[0] == h) &&
             (w < 0 || e->shape[1] == w);
    if (!ok) fprintf(stderr, "\n  fixture %s: unexpected dtype or shape\n", name);
    CU_ASSERT_FATAL(ok);
    return vr_st_data(st, e);
}

/* 1 when the n bytes agree; else prints the count of differing bytes and the first one. */
static int same_bytes(const uint8_t *got, const uint8_t *ref, size_t n, const char *what)
{
    size_t bad = 0, first = 0;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)ref[i]);
        if (d && !bad++) first = i;
        if (d > worst) worst = d;
    }
    if (bad)
        fprintf(stderr, "\n  %s: %zu of %zu bytes differ (largest by %d); first at %zu: got %d want %d\n", what, bad,
                n, worst, first, got[first], ref[first]);
    return bad == 0;
}

/* ---------------------------------------------------------------- decoding */

static const char *GOOD[] = {"rgb420.jpg", "rgb444.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg",
                             "rgb.png",    "rgba.png",   "gray.png",        "la.png",   "bw.png",
                             "gray16.png", "rgb16.png",  "palette.png",     "palette_trns.png",
                             "interlaced.png", "big.jpg"};
#define NGOOD (int)(sizeof GOOD / sizeof GOOD[0])

static void test_decode_formats(void)
{
    vr_safetensors *st = tu_open_fixture("image_decode.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image im = {0}, mem = {0};
    for (int i = 0; i < NGOOD; i++) {
        const char *path = image_path(GOOD[i]);
        TU_OK(vr_image_read(d, path, 0, 0, &im));
        const vr_st_entry *e = vr_st_find(st, GOOD[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        CU_ASSERT_EQUAL(im.h, e->shape[0]);
        CU_ASSERT_EQUAL(im.w, e->shape[1]);
        const uint8_t *ref = u8_fixture(st, GOOD[i], im.h, im.w);
        CU_ASSERT(same_bytes(im.data, ref, (size_t)im.h * im.w * 3, GOOD[i]));

        vr_image_info info;
        const uint8_t *bytes;
        size_t size;
        TU_OK(vr_image_load(d, path, &bytes, &size));
        TU_OK(vr_image_probe(d, bytes, size, GOOD[i], &info));
        CU_ASSERT_EQUAL(info.h, im.h);
        CU_ASSERT_EQUAL(info.w, im.w);
        CU_ASSERT_EQUAL(info.format, strstr(GOOD[i], ".jpg") ? VR_IMAGE_JPEG : VR_IMAGE_PNG);
        /* a copy, so the bytes do not live in the decoder's own buffer */
        uint8_t *copy = malloc(size);
        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        memcpy(copy, bytes, size);
        TU_OK(vr_image_decode(d, copy, size, GOOD[i], 0, 0, &mem));
        CU_ASSERT(mem.h == im.h && mem.w == im.w && memcmp(mem.data, im.data, (size_t)im.h * im.w * 3) == 0);
        free(copy);
    }
    vr_image_free(&im);
    vr_image_free(&mem);
    vr_image_decoder_free(d);
    vr_st_close(st);
}

static void test_decode_dct_scaling(void)
{
    vr_safetensors *st = tu_open_fixture("image_decode.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image im = {0};
    /* big.jpg is 160 x 120: a request of (60, 80) allows 1/2, (30, 40) 1/4, (15, 20) 1/8 */
    static const struct { int min_h, min_w, scale; } cases[] = {{60, 80, 2}, {30, 40, 4}, {15, 20, 8}, {1, 1, 8}};
    vr_image_info info = {.format = VR_IMAGE_JPEG, .h = 120, .w = 160};
    for (int i = 0; i < 4; i++) {
        TU_OK(vr_image_read(d, image_path("big.jpg"), cases[i].min_h, cases[i].min_w, &im));
        int s = cases[i].scale, h = (120 + s - 1) / s, w = (160 + s - 1) / s, sh, sw;
        CU_ASSERT(im.h == h && im.w == w);
        vr_image_scaled_size(&info, cases[i].min_h, cases[i].min_w, &sh, &sw);
        CU_ASSERT(sh == h && sw == w);
        char name[16];
        snprintf(name, sizeof name, "big_s%d", s);
        CU_ASSERT(same_bytes(im.data, u8_fixture(st, name, h, w), (size_t)h * w * 3, name));
    }
    /* 61 rows rule out 1/2 (the fractional scales are not used); more than the image asks
     * full size; only one side given */
    static const struct { int min_h, min_w, h, w; } sizes[] = {
        {61, 80, 120, 160}, {121, 10, 120, 160}, {0, 0, 120, 160}, {0, 41, 60, 80}, {0, 40, 30, 40}, {100, 0, 120, 160}};
    for (int i = 0; i < 6; i++) {
        TU_OK(vr_image_read(d, image_path("big.jpg"), sizes[i].min_h, sizes[i].min_w, &im));
        CU_ASSERT(im.h == sizes[i].h && im.w == sizes[i].w);
        if (im.h != sizes[i].h || im.w != sizes[i].w)
            fprintf(stderr, "\n  request %dx%d: decoded %dx%d, want %dx%d\n", sizes[i].min_w, sizes[i].min_h, im.w,
                    im.h, sizes[i].w, sizes[i].h);
    }
    /* PNGs are always full size */
    TU_OK(vr_image_read(d, image_path("rgb.png"), 5, 5, &im));
    CU_ASSERT(im.h == 47 && im.w == 61);
    vr_image_free(&im);
    vr_image_decoder_free(d);
    vr_st_close(st);
}

static void expect_failure(vr_image_decoder *d, const char *path, vr_status want, const char *words)
{
    vr_image im = {0};
    vr_status s = vr_image_read(d, path, 0, 0, &im);
    const char *msg = vr_last_error();
    int ok = s == want && strstr(msg, path) && strstr(msg, words);
    if (!ok)
        fprintf(stderr, "\n  %s: got %s \"%s\", want %s mentioning \"%s\"\n", path, vr_status_str(s), msg,
                vr_status_str(want), words);
    CU_ASSERT(ok);
    vr_image_free(&im);
}

/* A JPEG's bytes with every quantisation table segment (DQT) cut out: an abbreviated stream
 * that only decodes with tables some earlier stream left behind. malloc'd, *n bytes. */
static uint8_t *without_dqt(const uint8_t *p, size_t size, size_t *n)
{
    uint8_t *q = malloc(size);
    size_t i = 2, o = 2;
    memcpy(q, p, 2);
    while (i + 4 <= size && p[i] == 0xff && p[i + 1] != 0xda) {
        size_t len = 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
        if (p[i + 1] != 0xdb) memcpy(q + o, p + i, len), o += len;
        i += len;
    }
    memcpy(q + o, p + i, size - i);
    *n = o + size - i;
    return q;
}

/* What an image decodes to does not depend on what the decoder decoded before: a JPEG without
 * quantisation tables is refused on a fresh decoder, and also right after a good JPEG whose
 * tables libjpeg would otherwise lend it (found by fuzzing: a stream decoded with the tables
 * of the one before). */
static void test_decode_history(void)
{
    enum { H = 16, W = 24 };
    uint8_t px[H * W * 3];
    vr_rng r;
    vr_rng_seed(&r, 11);
    if_picture(&r, H, W, px);
    tjhandle t = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    CU_ASSERT_FATAL(t && tjCompress2(t, px, W, W * 3, H, TJPF_RGB, &jpeg, &size, TJSAMP_444, 50, 0) == 0);
    size_t n;
    uint8_t *bare = without_dqt(jpeg, size, &n);
    CU_ASSERT_FATAL(n < size);
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image im = {0};
    CU_ASSERT_EQUAL(vr_image_decode(d, bare, n, "bare", 0, 0, &im), VR_ERR_FORMAT);
    TU_OK(vr_image_decode(d, jpeg, size, "whole", 0, 0, &im));
    vr_status s = vr_image_decode(d, bare, n, "bare after whole", 0, 0, &im);
    CU_ASSERT_EQUAL(s, VR_ERR_FORMAT);
    if (s != VR_ERR_FORMAT) fprintf(stderr, "\n  the bare stream decoded with the tables of the one before\n");
    vr_image_info info;
    TU_OK(vr_image_probe(d, jpeg, size, "whole", &info));
    CU_ASSERT_EQUAL(vr_image_decode(d, bare, n, "bare after a probe", 0, 0, &im), VR_ERR_FORMAT);
    free(bare);
    tjFree(jpeg);
    tjDestroy(t);
    vr_image_free(&im);
    vr_image_decoder_free(d);
}

static void test_decode_errors(void)
{
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    expect_failure(d, image_path("empty.jpg"), VR_ERR_FORMAT, "empty file (0 bytes)");
    expect_failure(d, image_path("text.jpg"), VR_ERR_FORMAT, "not an image");
    expect_failure(d, image_path("truncated.jpg"), VR_ERR_FORMAT, "truncated JPEG");
    expect_failure(d, image_path("corrupt_header.jpg"), VR_ERR_FORMAT, "corrupt JPEG");
    expect_failure(d, image_path("corrupt_data.jpg"), VR_ERR_FORMAT, "corrupt JPEG");
    expect_failure(d, image_path("truncated.png"), VR_ERR_FORMAT, "truncated PNG");
    expect_failure(d, image_path("corrupt.png"), VR_ERR_FORMAT, "corrupt PNG");
    expect_failure(d, image_path("no_such_file.jpg"), VR_ERR_NOT_FOUND, "cannot open");
    expect_failure(d, VR_FIXTURE_DIR "/image", VR_ERR_IO, "not a regular file");

    /* memory input: the name given stands for the bytes; shorter than a signature */
    vr_image im = {0};
    static const uint8_t two[] = {0xff, 0xd8};
    CU_ASSERT_EQUAL(vr_image_decode(d, two, 2, "two bytes", 0, 0, &im), VR_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "two bytes: truncated"));
    /* a tables-only JPEG (SOI, one quantisation table, EOI: the abbreviated format, no frame):
     * TurboJPEG reads it without error and without a size, which the probe took for an image of
     * whatever the size variables held (found by fuzzing) */
    uint8_t tables[2 + 4 + 1 + 64 + 2] = {0xff, 0xd8, 0xff, 0xdb, 0x00, 0x43, 0x00};
    for (int i = 0; i < 64; i++) tables[7 + i] = 1;
    tables[71] = 0xff, tables[72] = 0xd9;
    vr_image_info info = {.h = 5, .w = 5};
    CU_ASSERT_EQUAL(vr_image_probe(d, tables, sizeof tables, "tables", &info), VR_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "tables: corrupt JPEG (header: tables only, no image)"));
    CU_ASSERT_EQUAL(vr_image_decode(d, tables, sizeof tables, "tables", 0, 0, &im), VR_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "tables: corrupt JPEG (header: tables only, no image)"));
    /* every prefix of a good JPEG and PNG fails cleanly (or, for a prefix that lacks only the
     * end marker, decodes), and the decoder works after each */
    const char *files[] = {"rgb420.jpg", "progressive.jpg", "rgb.png"};
    for (int f = 0; f < 3; f++) {
        const uint8_t *bytes;
        size_t size;
        TU_OK(vr_image_load(d, image_path(files[f]), &bytes, &size));
        uint8_t *copy = malloc(size);
        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        memcpy(copy, bytes, size);
        int failures = 0;
        for (size_t n = 0; n < size; n += 1 + n / 16) {
            vr_status s = vr_image_decode(d, copy, n, files[f], 0, 0, &im);
            if (s != VR_OK) {
                failures++;
                CU_ASSERT_EQUAL(s, VR_ERR_FORMAT);
                CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), files[f]));
            }
        }
        CU_ASSERT(failures > 10);
        TU_OK(vr_image_decode(d, copy, size, files[f], 0, 0, &im));
        free(copy);
    }
    vr_image_free(&im);
    vr_image_decoder_free(d);
}

/* A decoded image reuses its buffer: no allocation for an image no larger than before. */
static void test_decode_reuse(void)
{
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image im = {0};
    TU_OK(vr_image_read(d, image_path("big.jpg"), 0, 0, &im));
    uint8_t *data = im.data;
    size_t cap = im.capacity;
    TU_OK(vr_image_read(d, image_path("rgb420.jpg"), 0, 0, &im));
    TU_OK(vr_image_read(d, image_path("cmyk.jpg"), 0, 0, &im));
    TU_OK(vr_image_read(d, image_path("rgb16.png"), 0, 0, &im));
    CU_ASSERT(im.data == data && im.capacity == cap && im.h == 47 && im.w == 61);
    CU_ASSERT_EQUAL(vr_image_reserve(&im, 1 << 15, 1 << 14), VR_ERR_FORMAT); /* over VR_IMAGE_MAX_PIXELS */
    vr_image_free(&im);
    CU_ASSERT(im.data == NULL && im.capacity == 0);
    vr_image_decoder_free(d);
}

/* ---------------------------------------------------------------- transforms, fixed parameters */

/* The tables of make_image_fixtures.py. */
static const int RRC[][6] = {{0, 0, 48, 64, 24, 24}, {5, 7, 40, 50, 31, 45}, {10, 20, 13, 17, 40, 40},
                             {3, 4, 20, 30, 20, 30}, {2, 3, 30, 40, 30, 17}, {2, 3, 30, 40, 11, 40},
                             {1, 0, 47, 64, 7, 9}};
static const float RESIZE_BOX[][6] = {{0.0f, 0.0f, 64.0f, 48.0f, 20, 30},     {2.5f, 3.25f, 40.75f, 30.5f, 16, 16},
                                      {10.0f, 7.0f, 30.0f, 27.0f, 20, 20},     {0.5f, 0.0f, 63.5f, 48.0f, 33, 41},
                                      {31.125f, 20.375f, 33.875f, 25.625f, 12, 9}};
static const float BRIGHTNESS[] = {0.6f, 0.873f, 1.0f, 1.234f, 1.4f};
static const float CONTRAST[] = {0.6f, 0.912f, 1.0f, 1.187f, 1.4f};
static const float SATURATION[] = {0.0f, 0.8f, 0.955f, 1.2f};
static const float HUE[] = {-0.5f, -0.1f, -0.037f, 0.0f, 0.0512f, 0.1f, 0.5f};
static const float SIGMAS[] = {0.1f, 0.5f, 1.0f, 1.37f, 2.0f, 5.0f};
#define PH 48
#define PW 64
#define MH 64
#define MW 64

static const float IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f}, IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};

static void test_resized_crop(void)
{
    vr_safetensors *st = tu_open_fixture("image_ops.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const uint8_t *photo = u8_fixture(st, "photo", PH, PW);
    vr_image_scratch s = {0};
    for (int k = 0; k < (int)(sizeof RRC / sizeof RRC[0]); k++) {
        vr_image_crop c = {.top = RRC[k][0], .left = RRC[k][1], .h = RRC[k][2], .w = RRC[k][3]};
        int oh = RRC[k][4], ow = RRC[k][5];
        uint8_t *out = malloc((size_t)oh * ow * 3);
        CU_ASSERT_PTR_NOT_NULL_FATAL(out);
        TU_OK(vr_image_resized_crop(photo, PH, PW, &c, oh, ow, out, &s));
        char name[32];
        snprintf(name, sizeof name, "rrc.%d", k);
        CU_ASSERT(same_bytes(out, u8_fixture(st, name, oh, ow), (size_t)oh * ow * 3, name));
        free(out);
    }
    for (int k = 0; k < (int)(sizeof RESIZE_BOX / sizeof RESIZE_BOX[0]); k++) {
        int oh = (int)RESIZE_BOX[k][4], ow = (int)RESIZE_BOX[k][5];
        uint8_t *out = malloc((size_t)oh * ow * 3);
        CU_ASSERT_PTR_NOT_NULL_FATAL(out);
        TU_OK(vr_image_resize_box(photo, PH, PW, RESIZE_BOX[k], oh, ow, out, &s));
        char name[32];
        snprintf(name, sizeof name, "box.%d", k);
        CU_ASSERT(same_bytes(out, u8_fixture(st, name, oh, ow), (size_t)oh * ow * 3, name));
        free(out);
    }
    uint8_t one[3];
    CU_ASSERT_EQUAL(vr_image_resize_box(photo, PH, PW, (const float[]){1.0f, 2.0f, 64.5f, 9.0f}, 1, 1, one, &s),
                    VR_ERR_ARG);
    vr_image_crop outside = {.top = 40, .left = 0, .h = 9, .w = 4};
    CU_ASSERT_EQUAL(vr_image_resized_crop(photo, PH, PW, &outside, 1, 1, one, &s), VR_ERR_ARG);
    vr_image_scratch_free(&s);

    uint8_t flipped[PH * PW * 3];
    memcpy(flipped, photo, sizeof flipped);
    vr_image_hflip(flipped, PH, PW);
    CU_ASSERT(same_bytes(flipped, u8_fixture(st, "hflip", PH, PW), sizeof flipped, "hflip"));
    vr_st_close(st);
}

static void check_colour(const vr_safetensors *st, const char *kind, const float *factors, int n,
                         void (*op)(uint8_t *, size_t, float))
{
    const uint8_t *mix = u8_fixture(st, "mix", MH, MW);
    uint8_t px[MH * MW * 3];
    for (int k = 0; k < n; k++) {
        memcpy(px, mix, sizeof px);
        op(px, MH * MW, factors[k]);
        char name[32];
        snprintf(name, sizeof name, "%s.%d", kind, k);
        CU_ASSERT(same_bytes(px, u8_fixture(st, name, MH, MW), sizeof px, name));
    }
}

static void test_colour(void)
{
    vr_safetensors *st = tu_open_fixture("image_ops.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    check_colour(st, "brightness", BRIGHTNESS, 5, vr_image_brightness);
    check_colour(st, "contrast", CONTRAST, 5, vr_image_contrast);
    check_colour(st, "saturation", SATURATION, 4, vr_image_saturation);
    check_colour(st, "hue", HUE, 7, vr_image_hue);
    uint8_t px[MH * MW * 3];
    memcpy(px, u8_fixture(st, "mix", MH, MW), sizeof px);
    vr_image_grayscale(px, MH * MW);
    CU_ASSERT(same_bytes(px, u8_fixture(st, "gray", MH, MW), sizeof px, "gray"));
    memcpy(px, u8_fixture(st, "mix", MH, MW), sizeof px);
    vr_image_solarize(px, MH * MW, 128);
    CU_ASSERT(same_bytes(px, u8_fixture(st, "solarize", MH, MW), sizeof px, "solarize"));
    vr_st_close(st);
}

static void test_blur(void)
{
    vr_safetensors *st = tu_open_fixture("image_ops.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_image_scratch s = {0};
    uint8_t px[PH * PW * 3], tiny[3 * 2 * 3];
    for (int k = 0; k < (int)(sizeof SIGMAS / sizeof SIGMAS[0]); k++) {
        char name[32];
        memcpy(px, u8_fixture(st, "photo", PH, PW), sizeof px);
        TU_OK(vr_image_gaussian_blur(px, PH, PW, SIGMAS[k], &s));
        snprintf(name, sizeof name, "blur.%d", k);
        CU_ASSERT(same_bytes(px, u8_fixture(st, name, PH, PW), sizeof px, name));
        memcpy(tiny, u8_fixture(st, "tiny", 3, 2), sizeof tiny);
        TU_OK(vr_image_gaussian_blur(tiny, 3, 2, SIGMAS[k], &s));
        snprintf(name, sizeof name, "blur_tiny.%d", k);
        CU_ASSERT(same_bytes(tiny, u8_fixture(st, name, 3, 2), sizeof tiny, name));
    }
    memcpy(px, u8_fixture(st, "photo", PH, PW), sizeof px);
    TU_OK(vr_image_gaussian_blur(px, PH, PW, 0.0f, &s));
    CU_ASSERT(same_bytes(px, u8_fixture(st, "photo", PH, PW), sizeof px, "blur sigma 0"));
    CU_ASSERT_EQUAL(vr_image_gaussian_blur(px, PH, PW, -1.0f, &s), VR_ERR_ARG);
    vr_image_scratch_free(&s);
    vr_st_close(st);
}

static void test_to_tensor(void)
{
    vr_safetensors *st = tu_open_fixture("image_ops.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    static float got[3 * PH * PW], ref[3 * PH * PW];
    vr_image_to_tensor(u8_fixture(st, "photo", PH, PW), PH, PW, IMAGENET_MEAN, IMAGENET_STD, got);
    TU_OK(vr_st_read_f32(st, "tensor", 3, (const int64_t[]){3, PH, PW}, ref));
    CU_ASSERT(tu_close(got, ref, 3 * PH * PW, 1e-6, 0.0, "tensor"));
    vr_st_close(st);
}

/* VIEWS of make_image_fixtures.py: size, crop, flip, jitter (order, b, c, s, h) or none (order
 * -1), gray, sigma (0: none), solarize. */
static const struct {
    int size, crop[4], flip, order[4];
    float factor[4];
    int gray;
    float sigma;
    int solarize;
} VIEWS[] = {
    {40, {0, 0, 48, 64}, 0, {-1}, {0}, 0, 0.0f, 0},
    {40, {5, 7, 40, 50}, 1, {0, 1, 2, 3}, {1.31f, 0.74f, 1.12f, 0.083f}, 0, 1.2f, 0},
    {40, {10, 20, 25, 30}, 0, {3, 2, 1, 0}, {0.62f, 1.38f, 0.81f, -0.094f}, 0, 0.0f, 1},
    {32, {4, 9, 41, 33}, 1, {2, 0, 3, 1}, {1.05f, 1.21f, 0.93f, 0.02f}, 1, 0.37f, 1},
    {24, {8, 1, 12, 60}, 0, {1, 3, 0, 2}, {0.97f, 0.66f, 1.19f, -0.011f}, 0, 1.95f, 0},
};

static void test_view_fixed(void)
{
    vr_safetensors *st = tu_open_fixture("image_ops.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const uint8_t *photo = u8_fixture(st, "photo", PH, PW);
    vr_image_scratch s = {0};
    static uint8_t work8[40 * 40 * 3];
    static float got[3 * 40 * 40], ref[3 * 40 * 40];
    for (int k = 0; k < (int)(sizeof VIEWS / sizeof VIEWS[0]); k++) {
        vr_image_view_config c;
        vr_image_view_config_default(&c, 0);
        c.size = VIEWS[k].size;
        vr_image_view_params p = {
            .crop = {.top = VIEWS[k].crop[0], .left = VIEWS[k].crop[1], .h = VIEWS[k].crop[2], .w = VIEWS[k].crop[3]},
            .flip = VIEWS[k].flip, .jitter = VIEWS[k].order[0] >= 0, .gray = VIEWS[k].gray,
            .blur = VIEWS[k].sigma > 0.0f, .sigma = VIEWS[k].sigma, .solarize = VIEWS[k].solarize};
        memcpy(p.order, VIEWS[k].order, sizeof p.order);
        memcpy(p.factor, VIEWS[k].factor, sizeof p.factor);
        TU_OK(vr_image_view_apply(&c, &p, photo, PH, PW, work8, &s, got));
        char name[32];
        snprintf(name, sizeof name, "view.%d", k);
        int64_t n = VIEWS[k].size;
        TU_OK(vr_st_read_f32(st, name, 3, (const int64_t[]){3, n, n}, ref));
        CU_ASSERT(tu_close(got, ref, (size_t)(3 * n * n), 1e-6, 0.0, name));
    }
    vr_image_scratch_free(&s);
    vr_st_close(st);
}

/* ---------------------------------------------------------------- the random parameters */

typedef struct moments {
    double n, sum, sum2;
} moments;

static void add(moments *m, double x)
{
    m->n++;
    m->sum += x;
    m->sum2 += x * x;
}

static double mean_of(const moments *m) { return m->sum / m->n; }

/* |sample mean - mu| within NSE standard errors of a distribution with standard deviation sd */
static int mean_ok(const moments *m, double mu, double sd, const char *what)
{
    double se = sd / sqrt(m->n), got = mean_of(m);
    int ok = fabs(got - mu) <= NSE * se;
    if (!ok) fprintf(stderr, "\n  %s: mean %.6f, want %.6f +- %.6f (%.0f draws)\n", what, got, mu, NSE * se, m->n);
    return ok;
}

/* A Bernoulli(p) rate: exact for p of 0 or 1, else within NSE standard errors. */
static int rate_ok(const moments *m, double p, const char *what)
{
    if (p == 0.0 || p == 1.0) {
        int ok = mean_of(m) == p;
        if (!ok) fprintf(stderr, "\n  %s: rate %.6f, want exactly %g\n", what, mean_of(m), p);
        return ok;
    }
    return mean_ok(m, p, sqrt(p * (1 - p)), what);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The empirical q-quantiles of x (n, sorted here) against a uniform [lo, hi], each within NSE
 * standard errors of a quantile, sqrt(q (1 - q) / n) / density, plus slack. */
static int uniform_quantiles_ok(double *x, int n, double lo, double hi, double slack, const char *what)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    int ok = x[0] >= lo - slack && x[n - 1] <= hi + slack;
    if (!ok) fprintf(stderr, "\n  %s: range [%.6f, %.6f] outside [%g, %g]\n", what, x[0], x[n - 1], lo, hi);
    static const double qs[] = {0.05, 0.25, 0.5, 0.75, 0.95};
    for (int i = 0; i < 5; i++) {
        double q = qs[i], got = x[(int)(q * (n - 1))], want = lo + q * (hi - lo);
        double tol = NSE * sqrt(q * (1 - q) / n) * (hi - lo) + slack;
        if (fabs(got - want) > tol) {
            fprintf(stderr, "\n  %s: quantile %.2f is %.6f, want %.6f +- %.6f\n", what, q, got, want, tol);
            ok = 0;
        }
    }
    return ok;
}

typedef struct draws {
    moments flip, jitter, gray, blur, solarize, top, left, fallback;
    double *scale, *log_ratio, *factor[4], *sigma;
    int perm_count[24];
    int position_count[4][4]; /* [position][adjustment] */
    int n_crops;              /* crops found by a try (not the fallback) */
} draws;

static int perm_index(const int order[4])
{
    /* Lehmer code of the permutation */
    int idx = 0;
    for (int i = 0; i < 4; i++) {
        int smaller = 0;
        for (int j = i + 1; j < 4; j++) smaller += order[j] < order[i];
        idx = idx * (4 - i) + smaller;
    }
    return idx;
}

static void draw_many(const vr_image_view_config *c, int view, int h, int w, draws *d)
{
    memset(d, 0, sizeof *d);
    d->scale = malloc(DRAWS * sizeof(double));
    d->log_ratio = malloc(DRAWS * sizeof(double));
    d->sigma = malloc(DRAWS * sizeof(double));
    for (int k = 0; k < 4; k++) d->factor[k] = malloc(DRAWS * sizeof(double));
    CU_ASSERT_FATAL(d->scale && d->log_ratio && d->sigma && d->factor[0] && d->factor[1] && d->factor[2] &&
                    d->factor[3]);
    for (int i = 0; i < DRAWS; i++) {
        vr_rng r;
        vr_rng_seed_stream(&r, 2024, 2 * (uint64_t)i + (uint64_t)view);
        vr_image_view_params p;
        vr_image_view_sample(c, &r, h, w, &p);
        const vr_image_crop *cr = &p.crop;
        CU_ASSERT_FATAL(cr->h >= 1 && cr->w >= 1 && cr->top >= 0 && cr->left >= 0 && cr->top + cr->h <= h &&
                        cr->left + cr->w <= w);
        /* the fallback is the centre crop of the whole image, ratio clamped */
        int fallback = cr->top == (h - cr->h) / 2 && cr->left == (w - cr->w) / 2 && (cr->h == h || cr->w == w);
        add(&d->fallback, fallback);
        if (!fallback) {
            d->scale[d->n_crops] = (double)cr->h * cr->w / ((double)h * w);
            d->log_ratio[d->n_crops] = log((double)cr->w / cr->h);
            d->n_crops++;
        }
        if (h > cr->h) add(&d->top, (double)cr->top / (h - cr->h));
        if (w > cr->w) add(&d->left, (double)cr->left / (w - cr->w));
        add(&d->flip, p.flip);
        add(&d->jitter, p.jitter);
        add(&d->gray, p.gray);
        add(&d->blur, p.blur);
        add(&d->solarize, p.solarize);
        d->sigma[i] = p.sigma;
        for (int k = 0; k < 4; k++) {
            d->factor[k][i] = p.factor[k];
            d->position_count[k][p.order[k]]++;
        }
        d->perm_count[perm_index(p.order)]++;
    }
}

static void draws_free(draws *d)
{
    free(d->scale);
    free(d->log_ratio);
    free(d->sigma);
    for (int k = 0; k < 4; k++) free(d->factor[k]);
}

/* Everything but the crop against its closed-form distribution. */
static void check_non_crop(const vr_image_view_config *c, draws *d, const char *label)
{
    char what[96];
#define WHAT(s) (snprintf(what, sizeof what, "%s: %s", label, s), what)
    CU_ASSERT(rate_ok(&d->flip, c->flip_p, WHAT("flip rate")));
    CU_ASSERT(rate_ok(&d->jitter, c->jitter_p, WHAT("jitter rate")));
    CU_ASSERT(rate_ok(&d->gray, c->gray_p, WHAT("grayscale rate")));
    CU_ASSERT(rate_ok(&d->blur, c->blur_p, WHAT("blur rate")));
    CU_ASSERT(rate_ok(&d->solarize, c->solarize_p, WHAT("solarisation rate")));
    const float strength[3] = {c->brightness, c->contrast, c->saturation};
    static const char *names[4] = {"brightness factor", "contrast factor", "saturation factor", "hue factor"};
    for (int k = 0; k < 3; k++) {
        double lo = fmax(0.0, 1.0 - strength[k]), hi = 1.0 + strength[k];
        CU_ASSERT(uniform_quantiles_ok(d->factor[k], DRAWS, lo, hi, 1e-6, WHAT(names[k])));
    }
    CU_ASSERT(uniform_quantiles_ok(d->factor[3], DRAWS, -c->hue, c->hue, 1e-6, WHAT(names[3])));
    CU_ASSERT(uniform_quantiles_ok(d->sigma, DRAWS, c->blur_sigma_min, c->blur_sigma_max, 1e-6, WHAT("sigma")));
    /* the jitter order: each of the 24 permutations with probability 1/24 (chi-square with 23
     * degrees of freedom below its mean plus 6 standard deviations), each adjustment at each
     * position 1/4 of the time */
    double chi2 = 0, e = DRAWS / 24.0;
    for (int i = 0; i < 24; i++) chi2 += (d->perm_count[i] - e) * (d->perm_count[i] - e) / e;
    if (!(chi2 < 23 + 6 * sqrt(46.0))) fprintf(stderr, "\n  %s: jitter order chi-square %.1f\n", label, chi2);
    CU_ASSERT(chi2 < 23 + 6 * sqrt(46.0));
    for (int pos = 0; pos < 4; pos++)
        for (int k = 0; k < 4; k++) {
            double rate = d->position_count[pos][k] / (double)DRAWS, se = sqrt(0.25 * 0.75 / DRAWS);
            CU_ASSERT(fabs(rate - 0.25) <= NSE * se);
        }
#undef WHAT
}

/* torchvision's RandomResizedCrop.get_params written again, on drand48's stream: the
 * reference distribution of the crop where rejection makes it other than uniform. */
static void reference_crop(int h, int w, double smin, double smax, double rmin, double rmax, unsigned short xs[3],
                           int *ch, int *cw)
{
    for (int t = 0; t < 10; t++) {
        double target = h * (double)w * (smin + (smax - smin) * erand48(xs));
        double ar = exp(log(rmin) + (log(rmax) - log(rmin)) * erand48(xs));
        int ww = (int)nearbyint(sqrt(target * ar)), hh = (int)nearbyint(sqrt(target / ar));
        if (ww > 0 && ww <= w && hh > 0 && hh <= h) {
            *ch = hh;
            *cw = ww;
            return;
        }
    }
    *ch = *cw = 0; /* the fallback */
}

/* Crops of a 375 x 500 photo under each view's default configuration: area fraction and log
 * ratio against the reference simulation (two samples, so sqrt(2) standard errors), the
 * position uniform, the fallback as often as in the reference; the rest closed form. */
static void test_sample_default(void)
{
    const int h = 375, w = 500;
    for (int view = 0; view < 2; view++) {
        vr_image_view_config c;
        vr_image_view_config_default(&c, view);
        draws d;
        draw_many(&c, view, h, w, &d);
        char label[32];
        snprintf(label, sizeof label, "view %d", view + 1);
        check_non_crop(&c, &d, label);

        moments ref_scale = {0}, ref_ratio = {0}, ref_fallback = {0}, got_scale = {0}, got_ratio = {0};
        unsigned short xs[3] = {1, 2, (unsigned short)(3 + view)};
        for (int i = 0; i < DRAWS; i++) {
            int ch, cw;
            reference_crop(h, w, c.scale_min, c.scale_max, c.ratio_min, c.ratio_max, xs, &ch, &cw);
            add(&ref_fallback, ch == 0);
            if (ch) {
                add(&ref_scale, (double)ch * cw / ((double)h * w));
                add(&ref_ratio, log((double)cw / ch));
            }
        }
        for (int i = 0; i < d.n_crops; i++) {
            add(&got_scale, d.scale[i]);
            add(&got_ratio, d.log_ratio[i]);
        }
        double sd_scale = sqrt(ref_scale.sum2 / ref_scale.n - pow(mean_of(&ref_scale), 2));
        double sd_ratio = sqrt(ref_ratio.sum2 / ref_ratio.n - pow(mean_of(&ref_ratio), 2));
        CU_ASSERT(mean_ok(&got_scale, mean_of(&ref_scale), sd_scale * sqrt(2.0), "crop area fraction"));
        CU_ASSERT(mean_ok(&got_ratio, mean_of(&ref_ratio), sd_ratio * sqrt(2.0), "crop log ratio"));
        CU_ASSERT(fabs(mean_of(&d.fallback) - mean_of(&ref_fallback)) <= NSE * sqrt(2e-3 / DRAWS) + 1e-3);
        /* a uniform position over 0 .. h - ch: mean 1/2, standard deviation at most 1/sqrt(12)
         * plus the discreteness of small ranges (bounded by 1/2) */
        CU_ASSERT(mean_ok(&d.top, 0.5, 0.5, "crop top"));
        CU_ASSERT(mean_ok(&d.left, 0.5, 0.5, "crop left"));
        draws_free(&d);
    }
}

/* A configuration whose crops never fail a try (area fraction at most 0.5 and ratio within
 * 4/3, on a square image), so the area fraction and the log ratio are uniform up to the
 * rounding of the sides to pixels; other values everywhere, so each field is seen to count. */
static void test_sample_configured(void)
{
    vr_image_view_config c;
    vr_image_view_config_default(&c, 1);
    c.scale_min = 0.2f, c.scale_max = 0.5f;
    c.ratio_min = 0.8f, c.ratio_max = 1.25f;
    c.flip_p = 0.25f, c.jitter_p = 0.0f, c.gray_p = 1.0f, c.blur_p = 0.6f, c.solarize_p = 0.05f;
    c.brightness = 0.9f, c.contrast = 0.1f, c.saturation = 1.5f, c.hue = 0.45f;
    c.blur_sigma_min = 0.5f, c.blur_sigma_max = 0.7f;
    draws d;
    draw_many(&c, 1, 1000, 1000, &d);
    check_non_crop(&c, &d, "configured");
    CU_ASSERT_EQUAL(d.n_crops, DRAWS);
    /* sides near 450-700 pixels: rounding moves the area fraction by under 1e-3 and the log
     * ratio by under 2e-3 */
    CU_ASSERT(uniform_quantiles_ok(d.scale, d.n_crops, 0.2, 0.5, 1.5e-3, "configured: crop area fraction"));
    CU_ASSERT(uniform_quantiles_ok(d.log_ratio, d.n_crops, log(0.8), log(1.25), 2.5e-3, "configured: crop log ratio"));
    draws_free(&d);
}

/* The fallback: an image far wider than the ratio range fails every try and gets the centre
 * crop with the ratio clamped, as torchvision. */
static void test_sample_fallback(void)
{
    vr_rng r;
    vr_rng_seed(&r, 3);
    vr_image_crop c;
    vr_image_crop_sample(&r, 10, 1000, 0.9f, 1.0f, 0.75f, 4.0f / 3.0f, &c);
    CU_ASSERT(c.h == 10 && c.w == 13 && c.top == 0 && c.left == (1000 - 13) / 2);
    vr_image_crop_sample(&r, 1000, 10, 0.9f, 1.0f, 0.75f, 4.0f / 3.0f, &c);
    CU_ASSERT(c.w == 10 && c.h == 13 && c.left == 0 && c.top == (1000 - 13) / 2);
    /* a small image far outside the recipe's extreme ratios (1e3, 1e-3): torchvision's side
     * would round to 0 pixels, the crop keeps 1 (found by fuzzing: a 4 x 4 image gave a 4 x 0
     * crop, which no view can be made of) */
    vr_image_crop_sample(&r, 4, 4, 0.08f, 1.0f, 1e3f, 1e3f, &c);
    CU_ASSERT(c.w == 4 && c.h == 1 && c.left == 0 && c.top == 1);
    vr_image_crop_sample(&r, 4, 4, 0.08f, 1.0f, 1e-3f, 1e-3f, &c);
    CU_ASSERT(c.h == 4 && c.w == 1 && c.top == 0 && c.left == 1);
    /* and the pair of such a configuration is made */
    vr_image_views_config cfg;
    vr_image_views_config_default(&cfg);
    for (int v = 0; v < 2; v++) cfg.view[v].size = 8, cfg.view[v].ratio_min = cfg.view[v].ratio_max = 1e3f;
    vr_image_views_work *w;
    TU_OK(vr_image_views_work_create(&w));
    static float a0[3 * 8 * 8], a1[3 * 8 * 8];
    vr_image_view_params p[2];
    TU_OK(vr_image_views_pair_file(&cfg, w, image_path("rgb420.jpg"), 1, 2, a0, a1, p));
    CU_ASSERT(p[0].crop.h >= 1 && p[0].crop.w >= 1 && p[1].crop.h >= 1 && p[1].crop.w >= 1);
    vr_image_views_work_free(w);
}

/* A view's draws depend on its stream only: the same stream gives the same parameters, the
 * stream position after a view is the same whatever the probabilities. */
static void test_sample_stream(void)
{
    vr_image_view_config a, b;
    vr_image_view_config_default(&a, 0);
    vr_image_view_config_default(&b, 0);
    b.flip_p = 0.0f, b.jitter_p = 1.0f, b.gray_p = 0.0f, b.blur_p = 0.0f, b.solarize_p = 1.0f;
    for (int i = 0; i < 100; i++) {
        vr_rng ra, rb;
        vr_rng_seed_stream(&ra, 9, (uint64_t)i);
        vr_rng_seed_stream(&rb, 9, (uint64_t)i);
        vr_image_view_params pa, pb;
        vr_image_view_sample(&a, &ra, 300 + i, 400, &pa);
        vr_image_view_sample(&b, &rb, 300 + i, 400, &pb);
        CU_ASSERT(memcmp(&pa.crop, &pb.crop, sizeof pa.crop) == 0 && pa.sigma == pb.sigma);
        CU_ASSERT(memcmp(pa.factor, pb.factor, sizeof pa.factor) == 0 && memcmp(pa.order, pb.order, sizeof pa.order) == 0);
        CU_ASSERT(vr_rng_u64(&ra) == vr_rng_u64(&rb));
    }
}

/* ---------------------------------------------------------------- pairs */

static void test_pair(void)
{
    vr_image_views_config c;
    vr_image_views_config_default(&c);
    c.view[0].size = 32, c.view[1].size = 24;
    vr_image_views_work *w;
    TU_OK(vr_image_views_work_create(&w));
    static float a0[3 * 32 * 32], a1[3 * 24 * 24], b0[3 * 32 * 32], b1[3 * 24 * 24], r0[3 * 32 * 32];
    vr_image_view_params p[2], q[2];
    const char *path = image_path("rgb420.jpg");
    TU_OK(vr_image_views_pair_file(&c, w, path, 7, 11, a0, a1, p));
    TU_OK(vr_image_views_pair_file(&c, w, path, 7, 11, b0, b1, q));
    CU_ASSERT(memcmp(a0, b0, sizeof a0) == 0 && memcmp(a1, b1, sizeof a1) == 0 && memcmp(p, q, sizeof p) == 0);
    /* view 1 of a pair is decode + vr_image_view_apply with the drawn parameters */
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image im = {0};
    TU_OK(vr_image_read(d, path, 0, 0, &im));
    vr_image_scratch s = {0};
    static uint8_t work8[32 * 32 * 3];
    TU_OK(vr_image_view_apply(&c.view[0], &p[0], im.data, im.h, im.w, work8, &s, r0));
    CU_ASSERT(memcmp(a0, r0, sizeof a0) == 0);
    /* another sample index, other views */
    TU_OK(vr_image_views_pair_file(&c, w, path, 7, 12, b0, b1, q));
    CU_ASSERT(memcmp(a0, b0, sizeof a0) != 0 && memcmp(&p[0].crop, &q[0].crop, sizeof p[0].crop) != 0);
    /* the two views draw from different streams */
    CU_ASSERT(memcmp(&p[0].crop, &p[1].crop, sizeof p[0].crop) != 0);
    /* errors name the file; the work state keeps working after one */
    CU_ASSERT_EQUAL(vr_image_views_pair_file(&c, w, image_path("truncated.jpg"), 7, 11, a0, a1, NULL), VR_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "truncated.jpg: truncated JPEG"));
    TU_OK(vr_image_views_pair_file(&c, w, path, 7, 11, b0, b1, NULL));
    CU_ASSERT(memcmp(a0, b0, sizeof a0) == 0);
    c.view[1].blur_sigma_min = 0.0f;
    CU_ASSERT_EQUAL(vr_image_views_pair_file(&c, w, path, 7, 11, a0, a1, NULL), VR_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "view 2: bad blur sigma range"));
    vr_image_scratch_free(&s);
    vr_image_free(&im);
    vr_image_decoder_free(d);
    vr_image_views_work_free(w);
}

/* DCT scaling: with 24 x 24 views of the 160 x 120 JPEG, samples whose crops are both at least
 * 48 pixels a side are decoded at 1/2 or less; their views (colour transforms off, so only the
 * resampling differs) differ from the full-size pipeline's (the scaled decode happened) but stay
 * close: mean |difference| per sample under 0.1 in normalised units (about 6 levels of 255)
 * and under 0.05 over all of them (libjpeg's reduced IDCT in place of part of the bicubic
 * filter, on a small and detailed image). Samples with a smaller crop are unchanged. */
static void test_pair_dct_scaling(void)
{
    vr_image_views_config on, off;
    vr_image_views_config_default(&on);
    for (int v = 0; v < 2; v++) {
        vr_image_view_config *c = &on.view[v];
        c->size = 24;
        c->flip_p = c->jitter_p = c->gray_p = c->blur_p = c->solarize_p = 0.0f;
    }
    off = on;
    off.dct_scaling = 0;
    vr_image_views_work *w;
    TU_OK(vr_image_views_work_create(&w));
    enum { N = 3 * 24 * 24 };
    static float a0[N], a1[N], b0[N], b1[N];
    const char *path = image_path("big.jpg");
    int scaled = 0, unscaled = 0;
    double total = 0;
    for (uint64_t index = 0; index < 80; index++) {
        vr_image_view_params p[2];
        TU_OK(vr_image_views_pair_file(&on, w, path, 5, index, a0, a1, p));
        TU_OK(vr_image_views_pair_file(&off, w, path, 5, index, b0, b1, NULL));
        int side = 1 << 30;
        for (int v = 0; v < 2; v++) {
            if (p[v].crop.h < side) side = p[v].crop.h;
            if (p[v].crop.w < side) side = p[v].crop.w;
        }
        if (side >= 48) {
            double diff = 0;
            for (int i = 0; i < N; i++) diff += fabs(a0[i] - b0[i]) + fabs(a1[i] - b1[i]);
            diff /= 2.0 * N;
            if (!(diff > 0.0 && diff < 0.1)) fprintf(stderr, "\n  sample %d: mean |diff| %.4f\n", (int)index, diff);
            CU_ASSERT(diff > 0.0 && diff < 0.1);
            total += diff;
            scaled++;
        } else {
            CU_ASSERT(memcmp(a0, b0, sizeof a0) == 0 && memcmp(a1, b1, sizeof a1) == 0);
            unscaled++;
        }
    }
    CU_ASSERT(scaled >= 5 && unscaled >= 5);
    if (scaled) {
        if (!(total / scaled < 0.05)) fprintf(stderr, "\n  mean |diff| over %d samples %.4f\n", scaled, total / scaled);
        CU_ASSERT(total / scaled < 0.05);
    }
    vr_image_views_work_free(w);
}

static void test_config_check(void)
{
    vr_image_views_config c;
    vr_image_views_config_default(&c);
    TU_OK(vr_image_views_config_check(&c));
    CU_ASSERT(c.view[0].blur_p == 1.0f && c.view[1].blur_p == 0.1f);
    CU_ASSERT(c.view[0].solarize_p == 0.0f && c.view[1].solarize_p == 0.2f);
    static const char *problems[] = {"size", "crop scale", "crop ratio", "flip", "jitter probability", "jitter strength",
                                     "hue", "grayscale", "blur probability", "blur sigma", "solarisation probability",
                                     "solarisation threshold", "normalisation"};
    for (int k = 0; k < 13; k++) {
        vr_image_views_config b = c;
        vr_image_view_config *v = &b.view[k % 2];
        switch (k) {
        case 0: v->size = 0; break;
        case 1: v->scale_min = 0.0f; break;
        case 2: v->ratio_max = 0.5f; break;
        case 3: v->flip_p = 1.5f; break;
        case 4: v->jitter_p = -0.1f; break;
        case 5: v->saturation = -1.0f; break;
        case 6: v->hue = 0.6f; break;
        case 7: v->gray_p = NAN; break;
        case 8: v->blur_p = 2.0f; break;
        case 9: v->blur_sigma_max = 0.05f; break;
        case 10: v->solarize_p = -1.0f; break;
        case 11: v->solarize_threshold = 300; break;
        default: v->std[2] = 0.0f; break;
        }
        CU_ASSERT_EQUAL(vr_image_views_config_check(&b), VR_ERR_ARG);
        char want[64];
        snprintf(want, sizeof want, "view %d: bad %s", k % 2 + 1, problems[k]);
        CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), want));
    }
}

/* CASES of make_image_eval_fixtures.py: file, S, crop fraction. */
static const struct {
    const char *file;
    int size;
    float fraction;
} EVAL_CASES[] = {
    {"big.jpg", 64, 0.875f}, {"rgb.png", 32, 1.0f}, {"rgb420.jpg", 56, 0.875f}, {"rgb.png", 47, 1.0f},
    {"gray.jpg", 24, 0.75f},
};

/* The evaluation input against torchvision's Resize(R) -> CenterCrop(S) -> ToTensor ->
 * Normalize: the bilinear resize byte for byte (atol 0), the tensor within 1e-6 + 0 * |ref|
 * (the float rounding of the last step, as to_tensor). */
static void test_eval_input(void)
{
    vr_safetensors *st = tu_open_fixture("image_eval.safetensors");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    vr_image_decoder *d;
    TU_OK(vr_image_decoder_create(&d));
    vr_image_views_work *w;
    TU_OK(vr_image_views_work_create(&w));
    vr_image im = {0}, resized = {0};
    vr_image_scratch s = {0};
    for (int k = 0; k < (int)(sizeof EVAL_CASES / sizeof EVAL_CASES[0]); k++) {
        vr_image_eval_config c;
        vr_image_eval_config_default(&c);
        c.size = EVAL_CASES[k].size;
        c.crop_fraction = EVAL_CASES[k].fraction;
        int n = 3 * c.size * c.size;
        float *got = malloc((size_t)n * sizeof(float)), *from_file = malloc((size_t)n * sizeof(float)),
              *ref = malloc((size_t)n * sizeof(float));
        uint8_t *work8 = malloc((size_t)c.size * c.size * 3);
        CU_ASSERT_FATAL(got && from_file && ref && work8);
        TU_OK(vr_image_read(d, image_path(EVAL_CASES[k].file), 0, 0, &im));
        TU_OK(vr_image_eval_apply(&c, im.data, im.h, im.w, &resized, work8, &s, got));
        char name[32];
        snprintf(name, sizeof name, "resize.%d", k);
        const uint8_t *want = u8_fixture(st, name, resized.h, resized.w);
        CU_ASSERT(same_bytes(resized.data, want, (size_t)resized.h * resized.w * 3, name));
        snprintf(name, sizeof name, "eval.%d", k);
        TU_OK(vr_st_read_f32(st, name, 3, (const int64_t[]){3, c.size, c.size}, ref));
        CU_ASSERT(tu_close(got, ref, (size_t)n, 1e-6, 0.0, name));
        TU_OK(vr_image_eval_file(&c, w, image_path(EVAL_CASES[k].file), from_file));
        CU_ASSERT(memcmp(got, from_file, (size_t)n * sizeof(float)) == 0);
        free(got);
        free(from_file);
        free(ref);
        free(work8);
    }
    /* R = round(S / f), halves to even: 224 / 0.875 = 256, 5 / 0.4 = 12.5 -> 12 */
    vr_image_eval_config c;
    vr_image_eval_config_default(&c);
    CU_ASSERT_EQUAL(vr_image_eval_resize_side(&c), 256);
    c.size = 5;
    c.crop_fraction = 0.4f;
    CU_ASSERT_EQUAL(vr_image_eval_resize_side(&c), 12); /* 12.5 -> 12 */
    c.crop_fraction = 1.5f;
    CU_ASSERT_EQUAL(vr_image_eval_config_check(&c), VR_ERR_ARG);
    CU_ASSERT_EQUAL(vr_image_eval_file(&c, w, image_path("rgb.png"), NULL), VR_ERR_ARG);
    vr_image_eval_config_default(&c);
    static float sink[3 * 224 * 224];
    CU_ASSERT_EQUAL(vr_image_eval_file(&c, w, image_path("truncated.jpg"), sink), VR_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "truncated.jpg"));
    vr_image_free(&im);
    vr_image_free(&resized);
    vr_image_scratch_free(&s);
    vr_image_views_work_free(w);
    vr_image_decoder_free(d);
    vr_st_close(st);
}

int main(void)
{
    static const tu_test tests[] = {
        {"decode_formats", test_decode_formats},
        {"decode_dct_scaling", test_decode_dct_scaling},
        {"decode_errors", test_decode_errors},
        {"decode_history", test_decode_history},
        {"decode_reuse", test_decode_reuse},
        {"resized_crop_flip", test_resized_crop},
        {"colour", test_colour},
        {"blur", test_blur},
        {"to_tensor", test_to_tensor},
        {"view_fixed", test_view_fixed},
        {"sample_default", test_sample_default},
        {"sample_configured", test_sample_configured},
        {"sample_fallback", test_sample_fallback},
        {"sample_stream", test_sample_stream},
        {"pair", test_pair},
        {"pair_dct_scaling", test_pair_dct_scaling},
        {"config_check", test_config_check},
        {"eval_input", test_eval_input},
        {NULL, NULL},
    };
    return tu_main("image", tests);
}
