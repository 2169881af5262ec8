/* The two augmented views of an image for VICReg, as the reference code makes them
 * (facebookresearch/vicreg augmentations.py, shared/SPEC.md), on the PIL-equivalent operations
 * of vicreg/image_ops.h:
 *
 *   RandomResizedCrop(S, scale, ratio, BICUBIC) -> RandomHorizontalFlip(p)
 *   -> RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)
 *   -> RandomGrayscale(p) -> GaussianBlur(p, sigma uniform in [min, max]) (Pillow's blur)
 *   -> Solarization(p) (ImageOps.solarize, threshold 128) -> ToTensor -> Normalize(mean, std)
 *
 * out (3, S, S) float. Every probability and strength is a field of the view's configuration;
 * the two views of a pair have configurations of their own (shared/SPEC.md: blur p 1.0 and
 * 0.1, solarisation p 0.0 and 0.2, the rest equal).
 *
 * Randomness: each view draws from its own vr_rng, for sample `index` of a run with seed
 * `seed` the stream vr_rng_seed_stream(seed, 2 * index + view), so a view depends only on
 * (seed, index, view, image). The draws of one view come in one fixed order, all of them every
 * time whatever the probabilities (crop: 40 numbers; flip, jitter on/off, the jitter order,
 * the four factors, grayscale, blur on/off, sigma, solarisation: 13 more), so setting one
 * probability never changes what another transform draws. The distributions are
 * torchvision's: crop area fraction uniform in [scale_min, scale_max] and aspect ratio
 * log-uniform in [ratio_min, ratio_max], up to 10 tries, then a centre crop with the ratio
 * clamped (and at least one pixel a side, where torchvision's would be empty); the jitter order a uniform permutation of the four adjustments; brightness,
 * contrast and saturation factors uniform in [max(0, 1 - s), 1 + s], hue uniform in
 * [-hue, hue]; sigma uniform in [sigma_min, sigma_max].
 *
 * Decoding (vicreg/image.h) happens once per pair. With dct_scaling set, a JPEG is decoded at
 * the smallest DCT scale (1/2, 1/4, 1/8) at which both crops still span at least S x S pixels,
 * so the resize still only shrinks, and each crop becomes the same rectangle of the smaller
 * image in fractional coordinates (Pillow's resize with a box): a faster decode of large photos
 * at the price of exact equality with the full-size pipeline for those images (libjpeg's
 * reduced IDCT stands in for part of the bicubic filter). Images whose crops are below 2S
 * pixels on a side (most of ImageNet at S = 224) are decoded at full size either way. */
#ifndef VICREG_IMAGE_VIEWS_H
#define VICREG_IMAGE_VIEWS_H

#include <stdint.h>

#include "vicreg/image.h"
#include "vicreg/image_ops.h"
#include "vicreg/rng.h"
#include "vicreg/status.h"

#define VR_IMAGE_VIEW_MAX_SIZE 4096

/* One view's transforms; the values in comments are shared/SPEC.md's. */
typedef struct vr_image_view_config {
    int size;                           /* S, output side in pixels: 224 */
    float scale_min, scale_max;         /* crop area / image area: 0.08, 1 */
    float ratio_min, ratio_max;         /* crop width / height: 3/4, 4/3 */
    float flip_p;                       /* 0.5 */
    float jitter_p;                     /* 0.8 */
    float brightness, contrast, saturation, hue; /* 0.4, 0.4, 0.2, 0.1 (hue <= 0.5) */
    float gray_p;                       /* 0.2 */
    float blur_p;                       /* view 1: 1.0, view 2: 0.1 */
    float blur_sigma_min, blur_sigma_max; /* output pixels: 0.1, 2 */
    float solarize_p;                   /* view 1: 0.0, view 2: 0.2 */
    int solarize_threshold;             /* 128 */
    float mean[3], std[3];              /* ImageNet: (0.485, 0.456, 0.406), (0.229, 0.224, 0.225) */
} vr_image_view_config;

typedef struct vr_image_views_config {
    vr_image_view_config view[2];
    int dct_scaling; /* 1: decode large JPEGs at a reduced scale (see above); default 1 */
} vr_image_views_config;

/* shared/SPEC.md's values for view (0 or 1). */
void vr_image_view_config_default(vr_image_view_config *c, int view);
/* Both views' defaults, dct_scaling on. */
void vr_image_views_config_default(vr_image_views_config *c);
/* VR_ERR_ARG naming the view and the first value out of its range. */
vr_status vr_image_views_config_check(const vr_image_views_config *c);

/* The jitter adjustments, in the numbering of torchvision's ColorJitter. */
enum { VR_JITTER_BRIGHTNESS, VR_JITTER_CONTRAST, VR_JITTER_SATURATION, VR_JITTER_HUE };

