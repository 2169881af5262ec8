"""Checks a toolkit checkpoint against torchvision's ResNet-18.

Loads the "backbone.*" tensors of CHECKPOINT (torchvision resnet18 state_dict names behind the
prefix "backbone.") into torchvision.models.resnet18() with fc replaced by Identity, runs the
eval-mode forward (float64) on tensor "x" of INPUT and compares with its tensor "repr".
Prints the largest absolute error; exits 1 when it exceeds 1e-4.

usage: /usr/bin/python3 tests/reference/check_checkpoint.py CHECKPOINT.safetensors INPUT.safetensors
"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402  (next to this script)

PREFIX = "backbone."
TOLERANCE = 1e-4


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    checkpoint, _ = st.read(sys.argv[1])
    inputs, _ = st.read(sys.argv[2])
    state = {name[len(PREFIX):]: torch.from_numpy(value.copy())
             for name, value in checkpoint.items()
             if name.startswith(PREFIX) and not name.startswith(PREFIX + "fc.")}
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(state, strict=True)
    model.double().eval()
    with torch.no_grad():
        representation = model(torch.from_numpy(inputs["x"].copy()).double())
    error = (representation - torch.from_numpy(inputs["repr"].copy()).double()).abs().max().item()
    print(f"max abs error {error:.3g} over {tuple(representation.shape)}")
    sys.exit(0 if error <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
