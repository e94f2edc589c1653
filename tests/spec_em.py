"""The design written out literally: docs/DESIGN.md §4 in NumPy, one image and one class at a time.

Plain and obviously sequential: the independent reference for wsloss's E-steps. It
computes in the logits' own dtype (float32 or float64) so that results match exactly.
"""
import numpy as np


def argmax_last(scores):
    """argmax over axis 0 with ties to the larger class index."""
    return scores.shape[0] - 1 - np.argmax(scores[::-1], axis=0)


def em_adapt_image(logits, present, fg_portion=0.2, bg_portion=0.4, suppress_absent=True, margin=1e-5,
                   order=None):
    """One image: logits K x N, present K bools -> (labels N, biases K)."""
    logits = np.array(logits)
    classes, n = logits.shape
    scores = logits.copy()
    present = np.asarray(present, dtype=bool)
    order = range(classes) if order is None else order
    visit = [c for c in order if present[c]]
    if suppress_absent and present.any():
        # Clipped to (least present score - margin), an absent class never beats a present one,
        # even where the margin is lost to rounding: it drops out of the argmax.
        scores[~present] = -np.inf
    biases = np.zeros(classes, dtype=logits.dtype)
    if visit:
        m = logits[present].max(axis=0)
        for c in visit:
            diff = m - logits[c]
            for _ in range(4):  # the least step-up with F + diff >= M where M - F rounds down
                short = logits[c] + diff < m
                diff[short] = np.nextafter(diff[short], np.inf)
            diff[diff == 0] = 0  # one zero, +0
            k = min(int(np.floor((bg_portion if c == 0 else fg_portion) * n)), n - 1)
            biases[c] = np.sort(diff)[k]
            scores[c] = logits[c] + biases[c]
            m = np.maximum(m, scores[c])
    return argmax_last(scores), biases


def em_adapt(logits, present, orders=None, **kwargs):
    """B x K x H x W logits, B x K present -> (labels B x H x W, biases B x K)."""
    logits = np.asarray(logits)
    batch, classes = logits.shape[:2]
    results = [
        em_adapt_image(logits[b].reshape(classes, -1), present[b], order=None if orders is None else orders[b],
                       **kwargs)
        for b in range(batch)
    ]
    labels = np.stack([r[0] for r in results]).reshape(batch, *logits.shape[2:])
    return labels, np.stack([r[1] for r in results])


def em_fixed(logits, present, fg_bias=5.0, bg_bias=3.0, suppress_absent=False):
    logits = np.asarray(logits)
    dtype = logits.dtype.type
    out = []
    for b in range(logits.shape[0]):
        scores = logits[b].copy()
        for c in range(scores.shape[0]):
            if c == 0:
                scores[c] += dtype(bg_bias)
            elif present[b][c]:
                scores[c] += dtype(fg_bias)
            elif suppress_absent:
                scores[c] = -np.inf
        out.append(argmax_last(scores))
    return np.stack(out)


def bbox_rect(boxes, classes, height, width):
    """Pixel (x, y) belongs to a box when x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1; the
    smallest box (equal areas: the later one) wins; background 0 elsewhere."""
    out = np.zeros((len(boxes), height, width), dtype=np.int64)
    for b in range(len(boxes)):
        for y in range(height):
            for x in range(width):
                best = None
                for i, (x0, y0, x1, y1) in enumerate(boxes[b]):
                    if x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1:
                        area = (x1 - x0) * (y1 - y0)
                        if best is None or area <= best[0]:
                            best = (area, classes[b][i])
                if best is not None:
                    out[b, y, x] = best[1]
    return out


def bbox_em_fixed(logits, rect, fg_bias=5.0, bg_bias=3.0):
    logits = np.asarray(logits)
    dtype = logits.dtype.type
    scores = logits.copy()
    scores[:, 0] += dtype(bg_bias)
    for c in range(1, logits.shape[1]):
        scores[:, c] += np.where(rect == c, dtype(fg_bias), dtype(0))
    return np.stack([argmax_last(s) for s in scores])
