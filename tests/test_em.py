"""E-steps (docs/DESIGN.md §4) against spec_em.py, the design written out literally, on every device."""
import numpy as np
import pytest
import torch

import spec_em
import wsloss
from helpers import requires_cuda


def random_logits(batch, classes, height, width, generator, ties=False, dtype=torch.float32):
    logits = torch.randn(batch, classes, height, width, generator=generator, dtype=torch.float64) * 3
    if ties:  # few distinct values: many equal differences and equal scores
        logits = logits.round()
    return logits.to(dtype)


def random_present(batch, classes, generator, fraction=0.3):
    present = torch.rand(batch, classes, generator=generator) < fraction
    present[:, 0] |= torch.rand(batch, generator=generator) < 0.9
    return present


def assert_em_adapt_matches_spec(logits, present, device, **kwargs):
    labels, biases = wsloss.em_adapt(logits.to(device), present.to(device), **kwargs)
    expected_labels, expected_biases = spec_em.em_adapt(logits.numpy(), present.numpy(), **{
        k: v for k, v in kwargs.items() if k != "generator"})
    assert labels.dtype == torch.int64 and labels.shape == logits.shape[:1] + logits.shape[2:]
    assert biases.dtype == logits.dtype and biases.shape == present.shape
    np.testing.assert_array_equal(biases.cpu().numpy(), expected_biases)
    np.testing.assert_array_equal(labels.cpu().numpy(), expected_labels)
    return labels, biases


# EM-Adapt against the spec.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("batch,classes,height,width", [
    (1, 2, 1, 1), (3, 2, 1, 7), (4, 5, 9, 13), (2, 21, 33, 31), (32, 3, 6, 5), (2, 60, 17, 19), (1, 21, 65, 65),
])
def test_em_adapt_matches_spec(batch, classes, height, width, ties, dtype, device, rng):
    logits = random_logits(batch, classes, height, width, rng, ties, dtype)
    present = random_present(batch, classes, rng)
    assert_em_adapt_matches_spec(logits, present, device)


@pytest.mark.parametrize("suppress_absent", [False, True])
@pytest.mark.parametrize("portions", [(0.2, 0.4), (0.0, 0.0), (1.0, 1.0), (0.35, 0.05)])
def test_em_adapt_matches_spec_for_any_portions_suppression_and_present_classes(portions, suppress_absent,
                                                                                 device, rng):
    logits = random_logits(6, 7, 11, 10, rng, ties=True)
    present = random_present(6, 7, rng, fraction=0.5)
    present[1] = True  # all classes present
    present[2] = False  # no class at all: no bias, plain argmax
    present[3] = False
    present[3, 4] = True  # a foreground class only
    fg, bg = portions
    assert_em_adapt_matches_spec(logits, present, device, fg_portion=fg, bg_portion=bg,
                                 suppress_absent=suppress_absent, margin=0.5)


def test_em_adapt_matches_spec_on_large_images(device, rng):
    # 513 x 513: the multi-block CUDA path; odd sizes; one image with every class.
    logits = random_logits(2, 21, 513, 513, rng, ties=True)
    present = random_present(2, 21, rng)
    present[1] = True
    assert_em_adapt_matches_spec(logits, present, device)


# EM-Adapt's biases.


def replay_wins(logits, present, biases, order):
    """Per visited class, pixels where it ties or beats the running maximum when visited."""
    classes = logits.shape[0]
    flat = logits.reshape(classes, -1)
    m = flat[present].max(0).values
    wins = {}
    for c in order:
        if present[c]:
            biased = flat[c] + biases[c]
            wins[c] = int((biased >= m).sum())
            m = torch.maximum(m, biased)
    return wins


def em_adapt_on_a_grid(size, device, rng):
    """Logits on a 1/16 grid (8 images, 21 classes, 40% present), and em_adapt's biases for them."""
    logits = (random_logits(8, 21, *size, rng) * 16).round() / 16
    present = random_present(8, 21, rng, fraction=0.4)
    _, biases = wsloss.em_adapt(logits.to(device), present.to(device))
    return logits, present, biases


