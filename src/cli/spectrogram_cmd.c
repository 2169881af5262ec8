/* vicreg spectrogram: the front end of an audio recipe applied to one file, written as a .npy
 * array (n_mels, frames) or as a grayscale PNG picture of it (low frequencies at the bottom,
 * the clip's minimum black and maximum white). */
#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vicreg/atomic_file.h"
#include "vicreg/audio.h"
#include "vicreg/npy.h"
#include "vicreg/spectrogram.h"

static const char *spectrogram_help =
    "usage: vicreg spectrogram AUDIO -o OUT.npy|OUT.png [--recipe R.ini] [--set section.key=value]...\n"
    "\n"
    "Reads AUDIO (any format libsndfile reads; mixed to mono, resampled to [data] rate_hz) and\n"
    "computes the [spectrogram] of a recipe (defaults: 16 kHz, n_fft 400, hop 160, 64 HTK mels,\n"
    "log(x + 1e-6), scaled to [0, 1]) over the whole file.\n"
    "  OUT.npy    float32 array (n_mels, frames), NumPy format\n"
    "  OUT.png    8-bit grayscale picture, one column per frame, low frequencies at the bottom\n";

static vr_status write_png(const char *path, const float *m, int rows, int cols)
{
    unsigned char *img = malloc((size_t)rows * cols);
    if (!img) return vr_fail(VR_ERR_NOMEM, "png", "%s: out of memory", path);
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        lo = fminf(lo, m[i]);
        hi = fmaxf(hi, m[i]);
    }
    float scale = hi > lo ? 255.0f / (hi - lo) : 0.0f;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            img[(size_t)(rows - 1 - r) * cols + c] = (unsigned char)lrintf((m[(size_t)r * cols + c] - lo) * scale);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {.width = (uint32_t)cols, .height = (uint32_t)rows, .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_GRAYSCALE};
    int err = ctx ? spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1) : SPNG_EMEM;
    if (!err) err = spng_set_ihdr(ctx, &ihdr);
    if (!err) err = spng_encode_image(ctx, img, (size_t)rows * cols, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    size_t len = 0;
    void *png = err ? NULL : spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    free(img);
    if (!png) return vr_fail(VR_ERR_FORMAT, "png", "%s: encoding failed: %s", path, spng_strerror(err));
    vr_atomic_file a;
    vr_status s = vr_atomic_open(&a, path, "png");
    if (s == VR_OK) {
        fwrite(png, 1, len, a.f);
        s = vr_atomic_commit(&a);
    }
    free(png);
    return s;
}

int vr_cmd_spectrogram(int argc, char **argv)
{
    const char *cmd = "spectrogram", *in = NULL, *out = NULL, *recipe = NULL;
    const char *sets[VR_CLI_MAX_SETS];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        int took = vr_cli_take_set(cmd, argc, argv, &i, sets, &n_sets);
        if (took < 0) return VR_EXIT_USAGE;
        if (took) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(spectrogram_help, stdout), VR_EXIT_OK;
        if (!strcmp(a, "-o") || !strcmp(a, "--recipe")) {
            if (i + 1 >= argc) return vr_cli_usage(cmd, "%s needs a path", a);
            *(a[1] == 'o' ? &out : &recipe) = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return vr_cli_usage(cmd, "unknown option '%s'", a);
        } else if (in) {
            return vr_cli_usage(cmd, "one input only ('%s' and '%s')", in, a);
        } else {
            in = a;
        }
    }
    if (!in || !out) return vr_cli_usage(cmd, "give an AUDIO file and -o OUT.npy or OUT.png");
    size_t olen = strlen(out);
    int png = olen > 4 && !strcmp(out + olen - 4, ".png");
    if (!png && !(olen > 4 && !strcmp(out + olen - 4, ".npy")))
        return vr_cli_usage(cmd, "%s: the output must end in .npy or .png", out);

    vr_recipe r;
    vr_status s = vr_recipe_load(&r, recipe, sets, n_sets);
    if (s != VR_OK) return vr_cli_fail(s == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, cmd);
    r.spec.sample_rate_hz = r.rate_hz;
    vr_audio_reader *rd = NULL;
    vr_spectrogram *sp = NULL;
    float *m = NULL;
    const float *wave;
    int64_t n = 0, frames = 0;
    s = vr_audio_reader_create(r.rate_hz, &rd);
    if (s == VR_OK) s = vr_audio_decode(rd, in, &wave, &n, NULL);
    if (s == VR_OK) s = vr_spectrogram_create(&r.spec, &sp);
    if (s == VR_OK && (frames = vr_spectrogram_frames(sp, n)) < 1)
        s = vr_fail(VR_ERR_SHAPE, cmd, "%s: %lld samples are too few for n_fft %d", in, (long long)n, r.spec.n_fft);
    if (s == VR_OK && !(m = vr_alloc((size_t)r.spec.n_mels * frames * sizeof(float))))
        s = vr_fail(VR_ERR_NOMEM, cmd, "%s: out of memory", in);
    if (s == VR_OK) s = vr_spectrogram_mel(sp, wave, n, m);
    if (s == VR_OK) {
        int64_t shape[2] = {r.spec.n_mels, frames};
        s = png ? write_png(out, m, r.spec.n_mels, (int)frames) : vr_npy_write(out, m, 2, shape);
    }
    if (s == VR_OK)
        printf("%s: %.2f s at %d Hz -> %d mels x %lld frames -> %s\n", in, (double)n / r.rate_hz, r.rate_hz,
               r.spec.n_mels, (long long)frames, out);
    vr_free(m);
    if (sp) vr_spectrogram_destroy(sp);
    vr_audio_reader_free(rd);
    return s == VR_OK ? VR_EXIT_OK : vr_cli_fail(VR_EXIT_RUNTIME, cmd);
}
