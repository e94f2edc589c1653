"""A small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel once,
B > 1, several feature dimensions, both filter directions, float32 and float64; EM-Adapt
on its one-block-per-image path and on its cooperative multi-block path."""
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
for size in (33, 131):  # 131 x 131 > 16384 pixels: the cooperative grid
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(3, 6, size, size, generator=generator, dtype=dtype).round().cuda()
        present = torch.tensor([[True, False, True, False, False, True], [True] * 6, [False] * 6]).cuda()
        wsloss.em_adapt(logits, present)
torch.cuda.synchronize()
print("sanitizer case done")