@pytest.mark.parametrize("portions", [(0.4, 0.2), (0.7, 0.5), (1.0, 1.0), (0.3, 1.0)])
def test_em_adapt_visited_class_wins_its_portion_in_float32_at_any_portion(portions, device, rng):
    """DESIGN §4 in float32, where F_l + (M - F_l) may round below M: diff is stepped up until
    the bias reaches M, so the guarantee holds for every portion in (0, 1], 1 included."""
    bg_portion, fg_portion = portions
    logits = random_logits(16, 21, 8, 8, rng) * 7
    present = random_present(16, 21, rng, fraction=0.4)
    _, biases = wsloss.em_adapt(logits.to(device), present.to(device), fg_portion=fg_portion, bg_portion=bg_portion)
    for b in range(16):
        wins = replay_wins(logits[b], present[b], biases[b].cpu(), range(21))
        for c, count in wins.items():
            rho = bg_portion if c == 0 else fg_portion
            assert count >= min(int(np.floor(rho * 64)), 63) + 1, (b, c, count)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (64, 48)])
def test_em_adapt_visited_class_wins_its_portion(size, device, rng):
    """DESIGN §4: class l ties or beats M on at least k_l + 1 pixels when it is visited (logits
    on a 1/16 grid, where ties are common)."""
    logits, present, biases = em_adapt_on_a_grid(size, device, rng)
    n = size[0] * size[1]
    for b in range(8):
        wins = replay_wins(logits[b], present[b], biases[b].cpu(), range(21))
        assert len(wins) == int(present[b].sum())
        for c, count in wins.items():
            rho = 0.4 if c == 0 else 0.2
            assert count >= min(int(np.floor(rho * n)), n - 1) + 1, (b, c, count)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (64, 48)])
def test_em_adapt_biases_are_non_negative_and_zero_for_absent_classes(size, device, rng):
    """DESIGN §4: a bias is an element of M - F_l >= 0, and a class that gets none has 0."""
    _, present, biases = em_adapt_on_a_grid(size, device, rng)
    for b in range(8):
        assert (biases[b] >= 0).all() and not biases[b][~present[b].to(device)].any()


# EM-Adapt's foreground order from a generator.


def seeded_em_adapt(device, rng):
    """Logits with every class present, a seed, and em_adapt's result with a generator of that seed."""
    logits = random_logits(4, 12, 23, 29, rng)
    present = torch.ones(4, 12, dtype=torch.bool)
    seed = int(torch.randint(1 << 30, (), generator=rng))
    first = wsloss.em_adapt(logits.to(device), present.to(device), generator=torch.Generator(device).manual_seed(seed))
    return logits, present, seed, first


def test_em_adapt_with_a_seeded_generator_is_repeatable(device, rng):
    logits, present, seed, first = seeded_em_adapt(device, rng)
    again = wsloss.em_adapt(logits.to(device), present.to(device), generator=torch.Generator(device).manual_seed(seed))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_em_adapt_generator_shuffles_the_foreground_as_the_spec_does_with_that_order(device, rng):
    logits, present, seed, first = seeded_em_adapt(device, rng)
    # The same order, drawn the same way, given to the reference.
    g = torch.Generator(device).manual_seed(seed)
    shuffled = torch.rand(4, 11, generator=g, device=device).argsort(1) + 1
    orders = [[0] + row for row in shuffled.cpu().tolist()]
    assert any(order != list(range(12)) for order in orders)
    expected_labels, expected_biases = spec_em.em_adapt(logits.numpy(), present.numpy(), orders=orders)
    np.testing.assert_array_equal(first[1].cpu().numpy(), expected_biases)
    np.testing.assert_array_equal(first[0].cpu().numpy(), expected_labels)


