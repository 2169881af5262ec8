"""Pillow and torchvision reference fixtures of the image front end (vision/, tests/test_image.c).

Writes, under tests/fixtures:
  image/*.jpg, image/*.png   small encoded images made here from scikit-image's astronaut
                             photo (61 x 47 crops, odd sizes on purpose): JPEGs in 4:2:0,
                             4:4:4, progressive, grayscale and CMYK; PNGs in RGB, RGBA, gray,
                             16-bit gray, 16-bit RGB, gray + alpha, 1-bit, palette and palette
                             with tRNS, interlaced; a 160 x 120 JPEG for DCT scaling; and the
                             broken files: empty, text, truncated JPEG and PNG, a JPEG with a
                             corrupt header, one with a corrupt scan, a PNG with corrupt data
  image_decode.safetensors   per good file NAME, the pixels PIL gives:
                               NAME  Image.open(f).convert("RGB"), (H, W, 3) U8, except
                                     gray16.png: the 16-bit samples' high bytes (PIL's own
                                     convert clips them to 255; see include/vicreg/image.h)
                             and big.jpg decoded by PIL's draft mode at 1/2, 1/4 and 1/8
                             (libjpeg's DCT scaling): big_s2, big_s4, big_s8
  image_ops.safetensors      inputs and outputs of each view transform with fixed parameters,
                             by torchvision 0.14's functional API on PIL images (Pillow 9.4):
                               photo (48, 64, 3) U8: the astronaut, reduced by PIL's LANCZOS
                               mix (64, 64, 3) U8: photo on top, 16 rows of random colours
                                 (grays, primaries and extremes among them) below
                               rrc.K (h, w, 3): F.resized_crop(photo, *RRC[K], BICUBIC)
                               box.K (h, w, 3): photo.resize(size, BICUBIC, box) by RESIZE_BOX[K]
                               hflip: F.hflip(photo)
                               brightness.K, contrast.K, saturation.K, hue.K: F.adjust_*(mix,
                                 FACTORS[kind][K])
                               gray: F.rgb_to_grayscale(mix, 3)
                               solarize: ImageOps.solarize(mix) (threshold 128)
                               blur.K: photo.filter(ImageFilter.GaussianBlur(SIGMAS[K])), the
                                 reference code's blur; tiny (3, 2, 3) and blur_tiny.K the same
                                 on a 3 x 2 image (radius past the image's edges)
                               tensor (3, 48, 64) F32: F.normalize(F.to_tensor(photo), IMAGENET)
                               view.K (3, S, S) F32: a whole view with the parameters VIEWS[K],
                                 in the reference's order (resized crop, flip, jitter in the
                                 given order, grayscale, blur, solarisation, tensor, normalise)
tests/test_image.c holds the same tables (RRC, RESIZE_BOX, FACTORS, SIGMAS, VIEWS).

Needs Debian's python3-torchvision, python3-pil and python3-skimage (for the photo):
  /usr/bin/python3 tests/reference/make_image_fixtures.py
"""
import io
import os
import sys

import numpy as np
import skimage.data
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
IMAGES = os.path.join(FIXTURES, "image")

# (top, left, h, w, out_h, out_w): a strong and a mild downscale, an upscale, a non-square
# output, the identity, one axis only each way, a crop reaching every edge
RRC = [
    (0, 0, 48, 64, 24, 24),
    (5, 7, 40, 50, 31, 45),
    (10, 20, 13, 17, 40, 40),
    (3, 4, 20, 30, 20, 30),
    (2, 3, 30, 40, 30, 17),
    (2, 3, 30, 40, 11, 40),
    (1, 0, 47, 64, 7, 9),
]
# (x0, y0, x1, y1, out_h, out_w): Image.resize with a box, fractions and boxes reaching the
# image's edges among them
RESIZE_BOX = [
    (0.0, 0.0, 64.0, 48.0, 20, 30),
    (2.5, 3.25, 40.75, 30.5, 16, 16),
    (10.0, 7.0, 30.0, 27.0, 20, 20),
    (0.5, 0.0, 63.5, 48.0, 33, 41),
    (31.125, 20.375, 33.875, 25.625, 12, 9),
]
FACTORS = {
    "brightness": [0.6, 0.873, 1.0, 1.234, 1.4],
    "contrast": [0.6, 0.912, 1.0, 1.187, 1.4],
    "saturation": [0.0, 0.8, 0.955, 1.2],
    "hue": [-0.5, -0.1, -0.037, 0.0, 0.0512, 0.1, 0.5],
}
SIGMAS = [0.1, 0.5, 1.0, 1.37, 2.0, 5.0]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# size, crop (top, left, h, w), flip, jitter (None or (order, b, c, s, h)), gray, sigma or
# None, solarize
VIEWS = [
    (40, (0, 0, 48, 64), 0, None, 0, None, 0),
    (40, (5, 7, 40, 50), 1, ((0, 1, 2, 3), 1.31, 0.74, 1.12, 0.083), 0, 1.2, 0),
    (40, (10, 20, 25, 30), 0, ((3, 2, 1, 0), 0.62, 1.38, 0.81, -0.094), 0, None, 1),
    (32, (4, 9, 41, 33), 1, ((2, 0, 3, 1), 1.05, 1.21, 0.93, 0.02), 1, 0.37, 1),
    (24, (8, 1, 12, 60), 0, ((1, 3, 0, 2), 0.97, 0.66, 1.19, -0.011), 0, 1.95, 0),
]


