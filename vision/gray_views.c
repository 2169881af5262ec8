/* The augmented-view pipeline for grayscale images (see include/vicreg/gray_views.h). */
#include "vicreg/gray_views.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "vicreg/tensor.h"

#define CROP_TRIES 10
/* Kernel radius ceil(3 sigma), capped: at sigma 2 (the reference's top) 7 taps a side already
 * hold all but 0.3% of the weight, and a cap keeps the kernel small on small images. */
#define BLUR_MAX_RADIUS 8

void vr_gray_views_default(vr_gray_views_config *c, int size)
{
    *c = (vr_gray_views_config){
        .size = size,
        .scale_min = 0.08f, .scale_max = 1.0f,
        .ratio_min = 3.0f / 4.0f, .ratio_max = 4.0f / 3.0f,
        .flip_p = 0.5f,
        .jitter_p = 0.8f, .brightness = 0.4f, .contrast = 0.4f,
        .blur_p = {1.0f, 0.1f}, .blur_sigma_min = 0.1f, .blur_sigma_max = 2.0f,
        .solarize_p = {0.0f, 0.2f}, .solarize_threshold = 0.5f,
        .mean = 0.0f, .std = 1.0f,
    };
}

static int is_prob(float p) { return p >= 0.0f && p <= 1.0f; }

vr_status vr_gray_views_check(const vr_gray_views_config *c)
{
    const char *what = NULL;
    if (c->size < 1 || c->size > VR_VIEWS_MAX_SIZE) what = "size (1..1024)";
    else if (!(c->scale_min > 0.0f && c->scale_min <= c->scale_max && c->scale_max <= 1.0f))
        what = "crop scale range (0 < min <= max <= 1)";
    else if (!(c->ratio_min > 0.0f && c->ratio_min <= c->ratio_max)) what = "crop ratio range (0 < min <= max)";
    else if (!is_prob(c->flip_p)) what = "flip probability";
    else if (!is_prob(c->jitter_p)) what = "jitter probability";
    else if (!(c->brightness >= 0.0f && c->contrast >= 0.0f)) what = "jitter strength (>= 0)";
    else if (!is_prob(c->blur_p[0]) || !is_prob(c->blur_p[1])) what = "blur probability";
    else if (!(c->blur_sigma_min > 0.0f && c->blur_sigma_min <= c->blur_sigma_max))
        what = "blur sigma range (0 < min <= max)";
    else if (!is_prob(c->solarize_p[0]) || !is_prob(c->solarize_p[1])) what = "solarisation probability";
    else if (!is_prob(c->solarize_threshold)) what = "solarisation threshold (0..1)";
    else if (!(c->std > 0.0f) || !isfinite(c->mean)) what = "normalisation (std > 0)";
    return what ? vr_fail(VR_ERR_ARG, "views", "bad %s", what) : VR_OK;
}

void vr_crop_draw(vr_rng *r, int h, int w, const vr_gray_views_config *c, vr_crop *out)
{
    double area = (double)h * w, log_lo = log(c->ratio_min), log_hi = log(c->ratio_max);
    int found = 0;
    for (int t = 0; t < CROP_TRIES; t++) {
        /* four draws per try whether or not it fits, so the stream position never depends on
         * the image size */
        double target = area * vr_rng_range(r, c->scale_min, c->scale_max);
        double ratio = exp(log_lo + (log_hi - log_lo) * vr_rng_uniform(r));
        float u_top = vr_rng_uniform(r), u_left = vr_rng_uniform(r);
        if (found) continue;
        int cw = (int)lround(sqrt(target * ratio)), ch = (int)lround(sqrt(target / ratio));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            out->h = ch;
            out->w = cw;
            out->top = (int)(u_top * (float)(h - ch + 1));
            out->left = (int)(u_left * (float)(w - cw + 1));
            found = 1;
        }
    }
    if (found) return;
    double in_ratio = (double)w / h;
    if (in_ratio < c->ratio_min) {
        out->w = w;
        out->h = (int)lround(w / c->ratio_min);
    } else if (in_ratio > c->ratio_max) {
        out->h = h;
        out->w = (int)lround(h * c->ratio_max);
    } else {
        out->w = w;
        out->h = h;
    }
    out->top = (h - out->h) / 2;
    out->left = (w - out->w) / 2;
}