def test_em_adapt_cpu_generator_draws_the_same_order_for_logits_on_any_device(device, rng):
    logits, present, seed, _ = seeded_em_adapt(device, rng)
    on_cpu = wsloss.em_adapt(logits, present, generator=torch.Generator().manual_seed(seed))
    from_cpu = wsloss.em_adapt(logits.to(device), present.to(device), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(from_cpu[0].cpu(), on_cpu[0]) and torch.equal(from_cpu[1].cpu(), on_cpu[1])


def test_em_adapt_generator_keeps_the_background_first(device, rng):
    """The background's bias is the plain order's: only the foreground is shuffled."""
    logits, present, _, first = seeded_em_adapt(device, rng)
    plain = wsloss.em_adapt(logits.to(device), present.to(device))[1]
    torch.testing.assert_close(first[1][:, 0], plain[:, 0], rtol=0, atol=0)


# EM-Adapt's absent classes and labels.


def absent_class_leading_everywhere():
    """One 4 x 4 image whose absent class 2 has the largest logits everywhere."""
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 2] = 10
    logits[0, 1, :2] = 1
    present = torch.tensor([[True, True, False]])
    return logits, present


def test_em_adapt_suppress_absent_lets_only_present_classes_win(device):
    logits, present = absent_class_leading_everywhere()
    suppressed, _ = wsloss.em_adapt(logits.to(device), present.to(device))
    assert not (suppressed == 2).any()


def test_em_adapt_without_suppression_lets_an_absent_class_win(device):
    logits, present = absent_class_leading_everywhere()
    kept, _ = wsloss.em_adapt(logits.to(device), present.to(device), suppress_absent=False)
    assert (kept == 2).all()


INDEX_LISTS = [[0, 3], [5, 255, 0, 1, -1], [2]]  # 255 and -1 are no class of 6


@pytest.mark.parametrize("form", ["lists", "padded-tensor"])
def test_em_adapt_index_lists_and_padded_index_tensors_equal_the_bool_mask(form, device, rng):
    logits = random_logits(3, 6, 8, 9, rng).to(device)
    present = torch.zeros(3, 6, dtype=torch.bool)
    for b, row in enumerate(INDEX_LISTS):
        for c in row:
            if 0 <= c < 6:
                present[b, c] = True
    expected = wsloss.em_adapt(logits, present.to(device))
    if form == "lists":
        labels = INDEX_LISTS
    else:
        labels = torch.tensor([row + [-1] * (5 - len(row)) for row in INDEX_LISTS], device=device)
    got = wsloss.em_adapt(logits, labels, ignore_index=255)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_em_adapt_index_lists_refuse_an_index_outside_the_classes_without_ignore_index(device, rng):
    logits = random_logits(3, 6, 8, 9, rng).to(device)
    with pytest.raises(ValueError, match="outside 0..5"):
        wsloss.em_adapt(logits, INDEX_LISTS)  # 255 is a class index without ignore_index


# EM-Adapt's dtypes, layouts, batching and threads.


def half_precision_logits(dtype, device, rng):
    """Logits of the dtype that require grad, their float32 values, and present classes."""
    logits = random_logits(2, 4, 10, 10, rng).to(device)
    present = torch.tensor([[True, False, True, False], [True, True, True, True]], device=device)
    return logits.to(dtype).requires_grad_(), logits.to(dtype).float(), present


each_half_dtype = pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])


@each_half_dtype
def test_em_adapt_on_half_precision_equals_em_adapt_on_its_float32_values(dtype, device, rng):
    source, upcast, present = half_precision_logits(dtype, device, rng)
    labels, biases = wsloss.em_adapt(source, present)
    expected = wsloss.em_adapt(upcast, present)
    assert biases.dtype == torch.float32
    assert torch.equal(labels, expected[0]) and torch.equal(biases, expected[1])


@each_half_dtype
def test_em_adapt_biases_carry_no_gradient(dtype, device, rng):
    """DESIGN §4: gradients never flow through an E-step."""
    source, _, present = half_precision_logits(dtype, device, rng)
    _, biases = wsloss.em_adapt(source, present)
    assert not biases.requires_grad


