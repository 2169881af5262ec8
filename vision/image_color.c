/* The colour operations of the image views, in Pillow's arithmetic (see
 * include/vicreg/image_ops.h): Image.blend for the three ImageEnhance adjustments, the
 * RGB <-> HSV conversions of libImaging/Convert.c for the hue, its "L" luma for grayscale, and
 * torch's float steps for ToTensor + Normalize. Where Pillow mixes float and double in one
 * expression, so does the code here, since the rounding of each step decides the output byte. */
#include <math.h>

#include "vicreg/image_ops.h"

/* Pillow's L24: ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static inline int luma(const uint8_t *p)
{
    return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16;
}

/* Pillow's ImagingBlend for one byte: in1 + alpha * (in2 - in1) in float, truncated; Pillow
 * clips to 0..255 first only when alpha is outside [0, 1], but for alpha inside the float
 * result cannot leave [min(in1, in2), max(in1, in2)] (a product by alpha <= 1 rounds to at most
 * |in2 - in1|), so clipping always is the same and needs no branch. */
static inline uint8_t blend(int in1, int in2, float alpha)
{
    float t = (float)in1 + alpha * (float)(in2 - in1);
    t = t < 0.0f ? 0.0f : t;
    t = t > 255.0f ? 255.0f : t;
    return (uint8_t)(int)t;
}

/* Blends every byte with one degenerate value through a 256-entry table. */
static void blend_constant(uint8_t *px, size_t pixels, int degenerate, float factor)
{
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = blend(degenerate, v, factor);
    for (size_t i = 0; i < pixels * 3; i++) px[i] = lut[px[i]];
}

void vr_image_brightness(uint8_t *px, size_t pixels, float factor) { blend_constant(px, pixels, 0, factor); }

void vr_image_contrast(uint8_t *px, size_t pixels, float factor)
{
    if (pixels == 0) return;
    int64_t sum = 0;
    for (size_t i = 0; i < pixels; i++) sum += luma(px + 3 * i);
    /* ImageStat's mean, a double, rounded by int(mean + 0.5) */
    int mean = (int)((double)sum / (double)pixels + 0.5);
    blend_constant(px, pixels, mean, factor);
}

void vr_image_saturation(uint8_t *px, size_t pixels, float factor)
{
    for (size_t i = 0; i < pixels; i++) {
        uint8_t *p = px + 3 * i;
        int l = luma(p);
        p[0] = blend(l, p[0], factor);
        p[1] = blend(l, p[1], factor);
        p[2] = blend(l, p[2], factor);
    }
}

static inline int clip8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

/* C's round() (halves away from zero) for 0 <= x < 2^31, without the library call: the
 * conversion truncates, x minus its integer part is exact, and comparing that with 1/2 decides
 * as round() does. */
static inline int round_nonneg(double x)
{
    int t = (int)x;
    return t + (x - t >= 0.5);
}

/* The hue works on blocks of pixels in two branch-free loops that the compiler vectorises;
 * IEEE arithmetic gives the same result in a vector lane as in a scalar register. */
enum { HUE_BLOCK = 256 };

/* libImaging/Convert.c rgb2hsv_row ("following colorsys.py") for n pixels: hue, saturation,
 * value bytes. Where Pillow skips the arithmetic (a gray pixel) it is done on divisors of 1 and
 * its result replaced by Pillow's zeros. */
static void rgb_to_hsv(const uint8_t *in, int n, uint8_t *hue, uint8_t *sat, uint8_t *val)
{
    for (int i = 0; i < n; i++) {
        int r = in[3 * i], g = in[3 * i + 1], b = in[3 * i + 2];
        int maxc = r > g ? r : g, minc = r < g ? r : g;
        maxc = maxc > b ? maxc : b;
        minc = minc < b ? minc : b;
        int d = maxc - minc, colour = d != 0;
        float cr = (float)(d + !colour);
        float s = (float)d / (float)(maxc + !colour);
        float rc = (float)(maxc - r) / cr, gc = (float)(maxc - g) / cr, bc = (float)(maxc - b) / cr;
        /* every candidate computed, one kept by 0/1 factors (exact: the others are finite and
         * become zeros) */
        float h_r = bc - gc, h_g = (float)(2.0 + rc - bc), h_b = (float)(4.0 + gc - rc);
        int is_r = r == maxc, is_g = !is_r & (g == maxc);
        float h = h_r * (float)is_r + h_g * (float)is_g + h_b * (float)(!is_r & !is_g);
        /* Pillow's fmod(h / 6 + 1, 1): the argument lies in [5/6, 11/6), so one subtraction is
         * the same exact result */
        double hh = h / 6.0 + 1.0;
        h = (float)(hh >= 1.0 ? hh - 1.0 : hh);
        hue[i] = (uint8_t)(colour * clip8((int)(h * 255.0)));
        sat[i] = (uint8_t)(colour * clip8((int)(s * 255.0)));
        val[i] = (uint8_t)maxc;
    }
}

