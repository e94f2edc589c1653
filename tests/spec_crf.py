"""Dense CRF mean field (Kraehenbuehl & Koltun 2011) as pydensecrf computes it: the design
written out literally (docs/DESIGN.md §5) in plain NumPy float64 with explicit kernel
matrices, independent of wsloss.crf."""
import numpy as np


def softmax(x):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def mean_field(unary, kernels, iterations, compatibility=None, normalization="symmetric"):
    """unary: K x N energies; kernels: list of (weight, N x N matrix A). Returns Q, K x N.

    Each kernel's message is w * A~ Q, with A~ = n A n (symmetric, n = (A 1)^-1/2),
    A n (before, n = 1 / A 1), n A (after) or A (none); Potts adds the message to -U,
    a compatibility matrix mu subtracts sym(mu) times it.
    """
    q = softmax(-unary)
    for _ in range(iterations):
        energy = -unary.copy()
        for weight, a in kernels:
            norm = a @ np.ones(a.shape[0]) + 1e-20
            if normalization == "symmetric":
                a = a / np.sqrt(norm)[:, None] / np.sqrt(norm)[None, :]
            elif normalization == "before":
                a = a / norm[None, :]
            elif normalization == "after":
                a = a / norm[:, None]
            message = weight * (q @ a.T)  # row l: A~ Q_l
            if compatibility is None:
                energy += message
            else:
                mu = np.diag(compatibility) if compatibility.ndim == 1 else (compatibility + compatibility.T) / 2
                energy -= mu @ message
        q = softmax(energy)
    return q
