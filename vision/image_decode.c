/* JPEG (TurboJPEG) and PNG (libspng) decoding to 8-bit RGB (see include/vicreg/image.h). */
#include "vicreg/image.h"

#include <errno.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#define DOMAIN "image"

struct vr_image_decoder {
    tjhandle tj;
    uint8_t *file; /* the last file read by vr_image_load */
    size_t file_cap;
    uint8_t *cmyk; /* (h, w, 4) of a CMYK JPEG before conversion */
    size_t cmyk_cap;
};

/* Grows *buf to at least need bytes; its contents are not kept. */
static vr_status grow(uint8_t **buf, size_t *cap, size_t need, const char *name)
{
    if (need <= *cap) return VR_OK;
    free(*buf);
    *buf = malloc(need);
    *cap = *buf ? need : 0;
    if (!*buf) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot allocate %zu bytes", name, need);
    return VR_OK;
}

void vr_image_free(vr_image *im)
{
    free(im->data);
    *im = (vr_image){0};
}

static vr_status reserve_named(vr_image *im, int h, int w, const char *name)
{
    if (h < 1 || w < 1 || (int64_t)h * w > VR_IMAGE_MAX_PIXELS)
        return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: image of %d x %d pixels (at most %lld allowed)",
                       name, w, h, (long long)VR_IMAGE_MAX_PIXELS);
    VR_TRY(grow(&im->data, &im->capacity, (size_t)h * w * 3, name));
    im->h = h;
    im->w = w;
    return VR_OK;
}

vr_status vr_image_reserve(vr_image *im, int h, int w) { return reserve_named(im, h, w, "image"); }

vr_status vr_image_decoder_create(vr_image_decoder **out)
{
    *out = NULL;
    vr_image_decoder *d = calloc(1, sizeof *d);
    if (!d) return vr_fail(VR_ERR_NOMEM, DOMAIN, "cannot allocate a decoder");
    d->tj = tjInitDecompress();
    if (!d->tj) {
        free(d);
        return vr_fail(VR_ERR_NOMEM, DOMAIN, "cannot create a TurboJPEG decompressor: %s",
                       tjGetErrorStr2(NULL));
    }
    *out = d;
    return VR_OK;
}

void vr_image_decoder_free(vr_image_decoder *d)
{
    if (!d) return;
    tjDestroy(d->tj);
    free(d->file);
    free(d->cmyk);
    free(d);
}

vr_status vr_image_load(vr_image_decoder *d, const char *path, const uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, DOMAIN, "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return vr_fail(VR_ERR_IO, DOMAIN, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    /* one spare byte so an empty file still has a buffer to point at */
    vr_status s = grow(&d->file, &d->file_cap, n + 1, path);
    if (s) {
        fclose(f);
        return s;
    }
    size_t got = fread(d->file, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != n)
        return vr_fail(VR_ERR_IO, DOMAIN, "%s: read %zu of %zu bytes", path, got, n);
    *data = d->file;
    *size = n;
    return VR_OK;
}

static const uint8_t PNG_SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* The format by signature: JPEG files start FF D8 FF, PNG files with their 8-byte signature. */
static vr_status sniff(const uint8_t *p, size_t size, const char *name, vr_image_format *fmt)
{
    if (size == 0) return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: empty file (0 bytes)", name);
    if (size >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        *fmt = VR_IMAGE_JPEG;
        return VR_OK;
    }
    if (size >= 8 && memcmp(p, PNG_SIGNATURE, 8) == 0) {
        *fmt = VR_IMAGE_PNG;
        return VR_OK;
    }
    if ((size < 3 && p[0] == 0xff) || (size < 8 && memcmp(p, PNG_SIGNATURE, size) == 0))
        return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: truncated: %zu bytes, shorter than a signature", name, size);
    return vr_fail(VR_ERR_FORMAT, DOMAIN,
                   "%s: not an image: neither a JPEG nor a PNG signature (first bytes %02x %02x %02x %02x)",
                   name, p[0], size > 1 ? p[1] : 0, size > 2 ? p[2] : 0, size > 3 ? p[3] : 0);
}

/* A libjpeg message as the reason a JPEG is refused: truncated or corrupt. */
static vr_status jpeg_fail(vr_image_decoder *d, const char *name, const char *stage)
{
    const char *msg = tjGetErrorStr2(d->tj);
    const char *what = strstr(msg, "Premature end") ? "truncated" : "corrupt";
    return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: %s JPEG (%s: %s)", name, what, stage, msg);
}

