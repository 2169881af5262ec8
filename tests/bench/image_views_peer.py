#!/usr/bin/python3
"""The torchvision + PIL peer of tests/bench/image_views_bench.c: images per second on one core
of reading a JPEG as torchvision's ImageFolder does (pil_loader: Image.open, convert("RGB"))
and making its two views with the reference code's TrainTransform (facebookresearch/vicreg,
augmentations.py: the transforms below are its own, its GaussianBlur and Solarization classes
included), as a DataLoader worker does for every sample.

Every *.jpg of DIR in name order, over and over for about SECONDS after one untimed pass;
torch.set_num_threads(1). Prints a RESULT line of JSON: images_per_s (wall clock),
images_per_cpu_s (the process's CPU time), images, seconds, cpu_seconds.
Needs Debian's python3-torch, python3-torchvision and python3-pil; the JPEG set comes from
tests/bench/make_image_bench_set.py (python3-skimage).

usage: /usr/bin/python3 tests/bench/image_views_peer.py [DIR=data/image_bench] [SECONDS=4]
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision.transforms as transforms
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode


class GaussianBlur(object):
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if np.random.rand() < self.p:
            sigma = np.random.rand() * 1.9 + 0.1
            return img.filter(ImageFilter.GaussianBlur(sigma))
        else:
            return img


class Solarization(object):
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if np.random.rand() < self.p:
            return ImageOps.solarize(img)
        else:
            return img


def view_transform(blur_p, solarize_p):
    return transforms.Compose([
        transforms.RandomResizedCrop(224, interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5),
        transforms.RandomApply([transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)],
                               p=0.8),
        transforms.RandomGrayscale(p=0.2),
        GaussianBlur(p=blur_p),
        Solarization(p=solarize_p),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


def pil_loader(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "image_bench")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    if not paths:
        sys.exit(f"image_views_peer: no *.jpg in {folder} (make the set with tests/bench/make_image_bench_set.py)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    t1, t2 = view_transform(1.0, 0.0), view_transform(0.1, 0.2)
    checksum = 0.0
    for p in paths:
        img = pil_loader(p)
        x1, x2 = t1(img), t2(img)
    images, t0, c0, elapsed = 0, time.perf_counter(), time.process_time(), 0.0
    while elapsed < seconds:
        for p in paths:
            img = pil_loader(p)
            x1, x2 = t1(img), t2(img)
            checksum += float(x1[0, 0, 0]) + float(x2[0, 0, 0])
            images += 1
        elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert tuple(x1.shape) == (3, 224, 224) and tuple(x2.shape) == (3, 224, 224)
    print(f"{images} images of {folder} ({len(paths)} files), two 224x224 views each: "
          f"{images / elapsed:.1f} images/s, {images / cpu:.1f} per CPU second (checksum {checksum:.3f})")
    print("RESULT " + json.dumps({"images_per_s": round(images / elapsed, 2), "images_per_cpu_s": round(images / cpu, 2),
                                  "images": images, "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3)}))


if __name__ == "__main__":
    main()
