/* Writes the binary seeds of the fuzz corpora with the project's own writers and the libraries
 * it reads with: make_corpus DIR fills DIR/safetensors, DIR/npy, DIR/audio, DIR/image, DIR/idx
 * and DIR/index with a
 * handful of small valid files each (a few hundred bytes: a fuzzer mutates small inputs
 * fastest). The text seeds (recipe, manifest) are committed as they are. Built with
 * -Dfuzz=enabled; rerun by hand when a reader learns a new format:
 *
 *   build-fuzz/tests/fuzz/make_corpus tests/fuzz/corpus
 *
 * Every file is the same on each run except two fields libsndfile fills itself: the Ogg
 * stream's serial number (random) and the float WAV's PEAK chunk timestamp. */
#include <errno.h>
#include <sndfile.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <zlib.h>

#include "vicreg/index.h"
#include "vicreg/npy.h"
#include "vicreg/safetensors.h"

static const char *root;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "make_corpus: %s: %s\n", what, why);
    exit(1);
}

/* DIR/sub/name, the folder made on the way */
static const char *out_path(const char *sub, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/%s", root, sub, name);
    return path;
}

static void put(const char *sub, const char *name, const void *data, size_t size)
{
    const char *path = out_path(sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) die(path, "cannot write");
}

static void ok(vr_status s)
{
    if (s != VR_OK) die("vicreg", vr_last_error());
}

/* ---- safetensors: the project's writer ---- */

static void safetensors_seeds(void)
{
    const float w[6] = {0.5f, -1.0f, 2.0f, 0.0f, 3.25f, -0.125f};
    const int64_t step = 7;
    const double f64 = -2.5;
    const uint16_t half[2] = {0x3c00, 0xc000}, bf16[2] = {0x3f80, 0x4049};
    const int32_t i32 = -3;
    const uint64_t u64 = 1ull << 40;
    const uint8_t u8[3] = {0, 128, 255}, flags[2] = {0, 1};
    vr_st_writer *wr;

    ok(vr_st_writer_new(&wr));
    ok(vr_st_add(wr, "encoder.weight", VR_DTYPE_F32, 2, (const int64_t[]){2, 3}, w));
    ok(vr_st_add(wr, "step", VR_DTYPE_I64, 0, NULL, &step));
    ok(vr_st_add_metadata(wr, "format", "pt"));
    ok(vr_st_add_metadata(wr, "step", "7"));
    ok(vr_st_write(wr, out_path("safetensors", "checkpoint.safetensors")));
    vr_st_writer_free(wr);

    ok(vr_st_writer_new(&wr));
    ok(vr_st_write(wr, out_path("safetensors", "empty.safetensors")));
    vr_st_writer_free(wr);

    ok(vr_st_writer_new(&wr));
    ok(vr_st_add(wr, "f64", VR_DTYPE_F64, 1, (const int64_t[]){1}, &f64));
    ok(vr_st_add(wr, "f16", VR_DTYPE_F16, 1, (const int64_t[]){2}, half));
    ok(vr_st_add(wr, "bf16", VR_DTYPE_BF16, 2, (const int64_t[]){2, 1}, bf16));
    ok(vr_st_add(wr, "i32", VR_DTYPE_I32, 3, (const int64_t[]){1, 1, 1}, &i32));
    ok(vr_st_add(wr, "u64", VR_DTYPE_U64, 1, (const int64_t[]){1}, &u64));
    ok(vr_st_add(wr, "u8", VR_DTYPE_U8, 1, (const int64_t[]){3}, u8));
    ok(vr_st_add(wr, "bool", VR_DTYPE_BOOL, 1, (const int64_t[]){2}, flags));
    ok(vr_st_add(wr, "none", VR_DTYPE_F32, 2, (const int64_t[]){0, 4}, NULL));
    ok(vr_st_write(wr, out_path("safetensors", "dtypes.safetensors")));
    vr_st_writer_free(wr);
}

/* ---- npy: the project's writer, and the header versions NumPy writes beside 1.0 ---- */

