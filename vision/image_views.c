/* The VICReg view pipeline for RGB images: configuration, the samplers of the random
 * parameters, one view with fixed parameters, a decoded pair, and the deterministic evaluation
 * input (see include/vicreg/image_views.h). */
#include "vicreg/image_views.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CROP_TRIES 10

void vr_image_view_config_default(vr_image_view_config *c, int view)
{
    *c = (vr_image_view_config){
        .size = 224,
        .scale_min = 0.08f, .scale_max = 1.0f,
        .ratio_min = 3.0f / 4.0f, .ratio_max = 4.0f / 3.0f,
        .flip_p = 0.5f,
        .jitter_p = 0.8f, .brightness = 0.4f, .contrast = 0.4f, .saturation = 0.2f, .hue = 0.1f,
        .gray_p = 0.2f,
        .blur_p = view == 0 ? 1.0f : 0.1f, .blur_sigma_min = 0.1f, .blur_sigma_max = 2.0f,
        .solarize_p = view == 0 ? 0.0f : 0.2f, .solarize_threshold = 128,
        .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f},
    };
}

void vr_image_views_config_default(vr_image_views_config *c)
{
    vr_image_view_config_default(&c->view[0], 0);
    vr_image_view_config_default(&c->view[1], 1);
    c->dct_scaling = 1;
}

static int is_prob(float p) { return p >= 0.0f && p <= 1.0f; }

static const char *view_problem(const vr_image_view_config *c)
{
    if (c->size < 1 || c->size > VR_IMAGE_VIEW_MAX_SIZE) return "size (1..4096)";
    if (!(c->scale_min > 0.0f && c->scale_min <= c->scale_max && c->scale_max <= 1.0f))
        return "crop scale range (0 < min <= max <= 1)";
    if (!(c->ratio_min > 0.0f && c->ratio_min <= c->ratio_max && isfinite(c->ratio_max)))
        return "crop ratio range (0 < min <= max)";
    if (!is_prob(c->flip_p)) return "flip probability";
    if (!is_prob(c->jitter_p)) return "jitter probability";
    if (!(c->brightness >= 0.0f && c->contrast >= 0.0f && c->saturation >= 0.0f) ||
        !isfinite(c->brightness + c->contrast + c->saturation))
        return "jitter strength (brightness, contrast, saturation >= 0)";
    if (!(c->hue >= 0.0f && c->hue <= 0.5f)) return "hue strength (0..0.5)";
    if (!is_prob(c->gray_p)) return "grayscale probability";
    if (!is_prob(c->blur_p)) return "blur probability";
    if (!(c->blur_sigma_min > 0.0f && c->blur_sigma_min <= c->blur_sigma_max && isfinite(c->blur_sigma_max)))
        return "blur sigma range (0 < min <= max)";
    if (!is_prob(c->solarize_p)) return "solarisation probability";
    if (c->solarize_threshold < 0 || c->solarize_threshold > 256) return "solarisation threshold (0..256)";
    for (int i = 0; i < 3; i++)
        if (!(c->std[i] > 0.0f) || !isfinite(c->std[i]) || !isfinite(c->mean[i])) return "normalisation (std > 0)";
    return NULL;
}

vr_status vr_image_views_config_check(const vr_image_views_config *c)
{
    for (int v = 0; v < 2; v++) {
        const char *what = view_problem(&c->view[v]);
        if (what) return vr_fail(VR_ERR_ARG, "image views", "view %d: bad %s", v + 1, what);
    }
    return VR_OK;
}

/* A uniform integer in [0, n) from one 64-bit draw x (its top 53 bits; the bias is below
 * 2^-30 for any image size), so that every sampler uses a fixed number of draws. */
static int below(uint64_t x, int n)
{
    double u = (double)(x >> 11) * 0x1.0p-53;
    int k = (int)(u * n);
    return k < n ? k : n - 1;
}

