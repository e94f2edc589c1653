"""Input checks of the public API (docs/DESIGN.md §6): clear ValueError / TypeError naming the argument."""
import math
from numbers import Integral, Real
from typing import Sequence, Union

import torch

ScaleFactor = Union[float, Sequence[float]]  # one factor, or one per spatial axis (outermost first)
Spacing = Union[None, float, Sequence[float]]  # physical pixel / voxel size: (sy, sx) or (sz, sy, sx)


def check_tensor(name: str, value, dims=None, floating: bool = False, real: bool = False) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dims is not None and value.dim() not in dims:
        shapes = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if real and value.is_complex():
        raise TypeError(f"{name} must hold real numbers, got {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    return value


def refuse_meta(name: str, value: torch.Tensor, why: str) -> None:
    """Entry points whose work depends on the tensors' values (a lattice's size, a host-side
    check) cannot run on meta tensors: say so by name rather than fail deep inside."""
    if value.device.type == "meta":
        raise ValueError(f"{name}: meta tensors are not supported ({why})")


def rois_in_range(rois: torch.Tensor) -> torch.Tensor:
    """A device boolean: every ROI value is finite and in [0, 1]. One pass: aminmax propagates NaN,
    which then fails the comparisons."""
    low, high = torch.aminmax(rois)
    return (low >= 0) & (high <= 1)


ROI_RANGE_MESSAGE = "ROIs must be finite and in [0, 1] (1 where a pixel takes part), got NaN, Inf or values outside"


def check_positive(name: str, value) -> float:
    if torch.compiler.is_compiling():  # dynamo may trace module floats symbolically; eager checks them
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def check_real(name: str, value) -> float:
    if torch.compiler.is_compiling():
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all tensors must be on one device (move them with .to(device)), got {found}")


def on_device_of(name: str, value: torch.Tensor, reference_name: str, reference: torch.Tensor) -> torch.Tensor:
    """value on reference's device. A CPU value beside GPU segmentations is copied there with one
    non-blocking copy (rloss's training scripts pass the images and ROIs on the CPU, its loss
    being CPU code); any other mismatch is refused, never moved silently."""
    if value.device == reference.device:
        return value
    if value.device.type == "cpu":
        return value.to(reference.device, non_blocking=True)
    raise ValueError(f"{name} must be on the CPU or on the device of {reference_name} ({reference.device}), "
                     f"got {name} on {value.device} (move it with .to(device))")



def check_per_axis(name: str, value, axes: int, default: float = 1.0) -> tuple:
    """A positive finite real per spatial axis, from one number (every axis) or a sequence of
    `axes` numbers, outermost axis first: (sy, sx) for images, (sz, sy, sx) for volumes. None
    is `default` on every axis."""
    if value is None:
        return (default,) * axes
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != axes:
            order = "(sy, sx)" if axes == 2 else "(sz, sy, sx)"
            raise ValueError(f"{name} must be one number or {axes} numbers {order} for "
                             f"{'images' if axes == 2 else 'volumes'}, got {len(value)}: {tuple(value)}")
        return tuple(check_positive(f"{name}[{i}]", v) for i, v in enumerate(value))
    return (check_positive(name, value),) * axes


def axes_text(spatial_axes: int) -> str:
    """The names of the spatial axes in error messages: "H x W" for images, "D x H x W" for volumes."""
    return "H x W" if spatial_axes == 2 else "D x H x W"


def shape_text(shape) -> str:
    return " x ".join(map(str, shape))