/* The frame's size and colour space. TurboJPEG answers a tables-only stream (quantisation and
 * Huffman tables, no frame: JPEG's abbreviated format) with success and leaves the size
 * unwritten, so the size starts at 0 and a stream without a frame is refused here. */
static vr_status jpeg_header(vr_image_decoder *d, const uint8_t *p, size_t size, const char *name,
                             int *h, int *w, int *colorspace)
{
    int subsamp;
    *h = *w = 0;
    /* libjpeg keeps an image's quantisation and Huffman tables for the next one (JPEG's
     * abbreviated streams rely on it), so a file that lacks a table would be decoded with the
     * previous file's, and an image's pixels would depend on what the thread decoded before.
     * Every image starts on a fresh decompressor instead (0.3 us measured). */
    tjhandle fresh = tjInitDecompress();
    if (!fresh) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot create a TurboJPEG decompressor", name);
    tjDestroy(d->tj);
    d->tj = fresh;
    if (tjDecompressHeader3(d->tj, p, (unsigned long)size, w, h, &subsamp, colorspace) != 0)
        return jpeg_fail(d, name, "header");
    if (*h < 1 || *w < 1)
        return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: corrupt JPEG (header: tables only, no image)", name);
    return VR_OK;
}

static vr_status png_open(const uint8_t *p, size_t size, const char *name, spng_ctx **out,
                          struct spng_ihdr *ihdr)
{
    *out = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot create a PNG decoder", name);
    /* guard the header's claims before anything is allocated from them */
    int err = spng_set_image_limits(ctx, 1u << 16, 1u << 16);
    if (!err) err = spng_set_png_buffer(ctx, p, size);
    if (!err) err = spng_get_ihdr(ctx, ihdr);
    if (err) {
        spng_ctx_free(ctx);
        const char *what = err == SPNG_EMEM ? "out of memory" :
                           size < 33 ? "truncated" : "corrupt"; /* signature + IHDR chunk: 33 bytes */
        return vr_fail(err == SPNG_EMEM ? VR_ERR_NOMEM : VR_ERR_FORMAT, DOMAIN, "%s: %s PNG (header: %s)",
                       name, what, spng_strerror(err));
    }
    *out = ctx;
    return VR_OK;
}

vr_status vr_image_probe(vr_image_decoder *d, const void *data, size_t size, const char *name,
                         vr_image_info *info)
{
    const uint8_t *p = data;
    VR_TRY(sniff(p, size, name, &info->format));
    if (info->format == VR_IMAGE_JPEG) {
        int cs;
        return jpeg_header(d, p, size, name, &info->h, &info->w, &cs);
    }
    spng_ctx *ctx;
    struct spng_ihdr ihdr;
    VR_TRY(png_open(p, size, name, &ctx, &ihdr));
    spng_ctx_free(ctx);
    info->h = (int)ihdr.height;
    info->w = (int)ihdr.width;
    return VR_OK;
}

/* The smallest of the scales 1/8, 1/4, 1/2 whose output covers min_h x min_w, else 1/1. Only
 * these, PIL's draft scales: libjpeg-turbo has SIMD code for the 8x8, 4x4 and 2x2 inverse DCTs
 * (1x1 is the DC term alone) but computes the other scaled sizes (7/8, 3/4, ...) in plain C. */
static tjscalingfactor pick_scale(int h, int w, int min_h, int min_w)
{
    tjscalingfactor best = {1, 1};
    if (min_h <= 0 && min_w <= 0) return best;
    for (int denom = 2; denom <= 8; denom *= 2) {
        tjscalingfactor sf = {1, denom};
        if (TJSCALED(h, sf) < min_h || TJSCALED(w, sf) < min_w) break;
        best = sf;
    }
    return best;
}

void vr_image_scaled_size(const vr_image_info *info, int min_h, int min_w, int *h, int *w)
{
    tjscalingfactor sf = {1, 1};
    if (info->format == VR_IMAGE_JPEG) sf = pick_scale(info->h, info->w, min_h, min_w);
    *h = TJSCALED(info->h, sf);
    *w = TJSCALED(info->w, sf);
}