def photo_source():
    """The astronaut photo as a PIL image."""
    return Image.fromarray(skimage.data.astronaut())


def float32(x):
    """x rounded to float32, as the C tables hold it, back to a Python float."""
    return float(np.float32(x))


def write_images():
    os.makedirs(IMAGES, exist_ok=True)
    astro = photo_source()
    small = astro.crop((150, 60, 150 + 244, 60 + 188)).resize((61, 47), Image.LANCZOS)
    files = {}

    def save(name, image, **kw):
        buf = io.BytesIO()
        image.save(buf, format="JPEG" if name.endswith(".jpg") else "PNG", **kw)
        files[name] = buf.getvalue()

    save("rgb420.jpg", small, quality=90, subsampling=2)
    save("rgb444.jpg", small, quality=95, subsampling=0)
    save("progressive.jpg", small, quality=85, progressive=True)
    save("gray.jpg", small.convert("L"), quality=90)
    save("cmyk.jpg", small.convert("CMYK"), quality=90)
    save("rgb.png", small)
    rgba = small.convert("RGBA")
    alpha = np.tile(np.arange(61, dtype=np.uint8) * 4, (47, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    save("rgba.png", rgba)
    save("gray.png", small.convert("L"))
    save("la.png", small.convert("LA"))
    save("bw.png", small.convert("1"))
    save("palette.png", small.convert("P", palette=Image.ADAPTIVE, colors=37))
    pal = small.convert("P", palette=Image.ADAPTIVE, colors=16)
    save("palette_trns.png", pal, transparency=3)
    g16 = (np.asarray(small.convert("L"), np.uint16) * 257 + np.arange(61, dtype=np.uint16)).astype(np.uint16)
    save("gray16.png", Image.fromarray(g16, "I;16"))
    rgb16 = np.asarray(small, np.uint16) * 257 + 3
    files["rgb16.png"] = png_bytes(rgb16.astype(">u2").tobytes(), 61, 47, 16, 2)
    files["interlaced.png"] = png_adam7(np.asarray(small))
    big = astro.crop((40, 100, 440, 400)).resize((160, 120), Image.LANCZOS)
    save("big.jpg", big, quality=90)

    good = dict(files)
    files["empty.jpg"] = b""
    files["text.jpg"] = b"This is a text file with a .jpg name, not an image.\n"
    files["truncated.jpg"] = good["rgb420.jpg"][: len(good["rgb420.jpg"]) * 3 // 5]
    bad = bytearray(good["rgb420.jpg"])
    sof = bad.index(b"\xff\xc0")
    bad[sof + 4] = 3  # sample precision 3 bits: not a JPEG any decoder accepts
    files["corrupt_header.jpg"] = bytes(bad)
    bad = bytearray(good["rgb420.jpg"])
    sos = bad.index(b"\xff\xda")
    mid = sos + (len(bad) - sos) // 3
    bad[mid:mid + 24] = b"\xff\xd0" * 12  # restart markers where none belong: a broken scan
    files["corrupt_data.jpg"] = bytes(bad)
    files["truncated.png"] = good["rgb.png"][: len(good["rgb.png"]) // 2]
    bad = bytearray(good["rgb.png"])
    idat = bad.index(b"IDAT")
    bad[idat + 10] ^= 0x55  # a flipped byte in the compressed stream (and a wrong CRC)
    files["corrupt.png"] = bytes(bad)
    for name, data in files.items():
        with open(os.path.join(IMAGES, name), "wb") as f:
            f.write(data)
    return good


def png_chunk(kind, data):
    import zlib
    return (len(data).to_bytes(4, "big") + kind + data
            + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big"))


def png_bytes(raw_rows, w, h, depth, color_type):
    """A non-interlaced PNG of raw big-endian rows (filter 0 on each row)."""
    import zlib
    stride = len(raw_rows) // h
    body = b"".join(b"\x00" + raw_rows[y * stride:(y + 1) * stride] for y in range(h))
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([depth, color_type, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(body, 9))
            + png_chunk(b"IEND", b""))


def png_adam7(rgb):
    """An Adam7-interlaced 8-bit RGB PNG of rgb (H, W, 3) uint8 (PIL cannot write one)."""
    import zlib
    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    body = b""
    for y0, x0, dy, dx in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        body += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 1])
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(body, 9))
            + png_chunk(b"IEND", b""))


def decode_fixtures(good):
    out = {}
    for name, data in sorted(good.items()):
        im = Image.open(io.BytesIO(data))
        if name == "gray16.png":
            assert im.mode in ("I;16", "I"), im.mode
            ref = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
            out[name] = np.repeat(ref[:, :, None], 3, axis=2)
        else:
            out[name] = np.asarray(im.convert("RGB"))
    for scale in (2, 4, 8):
        im = Image.open(io.BytesIO(good["big.jpg"]))
        im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
        assert im.size == ((160 + scale - 1) // scale, (120 + scale - 1) // scale), im.size
        out[f"big_s{scale}"] = np.asarray(im.convert("RGB"))
    st.write(os.path.join(FIXTURES, "image_decode.safetensors"), out,
             {"pillow": Image.__version__, "torchvision": torchvision.__version__})


def jitter(img, spec):
    order, b, c, s, h = spec
    fns = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    factors = [float32(b), float32(c), float32(s), float32(h)]
    for k in order:
        img = fns[k](img, factors[k])
    return img


def view(img, spec):
    """One view with fixed parameters, the steps of the reference code's TrainTransform."""
    size, (top, left, h, w), flip, jit, gray, sigma, solarize = spec
    img = F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BICUBIC)
    if flip:
        img = F.hflip(img)
    if jit is not None:
        img = jitter(img, jit)
    if gray:
        img = F.rgb_to_grayscale(img, num_output_channels=3)
    if sigma is not None:
        img = img.filter(ImageFilter.GaussianBlur(float32(sigma)))
    if solarize:
        img = ImageOps.solarize(img)
    return F.normalize(F.to_tensor(img), *IMAGENET).numpy()


def ops_fixtures():
    photo = photo_source().resize((64, 48), Image.LANCZOS)
    rng = np.random.default_rng(5)
    colours = rng.integers(0, 256, (16, 64, 3), dtype=np.uint8)
    specials = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                (255, 255, 0), (0, 255, 255), (255, 0, 255), (1, 0, 0), (254, 255, 255), (12, 200, 7)]
    for i, c in enumerate(specials):
        colours[0, i] = c
    mix = Image.fromarray(np.concatenate([np.asarray(photo), colours], axis=0))
    out = {"photo": np.asarray(photo), "mix": np.asarray(mix)}
    for k, (top, left, h, w, oh, ow) in enumerate(RRC):
        out[f"rrc.{k}"] = np.asarray(F.resized_crop(photo, top, left, h, w, [oh, ow], InterpolationMode.BICUBIC))
    for k, (x0, y0, x1, y1, oh, ow) in enumerate(RESIZE_BOX):
        out[f"box.{k}"] = np.asarray(photo.resize((ow, oh), Image.BICUBIC, box=(x0, y0, x1, y1)))
    out["hflip"] = np.asarray(F.hflip(photo))
    fns = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
           "saturation": F.adjust_saturation, "hue": F.adjust_hue}
    for kind, factors in FACTORS.items():
        for k, f in enumerate(factors):
            out[f"{kind}.{k}"] = np.asarray(fns[kind](mix, float32(f)))
    out["gray"] = np.asarray(F.rgb_to_grayscale(mix, num_output_channels=3))
    out["solarize"] = np.asarray(ImageOps.solarize(mix))
    tiny = Image.fromarray(np.array([[[10, 200, 30], [250, 0, 90]], [[0, 0, 0], [255, 255, 255]],
                                     [[77, 13, 190], [5, 240, 128]]], np.uint8))
    out["tiny"] = np.asarray(tiny)
    for k, sigma in enumerate(SIGMAS):
        out[f"blur.{k}"] = np.asarray(photo.filter(ImageFilter.GaussianBlur(float32(sigma))))
        out[f"blur_tiny.{k}"] = np.asarray(tiny.filter(ImageFilter.GaussianBlur(float32(sigma))))
    out["tensor"] = F.normalize(F.to_tensor(photo), *IMAGENET).numpy()
    for k, spec in enumerate(VIEWS):
        out[f"view.{k}"] = view(photo, spec)
    st.write(os.path.join(FIXTURES, "image_ops.safetensors"), out,
             {"pillow": Image.__version__, "torchvision": torchvision.__version__})


def main():
    torch.set_num_threads(1)
    good = write_images()
    decode_fixtures(good)
    ops_fixtures()
    for name in ("image_decode.safetensors", "image_ops.safetensors"):
        print(name, os.path.getsize(os.path.join(FIXTURES, name)), "bytes")


if __name__ == "__main__":
    main()
