/* Pillow's Gaussian blur (ImageFilter.GaussianBlur, the blur of the reference code's views):
 * three box blurs of a fractional radius along the rows, then three along the columns, as
 * libImaging/BoxBlur.c computes them (see include/vicreg/image_ops.h). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "image_scratch.h"
#include "vicreg/image_ops.h"

#define PASSES 3

/* Pillow's _gaussian_blur_radius: the box radius l + a whose PASSES-fold box blur has
 * variance sigma^2 (Gwosdek et al., "Theoretical foundations of Gaussian convolution by
 * extended box filtering", 2011, eqs. 7, 11 and 14), in Pillow's float steps. */
static float box_radius(float sigma)
{
    float sigma2 = sigma * sigma / PASSES;
    float L = (float)sqrt(12.0 * sigma2 + 1.0);
    float l = (float)floor((L - 1.0) / 2.0);
    float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    return l + a;
}

/* One step of a box blur along the columns, for every column at once: the running sums acc
 * gain row `add` and lose row `sub`, and the output row is the sums at weight ww plus the rows
 * `left` and `right` at the fractional weight fw, in 24-bit fixed point rounded (Pillow's
 * MOVE_ACC, ADD_FAR and SAVE, unsigned arithmetic included). */
static inline void step(uint32_t *acc, const uint8_t *sub, const uint8_t *add, const uint8_t *left,
                        const uint8_t *right, uint8_t *out, size_t lanes, uint32_t ww, uint32_t fw)
{
    for (size_t j = 0; j < lanes; j++) {
        acc[j] += (uint32_t)add[j] - (uint32_t)sub[j];
        out[j] = (uint8_t)((acc[j] * ww + ((uint32_t)left[j] + (uint32_t)right[j]) * fw + (1u << 23)) >> 24);
    }
}

/* One box blur of radius r + fraction along the columns of src (n rows of `lanes` bytes) into
 * dst: Pillow's ImagingLineBoxBlur8 on every column, the columns side by side so that the
 * inner loops run over contiguous bytes. acc (lanes) scratch. */
static void box_columns(const uint8_t *src, uint8_t *dst, int n, size_t lanes, int r, uint32_t ww, uint32_t fw,
                        uint32_t *acc)
{
#define ROW(i) (src + (size_t)(i) * lanes)
#define STEP(x, sub, add, left, right) step(acc, ROW(sub), ROW(add), ROW(left), ROW(right), dst + (size_t)(x) * lanes, lanes, ww, fw)
    int last = n - 1;
    int edge_a = r + 1 < n ? r + 1 : n;
    int edge_b = n - r - 1 > 0 ? n - r - 1 : 0;
    /* the sums for the row before the first: r + 1 copies of the first row, then rows
     * 0 .. r - 1, the last row repeated where there are fewer than r */
    for (size_t j = 0; j < lanes; j++) acc[j] = (uint32_t)src[j] * (uint32_t)(r + 1);
    for (int x = 0; x < edge_a - 1; x++)
        for (size_t j = 0; j < lanes; j++) acc[j] += ROW(x)[j];
    for (size_t j = 0; j < lanes; j++) acc[j] += (uint32_t)ROW(last)[j] * (uint32_t)(r - edge_a + 1);
    int x;
    if (edge_a <= edge_b) {
        for (x = 0; x < edge_a; x++) STEP(x, 0, x + r, 0, x + r + 1);
        for (; x < edge_b; x++) STEP(x, x - r - 1, x + r, x - r - 1, x + r + 1);
        for (; x <= last; x++) STEP(x, x - r - 1, last, x - r - 1, last);
    } else {
        for (x = 0; x < edge_b; x++) STEP(x, 0, x + r, 0, x + r + 1);
        for (; x < edge_a; x++) STEP(x, 0, last, 0, last);
        for (; x <= last; x++) STEP(x, x - r - 1, last, x - r - 1, last);
    }
#undef ROW
#undef STEP
}

/* dst (w, h, 3) = src (h, w, 3) transposed. */
static void transpose(const uint8_t *src, uint8_t *dst, int h, int w)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = src + ((size_t)y * w + x) * 3;
            uint8_t *q = dst + ((size_t)x * h + y) * 3;
            q[0] = p[0];
            q[1] = p[1];
            q[2] = p[2];
        }
}

vr_status vr_image_gaussian_blur(uint8_t *img, int h, int w, float sigma, vr_image_scratch *s)
{
    if (!(sigma >= 0.0f) || !isfinite(sigma))
        return vr_fail(VR_ERR_ARG, "image", "gaussian blur: sigma %g (must be >= 0)", (double)sigma);
    if (sigma == 0.0f || h < 1 || w < 1) return VR_OK; /* Pillow returns a copy for radius 0 */
    size_t bytes = vr_scratch_round((size_t)h * w * 3);
    size_t lanes_max = (size_t)(h > w ? h : w) * 3;
    VR_TRY(vr_scratch_reserve(s, 2 * bytes + lanes_max * sizeof(uint32_t), "gaussian blur"));
    uint8_t *a = s->buf, *b = a + bytes;
    uint32_t *acc = (uint32_t *)(b + bytes);
    float radius = box_radius(sigma);
    int r = (int)radius;
    /* Pillow: (UINT32)(1 << 24) / (radius * 2 + 1) is a float division truncated to 32 bits */
    uint32_t ww = (uint32_t)((float)(1u << 24) / (radius * 2 + 1));
    uint32_t fw = ((1u << 24) - (uint32_t)(r * 2 + 1) * ww) / 2;
    /* as Pillow: the rows blurred as the columns of the transposed image, three times, then
     * transposed back and the columns blurred three times:
     * img -T-> a -> b -> a -> b -T-> a -> b -> a -> img */
    size_t row_t = (size_t)h * 3, row = (size_t)w * 3;
    transpose(img, a, h, w);
    box_columns(a, b, w, row_t, r, ww, fw, acc);
    box_columns(b, a, w, row_t, r, ww, fw, acc);
    box_columns(a, b, w, row_t, r, ww, fw, acc);
    transpose(b, a, w, h);
    box_columns(a, b, h, row, r, ww, fw, acc);
    box_columns(b, a, h, row, r, ww, fw, acc);
    box_columns(a, img, h, row, r, ww, fw, acc);
    return VR_OK;
}