def test_em_adapt_non_contiguous_and_channels_last_logits_give_the_same_result(device, rng):
    logits = random_logits(2, 5, 12, 14, rng).to(device)
    present = torch.ones(2, 5, dtype=torch.bool, device=device)
    expected = wsloss.em_adapt(logits, present)
    for view in (logits.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
                 logits.contiguous(memory_format=torch.channels_last)):
        got = wsloss.em_adapt(view, present)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_em_adapt_batch_equals_its_images_one_by_one(device, rng):
    """A batch equals its images one by one; on the CPU that sets images in parallel against one
    image's pixel loops in parallel."""
    logits = random_logits(3, 21, 150, 130, rng, ties=True).to(device)
    present = random_present(3, 21, rng).to(device)
    batched = wsloss.em_adapt(logits, present)
    for b in range(3):
        single = wsloss.em_adapt(logits[b:b + 1], present[b:b + 1])
        assert torch.equal(single[0][0], batched[0][b]) and torch.equal(single[1][0], batched[1][b])


def test_em_adapt_thread_count_changes_nothing(device, rng):
    logits = random_logits(3, 21, 150, 130, rng, ties=True).to(device)
    present = random_present(3, 21, rng).to(device)
    batched = wsloss.em_adapt(logits, present)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = wsloss.em_adapt(logits, present)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial[0], batched[0]) and torch.equal(serial[1], batched[1])


# EM-Adapt on non-finite logits (DESIGN §6: not checked, but never a crash).


def non_finite_logits():
    """NaN and +inf in some pixels of image 0, -inf in a whole class plane of image 1."""
    logits = torch.randn(2, 3, 40, 40)
    logits[0, 0, :5] = float("nan")
    logits[0, 1, 5:9] = float("inf")
    logits[1, 2] = float("-inf")
    return logits, torch.ones(2, 3, dtype=torch.bool)


def test_em_adapt_non_finite_logits_give_labels_in_0_to_k_minus_1(device):
    logits, present = non_finite_logits()
    labels, _ = wsloss.em_adapt(logits.to(device), present.to(device))
    assert ((labels >= 0) & (labels < 3)).all()


def test_em_adapt_non_finite_logits_give_the_cpus_labels_and_biases_on_every_device(device):
    logits, present = non_finite_logits()
    cpu = wsloss.em_adapt(logits, present)
    got = wsloss.em_adapt(logits.to(device), present.to(device))
    assert torch.equal(got[0].cpu(), cpu[0])
    torch.testing.assert_close(got[1].cpu(), cpu[1], rtol=0, atol=0, equal_nan=True)


# EM-Fixed and the bounding-box E-steps.


@pytest.mark.parametrize("suppress_absent", [False, True])
def test_em_fixed_matches_spec(suppress_absent, device, rng):
    logits = random_logits(5, 21, 13, 17, rng, ties=True)
    present = random_present(5, 21, rng)
    labels = wsloss.em_fixed(logits.to(device), present.to(device), fg_bias=2.0, bg_bias=1.0,
                             suppress_absent=suppress_absent)
    expected = spec_em.em_fixed(logits.numpy(), present.numpy(), 2.0, 1.0, suppress_absent)
    np.testing.assert_array_equal(labels.cpu().numpy(), expected)


def test_em_fixed_breaks_ties_towards_the_larger_class(device):
    logits = torch.zeros(1, 3, 2, 2)
    present = torch.tensor([[True, True, True]])
    labels = wsloss.em_fixed(logits.to(device), present.to(device), fg_bias=0.0, bg_bias=0.0)
    assert (labels == 2).all()


def test_bbox_rect_matches_spec(rng):
    height, width = 23, 31
    boxes, classes = [], []
    for b in range(4):
        n = int(torch.randint(0, 6, (), generator=rng))
        corners = torch.rand(n, 2, 2, generator=rng) * torch.tensor([width + 6.0, height + 6.0]) - 3
        corners = corners.sort(dim=1).values
        box = torch.cat((corners[:, 0], corners[:, 1]), 1)  # x0, y0, x1, y1
        if b == 1 and n:
            box = box.round()  # integer boxes, equal areas likely to tie
            box[-1] = box[0]
        boxes.append(box)
        classes.append(torch.randint(1, 21, (n,), generator=rng))
    got = wsloss.bbox_rect(boxes, classes, height, width)
    expected = spec_em.bbox_rect([b.tolist() for b in boxes], [c.tolist() for c in classes], height, width)
    np.testing.assert_array_equal(got.numpy(), expected)


