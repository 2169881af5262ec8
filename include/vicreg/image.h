/* Decoding images for the image front end: JPEG through libjpeg-turbo's TurboJPEG API and PNG
 * through libspng, both to 8-bit RGB.
 *
 * The pixels are the ones PIL's Image.open(path).convert("RGB") gives, the input of the
 * torchvision views of the reference code: a JPEG is decoded with libjpeg-turbo's defaults
 * (accurate integer IDCT, fancy upsampling), which is what PIL does through the same library;
 * grayscale is replicated to the three channels; a CMYK or YCCK JPEG is taken to follow Adobe's
 * inverted convention (as PIL assumes) and converted with PIL's formula
 * R = (255 - K) - C (255 - K) / 255 on the uninverted values. A PNG of any colour type and bit
 * depth becomes RGB: gray replicated, palette looked up, alpha and tRNS dropped (not
 * composited, as convert("RGB") drops them), 16-bit samples reduced to their high byte (where
 * PIL clips a 16-bit gray PNG to 255 instead). No gamma or colour profile is applied, and EXIF
 * orientation is ignored, as PIL and torchvision ignore it.
 *
 * DCT-domain downscaling: a caller that needs only a smaller image (a crop that will be
 * resized down) passes the smallest size it needs, min_h x min_w; a JPEG is then decoded at
 * the smallest of the scales 1/8, 1/4 and 1/2 whose output is at least that size (else at full
 * size), which skips most of the IDCT, upsampling and colour conversion work. The pixels are
 * those of PIL's draft mode at the same scale. PNGs are always decoded at full size.
 *
 * A decoder owns a TurboJPEG handle and reusable buffers (the file's bytes, a CMYK row store),
 * and a vr_image owns its pixel buffer, which only grows: decoding a data set with one decoder
 * and one image per thread allocates only when an image is larger than every one before it.
 *
 * Every failure names the file and what is wrong, and nothing crashes on bad input:
 * VR_ERR_NOT_FOUND (no such file), VR_ERR_IO (cannot open or read it), VR_ERR_FORMAT (empty
 * file, not a JPEG or PNG, a corrupt header or corrupt data, a truncated file, an image larger
 * than VR_IMAGE_MAX_PIXELS). A JPEG whose only defect is libjpeg's "extraneous bytes before
 * marker" warning decodes normally (the image data is whole); any other libjpeg warning
 * (premature end of file, bad Huffman code, ...) is an error, since the pixels past it are
 * filler. */
#ifndef VICREG_IMAGE_H
#define VICREG_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"

/* Images above 2^28 pixels (16384 x 16384) are refused: a guard against a corrupt header
 * asking for gigabytes. */
#define VR_IMAGE_MAX_PIXELS ((int64_t)1 << 28)

/* An RGB image: data (h, w, 3), rows packed. The buffer belongs to the struct, grows when an
 * image needs more than `capacity` bytes and is otherwise reused. Zero-initialise before the
 * first use; release with vr_image_free. */
typedef struct vr_image {
    uint8_t *data; /* (h, w, 3) */
    int h, w;
    size_t capacity; /* bytes allocated at data */
} vr_image;

void vr_image_free(vr_image *im);
/* Makes room for an h x w image (VR_ERR_NOMEM, or VR_ERR_FORMAT above VR_IMAGE_MAX_PIXELS)
 * and sets im->h, im->w. */
vr_status vr_image_reserve(vr_image *im, int h, int w);

typedef enum vr_image_format { VR_IMAGE_JPEG, VR_IMAGE_PNG } vr_image_format;

/* What the header says, before decoding. */
typedef struct vr_image_info {
    vr_image_format format;
    int h, w; /* full size in pixels */
} vr_image_info;

typedef struct vr_image_decoder vr_image_decoder;

vr_status vr_image_decoder_create(vr_image_decoder **out);
void vr_image_decoder_free(vr_image_decoder *d);

/* Reads the whole file at path into the decoder's buffer: *data (*size bytes) stays valid
 * until the next call on d. */
vr_status vr_image_load(vr_image_decoder *d, const char *path, const uint8_t **data, size_t *size);

/* The format and full size of the image in data (size bytes); name stands for it in messages. */
vr_status vr_image_probe(vr_image_decoder *d, const void *data, size_t size, const char *name,
                         vr_image_info *info);

/* Decodes the image in data into out. min_h, min_w: the smallest size the caller needs (a JPEG
 * may be decoded smaller than full size, never below it); 0 or less asks for full size.
 * out->h, out->w say what was decoded. */
vr_status vr_image_decode(vr_image_decoder *d, const void *data, size_t size, const char *name,
                          int min_h, int min_w, vr_image *out);

/* vr_image_load then vr_image_decode, naming path in messages. */
vr_status vr_image_read(vr_image_decoder *d, const char *path, int min_h, int min_w, vr_image *out);

/* The size a JPEG of h x w is decoded at for the request min_h x min_w (as vr_image_decode
 * chooses it); PNGs are always full size. */
void vr_image_scaled_size(const vr_image_info *info, int min_h, int min_w, int *h, int *w);

#endif
