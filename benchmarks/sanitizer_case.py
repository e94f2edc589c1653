"""A small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel once,
B > 1, several feature dimensions, both filter directions, float32 and float64; EM-Adapt
on its one-block-per-image path and on its cooperative multi-block path; the dense losses in
exact mode and the grid CRF (4 and 8 neighbours, both relaxations, odd sizes, 1-pixel rows);
dense CRF inference (every normalization, a compatibility matrix) and Bbox-Seg."""
import torch

import wsloss

generator = torch.Generator().manual_seed(0)
for d in (2, 5, 16):
    features = (torch.rand(3, d, 517, generator=generator) * 4).cuda()
    lattice = wsloss.PermutohedralLattice(features)
    for dtype in (torch.float32, torch.float64):
        values = torch.rand(3, 7, 517, generator=generator, dtype=dtype).cuda()
        for transpose in (False, True):
            lattice.filter(values, transpose=transpose)
images = (torch.rand(2, 3, 33, 47, generator=generator) * 255).cuda()
seg = torch.softmax(torch.randn(2, 5, 33, 47, generator=generator), 1).cuda().requires_grad_()
wsloss.DenseCRFLoss(1.0, 15.0, 20.0, 0.5)(images, seg, torch.ones(2, 33, 47).cuda()).backward()
roi = (torch.rand(2, 33, 47, generator=generator) > 0.3).float().cuda()
wsloss.KernelCutLoss(1.0, 0.5, 15.0, 20.0, 0.5, gradient="exact")(images, seg, roi).backward()
wsloss.QuadraticCRFLoss(1.0, 15.0, 20.0, gradient="exact")(images, seg, roi).backward()
for neighbourhood in (4, 8):
    for relaxation in ("quadratic", "bilinear"):
        for h, w in ((33, 47), (1, 9), (7, 1), (2, 2)):
            s = seg.detach()[:, :, :h, :w].double().requires_grad_()
            grid = wsloss.GridCRFLoss(1.0, 10.0, neighbourhood, relaxation)
            grid(images[:, :, :h, :w], s, roi[:, :h, :w]).backward()
for size in (33, 131):  # 131 x 131 > 16384 pixels: the cooperative grid
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(3, 6, size, size, generator=generator, dtype=dtype).round().cuda()
        present = torch.tensor([[True, False, True, False, False, True], [True] * 6, [False] * 6]).cuda()
        wsloss.em_adapt(logits, present)
probs = torch.softmax(torch.randn(2, 21, 33, 47, generator=generator), 1).cuda()
for normalization in ("symmetric", "before", "after", "none"):
    wsloss.dense_crf(probs, images, iterations=3, theta_alpha=10.0, normalization=normalization)
wsloss.dense_crf(probs.double(), images, iterations=2, compatibility=torch.rand(21, 21, dtype=torch.float64).cuda())
wsloss.bbox_seg(images, [[[2, 3, 30, 20], [10, 5, 40, 30]], [[0, 0, 1, 1]]], [[4, 9], [2]], iterations=3)
torch.cuda.synchronize()
print("sanitizer case done")
