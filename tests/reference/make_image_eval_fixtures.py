"""torchvision reference of the evaluation input of RGB images (vr_image_eval_apply,
tests/test_image.c): the validation transform of the reference code's evaluate.py,

    Resize(R) -> CenterCrop(S) -> ToTensor -> Normalize(ImageNet mean, std),  R = round(S / f)

on PIL images of committed fixture files (tests/fixtures/image), and Resize(R) alone, for the
cases of CASES below: a downscale, an upscale, a crop offset of a half rounded to even, an image
whose shorter side is already R (left alone), a grayscale JPEG.

Writes tests/fixtures/image_eval.safetensors:
  resize.K (h, w, 3) U8   F.resize(img, R) (bilinear), CASES[K]
  eval.K   (3, S, S) F32  the whole transform, CASES[K]

Needs Debian's python3-torchvision and python3-pil:
  /usr/bin/python3 tests/reference/make_image_eval_fixtures.py
"""
import os
import sys

import numpy as np
import torchvision.transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# (file, S, f); the same table is in tests/test_image.c
CASES = [
    ("big.jpg", 64, 0.875),    # 160 x 120 -> R 73: 97 x 73, crop 64
    ("rgb.png", 32, 1.0),      # 61 x 47 -> 41 x 32, left offset round(4.5) = 4
    ("rgb420.jpg", 56, 0.875), # upscale to 83 x 64
    ("rgb.png", 47, 1.0),      # shorter side already 47: no resize, crop 47 x 47 at left 7
    ("gray.jpg", 24, 0.75),    # grayscale JPEG, R 32
]


def main():
    out = {}
    for k, (name, size, fraction) in enumerate(CASES):
        img = Image.open(os.path.join(FIXTURES, "image", name)).convert("RGB")
        side = int(round(size / fraction))
        resized = T.Resize(side)(img)
        out[f"resize.{k}"] = np.asarray(resized, dtype=np.uint8)
        tf = T.Compose([T.Resize(side), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])
        out[f"eval.{k}"] = tf(img).numpy().astype(np.float32)
    st.write(os.path.join(FIXTURES, "image_eval.safetensors"), out,
             {"made_by": "tests/reference/make_image_eval_fixtures.py"})


if __name__ == "__main__":
    main()
