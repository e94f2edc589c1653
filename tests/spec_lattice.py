"""The design written out literally: docs/DESIGN.md §1 in numpy float32, one pixel at a time.

Slow and obviously sequential: the independent reference that the C++/CUDA lattice
must reproduce exactly (same vertices, same weights, hence the same matrix A).
"""
import numpy as np

f32 = np.float32


def scales(d):
    inv_std_dev = f32(np.sqrt(2.0 / 3.0) * (d + 1))
    return [f32(np.float64(1.0 / np.sqrt((i + 1) * (i + 2))) * np.float64(inv_std_dev)) for i in range(d)]


def embed(f, d):
    """Vertices (as tuples of d coordinates) and weights of one pixel with features f."""
    s = scales(d)
    e = [f32(0)] * (d + 1)
    t = f32(0)
    for j in range(d, 0, -1):
        c = f32(f32(f[j - 1]) * s[j - 1])
        e[j] = f32(t - f32(f32(j) * c))
        t = f32(t + c)
    e[0] = t
    down = f32(1) / f32(d + 1)
    r = [int(np.rint(f32(ei * down))) for ei in e]
    z = [(d + 1) * ri for ri in r]
    total = sum(r)
    rank = [0] * (d + 1)
    for i in range(d + 1):
        for j in range(i + 1, d + 1):
            if f32(e[i] - f32(z[i])) < f32(e[j] - f32(z[j])):
                rank[i] += 1
            else:
                rank[j] += 1
    for i in range(d + 1):
        rank[i] += total
        if rank[i] < 0:
            rank[i] += d + 1
            z[i] += d + 1
        elif rank[i] > d:
            rank[i] -= d + 1
            z[i] -= d + 1
    b = [f32(0)] * (d + 2)
    for i in range(d + 1):
        v = f32(f32(e[i] - f32(z[i])) * down)
        b[d - rank[i]] = f32(b[d - rank[i]] + v)
        b[d + 1 - rank[i]] = f32(b[d + 1 - rank[i]] - v)
    b[0] = f32(b[0] + f32(f32(1) + b[d + 1]))
    keys = [tuple(z[i] + k if rank[i] <= d - k else z[i] + k - (d + 1) for i in range(d)) for k in range(d + 1)]
    return keys, b[: d + 1]


def lattice_matrix(features, transpose=False):
    """Dense A (N x N, float64) of one image: features is d x N."""
    d, n = features.shape
    index, splat = {}, []
    for p in range(n):
        keys, weights = embed(features[:, p], d)
        for key, w in zip(keys, weights):
            splat.append((index.setdefault(key, len(index)), p, np.float64(w)))
    m = len(index)
    W = np.zeros((n, m))
    for v, p, w in splat:
        W[p, v] += w
    A_lat = np.eye(m)
    order = range(d, -1, -1) if transpose else range(d + 1)
    for j in order:
        step = np.array([-1] * (d + 1))
        step[j] = d
        blur = np.eye(m)
        for key, v in index.items():
            for sign in (1, -1):
                other = index.get(tuple(np.array(key) + sign * step[:d]))
                if other is not None:
                    blur[v, other] += 0.5
        A_lat = blur @ A_lat
    alpha = np.float64(f32(1) / f32(1 + 2.0**-d))  # float32, as the reference computes it
    return alpha * W @ A_lat @ W.T, m
