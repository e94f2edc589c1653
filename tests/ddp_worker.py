"""A tiny segmentation network trained with DenseCRFLoss, in one process or as one DDP rank.

``python ddp_worker.py RANK WORLD PORT OUT`` trains rank RANK's shard of the global batch
under DistributedDataParallel (gloo, CPU) and rank 0 saves the parameters to OUT;
``train()`` without a process group trains on the whole batch (the reference run).
"""
import sys

import torch
import torch.nn.functional as F

import wsloss

GLOBAL_BATCH, CLASSES, SIZE, STEPS = 4, 3, 24, 4


def global_batch():
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(GLOBAL_BATCH, 3, SIZE, SIZE, generator=generator) * 255
    labels = torch.randint(0, CLASSES, (GLOBAL_BATCH, SIZE, SIZE), generator=generator)
    return images, labels


def make_network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, CLASSES, 3, padding=1))


def train(rank: int = 0, world: int = 1) -> torch.nn.Module:
    """STEPS SGD steps of cross-entropy + DenseCRFLoss on this rank's shard of the global batch.

    Both terms are means over the shard's images (every pixel labelled), so DDP's average
    of the ranks' gradients is the gradient of the whole batch's loss.
    """
    network = make_network()
    model = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(network)
    images, labels = (t.chunk(world)[rank] for t in global_batch())
    crf = wsloss.DenseCRFLoss(5e-5, sigma_rgb=15.0, sigma_xy=8.0, scale_factor=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        optimizer.zero_grad()
        logits = model(images / 255)
        loss = F.cross_entropy(logits, labels) + crf(images, torch.softmax(logits, 1))
        loss.backward()
        optimizer.step()
    return network


if __name__ == "__main__":
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    trained = train(rank, world)
    if rank == 0:
        torch.save(trained.state_dict(), out)
    # Both ranks done before either tears gloo down (one closing early can abort the other).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