/* A version 2.0 or 3.0 file by hand: 4-byte header length. */
static void npy_v2(const char *name, int version, const char *dict, const float *x, size_t n)
{
    char buf[256];
    size_t len = strlen(dict), total = (12 + len + 1 + 63) / 64 * 64;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (char)version;
    buf[7] = 0;
    uint32_t h = (uint32_t)(total - 12);
    for (int i = 0; i < 4; i++) buf[8 + i] = (char)(h >> (8 * i));
    memset(buf + 12, ' ', total - 12);
    memcpy(buf + 12, dict, len);
    buf[total - 1] = '\n';
    memcpy(buf + total, x, n * sizeof(float));
    put("npy", name, buf, total + n * sizeof(float));
}

static void npy_seeds(void)
{
    const float x[6] = {1.0f, -2.25f, 0.5f, 3.0f, -0.0f, 1e-3f};
    ok(vr_npy_write(out_path("npy", "vec3.npy"), x, 1, (const int64_t[]){3}));
    ok(vr_npy_write(out_path("npy", "mat2x3.npy"), x, 2, (const int64_t[]){2, 3}));
    ok(vr_npy_write(out_path("npy", "empty0x5.npy"), x, 2, (const int64_t[]){0, 5}));
    ok(vr_npy_write(out_path("npy", "rank4.npy"), x, 4, (const int64_t[]){1, 2, 1, 3}));
    npy_v2("v2_2x2.npy", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", x, 4);
    npy_v2("v3_scalar.npy", 3, "{'descr': '=f4', 'fortran_order': False, 'shape': (), }", x, 1);
}

/* ---- audio: libsndfile's writers ---- */

static void audio_seed(const char *name, int format, int rate, int channels, int frames)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    const char *path = out_path("audio", name);
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f) die(path, sf_strerror(NULL));
    float x[64 * 8];
    for (int i = 0; i < frames * channels; i++) x[i] = (float)((i * 37) % 64 - 32) / 40.0f;
    if (sf_writef_float(f, x, frames) != frames) die(path, sf_strerror(f));
    sf_close(f);
}

