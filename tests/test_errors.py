"""Bad input gives a clear ValueError / TypeError naming the argument (SPEC section 6)."""
import pytest
import torch

import wsloss
from wsloss import DenseCRFLoss, PermutohedralLattice

IMAGES = torch.rand(2, 3, 8, 9) * 255
SEG = torch.softmax(torch.randn(2, 4, 8, 9), 1)
ROI = torch.ones(2, 8, 9)


@pytest.mark.parametrize(
    "images, seg, roi, error, match",
    [
        (IMAGES[0], SEG, ROI, ValueError, "images must be 4-D"),
        (IMAGES, SEG[0], ROI, ValueError, "segmentations must be 4-D"),
        (IMAGES, SEG, ROI[0], ValueError, "ROIs must be"),
        (IMAGES, SEG.long(), ROI, TypeError, "segmentations must be a floating-point"),
        (IMAGES.numpy(), SEG, ROI, TypeError, "images must be a torch.Tensor"),
        (IMAGES[:1], SEG, ROI, ValueError, "images must be B x C x H x W"),
        (IMAGES[..., :5], SEG, ROI, ValueError, "images must be B x C x H x W"),
        (IMAGES, SEG, ROI[..., :5], ValueError, "ROIs must be B x H x W"),
        (IMAGES, SEG, torch.ones(2, 2, 8, 9), ValueError, "ROIs must be B x H x W or B x 1 x H x W"),
        (IMAGES, SEG[:, :0], ROI, ValueError, "segmentations must not be empty"),
        (IMAGES[:0], SEG[:0], ROI[:0], ValueError, "must not be empty"),
        (IMAGES.to(torch.complex64), SEG, ROI, TypeError, "images must hold real numbers"),
        (IMAGES.to("meta"), SEG, ROI, ValueError, "one device"),
    ],
)
def test_bad_tensors(images, seg, roi, error, match):
    with pytest.raises(error, match=match):
        DenseCRFLoss(1.0, 15.0, 10.0, 1.0)(images, seg, roi)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sigma_rgb=0.0), ValueError, "sigma_rgb must be finite and > 0"),
        (dict(sigma_xy=-1.0), ValueError, "sigma_xy must be finite and > 0"),
        (dict(sigma_xy=float("inf")), ValueError, "sigma_xy"),
        (dict(scale_factor=0.0), ValueError, "scale_factor must be finite and > 0"),
        (dict(scale_factor=0.01), ValueError, "shrinks"),
        (dict(weight=float("nan")), ValueError, "weight must be finite"),
        (dict(weight="1"), TypeError, "weight must be a real number"),
        (dict(gradient="fast"), ValueError, "gradient must be one of"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    params = dict(weight=1.0, sigma_rgb=15.0, sigma_xy=10.0, scale_factor=1.0) | kwargs
    with pytest.raises(error, match=match):
        DenseCRFLoss(**params)(IMAGES, SEG, ROI)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_images(bad):
    images = IMAGES.clone()
    images[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="finite"):
        DenseCRFLoss(1.0, 15.0, 10.0, 1.0)(images, SEG, ROI)


def test_tiny_sigma_is_refused_not_wrapped():
    """Features beyond int32 lattice coordinates fail clearly instead of wrapping."""
    with pytest.raises(ValueError, match="within"):
        DenseCRFLoss(1.0, 1e-6, 10.0, 1.0)(IMAGES, SEG, ROI)
    # extreme but representable sigmas work
    for sigma_rgb, sigma_xy in ((1e-3, 1e-3), (1e6, 1e6)):
        assert torch.isfinite(DenseCRFLoss(1.0, sigma_rgb, sigma_xy, 1.0)(IMAGES, SEG, ROI))


def test_lattice_errors():
    with pytest.raises(ValueError, match="features must be 3-D or 4-D"):
        PermutohedralLattice(torch.rand(3, 4))
    with pytest.raises(TypeError, match="features must be a floating-point"):
        PermutohedralLattice(torch.ones(1, 2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="feature dimension d must be in 1..16"):
        PermutohedralLattice(torch.rand(1, 17, 5))
    lattice = PermutohedralLattice(torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match="values must be B x C x 4 x 5"):
        lattice.filter(torch.rand(2, 1, 20))
    with pytest.raises(TypeError, match="values must be a floating-point"):
        lattice.filter(torch.ones(2, 1, 4, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="lattice_filter: values must be"):
        torch.ops.wsloss.lattice_filter(*lattice.tensors, torch.rand(2, 1, 7), False)
    with pytest.raises(ValueError, match="sigma_xy must be finite and > 0"):
        wsloss.spatial_features(IMAGES, 0)