void vr_image_crop_sample(vr_rng *r, int h, int w, float scale_min, float scale_max, float ratio_min,
                          float ratio_max, vr_image_crop *out)
{
    double area = (double)h * w, log_lo = log(ratio_min), log_hi = log(ratio_max);
    int found = 0;
    for (int t = 0; t < CROP_TRIES; t++) {
        /* four draws per try whether or not it fits, so the stream position never depends on
         * the image size */
        double target = area * vr_rng_range(r, scale_min, scale_max);
        double ratio = exp(log_lo + (log_hi - log_lo) * vr_rng_uniform(r));
        uint64_t u_top = vr_rng_u64(r), u_left = vr_rng_u64(r);
        if (found) continue;
        /* Python's round(): halves to even, as rint in the default rounding mode */
        int cw = (int)rint(sqrt(target * ratio)), ch = (int)rint(sqrt(target / ratio));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            *out = (vr_image_crop){.h = ch, .w = cw};
            out->top = below(u_top, h - ch + 1);
            out->left = below(u_left, w - cw + 1);
            found = 1;
        }
    }
    if (found) return;
    /* torchvision's fallback, except that a side it would round to 0 (an image far from the
     * ratio range, a few pixels across) is 1: an empty crop has no view */
    double in_ratio = (double)w / h;
    if (in_ratio < ratio_min) {
        out->w = w;
        out->h = (int)fmax(1.0, rint(w / ratio_min));
    } else if (in_ratio > ratio_max) {
        out->h = h;
        out->w = (int)fmax(1.0, rint(h * ratio_max));
    } else {
        out->w = w;
        out->h = h;
    }
    out->top = (h - out->h) / 2;
    out->left = (w - out->w) / 2;
}