/* PIL's MULDIV255: a * b / 255 rounded, without a division. */
static inline int muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* Adobe CMYK (stored inverted) to RGB as PIL's "CMYK;I" unpacker followed by cmyk2rgb. */
static void cmyk_to_rgb(const uint8_t *in, size_t pixels, uint8_t *out)
{
    for (size_t i = 0; i < pixels; i++, in += 4, out += 3) {
        int nk = in[3]; /* 255 - K with K = 255 - stored */
        for (int c = 0; c < 3; c++) {
            int v = nk - muldiv255(255 - in[c], nk);
            out[c] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

/* libjpeg warnings that leave the image whole: junk between markers. */
static int harmless_warning(tjhandle tj)
{
    return tjGetErrorCode(tj) == TJERR_WARNING && strstr(tjGetErrorStr2(tj), "extraneous bytes") != NULL;
}

static vr_status decode_jpeg(vr_image_decoder *d, const uint8_t *p, size_t size, const char *name,
                             int min_h, int min_w, vr_image *out)
{
    int h, w, cs;
    VR_TRY(jpeg_header(d, p, size, name, &h, &w, &cs));
    if ((int64_t)h * w > VR_IMAGE_MAX_PIXELS)
        return vr_fail(VR_ERR_FORMAT, DOMAIN, "%s: image of %d x %d pixels (at most %lld allowed)",
                       name, w, h, (long long)VR_IMAGE_MAX_PIXELS);
    tjscalingfactor sf = pick_scale(h, w, min_h, min_w);
    int sh = TJSCALED(h, sf), sw = TJSCALED(w, sf);
    VR_TRY(reserve_named(out, sh, sw, name));
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    uint8_t *dst = out->data;
    if (cmyk) {
        VR_TRY(grow(&d->cmyk, &d->cmyk_cap, (size_t)sh * sw * 4, name));
        dst = d->cmyk;
    }
    int rc = tjDecompress2(d->tj, p, (unsigned long)size, dst, sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB, 0);
    if (rc != 0 && !harmless_warning(d->tj)) return jpeg_fail(d, name, "data");
    if (cmyk) cmyk_to_rgb(d->cmyk, (size_t)sh * sw, out->data);
    return VR_OK;
}

static vr_status decode_png(const uint8_t *p, size_t size, const char *name, vr_image *out)
{
    spng_ctx *ctx;
    struct spng_ihdr ihdr;
    VR_TRY(png_open(p, size, name, &ctx, &ihdr));
    vr_status s = reserve_named(out, (int)ihdr.height, (int)ihdr.width, name);
    size_t need = 0;
    int err = 0;
    if (!s) err = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &need);
    if (!s && !err && need != (size_t)out->h * out->w * 3) err = SPNG_EOVERFLOW;
    if (!s && !err) err = spng_decode_image(ctx, out->data, need, SPNG_FMT_RGB8, 0);
    spng_ctx_free(ctx);
    if (s) return s;
    if (err) {
        /* data that stops early reads as the end of the input: SPNG_IO_EOF ("end of stream")
         * from a buffer, SPNG_EOF or SPNG_EIO from libspng's own checks */
        const char *what = err == SPNG_IO_EOF || err == SPNG_EOF || err == SPNG_EIO ? "truncated" : "corrupt";
        return vr_fail(err == SPNG_EMEM ? VR_ERR_NOMEM : VR_ERR_FORMAT, DOMAIN, "%s: %s PNG (data: %s)",
                       name, what, spng_strerror(err));
    }
    return VR_OK;
}

vr_status vr_image_decode(vr_image_decoder *d, const void *data, size_t size, const char *name,
                          int min_h, int min_w, vr_image *out)
{
    const uint8_t *p = data;
    vr_image_format fmt = VR_IMAGE_JPEG;
    VR_TRY(sniff(p, size, name, &fmt));
    if (fmt == VR_IMAGE_JPEG) return decode_jpeg(d, p, size, name, min_h, min_w, out);
    return decode_png(p, size, name, out);
}

vr_status vr_image_read(vr_image_decoder *d, const char *path, int min_h, int min_w, vr_image *out)
{
    const uint8_t *data;
    size_t size;
    VR_TRY(vr_image_load(d, path, &data, &size));
    return vr_image_decode(d, data, size, path, min_h, min_w, out);
}
