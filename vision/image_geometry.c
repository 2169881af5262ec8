/* The geometric operations of the image views: Pillow's bicubic resize (of a crop, or of a box
 * of the image), its bilinear resize (the evaluation input) and the horizontal flip (see
 * include/vicreg/image_ops.h). The resize repeats Pillow 9's libImaging/Resample.c step for
 * step: the same weights in double, rounded to the same 22-bit integers, the same 8-bit rounding
 * between the passes. */
#include <math.h>
#include <string.h>

#include "image_scratch.h"
#include "vicreg/image_ops.h"

/* 32-bit accumulators hold 8-bit samples times weights that may sum past 1 or below 0: two
 * bits of headroom, as Pillow. */
#define PRECISION_BITS (32 - 8 - 2)

void vr_image_scratch_free(vr_image_scratch *s)
{
    free(s->buf);
    *s = (vr_image_scratch){0};
}

/* Keys' cubic convolution with a = -0.5, Pillow's BICUBIC filter. */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The triangle, Pillow's BILINEAR filter. */
static double bilinear(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* A resampling filter: its kernel and its support in input samples at scale 1 (Pillow's
 * struct filter). */
typedef struct filter {
    double (*fn)(double x);
    double support;
} filter;

static const filter BICUBIC = {bicubic, 2.0}, BILINEAR = {bilinear, 1.0};

/* Taps per output sample when the span [in0, in1) becomes out_size samples: the filter's
 * support grows with the downscale factor. */
static int taps(const filter *f, float in0, float in1, int out_size)
{
    double scale = (double)(in1 - in0) / out_size;
    return (int)ceil(f->support * (scale < 1.0 ? 1.0 : scale)) * 2 + 1;
}

/* Pillow's precompute_coeffs and normalize_coeffs_8bpc for the span [in0, in1) of a line of
 * in_size samples: for output sample i, bounds[2i] is the first input sample and bounds[2i+1]
 * how many follow, and k (out_size, ksize) their fixed-point weights; w (ksize) scratch. */
static void coeffs(const filter *f, int in_size, float in0, float in1, int out_size, int ksize, int *bounds,
                   int32_t *k, double *w)
{
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale, ss = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5); /* truncation, as Pillow's "round" */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = f->fn((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *kk = k + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            kk[x] = v < 0 ? (int)(-0.5 + v * (1 << PRECISION_BITS)) : (int)(0.5 + v * (1 << PRECISION_BITS));
        }
        for (int x = xmax; x < ksize; x++) kk[x] = 0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
}

static inline uint8_t clip8(int32_t acc)
{
    int32_t v = acc >> PRECISION_BITS; /* arithmetic shift: floor, as Pillow's lookup table */
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* rows rows of in (stride in_stride bytes) resampled along x into out (rows, out_w, 3). Four
 * sums per pixel, the fourth over the next pixel's red byte, so that each tap is one 4-lane
 * vector step; the last tap, whose fourth byte may lie past the image, is added alone. */
static void pass_horizontal(const uint8_t *in, size_t in_stride, int rows, int out_w, int ksize,
                            const int *bounds, const int32_t *k, uint8_t *out)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in + (size_t)y * in_stride;
        uint8_t *o = out + (size_t)y * out_w * 3;
        for (int xx = 0; xx < out_w; xx++) {
            const int32_t *kk = k + (size_t)xx * ksize;
            const uint8_t *p = row + (size_t)bounds[2 * xx] * 3;
            int n = bounds[2 * xx + 1];
            int32_t s[4] = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 0};
            for (int x = 0; x < n - 1; x++) {
                const uint8_t *q = p + 3 * x;
                int32_t w = kk[x];
                s[0] += q[0] * w;
                s[1] += q[1] * w;
                s[2] += q[2] * w;
                s[3] += q[3] * w;
            }
            const uint8_t *q = p + 3 * (n - 1);
            int32_t w = kk[n - 1];
            o[3 * xx] = clip8(s[0] + q[0] * w);
            o[3 * xx + 1] = clip8(s[1] + q[1] * w);
            o[3 * xx + 2] = clip8(s[2] + q[2] * w);
        }
    }
}