/* Bilinear resample of the crop of img (H,W) to dst (S,S) in [0, 1], with PyTorch's
 * align_corners=False sampling (pixel centres at +0.5) and edges clamped to the crop, as
 * torchvision's crop-then-resize does; mirrored left-right when flip. */
static void resample(const uint8_t *img, int w, const vr_crop *cr, int s, int flip, float *dst)
{
    float sy_scale = (float)cr->h / s, sx_scale = (float)cr->w / s;
    for (int y = 0; y < s; y++) {
        float sy = fminf(fmaxf((y + 0.5f) * sy_scale - 0.5f, 0.0f), (float)(cr->h - 1));
        int y0 = (int)sy, y1 = y0 + 1 < cr->h ? y0 + 1 : y0;
        float fy = sy - (float)y0;
        const uint8_t *r0 = img + (size_t)(cr->top + y0) * w + cr->left;
        const uint8_t *r1 = img + (size_t)(cr->top + y1) * w + cr->left;
        float *row = dst + (size_t)y * s;
        for (int x = 0; x < s; x++) {
            float sx = fminf(fmaxf((x + 0.5f) * sx_scale - 0.5f, 0.0f), (float)(cr->w - 1));
            int x0 = (int)sx, x1 = x0 + 1 < cr->w ? x0 + 1 : x0;
            float fx = sx - (float)x0;
            float top = r0[x0] + fx * (float)(r0[x1] - r0[x0]);
            float bot = r1[x0] + fx * (float)(r1[x1] - r1[x0]);
            row[flip ? s - 1 - x : x] = (top + fy * (bot - top)) * (1.0f / 255.0f);
        }
    }
}

static void brightness(float *p, int count, float factor)
{
    for (int i = 0; i < count; i++) p[i] = fminf(fmaxf(p[i] * factor, 0.0f), 1.0f);
}

/* torchvision adjust_contrast: blend with the image's mean gray level */
static void contrast(float *p, int count, float factor)
{
    double sum = 0;
    for (int i = 0; i < count; i++) sum += p[i];
    float mean = (float)(sum / count), off = (1.0f - factor) * mean;
    for (int i = 0; i < count; i++) p[i] = fminf(fmaxf(factor * p[i] + off, 0.0f), 1.0f);
}

/* Separable Gaussian blur of p (S,S) with edges replicated; tmp (S,S) scratch. */
static void blur(float *p, float *tmp, int s, float sigma)
{
    int radius = (int)ceilf(3.0f * sigma);
    if (radius > BLUR_MAX_RADIUS) radius = BLUR_MAX_RADIUS;
    if (radius < 1) return;
    float k[2 * BLUR_MAX_RADIUS + 1], sum = 0;
    for (int i = -radius; i <= radius; i++) sum += k[i + radius] = expf(-0.5f * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * radius; i++) k[i] /= sum;
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
            float acc = 0;
            for (int i = -radius; i <= radius; i++) {
                int xx = x + i < 0 ? 0 : (x + i >= s ? s - 1 : x + i);
                acc += k[i + radius] * p[(size_t)y * s + xx];
            }
            tmp[(size_t)y * s + x] = acc;
        }
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
            float acc = 0;
            for (int i = -radius; i <= radius; i++) {
                int yy = y + i < 0 ? 0 : (y + i >= s ? s - 1 : y + i);
                acc += k[i + radius] * tmp[(size_t)yy * s + x];
            }
            p[(size_t)y * s + x] = acc;
        }
}

