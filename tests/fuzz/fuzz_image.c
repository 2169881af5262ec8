/* libFuzzer target: the image path (vision/): decoding from memory (JPEG through libjpeg-turbo,
 * PNG through libspng; vision/image_decode.c), then the VICReg views and the evaluation input
 * (vision/image_views.c and the resize, flip, colour, blur code under them) on whatever size
 * came out, so the crop and resize code sees odd sizes: 1 x N strips, primes, DCT-scaled JPEGs.
 *
 * The input is the image file; its last 4 bytes also set the views (JPEG and PNG decoders stop
 * at their end marker, so they are trailing bytes to them):
 *   byte -4: view size S = 1 + b % 40 (both views and the evaluation input)
 *   byte -3: bits 0..1 the crop scale range, bits 2..3 the aspect ratio range (from the recipe
 *            limits to the defaults), bit 4 DCT scaling, bits 5..6 the evaluation crop fraction
 *   bytes -2, -1: the seed
 * The DCT scale of the first decode is asked for as S x S. Images over 2^22 pixels are only
 * probed: the decoder's own limit is 2^28 (768 MB of RGB), which a 1 KB JPEG header can claim,
 * and a fuzzer would report filling it as running out of memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/image.h"
#include "vicreg/image_views.h"

#define MAX_S 40
#define FUZZ_MAX_PIXELS ((int64_t)1 << 22)

static vr_image_views_work *work;
static vr_image_decoder *dec;
static vr_image img, resized;
static vr_image_scratch scratch;
static uint8_t view8[MAX_S * MAX_S * 3];
static float out0[3 * MAX_S * MAX_S], out1[3 * MAX_S * MAX_S];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!work && (vr_image_views_work_create(&work) != VR_OK || vr_image_decoder_create(&dec) != VR_OK)) abort();
    vr_image_info info;
    if (vr_image_probe(dec, data, size, "fuzz", &info) != VR_OK) {
        /* what the probe refuses the decoder must refuse too */
        if (vr_image_decode(dec, data, size, "fuzz", 0, 0, &img) == VR_OK) abort();
        return 0;
    }
    if (info.h < 1 || info.w < 1) abort();
    if ((int64_t)info.h * info.w > FUZZ_MAX_PIXELS) return 0;

    static const float scales[4][2] = {{0.08f, 1.0f}, {1e-6f, 1e-6f}, {1.0f, 1.0f}, {1e-6f, 1.0f}};
    static const float ratios[4][2] = {{0.75f, 4.0f / 3.0f}, {1e-3f, 1e-3f}, {1e3f, 1e3f}, {1e-3f, 1e3f}};
    static const float fractions[4] = {0.875f, 1.0f, 0.5f, 0.25f};
    uint8_t p[4] = {0};
    if (size >= 4) memcpy(p, data + size - 4, 4);
    int s = 1 + p[0] % MAX_S;

    int h, w;
    vr_image_scaled_size(&info, s, s, &h, &w);
    if (vr_image_decode(dec, data, size, "fuzz", s, s, &img) != VR_OK) return 0;
    if (img.h != h || img.w != w || h < 1 || w < 1) abort();

    vr_image_views_config c;
    vr_image_views_config_default(&c);
    for (int v = 0; v < 2; v++) {
        c.view[v].size = s;
        c.view[v].scale_min = scales[p[1] & 3][0];
        c.view[v].scale_max = scales[p[1] & 3][1];
        c.view[v].ratio_min = ratios[(p[1] >> 2) & 3][0];
        c.view[v].ratio_max = ratios[(p[1] >> 2) & 3][1];
    }
    c.dct_scaling = (p[1] >> 4) & 1;
    uint64_t seed = (uint64_t)p[2] << 8 | p[3];

    /* one view with every transform on, on the image as decoded */
    vr_image_view_config all = c.view[0];
    all.flip_p = all.jitter_p = all.gray_p = all.blur_p = all.solarize_p = 1.0f;
    vr_rng r;
    vr_rng_seed_stream(&r, seed, 0);
    vr_image_view_params vp;
    vr_image_view_sample(&all, &r, img.h, img.w, &vp);
    if (vp.crop.h < 1 || vp.crop.w < 1 || vp.crop.top < 0 || vp.crop.left < 0 || vp.crop.top + vp.crop.h > img.h ||
        vp.crop.left + vp.crop.w > img.w) {
        fprintf(stderr, "crop %dx%d at (%d, %d) of a %dx%d image\n", vp.crop.w, vp.crop.h, vp.crop.left, vp.crop.top,
                img.w, img.h);
        abort();
    }
    if (vr_image_view_apply(&all, &vp, img.data, img.h, img.w, view8, &scratch, out0) != VR_OK) abort();

    /* the pair as training makes it: its own decode, DCT-scaled where the crops allow */
    vr_image_view_params pair[2];
    if (vr_image_views_pair(&c, work, data, size, "fuzz", seed, 1, out0, out1, pair) != VR_OK) {
        fprintf(stderr, "the pair of a %dx%d image that decoded failed: %s\n", img.w, img.h, vr_last_error());
        abort();
    }

    /* the evaluation input */
    vr_image_eval_config e;
    vr_image_eval_config_default(&e);
    e.size = s;
    e.crop_fraction = fractions[(p[1] >> 5) & 3];
    if (vr_image_eval_config_check(&e) == VR_OK) {
        vr_status st = vr_image_eval_apply(&e, img.data, img.h, img.w, &resized, view8, &scratch, out0);
        if (st != VR_OK && st != VR_ERR_FORMAT) abort(); /* FORMAT: the resized image is too large */
    }
    return 0;
}