/* in (rows of width*3 bytes, stride in_stride) resampled along y into out (out_h, width, 3);
 * acc (width*3) scratch. One output row accumulates whole input rows, so the inner loop runs
 * over contiguous bytes. */
static void pass_vertical(const uint8_t *in, size_t in_stride, int width, int out_h, int ksize,
                          const int *bounds, const int32_t *k, int32_t *acc, uint8_t *out)
{
    size_t n = (size_t)width * 3;
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *kk = k + (size_t)yy * ksize;
        const uint8_t *first = in + (size_t)bounds[2 * yy] * in_stride;
        int taps_used = bounds[2 * yy + 1];
        for (size_t i = 0; i < n; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < taps_used; y++) {
            const uint8_t *row = first + (size_t)y * in_stride;
            int32_t w = kk[y];
            for (size_t i = 0; i < n; i++) acc[i] += row[i] * w;
        }
        uint8_t *o = out + (size_t)yy * n;
        for (size_t i = 0; i < n; i++) o[i] = clip8(acc[i]);
    }
}

/* Pillow's ImagingResampleInner: the box (x0, y0, x1, y1) of the image at src (in_h, in_w,
 * rows in_stride bytes apart) resampled to dst (out_h, out_w, 3) with filter f. */
static vr_status resample(const filter *f, const uint8_t *src, size_t in_stride, int in_h, int in_w,
                          const float box[4], int out_h, int out_w, uint8_t *dst, vr_image_scratch *s)
{
    int need_h = out_w != in_w || box[0] != 0.0f || box[2] != (float)out_w;
    int need_v = out_h != in_h || box[1] != 0.0f || box[3] != (float)out_h;
    if (!need_h && !need_v) { /* Pillow copies: the identity resize */
        for (int y = 0; y < out_h; y++)
            memcpy(dst + (size_t)y * out_w * 3, src + (size_t)y * in_stride, (size_t)out_w * 3);
        return VR_OK;
    }
    int kh = taps(f, box[0], box[2], out_w), kv = taps(f, box[1], box[3], out_h), kmax = kh > kv ? kh : kv;
    /* the horizontal pass makes only the rows the vertical pass reads: at most in_h */
    size_t sz_bh = vr_scratch_round(sizeof(int) * 2 * out_w), sz_kh = vr_scratch_round(sizeof(int32_t) * out_w * kh);
    size_t sz_bv = vr_scratch_round(sizeof(int) * 2 * out_h), sz_kv = vr_scratch_round(sizeof(int32_t) * out_h * kv);
    size_t sz_w = vr_scratch_round(sizeof(double) * kmax), sz_acc = vr_scratch_round(sizeof(int32_t) * out_w * 3);
    size_t sz_tmp = vr_scratch_round((size_t)out_w * 3 * in_h);
    VR_TRY(vr_scratch_reserve(s, sz_bh + sz_kh + sz_bv + sz_kv + sz_w + sz_acc + sz_tmp, "resize"));
    char *p = s->buf;
    int *bh = (int *)p;
    int32_t *k_h = (int32_t *)(p += sz_bh);
    int *bv = (int *)(p += sz_kh);
    int32_t *k_v = (int32_t *)(p += sz_bv);
    double *w = (double *)(p += sz_kv);
    int32_t *acc = (int32_t *)(p += sz_w);
    uint8_t *tmp = (uint8_t *)(p + sz_acc);

    coeffs(f, in_h, box[1], box[3], out_h, kv, bv, k_v, w);
    if (!need_h) {
        pass_vertical(src, in_stride, out_w, out_h, kv, bv, k_v, acc, dst);
        return VR_OK;
    }
    coeffs(f, in_w, box[0], box[2], out_w, kh, bh, k_h, w);
    int first = bv[0], last = bv[2 * (out_h - 1)] + bv[2 * (out_h - 1) + 1];
    if (!need_v) { /* then first = 0 and last = in_h = out_h */
        pass_horizontal(src, in_stride, out_h, out_w, kh, bh, k_h, dst);
        return VR_OK;
    }
    for (int i = 0; i < out_h; i++) bv[2 * i] -= first;
    pass_horizontal(src + (size_t)first * in_stride, in_stride, last - first, out_w, kh, bh, k_h, tmp);
    pass_vertical(tmp, (size_t)out_w * 3, out_w, out_h, kv, bv, k_v, acc, dst);
    return VR_OK;
}

