"""The CPU filter's outputs on saved inputs, for comparing its instruction-set builds.

``python cpu_filter_worker.py INPUTS OUT`` loads the cases that ``filter_cases`` made, filters each
on 2 threads and saves the outputs and ``build_config()["cpu_filter"]`` to OUT; run once as is
and once with ``ATEN_CPU_CAPABILITY=default`` (torch's switch, which wsloss's filter follows).
"""
import sys

import torch

import wsloss


def filter_cases(generator):
    """Lattices of d = 2, 5, 9 over B = 1 and 3 images (the channel-group, gather and per-image
    paths of 2 threads), with and without the splat CSR; 1 to 40 channels, float32 and float64."""
    cases = []
    for d in (2, 5, 9):
        for batch in (1, 3):
            features = torch.rand(batch, d, 23 * 29, generator=generator) * 5
            for channels in (1, 3, 4, 5, 8, 9, 21, 40):
                values = torch.randn(batch, channels, 23 * 29, generator=generator, dtype=torch.float64)
                scale = torch.rand(batch, 1, 23 * 29, generator=generator, dtype=torch.float64)
                cases.append((features, values, scale))
    return cases


def filtered(cases):
    outputs = []
    for features, values, scale in cases:
        for splat_csr in (False, True):
            lattice = wsloss.PermutohedralLattice(features, splat_csr=splat_csr)
            for dtype in (torch.float32, torch.float64):
                v, s = values.to(dtype), scale.to(dtype)
                for transpose in (False, True):
                    outputs.append(lattice.apply(v, transpose))
                    outputs.append(lattice.apply(v, transpose, torch.empty_like(v), scale_in=s, scale_out=s, add=v))
    return outputs


if __name__ == "__main__":
    torch.set_num_threads(2)
    torch.save({"cpu_filter": wsloss.build_config()["cpu_filter"], "outputs": filtered(torch.load(sys.argv[1]))},
               sys.argv[2])
