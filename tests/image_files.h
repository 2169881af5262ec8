/* Writing small image folders at test time: JPEG through TurboJPEG, PNG through libspng, and
 * the broken files a data set may hold. Header-only, for the suites that build folders. */
#ifndef VR_TEST_IMAGE_FILES_H
#define VR_TEST_IMAGE_FILES_H

#include <spng.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#include "vicreg/rng.h"

/* Writes n bytes to path; 1 on success. */
static inline int if_write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* An h x w RGB picture from rng: a smooth gradient of random colours plus noise, so crops and
 * colour changes matter. px (h, w, 3). */
static inline void if_picture(vr_rng *r, int h, int w, uint8_t *px)
{
    float c0[3], c1[3];
    for (int k = 0; k < 3; k++) {
        c0[k] = vr_rng_range(r, 0, 255);
        c1[k] = vr_rng_range(r, 0, 255);
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++) {
                float t = (float)(x + y) / (float)(w + h), v = c0[k] + (c1[k] - c0[k]) * t + vr_rng_range(r, -20, 20);
                px[((size_t)y * w + x) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
}

/* px (h, w, 3) as a JPEG (quality 90, 4:2:0) at path; 1 on success. */
static inline int if_write_jpeg(const char *path, const uint8_t *px, int h, int w)
{
    tjhandle t = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    int ok = t && tjCompress2(t, px, w, w * 3, h, TJPF_RGB, &jpeg, &size, TJSAMP_420, 90, 0) == 0;
    ok = ok && if_write_bytes(path, jpeg, size);
    tjFree(jpeg);
    if (t) tjDestroy(t);
    return ok;
}

/* px (h, w, 3) as an 8-bit RGB PNG at path; 1 on success. */
static inline int if_write_png(const char *path, const uint8_t *px, int h, int w)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {.width = (uint32_t)w, .height = (uint32_t)h, .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    int err = ctx ? spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1) : SPNG_EMEM;
    if (!err) err = spng_set_ihdr(ctx, &ihdr);
    if (!err) err = spng_encode_image(ctx, px, (size_t)h * w * 3, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    size_t len = 0;
    void *png = err ? NULL : spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    int ok = png && if_write_bytes(path, png, len);
    free(png);
    return ok;
}

/* A random picture of h x w written as a JPEG or a PNG (by the name's extension). */
static inline int if_write_picture(const char *path, vr_rng *r, int h, int w)
{
    uint8_t *px = malloc((size_t)h * w * 3);
    if (!px) return 0;
    if_picture(r, h, w, px);
    size_t n = strlen(path);
    int ok = n > 4 && !strcmp(path + n - 4, ".png") ? if_write_png(path, px, h, w) : if_write_jpeg(path, px, h, w);
    free(px);
    return ok;
}

/* The first `keep` bytes of file `from` written to `to` (keep < 0: all of it). */
static inline int if_copy_head(const char *from, const char *to, long keep)
{
    FILE *f = fopen(from, "rb");
    if (!f) return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (keep >= 0 && (size_t)keep < n) n = (size_t)keep;
    return if_write_bytes(to, buf, n);
}

#endif