vr_status vr_image_resized_crop(const uint8_t *src, int src_h, int src_w, const vr_image_crop *crop,
                                int out_h, int out_w, uint8_t *dst, vr_image_scratch *s)
{
    const vr_image_crop *c = crop;
    if (c->h < 1 || c->w < 1 || c->top < 0 || c->left < 0 || c->top + c->h > src_h || c->left + c->w > src_w)
        return vr_fail(VR_ERR_ARG, "image", "resized crop: crop %dx%d at (%d, %d) outside the %dx%d image",
                       c->w, c->h, c->left, c->top, src_w, src_h);
    if (out_h < 1 || out_w < 1)
        return vr_fail(VR_ERR_ARG, "image", "resized crop: output size %dx%d", out_w, out_h);
    size_t stride = (size_t)src_w * 3;
    /* the crop is the image: its edges are where the filter stops */
    const float box[4] = {0.0f, 0.0f, (float)c->w, (float)c->h};
    return resample(&BICUBIC, src + (size_t)c->top * stride + (size_t)c->left * 3, stride, c->h, c->w, box, out_h,
                    out_w, dst, s);
}

vr_status vr_image_resize_box(const uint8_t *src, int src_h, int src_w, const float box[4], int out_h, int out_w,
                              uint8_t *dst, vr_image_scratch *s)
{
    if (!(box[0] >= 0.0f && box[1] >= 0.0f && box[0] < box[2] && box[1] < box[3] && box[2] <= (float)src_w &&
          box[3] <= (float)src_h))
        return vr_fail(VR_ERR_ARG, "image", "resize: box (%g, %g, %g, %g) outside the %dx%d image", (double)box[0],
                       (double)box[1], (double)box[2], (double)box[3], src_w, src_h);
    if (out_h < 1 || out_w < 1) return vr_fail(VR_ERR_ARG, "image", "resize: output size %dx%d", out_w, out_h);
    return resample(&BICUBIC, src, (size_t)src_w * 3, src_h, src_w, box, out_h, out_w, dst, s);
}

vr_status vr_image_resize(const uint8_t *src, int src_h, int src_w, int out_h, int out_w, vr_image_filter filter,
                          uint8_t *dst, vr_image_scratch *s)
{
    if (src_h < 1 || src_w < 1 || out_h < 1 || out_w < 1)
        return vr_fail(VR_ERR_ARG, "image", "resize: %dx%d to %dx%d", src_w, src_h, out_w, out_h);
    const float box[4] = {0.0f, 0.0f, (float)src_w, (float)src_h};
    return resample(filter == VR_IMAGE_BILINEAR ? &BILINEAR : &BICUBIC, src, (size_t)src_w * 3, src_h, src_w, box,
                    out_h, out_w, dst, s);
}

void vr_image_hflip(uint8_t *img, int h, int w)
{
    for (int y = 0; y < h; y++) {
        uint8_t *row = img + (size_t)y * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int ch = 0; ch < 3; ch++) {
                uint8_t t = row[3 * a + ch];
                row[3 * a + ch] = row[3 * b + ch];
                row[3 * b + ch] = t;
            }
    }
}
