"""The photo-sized JPEG set of the image loader benchmark (tests/bench/image_views_bench.c and
tests/bench/image_views_peer.py): about 500 x 375 pixels as ImageNet's typical photo, from the
colour photographs Debian's python3-skimage ships (skimage.data: astronaut, chelsea, coffee,
rocket, two motorcycles, the Hubble deep field, a retina, an IHC slide).

Each photo gives a few 4:3 views (landscape 500 x 375 and portrait 375 x 500 crops at several
positions and zooms, reduced with PIL's LANCZOS), saved as JPEG quality 90 with 4:2:0 chroma,
the usual encoding of web photos. The set is written to a folder that git ignores (data/ by
default) and is not part of the tests.

Needs python3-skimage, which only the benchmark uses (apt-get install python3-skimage):
  /usr/bin/python3 tests/bench/make_image_bench_set.py [OUT_DIR=data/image_bench] [COUNT=48]
"""
import os
import sys

import numpy as np
import skimage.data  # only for data_dir, the folder of the photos
from PIL import Image

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]


def views(img, count, rng):
    """count 4:3 crops of img (PIL RGB), each resized to 500 x 375 or 375 x 500."""
    w, h = img.size
    for k in range(count):
        portrait = k % 3 == 2
        aspect = 3 / 4 if portrait else 4 / 3
        cw = min(w, int(h * aspect))
        ch = int(round(cw / aspect))
        zoom = rng.uniform(0.6, 1.0)
        cw, ch = max(8, int(cw * zoom)), max(8, int(ch * zoom))
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
        size = (375, 500) if portrait else (500, 375)
        yield img.crop((left, top, left + cw, top + ch)).resize(size, Image.LANCZOS)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "image_bench")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    per_photo = -(-count // len(PHOTOS))
    written = 0
    for name in PHOTOS:
        img = Image.open(os.path.join(skimage.data.data_dir, name)).convert("RGB")
        for k, view in enumerate(views(img, per_photo, rng)):
            if written == count:
                break
            stem = os.path.splitext(name)[0]
            view.save(os.path.join(out, f"{stem}_{k}.jpg"), quality=90, subsampling=2)
            written += 1
    sizes = [os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".jpg")]
    print(f"{written} JPEGs in {out}, mean {np.mean(sizes) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
