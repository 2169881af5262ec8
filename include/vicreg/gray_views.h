/* Two augmented views per image for grayscale data (Fashion-MNIST, MNIST), the VICReg/BYOL
 * pipeline of shared/SPEC.md without its colour-only steps (saturation, hue, grayscale):
 *
 *   RandomResizedCrop (area scale range, aspect ratio range, bilinear resample to S x S)
 *   -> horizontal flip (p) -> brightness/contrast jitter (p, both factors, random order)
 *   -> Gaussian blur (p per view, sigma range) -> solarisation (p per view, threshold)
 *   -> normalise (x - mean) / std
 *
 * Pixels are in [0, 1] until the normalisation. Randomness: sample i of a batch whose first
 * sample has global index `first` draws everything for view v (0 or 1) from
 * vr_rng_seed_stream(seed, (first + i) * 2 + v), always the same draws in the same order
 * whatever the probabilities, so a view depends only on (seed, global index, image) — the same
 * for any thread count, and a resumed run needs no generator state beyond its step. */
#ifndef VICREG_GRAY_VIEWS_H
#define VICREG_GRAY_VIEWS_H

#include <stdint.h>

#include "vicreg/rng.h"
#include "vicreg/status.h"

#define VR_VIEWS_MAX_SIZE 1024

typedef struct vr_gray_views_config {
    int size;                    /* S, output side in pixels */
    float scale_min, scale_max;  /* crop area / image area: 0.08, 1 */
    float ratio_min, ratio_max;  /* crop width / height: 3/4, 4/3 */
    float flip_p;                /* 0.5 */
    float jitter_p;              /* 0.8 */
    float brightness, contrast;  /* factor ranges 1 +- strength: 0.4, 0.4 */
    float blur_p[2];             /* per view: 1.0, 0.1 */
    float blur_sigma_min, blur_sigma_max; /* pixels of the output: 0.1, 2 */
    float solarize_p[2];         /* per view: 0.0, 0.2 */
    float solarize_threshold;    /* pixels >= threshold become 1 - pixel: 0.5 */
    float mean, std;             /* normalisation of [0, 1] pixels */
} vr_gray_views_config;

/* shared/SPEC.md's values for output side `size`, normalisation mean 0 std 1. */
void vr_gray_views_default(vr_gray_views_config *c, int size);
/* VR_ERR_ARG naming the first value out of its range. */
vr_status vr_gray_views_check(const vr_gray_views_config *c);

/* A crop rectangle in pixels of the source image. */
typedef struct vr_crop {
    int top, left, h, w;
} vr_crop;

/* torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction uniform in
 * [scale_min, scale_max] and a log-uniform aspect ratio; if none fits, the centre crop with
 * the ratio clamped into range. Always draws exactly 40 numbers from r. */
void vr_crop_draw(vr_rng *r, int h, int w, const vr_gray_views_config *c, vr_crop *out);

/* images (M,H,W) 0..255; index (N) picks the images of the batch.
 * out (2N,1,S,S): view 1 of every sample, then view 2 of every sample (the trainer's layout).
 * Filled by `threads` OpenMP threads (<= 0: OpenMP's default). */
vr_status vr_gray_views_batch(const vr_gray_views_config *c, const uint8_t *images, int h, int w,
                              const int *index, int n, uint64_t seed, int64_t first, int threads,
                              float *out);

/* The evaluation input: images (N,H,W) 0..255, each whole image resized to S x S (bilinear) and
 * normalised; out (N,1,S,S). */
vr_status vr_gray_center_batch(const vr_gray_views_config *c, const uint8_t *images, int h, int w,
                               int n, int threads, float *out);

#endif
