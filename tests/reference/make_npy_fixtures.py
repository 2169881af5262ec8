#!/usr/bin/python3
"""Writes the .npy files test_npy reads: what NumPy itself writes, as the reference.

usage: /usr/bin/python3 tests/reference/make_npy_fixtures.py [OUT_DIR (tests/fixtures/npy)]
"""
import os, sys
import numpy as np
from numpy.lib import format as npf

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "npy")
os.makedirs(out, exist_ok=True)
a = (np.arange(15, dtype=np.float32).reshape(3, 5) - 7) / 4      # exact in float32
np.save(os.path.join(out, "f32_3x5.npy"), a)
np.save(os.path.join(out, "f32_vec.npy"), np.array([1.5, -2.25, 3.0], np.float32))
np.save(os.path.join(out, "f32_2x3x4.npy"), np.arange(24, dtype=np.float32).reshape(2, 3, 4))
np.save(os.path.join(out, "f64_3x5.npy"), a.astype(np.float64))
np.save(os.path.join(out, "i32_3x5.npy"), np.arange(15, dtype=np.int32).reshape(3, 5))
np.save(os.path.join(out, "f32_fortran.npy"), np.asfortranarray(a))
np.save(os.path.join(out, "f32_bigendian.npy"), a.astype(">f4"))
with open(os.path.join(out, "f32_v2.npy"), "wb") as f:
    npf.write_array(f, a, version=(2, 0))
print("wrote", sorted(os.listdir(out)))