def nested_boxes_rect():
    """An 8 x 12 map of two images: image 0 with a box x 2..5, y 3..6 of class 7 inside a box
    x 0..10, y 0..10 of class 1; image 1 with no box."""
    return wsloss.bbox_rect([[[0, 0, 10, 10], [2, 3, 5, 6]], []], [[1, 7], []], 8, 12)


def test_bbox_rect_gives_a_pixel_in_several_boxes_the_smallest_boxs_class():
    got = nested_boxes_rect()
    assert got[0, 3:6, 2:5].eq(7).all() and got[0, 3:6, 2:5].numel() == 9  # x1, y1 exclusive


def test_bbox_rect_gives_pixels_outside_every_box_the_background():
    got = nested_boxes_rect()
    assert got[0, :8, :10].ne(0).all() and got[0, :, 10:].eq(0).all()
    assert got[1].eq(0).all()


def test_bbox_rect_refuses_the_background_class_for_a_box():
    with pytest.raises(ValueError, match="classes"):
        wsloss.bbox_rect([[[0, 0, 2, 2]]], [[0]], 4, 4)


def test_bbox_rect_refuses_a_box_whose_x0_exceeds_x1():
    with pytest.raises(ValueError, match="boxes"):
        wsloss.bbox_rect([[[3, 0, 2, 2]]], [[1]], 4, 4)


def test_bbox_rect_refuses_a_zero_height():
    with pytest.raises(ValueError, match="height"):
        wsloss.bbox_rect([[[0, 0, 2, 2]]], [[1]], 0, 4)


def test_bbox_em_fixed_matches_spec(device, rng):
    logits = random_logits(3, 6, 12, 15, rng, ties=True)
    rect = wsloss.bbox_rect([[[1, 1, 9, 8], [4, 2, 14, 11]], [[0, 0, 15, 12]], []], [[2, 5], [1], []], 12, 15)
    got = wsloss.bbox_em_fixed(logits.to(device), rect.to(device), fg_bias=1.5, bg_bias=0.5)
    np.testing.assert_array_equal(got.cpu().numpy(), spec_em.bbox_em_fixed(logits.numpy(), rect.numpy(), 1.5, 0.5))


# Semi-supervised batches and the E-step losses.


def test_semi_supervised_targets_take_strong_images_masks_and_weak_images_em_adapt_labels(device, rng):
    logits = random_logits(4, 5, 9, 11, rng).to(device)
    present = random_present(4, 5, rng).to(device)
    masks = torch.randint(0, 5, (4, 9, 11), generator=rng).to(device)
    masks[0, 0, 0] = 255
    strong = torch.tensor([True, False, True, False], device=device)
    targets = wsloss.semi_supervised_targets(logits, present, masks, strong)
    pseudo = wsloss.em_adapt(logits, present)[0]
    assert torch.equal(targets[strong], masks[strong]) and torch.equal(targets[~strong], pseudo[~strong])


def test_semi_supervised_targets_without_masks_are_the_chosen_e_steps_labels(device, rng):
    logits = random_logits(4, 5, 9, 11, rng).to(device)
    present = random_present(4, 5, rng).to(device)
    fixed = wsloss.semi_supervised_targets(logits, present, method="em_fixed", fg_bias=1.0)
    assert torch.equal(fixed, wsloss.em_fixed(logits, present, fg_bias=1.0))


