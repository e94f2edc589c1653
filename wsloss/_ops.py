"""Loads the compiled ops and registers their fake (meta) kernels and autograd formulas."""
import torch

from . import _C  # noqa: F401  (its static initializers register torch.ops.wsloss)

ops = torch.ops.wsloss


# Fixed at import (a constant to torch.compile): this build has its CUDA kernels
# (torch had CUDA and nvcc was found when it was compiled).
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("wsloss::lattice_build", "CUDA")


@torch.library.register_fake("wsloss::lattice_build")
def _lattice_build_fake(features, splat_csr=True):
    batch, dim, pixels = features.shape
    # The vertex count depends on the feature values.
    num_vertices = torch.library.get_ctx().new_dynamic_size()
    as_int = dict(dtype=torch.int32)
    return (
        features.new_empty((batch + 1,), dtype=torch.int64),
        features.new_empty((batch, pixels, dim + 1), **as_int),
        features.new_empty((batch, pixels, dim + 1), dtype=torch.float32),
        features.new_empty((num_vertices, dim + 1, 2), **as_int),
        features.new_empty((num_vertices + 1 if splat_csr else 0,), **as_int),
        features.new_empty((batch * pixels * (dim + 1) if splat_csr else 0,), **as_int),
    )


def _lattice_build_backward(ctx, *grads):
    # The lattice is a function of the features that wsloss never differentiates (rloss neither):
    # no gradient reaches them. Registered so that features requiring grad get this documented
    # answer rather than torch's warning about an op without an autograd kernel.
    return None, None


torch.library.register_autograd("wsloss::lattice_build", _lattice_build_backward)


@torch.library.register_fake("wsloss::lattice_filter")
def _lattice_filter_fake(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose=False,
                         validate=True, scale_in=None, scale_out=None):
    return values.new_empty(values.shape)


@torch.library.register_fake("wsloss::lattice_filter_into")
def _lattice_filter_into_fake(vertices, weights, neighbours, splat_ptr, splat_index, values, transpose, out, workspace,
                              validate=True, scale_in=None, scale_out=None, add=None, softmax_group=0):
    # Every backend (CPU, CUDA) writes out in place and returns nothing.
    return None


@torch.library.register_fake("wsloss::em_adapt")
def _em_adapt_fake(logits, present, order, bg_portion, fg_portion, suppress_absent, margin):
    batch, classes, pixels = logits.shape
    return logits.new_empty((batch, pixels), dtype=torch.int64), logits.new_empty((batch, classes))


def _lattice_filter_setup_context(ctx, inputs, output):
    *lattice, values, transpose, _validate, scale_in, scale_out = inputs
    scaled = scale_in is not None or scale_out is not None  # values only where a scale's gradient reads them
    ctx.save_for_backward(*lattice, values if scaled else None, scale_in, scale_out)
    ctx.transpose = transpose


def _lattice_filter_backward(ctx, grad):
    # d<s_out A (s_in V), G>/dV = s_in A^T (s_out G): the gradient of a filtering is the transposed
    # filtering (of a lattice the forward checked or trusted); the scales' gradients sum over
    # what they broadcast over.
    *lattice, values, scale_in, scale_out = ctx.saved_tensors
    needs = ctx.needs_input_grad + (False,) * 4  # a call may leave the defaulted arguments out
    need_values, need_in, need_out = needs[5], needs[8], needs[9]
    grad_values = grad_in = grad_out = None
    if need_values or need_in:
        back = ops.lattice_filter(*lattice, grad.contiguous(), not ctx.transpose, False, scale_out, None)
        if need_values:
            grad_values = back if scale_in is None else back * scale_in
        if need_in:
            grad_in = (back * values).sum_to_size(scale_in.shape)
    if need_out:
        grad_out = (grad * ops.lattice_filter(*lattice, values, ctx.transpose, False, scale_in, None)).sum_to_size(
            scale_out.shape)
    return None, None, None, None, None, grad_values, None, None, grad_in, grad_out


torch.library.register_autograd(
    "wsloss::lattice_filter", _lattice_filter_backward, setup_context=_lattice_filter_setup_context
)


@torch.library.register_fake("wsloss::grid_crf")
def _grid_crf_fake(segmentations, images, rois, sigma, neighbourhood, bilinear, spacing=None):
    # One energy per pixel (voxel): B x H x W for images, B x D x H x W for volumes.
    return segmentations.new_empty((segmentations.shape[0], *segmentations.shape[2:]))


@torch.library.register_fake("wsloss::grid_crf_backward")
def _grid_crf_backward_fake(grad_energy, segmentations, images, rois, sigma, neighbourhood, bilinear, spacing=None):
    return segmentations.new_empty(segmentations.shape)


def _grid_crf_setup_context(ctx, inputs, output):
    # options: sigma, neighbourhood, bilinear, spacing, the backward op's trailing arguments.
    segmentations, images, rois, *ctx.options = inputs
    ctx.save_for_backward(segmentations, images, rois)


def _grid_crf_backward(ctx, grad):
    if torch.is_grad_enabled():  # create_graph: grid_crf_backward has no derivative, never return zero
        raise RuntimeError("wsloss's grid CRF loss supports no double backward (create_graph=True)")
    grad_segmentations = ops.grid_crf_backward(grad.contiguous(), *ctx.saved_tensors, *ctx.options)
    return (grad_segmentations,) + (None,) * (2 + len(ctx.options))


torch.library.register_autograd("wsloss::grid_crf", _grid_crf_backward, setup_context=_grid_crf_setup_context)


@torch.library.register_fake("wsloss::row_dot")
def _row_dot_fake(a, b):
    return a.new_empty(a.shape[:2], dtype=torch.float64)


@torch.library.register_fake("wsloss::resample_down")
def _resample_down_fake(values, rois, scale_factor):
    down = [torch.sym_int(size * factor) for size, factor in zip(values.shape[2:], scale_factor)]
    return values.new_empty((*values.shape[:2], *down))


@torch.library.register_fake("wsloss::resample_down_backward")
def _resample_down_backward_fake(grad, rois, channel_weights, input_size, scale_factor):
    return grad.new_empty((*grad.shape[:2], *input_size))


# The two are each other's adjoints (linear in values / grad; the masks and channel weights get
# no gradient, as the ROIs in rloss): each one's backward is the other, so double backward holds.
def _resample_down_setup_context(ctx, inputs, output):
    values, rois, ctx.scale_factor = inputs
    ctx.save_for_backward(rois)
    ctx.input_size = values.shape[2:]


def _resample_down_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    return ops.resample_down_backward(grad, rois, None, ctx.input_size, ctx.scale_factor), None, None


torch.library.register_autograd(
    "wsloss::resample_down", _resample_down_grad, setup_context=_resample_down_setup_context
)


def _resample_down_backward_setup_context(ctx, inputs, output):
    _grad, rois, channel_weights, _input_size, ctx.scale_factor = inputs
    ctx.save_for_backward(rois, channel_weights)


def _resample_down_backward_grad(ctx, grad):
    rois, channel_weights = ctx.saved_tensors
    grad_grad = ops.resample_down(grad, rois, ctx.scale_factor)
    if channel_weights is not None:
        grad_grad = grad_grad * channel_weights.reshape(*channel_weights.shape, *(1,) * (grad.dim() - 2))
    return grad_grad, None, None, None, None


torch.library.register_autograd(
    "wsloss::resample_down_backward", _resample_down_backward_grad,
    setup_context=_resample_down_backward_setup_context
)