/* Everything random about one view. */
typedef struct vr_image_view_params {
    vr_image_crop crop;   /* in pixels of the full-size image */
    int flip;
    int jitter;           /* colour jitter applied */
    int order[4];         /* the adjustments in the order applied (VR_JITTER_*) */
    float factor[4];      /* brightness, contrast, saturation, hue factors by VR_JITTER_* */
    int gray;
    int blur;
    float sigma;
    int solarize;
} vr_image_view_params;

/* The samplers, each torchvision's get_params (see above for the distributions). */

/* RandomResizedCrop.get_params for an h x w image: always 40 draws. */
void vr_image_crop_sample(vr_rng *r, int h, int w, float scale_min, float scale_max, float ratio_min,
                          float ratio_max, vr_image_crop *out);
/* ColorJitter.get_params: the order (3 draws) then the four factors (4 draws). */
void vr_image_jitter_sample(vr_rng *r, float brightness, float contrast, float saturation, float hue,
                            int order[4], float factor[4]);
/* A coin with probability p of 1 (torch.rand(1) < p): 1 draw. */
int vr_image_coin(vr_rng *r, float p);
/* GaussianBlur's sigma, uniform in [lo, hi]: 1 draw. */
float vr_image_sigma_sample(vr_rng *r, float lo, float hi);

/* All of one view's draws for an h x w image, in the fixed order above. */
void vr_image_view_sample(const vr_image_view_config *c, vr_rng *r, int h, int w, vr_image_view_params *p);

/* The transforms of one view with fixed parameters: img (h, w, 3) -> out (3, S, S). work8
 * (S, S, 3) receives the 8-bit view before ToTensor; s is scratch. p->crop is in pixels of
 * img. */
vr_status vr_image_view_apply(const vr_image_view_config *c, const vr_image_view_params *p,
                              const uint8_t *img, int h, int w, uint8_t *work8, vr_image_scratch *s,
                              float *out);

/* One thread's state for making pairs: a decoder, the decoded image, the 8-bit view and the
 * scratch, all reused from pair to pair. */
typedef struct vr_image_views_work vr_image_views_work;

vr_status vr_image_views_work_create(vr_image_views_work **out);
void vr_image_views_work_free(vr_image_views_work *w);

/* Decodes the image in data (size bytes, called name in messages) and writes its two views
 * for sample `index` of the run with `seed`: out0 (3, S0, S0), out1 (3, S1, S1). params
 * (may be NULL) receives the two views' parameters, crops in full-size pixels. */
vr_status vr_image_views_pair(const vr_image_views_config *c, vr_image_views_work *w, const void *data,
                              size_t size, const char *name, uint64_t seed, uint64_t index, float *out0,
                              float *out1, vr_image_view_params params[2]);
/* The same for the file at path. */
vr_status vr_image_views_pair_file(const vr_image_views_config *c, vr_image_views_work *w, const char *path,
                                   uint64_t seed, uint64_t index, float *out0, float *out1,
                                   vr_image_view_params params[2]);

/* The evaluation input of the reference code (evaluate.py's validation transform, torchvision
 * on a PIL image): Resize(R) with R = round(S / crop_fraction) (the shorter side to R, the
 * longer to int(R * long / short), Pillow's bilinear filter; an image already that size is
 * left alone) -> CenterCrop(S) (offsets round((side - S) / 2), halves to even as Python's
 * round) -> ToTensor -> Normalize. shared/SPEC.md's: resize 256, centre crop 224, so
 * crop_fraction 224 / 256 = 0.875; crop_fraction 1 sees the whole shorter side. Nothing is
 * random, and JPEGs are decoded at full size as PIL does without draft mode. */
typedef struct vr_image_eval_config {
    int size;            /* S: 224 */
    float crop_fraction; /* S / R, in (0, 1]: 0.875 */
    float mean[3], std[3];
} vr_image_eval_config;

/* SPEC's: S 224, crop_fraction 0.875, ImageNet's mean and std. */
void vr_image_eval_config_default(vr_image_eval_config *c);
/* VR_ERR_ARG naming the first value out of its range. */
vr_status vr_image_eval_config_check(const vr_image_eval_config *c);
/* The resized side R for c. */
int vr_image_eval_resize_side(const vr_image_eval_config *c);

/* img (h, w, 3) -> out (3, S, S). resized receives the resized image and work8 (S, S, 3) the
 * 8-bit crop; s is scratch. */
vr_status vr_image_eval_apply(const vr_image_eval_config *c, const uint8_t *img, int h, int w, vr_image *resized,
                              uint8_t *work8, vr_image_scratch *s, float *out);
/* The same for the file at path, with w's decoder and buffers. */
vr_status vr_image_eval_file(const vr_image_eval_config *c, vr_image_views_work *w, const char *path, float *out);

#endif