/* libImaging/Convert.c hsv2rgb for n pixels (its round() arguments are never negative). */
static void hsv_to_rgb(const uint8_t *hue, const uint8_t *sat, const uint8_t *val, int n, uint8_t *out)
{
    for (int k = 0; k < n; k++) {
        int h = hue[k], s = sat[k], v = val[k];
        double h6 = (float)h * 6.0 / 255.0;
        int i = (int)h6; /* Pillow's floor, of a value >= 0 */
        float f = (float)(h6 - (float)i);
        float fs = (float)((float)s / 255.0);
        int p = clip8(round_nonneg((float)v * (1.0 - fs)));
        int q = clip8(round_nonneg((float)v * (1.0 - fs * f)));
        int t = clip8(round_nonneg((float)v * (1.0 - fs * (1.0 - f))));
        /* Pillow's switch (i % 6; h = 255 gives i = 6) as sums of 0/1 masks, which vectorise:
         *   sector  0  1  2  3  4  5
         *   red     v  q  p  p  t  v
         *   green   t  v  v  q  p  p
         *   blue    p  p  t  v  v  q */
        int s0 = (i == 0) | (i == 6), s1 = i == 1, s2 = i == 2, s3 = i == 3, s4 = i == 4, s5 = i == 5;
        int r = p + (s0 | s5) * (v - p) + s1 * (q - p) + s4 * (t - p);
        int g = p + (s1 | s2) * (v - p) + s0 * (t - p) + s3 * (q - p);
        int b = p + (s3 | s4) * (v - p) + s2 * (t - p) + s5 * (q - p);
        int colour = s != 0; /* a gray pixel is (v, v, v) */
        out[3 * k] = (uint8_t)(v + colour * (r - v));
        out[3 * k + 1] = (uint8_t)(v + colour * (g - v));
        out[3 * k + 2] = (uint8_t)(v + colour * (b - v));
    }
}

void vr_image_hue(uint8_t *px, size_t pixels, float hue_factor)
{
    /* numpy's uint8(hue_factor * 255): truncated toward zero, then taken modulo 256 */
    uint8_t shift = (uint8_t)(int)((double)hue_factor * 255.0);
    uint8_t hue[HUE_BLOCK], sat[HUE_BLOCK], val[HUE_BLOCK];
    for (size_t start = 0; start < pixels; start += HUE_BLOCK) {
        int n = pixels - start < HUE_BLOCK ? (int)(pixels - start) : HUE_BLOCK;
        uint8_t *p = px + 3 * start;
        rgb_to_hsv(p, n, hue, sat, val);
        for (int i = 0; i < n; i++) hue[i] = (uint8_t)(hue[i] + shift);
        hsv_to_rgb(hue, sat, val, n, p);
    }
}

void vr_image_grayscale(uint8_t *px, size_t pixels)
{
    for (size_t i = 0; i < pixels; i++) {
        uint8_t *p = px + 3 * i;
        p[0] = p[1] = p[2] = (uint8_t)luma(p);
    }
}

void vr_image_solarize(uint8_t *px, size_t pixels, int threshold)
{
    for (size_t i = 0; i < pixels * 3; i++)
        if (px[i] >= threshold) px[i] = (uint8_t)(255 - px[i]);
}

void vr_image_to_tensor(const uint8_t *img, int h, int w, const float mean[3], const float std[3],
                        float *out)
{
    size_t plane = (size_t)h * w;
    for (int c = 0; c < 3; c++) {
        /* torch: x.float().div(255), then .sub_(mean).div_(std), each rounded to float */
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean[c]) / std[c];
        float *o = out + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) o[i] = lut[img[3 * i + c]];
    }
}
