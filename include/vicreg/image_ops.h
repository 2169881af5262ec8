/* The pixel operations of the image views, each with fixed parameters, on 8-bit RGB images
 * (h, w, 3) rows packed: PIL's arithmetic, so that a view equals what the reference code's
 * torchvision transforms make of a PIL image.
 *
 * The reference code (facebookresearch/vicreg, augmentations.py) runs torchvision's transforms
 * on PIL images, so every step works on 8-bit pixels and rounds the way Pillow's C code does;
 * these functions repeat that arithmetic (fixed-point bicubic weights, float blends truncated
 * to 8 bits, the box-blur approximation of a Gaussian) so that their outputs are the same
 * bytes, which tests/test_image.c checks against torchvision 0.14 and Pillow 9.4. The
 * torchvision functions each one stands for are named on it. The float blends rely on the
 * compiler not fusing a multiply and an add (ISO C mode, -ffp-contract=off), as Pillow's
 * build does not.
 *
 * Operations that need memory take a vr_image_scratch, a buffer that only grows: one per
 * thread, reused from image to image. */
#ifndef VICREG_IMAGE_OPS_H
#define VICREG_IMAGE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"

/* A rectangle of an image in pixels. */
typedef struct vr_image_crop {
    int top, left, h, w;
} vr_image_crop;

/* Zero-initialise before the first use. */
typedef struct vr_image_scratch {
    void *buf;
    size_t capacity; /* bytes */
} vr_image_scratch;

void vr_image_scratch_free(vr_image_scratch *s);

/* F.resized_crop(img, top, left, h, w, [out_h, out_w], BICUBIC) on a PIL image: the crop, then
 * Pillow's Image.resize with its bicubic filter (a = -0.5), whose support widens with the
 * downscale factor (an antialiased resize), in two passes, horizontal then vertical, with 22-bit
 * fixed-point weights and 8-bit rounding between the passes. Edges are those of the crop.
 * src (src_h, src_w, 3), dst (out_h, out_w, 3). VR_ERR_ARG for a crop outside src. */
vr_status vr_image_resized_crop(const uint8_t *src, int src_h, int src_w, const vr_image_crop *crop,
                                int out_h, int out_w, uint8_t *dst, vr_image_scratch *s);

/* Image.resize((out_w, out_h), BICUBIC, box): the same resize of the rectangle box = (x0, y0,
 * x1, y1) in pixel coordinates, fractions allowed, with the filter reaching past the box up to
 * the image's edges (where vr_image_resized_crop stops at the crop's). The view pipeline uses it
 * for a crop mapped onto a JPEG decoded at a reduced scale. VR_ERR_ARG for a box outside src. */
vr_status vr_image_resize_box(const uint8_t *src, int src_h, int src_w, const float box[4], int out_h, int out_w,
                              uint8_t *dst, vr_image_scratch *s);

/* Pillow's resampling filters: the bicubic one of the views, the bilinear one of the evaluation
 * input (torchvision's default for Resize). */
typedef enum vr_image_filter { VR_IMAGE_BICUBIC, VR_IMAGE_BILINEAR } vr_image_filter;

/* Image.resize((out_w, out_h), filter) of the whole image (F.resize on a PIL image): the same
 * two passes, the bilinear filter a triangle of support 1 widened with the downscale factor as
 * the bicubic one. src (src_h, src_w, 3), dst (out_h, out_w, 3). */
vr_status vr_image_resize(const uint8_t *src, int src_h, int src_w, int out_h, int out_w, vr_image_filter filter,
                          uint8_t *dst, vr_image_scratch *s);

/* F.hflip: mirrors img (h, w, 3) left to right in place. */
void vr_image_hflip(uint8_t *img, int h, int w);

/* The colour adjustments work on `pixels` RGB pixels in place; each is Pillow's
 * Image.blend(degenerate, img, factor) = degenerate + factor * (img - degenerate) in float,
 * truncated to 8 bits (clipped to 0..255 when factor > 1). */

/* F.adjust_brightness (ImageEnhance.Brightness): the degenerate image is black. */
void vr_image_brightness(uint8_t *px, size_t pixels, float factor);
/* F.adjust_contrast (ImageEnhance.Contrast): the degenerate image is the mean of the image's
 * luma (Pillow's "L", rounded to an integer) in every channel. */
void vr_image_contrast(uint8_t *px, size_t pixels, float factor);
/* F.adjust_saturation (ImageEnhance.Color): the degenerate image is each pixel's luma. */
void vr_image_saturation(uint8_t *px, size_t pixels, float factor);
/* F.adjust_hue for PIL images: Pillow's 8-bit RGB -> HSV, the hue byte shifted by
 * uint8(hue_factor * 255) with wrap-around, HSV -> RGB. hue_factor in [-0.5, 0.5]. */
void vr_image_hue(uint8_t *px, size_t pixels, float hue_factor);
/* F.rgb_to_grayscale(img, 3) (Image.convert("L"), replicated): luma
 * (19595 R + 38470 G + 7471 B + 2^15) >> 16 in every channel. */
void vr_image_grayscale(uint8_t *px, size_t pixels);
/* ImageOps.solarize(img, threshold): every byte v >= threshold becomes 255 - v. */
void vr_image_solarize(uint8_t *px, size_t pixels, int threshold);

/* ImageFilter.GaussianBlur(sigma) (the reference code's blur, not torchvision's): Pillow's
 * approximation by three box blurs of fractional radius (Gwosdek et al. 2011) along the rows,
 * then three along the columns, edges extended, 24-bit fixed-point weights. img (h, w, 3) in
 * place; sigma 0 leaves it unchanged. VR_ERR_ARG for sigma < 0. */
vr_status vr_image_gaussian_blur(uint8_t *img, int h, int w, float sigma, vr_image_scratch *s);

/* ToTensor then Normalize(mean, std): out[c][y][x] = (img[y][x][c] / 255 - mean[c]) / std[c]
 * in float, as torch computes it. img (h, w, 3), out (3, h, w). */
void vr_image_to_tensor(const uint8_t *img, int h, int w, const float mean[3], const float std[3],
                        float *out);

#endif