def e_step_loss_and_its_cross_entropy(loss_type, device, rng):
    """The loss of loss_type on a mixed batch, and cross-entropy against its E-step targets."""
    logits = random_logits(3, 6, 10, 12, rng).to(device).requires_grad_()
    present = random_present(3, 6, rng).to(device)
    masks = torch.randint(0, 6, (3, 10, 12), generator=rng).to(device)
    masks[:, :2] = 255
    strong = torch.tensor([False, True, False], device=device)
    loss_fn = loss_type()
    loss = loss_fn(logits, present, masks, strong)
    targets = wsloss.semi_supervised_targets(logits, present, masks, strong, loss_fn.method, 255, **loss_fn.options)
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=255)
    return logits, loss, expected


each_e_step_loss = pytest.mark.parametrize("loss_type", [wsloss.EMAdaptLoss, wsloss.EMFixedLoss],
                                        ids=lambda t: t.__name__)


@each_e_step_loss
def test_e_step_loss_is_cross_entropy_against_its_e_step_targets(loss_type, device, rng):
    _, loss, expected = e_step_loss_and_its_cross_entropy(loss_type, device, rng)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)  # summed in another order


@each_e_step_loss
def test_e_step_loss_gradient_is_cross_entropys_with_the_targets_held_fixed(loss_type, device, rng):
    logits, loss, expected = e_step_loss_and_its_cross_entropy(loss_type, device, rng)
    loss.backward()
    (grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(logits.grad, grad)


@each_e_step_loss
def test_e_step_loss_repr_names_its_class(loss_type):
    assert loss_type.__name__ in repr(loss_type())


def test_em_adapt_loss_trains_towards_tags(rng):
    """A few steps of EMAdaptLoss on free logits move the prediction towards the tagged classes."""
    logits = torch.randn(2, 4, 16, 16, generator=rng).requires_grad_()
    present = torch.tensor([[True, False, True, False], [True, True, False, False]])
    optimizer = torch.optim.SGD([logits], lr=300.0)  # the mean over 512 pixels
    loss_fn = wsloss.EMAdaptLoss()
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(logits, present).backward()
        optimizer.step()
    predicted = logits.argmax(1)
    for b in range(2):
        assert set(predicted[b].unique().tolist()) <= set(present[b].nonzero().flatten().tolist())


def test_em_adapt_compiles_fullgraph_to_the_eager_result(device, rng):
    logits = random_logits(2, 5, 6, 7, rng).to(device)
    present = random_present(2, 5, rng).to(device)

    @torch.compile(fullgraph=True)
    def step(x):
        labels, biases = wsloss.em_adapt(x, present)
        return torch.nn.functional.cross_entropy(x, labels), biases

    loss, biases = step(logits)
    labels, expected = wsloss.em_adapt(logits, present)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    assert torch.equal(biases, expected)


# The CUDA kernels.

each_cuda_shape = pytest.mark.parametrize("shape", [(32, 21, 65, 65), (8, 21, 128, 129), (3, 60, 300, 301),
                                                (1, 2, 1, 1), (300, 2, 130, 131)])


def cuda_case(shape, dtype, rng):
    """Tied logits of the shape and present classes, the first image with every class."""
    logits = random_logits(*shape, rng, ties=True, dtype=dtype)
    present = random_present(shape[0], shape[1], rng)
    present[0] = True
    return logits, present


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@each_cuda_shape
def test_em_adapt_cuda_matches_cpu(shape, dtype, rng):
    """Both CUDA paths, bit for bit: one block per image (small images, or more large images
    than resident blocks) and a cooperative grid of several blocks per image."""
    logits, present = cuda_case(shape, dtype, rng)
    cpu = wsloss.em_adapt(logits, present)
    gpu = wsloss.em_adapt(logits.cuda(), present.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@each_cuda_shape
def test_em_adapt_cuda_on_a_side_stream_repeats_the_default_streams_result(shape, dtype, rng):
    logits, present = cuda_case(shape, dtype, rng)
    gpu = wsloss.em_adapt(logits.cuda(), present.cuda())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = wsloss.em_adapt(logits.cuda(), present.cuda())
    stream.synchronize()
    assert torch.equal(again[0], gpu[0]) and torch.equal(again[1], gpu[1])
