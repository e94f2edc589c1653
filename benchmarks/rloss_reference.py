"""How closely DenseCRFLoss matches the rloss reference outputs in tests/data/rloss_reference.npz.

    python benchmarks/rloss_reference.py

Per case: the shapes and settings, and the relative difference of the loss and of the gradient
(norm of the difference over the norm of rloss's) against rloss's own outputs.
"""
import os

import numpy as np
import torch

import wsloss

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                    "rloss_reference.npz")


def main() -> None:
    data = np.load(DATA)
    for name in sorted({key.split(".")[0] for key in data.files}):
        case = {key.split(".", 1)[1]: data[key] for key in data.files if key.startswith(name + ".")}
        seg = torch.from_numpy(case["seg"]).requires_grad_()
        settings = [float(case[k]) for k in ("weight", "sigma_rgb", "sigma_xy", "scale_factor")]
        loss = wsloss.DenseCRFLoss(*settings)(torch.from_numpy(case["image"]), seg, torch.from_numpy(case["roi"]))
        loss.backward()
        expected_grad = torch.from_numpy(case["grad"])
        loss_error = abs(loss.item() / float(case["loss"]) - 1)
        grad_error = ((seg.grad - expected_grad).norm() / expected_grad.norm()).item()
        batch, classes, height, width = seg.shape
        print(f"{name}: B={batch} K={classes} {height}x{width} scale {settings[3]}: "
              f"loss {loss_error:.1e}, gradient {grad_error:.1e} relative to rloss")


if __name__ == "__main__":
    main()