static void normalise(float *p, int count, float mean, float std)
{
    float inv = 1.0f / std;
    for (int i = 0; i < count; i++) p[i] = (p[i] - mean) * inv;
}

/* One view of img (H,W) into dst (S,S). The draws happen in one fixed order, all of them
 * every time, so a probability of 0 or 1 never shifts what the other transforms draw. */
static void make_view(const vr_gray_views_config *c, const uint8_t *img, int h, int w, int view,
                      vr_rng *r, float *dst, float *tmp)
{
    int s = c->size, count = s * s;
    vr_crop crop;
    vr_crop_draw(r, h, w, c, &crop);
    int flip = vr_rng_uniform(r) < c->flip_p;
    int jitter = vr_rng_uniform(r) < c->jitter_p;
    float bf = vr_rng_range(r, fmaxf(0.0f, 1.0f - c->brightness), 1.0f + c->brightness);
    float cf = vr_rng_range(r, fmaxf(0.0f, 1.0f - c->contrast), 1.0f + c->contrast);
    int contrast_first = vr_rng_uniform(r) < 0.5f; /* ColorJitter applies its parts in random order */
    int do_blur = vr_rng_uniform(r) < c->blur_p[view];
    float sigma = vr_rng_range(r, c->blur_sigma_min, c->blur_sigma_max);
    int solarize = vr_rng_uniform(r) < c->solarize_p[view];

    resample(img, w, &crop, s, flip, dst);
    if (jitter) {
        if (contrast_first) contrast(dst, count, cf);
        brightness(dst, count, bf);
        if (!contrast_first) contrast(dst, count, cf);
    }
    if (do_blur) blur(dst, tmp, s, sigma);
    if (solarize)
        for (int i = 0; i < count; i++)
            if (dst[i] >= c->solarize_threshold) dst[i] = 1.0f - dst[i];
    normalise(dst, count, c->mean, c->std);
}

vr_status vr_gray_views_batch(const vr_gray_views_config *c, const uint8_t *images, int h, int w,
                              const int *index, int n, uint64_t seed, int64_t first, int threads,
                              float *out)
{
    VR_TRY(vr_gray_views_check(c));
    if (h < 1 || w < 1 || n < 1) return vr_fail(VR_ERR_ARG, "views", "batch of %d images %dx%d", n, h, w);
    size_t plane = (size_t)c->size * c->size;
    int failed = 0;
    int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
    {
        float *tmp = vr_alloc(plane * sizeof(float));
        if (!tmp) {
#pragma omp atomic write
            failed = 1;
        }
        /* each (sample, view) has its own stream, so the split over threads cannot matter */
#pragma omp for schedule(static)
        for (int j = 0; j < 2 * n; j++) {
            if (!tmp) continue;
            int view = j / n, i = j % n;
            vr_rng r;
            vr_rng_seed_stream(&r, seed, (uint64_t)(first + i) * 2 + (uint64_t)view);
            make_view(c, images + (size_t)index[i] * h * w, h, w, view, &r, out + (size_t)j * plane, tmp);
        }
        vr_free(tmp);
    }
    if (failed) return vr_fail(VR_ERR_NOMEM, "views", "cannot allocate %zu floats of scratch", plane);
    return VR_OK;
}

vr_status vr_gray_center_batch(const vr_gray_views_config *c, const uint8_t *images, int h, int w,
                               int n, int threads, float *out)
{
    VR_TRY(vr_gray_views_check(c));
    if (h < 1 || w < 1 || n < 1) return vr_fail(VR_ERR_ARG, "views", "batch of %d images %dx%d", n, h, w);
    size_t plane = (size_t)c->size * c->size;
    vr_crop whole = {0, 0, h, w};
    int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int i = 0; i < n; i++) {
        resample(images + (size_t)i * h * w, w, &whole, c->size, 0, out + (size_t)i * plane);
        normalise(out + (size_t)i * plane, (int)plane, c->mean, c->std);
    }
    return VR_OK;
}