static void audio_seeds(void)
{
    audio_seed("u8_8k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 8000, 1, 40);
    audio_seed("s16_44k_stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 2, 32);
    audio_seed("f32_22k_6ch.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 22050, 6, 8);
    audio_seed("s16_16k.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, 64);
    audio_seed("s24_11k.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_24, 11025, 1, 24);
    audio_seed("s16_48k.au", SF_FORMAT_AU | SF_FORMAT_PCM_16, 48000, 1, 24);
    audio_seed("s16_1hz.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 1, 3);
    audio_seed("vorbis_8k.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 8000, 1, 64);
}

/* ---- images: TurboJPEG's and libspng's encoders ---- */

static void jpeg_seed(const char *name, int w, int h, int pf, int subsamp, int flags)
{
    uint8_t px[16 * 16 * 4];
    for (int i = 0; i < w * h * tjPixelSize[pf]; i++) px[i] = (uint8_t)(i * 29 + (i / 7) * 13);
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    if (!tj || tjCompress2(tj, px, w, 0, h, pf, &jpeg, &size, subsamp, 75, flags) != 0)
        die(name, tjGetErrorStr2(tj));
    put("image", name, jpeg, size);
    tjFree(jpeg);
    tjDestroy(tj);
}

static void png_seed(const char *name, int w, int h, int color_type, int depth, int interlace)
{
    static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};
    size_t row = ((size_t)w * channels[color_type] * depth + 7) / 8;
    uint8_t px[16 * 16 * 8];
    for (size_t i = 0; i < row * h; i++) px[i] = (uint8_t)(i * 53 + 7);
    if (color_type == SPNG_COLOR_TYPE_INDEXED)
        for (size_t i = 0; i < row * h; i++) px[i] &= (uint8_t)((1 << depth) - 1) * 0x11;
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {.width = (uint32_t)w, .height = (uint32_t)h, .bit_depth = (uint8_t)depth,
                             .color_type = (uint8_t)color_type, .interlace_method = (uint8_t)interlace};
    int err = !ctx || spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1) || spng_set_ihdr(ctx, &ihdr);
    if (!err && color_type == SPNG_COLOR_TYPE_INDEXED) {
        struct spng_plte plte = {.n_entries = 1u << depth};
        for (uint32_t i = 0; i < plte.n_entries; i++)
            plte.entries[i] = (struct spng_plte_entry){(uint8_t)(i * 80), (uint8_t)(255 - i * 40), (uint8_t)(i * 7), 255};
        struct spng_trns trns = {.n_type3_entries = 2, .type3_alpha = {0, 128}};
        err = spng_set_plte(ctx, &plte) || spng_set_trns(ctx, &trns);
    }
    if (!err) err = spng_encode_image(ctx, px, row * h, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    size_t size = 0;
    void *png = err ? NULL : spng_get_png_buffer(ctx, &size, &err);
    if (!png) die(name, spng_strerror(err));
    put("image", name, png, size);
    free(png);
    spng_ctx_free(ctx);
}

static void image_seeds(void)
{
    jpeg_seed("rgb420_7x5.jpg", 7, 5, TJPF_RGB, TJSAMP_420, 0);
    jpeg_seed("rgb444_16x3_progressive.jpg", 16, 3, TJPF_RGB, TJSAMP_444, TJFLAG_PROGRESSIVE);
    jpeg_seed("gray_1x13.jpg", 1, 13, TJPF_GRAY, TJSAMP_GRAY, 0);
    jpeg_seed("cmyk_4x4.jpg", 4, 4, TJPF_CMYK, TJSAMP_444, 0);
    png_seed("rgb_5x3.png", 5, 3, SPNG_COLOR_TYPE_TRUECOLOR, 8, 0);
    png_seed("gray1_9x2.png", 9, 2, SPNG_COLOR_TYPE_GRAYSCALE, 1, 0);
    png_seed("palette_trns_3x3.png", 3, 3, SPNG_COLOR_TYPE_INDEXED, 2, 0);
    png_seed("rgba16_2x2.png", 2, 2, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 16, 0);
    png_seed("gray_alpha_interlaced_11x7.png", 11, 7, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, 1);
}

/* ---- IDX: the MNIST layout by hand, plain and gzip ---- */

static void idx_seed(const char *name, int rank, const int *sizes, int compress)
{
    unsigned char buf[256] = {0, 0, 0x08, (unsigned char)rank};
    size_t len = 4, count = 1;
    for (int i = 0; i < rank; i++, len += 4) {
        buf[len + 3] = (unsigned char)sizes[i];
        count *= (size_t)sizes[i];
    }
    for (size_t i = 0; i < count; i++) buf[len++] = (unsigned char)(i * 37 % 251);
    if (!compress) {
        put("idx", name, buf, len);
        return;
    }
    gzFile g = gzopen(out_path("idx", name), "wb9");
    if (!g || gzwrite(g, buf, (unsigned)len) != (int)len || gzclose(g) != Z_OK) die(name, "cannot write gzip");
}

static void idx_seeds(void)
{
    idx_seed("labels5", 1, (const int[]){5}, 0);
    idx_seed("images2x3x4", 3, (const int[]){2, 3, 4}, 0);
    idx_seed("images3x2x2.gz", 3, (const int[]){3, 2, 2}, 1);
    idx_seed("labels3.gz", 1, (const int[]){3}, 1);
}

/* ---- search index: the project's writer ---- */

static void index_seed(const char *name, int with_rows, const char *settings)
{
    const float x[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0.6f, 0.8f, 0, 0};
    vr_embedding_row rows[3] = {{"a.wav", 0, 1, "yes"}, {"b.flac", 0.5, 1.5, ""}, {"c.ogg", 0, 2, "no"}};
    vr_index_config c = vr_index_defaults();
    vr_index *ix;
    ok(vr_index_build(x, 3, 4, with_rows ? rows : NULL, settings, &c, &ix));
    ok(vr_index_save(ix, out_path("index", name)));
    vr_index_free(ix);
}

static void index_seeds(void)
{
    index_seed("flat_rows.vri", 1, "{\"branch\": \"spec\"}");
    index_seed("flat_bare.vri", 0, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) die(root, strerror(errno));
    safetensors_seeds();
    npy_seeds();
    audio_seeds();
    image_seeds();
    idx_seeds();
    index_seeds();
    return 0;
}
