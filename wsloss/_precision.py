"""The precision the losses compute in: float64 inputs stay float64, every other floating type
(float16, bfloat16, float32) is computed in float32, and autocast is off around the products
and sums (docs/DESIGN.md §7; the lattice itself is always float32, §1)."""
import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating type is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def full_precision(device: torch.device) -> torch.autocast:
    """A context in which autocast leaves the computation alone: the losses accumulate their
    products and sums in compute_dtype, never in an autocast float16/bfloat16 matmul."""
    return torch.autocast(device.type, enabled=False)