void vr_image_jitter_sample(vr_rng *r, float brightness, float contrast, float saturation, float hue,
                            int order[4], float factor[4])
{
    /* torch.randperm(4): Fisher-Yates, every permutation equally likely */
    for (int i = 0; i < 4; i++) order[i] = i;
    for (int i = 3; i > 0; i--) {
        int j = below(vr_rng_u64(r), i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    factor[VR_JITTER_BRIGHTNESS] = vr_rng_range(r, fmaxf(0.0f, 1.0f - brightness), 1.0f + brightness);
    factor[VR_JITTER_CONTRAST] = vr_rng_range(r, fmaxf(0.0f, 1.0f - contrast), 1.0f + contrast);
    factor[VR_JITTER_SATURATION] = vr_rng_range(r, fmaxf(0.0f, 1.0f - saturation), 1.0f + saturation);
    factor[VR_JITTER_HUE] = vr_rng_range(r, -hue, hue);
}

int vr_image_coin(vr_rng *r, float p) { return vr_rng_uniform(r) < p; }

float vr_image_sigma_sample(vr_rng *r, float lo, float hi) { return vr_rng_range(r, lo, hi); }

void vr_image_view_sample(const vr_image_view_config *c, vr_rng *r, int h, int w, vr_image_view_params *p)
{
    vr_image_crop_sample(r, h, w, c->scale_min, c->scale_max, c->ratio_min, c->ratio_max, &p->crop);
    p->flip = vr_image_coin(r, c->flip_p);
    p->jitter = vr_image_coin(r, c->jitter_p);
    vr_image_jitter_sample(r, c->brightness, c->contrast, c->saturation, c->hue, p->order, p->factor);
    p->gray = vr_image_coin(r, c->gray_p);
    p->blur = vr_image_coin(r, c->blur_p);
    p->sigma = vr_image_sigma_sample(r, c->blur_sigma_min, c->blur_sigma_max);
    p->solarize = vr_image_coin(r, c->solarize_p);
}

/* vr_image_view_apply, with the crop given as a box of img instead when box is not NULL. */
static vr_status apply(const vr_image_view_config *c, const vr_image_view_params *p, const float *box,
                       const uint8_t *img, int h, int w, uint8_t *work8, vr_image_scratch *s, float *out)
{
    int size = c->size;
    size_t pixels = (size_t)size * size;
    if (box) VR_TRY(vr_image_resize_box(img, h, w, box, size, size, work8, s));
    else VR_TRY(vr_image_resized_crop(img, h, w, &p->crop, size, size, work8, s));
    if (p->flip) vr_image_hflip(work8, size, size);
    if (p->jitter) {
        /* torchvision leaves out an adjustment of strength 0 (its factor is None); for the hue
         * that matters, since the HSV round trip is not lossless */
        const float strength[4] = {c->brightness, c->contrast, c->saturation, c->hue};
        for (int i = 0; i < 4; i++) {
            int k = p->order[i];
            if (strength[k] == 0.0f) continue;
            float f = p->factor[k];
            switch (k) {
            case VR_JITTER_BRIGHTNESS: vr_image_brightness(work8, pixels, f); break;
            case VR_JITTER_CONTRAST: vr_image_contrast(work8, pixels, f); break;
            case VR_JITTER_SATURATION: vr_image_saturation(work8, pixels, f); break;
            default: vr_image_hue(work8, pixels, f); break;
            }
        }
    }
    if (p->gray) vr_image_grayscale(work8, pixels);
    if (p->blur) VR_TRY(vr_image_gaussian_blur(work8, size, size, p->sigma, s));
    if (p->solarize) vr_image_solarize(work8, pixels, c->solarize_threshold);
    vr_image_to_tensor(work8, size, size, c->mean, c->std, out);
    return VR_OK;
}

vr_status vr_image_view_apply(const vr_image_view_config *c, const vr_image_view_params *p,
                              const uint8_t *img, int h, int w, uint8_t *work8, vr_image_scratch *s,
                              float *out)
{
    return apply(c, p, NULL, img, h, w, work8, s, out);
}

struct vr_image_views_work {
    vr_image_decoder *dec;
    vr_image img;
    vr_image resized; /* the evaluation input's resized image */
    uint8_t *view8; /* (S, S, 3) */
    size_t view8_cap;
    vr_image_scratch scratch;
};

vr_status vr_image_views_work_create(vr_image_views_work **out)
{
    *out = NULL;
    vr_image_views_work *w = calloc(1, sizeof *w);
    if (!w) return vr_fail(VR_ERR_NOMEM, "image views", "cannot allocate the work state");
    vr_status s = vr_image_decoder_create(&w->dec);
    if (s) {
        free(w);
        return s;
    }
    *out = w;
    return VR_OK;
}

void vr_image_views_work_free(vr_image_views_work *w)
{
    if (!w) return;
    vr_image_decoder_free(w->dec);
    vr_image_free(&w->img);
    vr_image_free(&w->resized);
    free(w->view8);
    vr_image_scratch_free(&w->scratch);
    free(w);
}

/* w->view8 holding at least (S, S, 3) bytes for the largest size S; name for messages. */
static vr_status reserve_view8(vr_image_views_work *w, int largest, const char *name)
{
    size_t view8_bytes = (size_t)largest * largest * 3;
    if (view8_bytes <= w->view8_cap) return VR_OK;
    free(w->view8);
    w->view8 = malloc(view8_bytes);
    w->view8_cap = w->view8 ? view8_bytes : 0;
    if (!w->view8) return vr_fail(VR_ERR_NOMEM, "image views", "%s: cannot allocate %zu bytes", name, view8_bytes);
    return VR_OK;
}

/* The crop c of a full-size image (full_h, full_w) as a box (x0, y0, x1, y1) of the same image
 * decoded at 1/denom, (h, w): libjpeg's scaled pixel i covers full-size pixels
 * [denom i, denom (i + 1)), so the coordinates divide by denom exactly (the last scaled pixel
 * may cover fewer; the box is kept inside the image). */
static void crop_box(vr_image_crop c, int full_w, int h, int w, float box[4])
{
    int denom = 1;
    while (denom < 8 && (full_w + denom - 1) / denom != w) denom *= 2;
    box[0] = fminf((float)c.left / denom, (float)w);
    box[1] = fminf((float)c.top / denom, (float)h);
    box[2] = fminf((float)(c.left + c.w) / denom, (float)w);
    box[3] = fminf((float)(c.top + c.h) / denom, (float)h);
}

vr_status vr_image_views_pair(const vr_image_views_config *c, vr_image_views_work *w, const void *data,
                              size_t size, const char *name, uint64_t seed, uint64_t index, float *out0,
                              float *out1, vr_image_view_params params[2])
{
    VR_TRY(vr_image_views_config_check(c));
    vr_image_info info;
    VR_TRY(vr_image_probe(w->dec, data, size, name, &info));
    vr_image_view_params p[2];
    double need = 0.0; /* the smallest scale that keeps every crop at least S pixels a side */
    int largest = 0;
    for (int v = 0; v < 2; v++) {
        vr_rng r;
        vr_rng_seed_stream(&r, seed, 2 * index + (uint64_t)v);
        vr_image_view_sample(&c->view[v], &r, info.h, info.w, &p[v]);
        double s = c->view[v].size / (double)(p[v].crop.h < p[v].crop.w ? p[v].crop.h : p[v].crop.w);
        if (s > need) need = s;
        if (c->view[v].size > largest) largest = c->view[v].size;
    }
    int min_h = 0, min_w = 0;
    if (c->dct_scaling && info.format == VR_IMAGE_JPEG && need < 1.0) {
        min_h = (int)ceil(info.h * need);
        min_w = (int)ceil(info.w * need);
    }
    VR_TRY(vr_image_decode(w->dec, data, size, name, min_h, min_w, &w->img));
    VR_TRY(reserve_view8(w, largest, name));
    float *out[2] = {out0, out1};
    for (int v = 0; v < 2; v++) {
        float box[4];
        int scaled = w->img.h != info.h || w->img.w != info.w;
        if (scaled) crop_box(p[v].crop, info.w, w->img.h, w->img.w, box);
        VR_TRY(apply(&c->view[v], &p[v], scaled ? box : NULL, w->img.data, w->img.h, w->img.w, w->view8, &w->scratch,
                     out[v]));
    }
    if (params) {
        params[0] = p[0];
        params[1] = p[1];
    }
    return VR_OK;
}

vr_status vr_image_views_pair_file(const vr_image_views_config *c, vr_image_views_work *w, const char *path,
                                   uint64_t seed, uint64_t index, float *out0, float *out1,
                                   vr_image_view_params params[2])
{
    const uint8_t *data;
    size_t size;
    VR_TRY(vr_image_load(w->dec, path, &data, &size));
    return vr_image_views_pair(c, w, data, size, path, seed, index, out0, out1, params);
}

void vr_image_eval_config_default(vr_image_eval_config *c)
{
    *c = (vr_image_eval_config){.size = 224, .crop_fraction = 0.875f,
                                .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
}

vr_status vr_image_eval_config_check(const vr_image_eval_config *c)
{
    if (c->size < 1 || c->size > VR_IMAGE_VIEW_MAX_SIZE)
        return vr_fail(VR_ERR_ARG, "image views", "evaluation: bad size %d (1..4096)", c->size);
    if (!(c->crop_fraction > 0.0f && c->crop_fraction <= 1.0f) || vr_image_eval_resize_side(c) > 4 * VR_IMAGE_VIEW_MAX_SIZE)
        return vr_fail(VR_ERR_ARG, "image views", "evaluation: bad crop fraction %g (0 < f <= 1, size / f <= %d)",
                       (double)c->crop_fraction, 4 * VR_IMAGE_VIEW_MAX_SIZE);
    for (int i = 0; i < 3; i++)
        if (!(c->std[i] > 0.0f) || !isfinite(c->std[i]) || !isfinite(c->mean[i]))
            return vr_fail(VR_ERR_ARG, "image views", "evaluation: bad normalisation (std > 0)");
    return VR_OK;
}

int vr_image_eval_resize_side(const vr_image_eval_config *c)
{
    double side = c->size / (double)c->crop_fraction;
    return side < 1e9 ? (int)rint(side) : INT32_MAX;
}

vr_status vr_image_eval_apply(const vr_image_eval_config *c, const uint8_t *img, int h, int w, vr_image *resized,
                              uint8_t *work8, vr_image_scratch *s, float *out)
{
    VR_TRY(vr_image_eval_config_check(c));
    if (h < 1 || w < 1) return vr_fail(VR_ERR_ARG, "image views", "evaluation: empty %dx%d image", w, h);
    int side = vr_image_eval_resize_side(c), size = c->size;
    /* torchvision's _compute_resized_output_size: the longer side truncated */
    int short_side = h < w ? h : w, long_side = h < w ? w : h;
    int new_long = (int)((double)side * long_side / short_side);
    int rh = h <= w ? side : new_long, rw = h <= w ? new_long : side;
    VR_TRY(vr_image_reserve(resized, rh, rw));
    VR_TRY(vr_image_resize(img, h, w, rh, rw, VR_IMAGE_BILINEAR, resized->data, s));
    int top = (int)rint((rh - size) / 2.0), left = (int)rint((rw - size) / 2.0);
    for (int y = 0; y < size; y++)
        memcpy(work8 + (size_t)y * size * 3, resized->data + ((size_t)(top + y) * rw + left) * 3, (size_t)size * 3);
    vr_image_to_tensor(work8, size, size, c->mean, c->std, out);
    return VR_OK;
}

vr_status vr_image_eval_file(const vr_image_eval_config *c, vr_image_views_work *w, const char *path, float *out)
{
    VR_TRY(vr_image_read(w->dec, path, 0, 0, &w->img));
    VR_TRY(reserve_view8(w, c->size, path));
    vr_status st = vr_image_eval_apply(c, w->img.data, w->img.h, w->img.w, &w->resized, w->view8, &w->scratch, out);
    if (st != VR_OK && st != VR_ERR_NOMEM) {
        char why[256]; /* a copy: vr_fail writes over the message it would read */
        snprintf(why, sizeof why, "%s", vr_last_error());
        return vr_fail(st, "image views", "%s: %s", path, why);
    }
    return st;
}
