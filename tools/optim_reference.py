#!/usr/bin/env python3
"""The reference numbers of tests/optim_numpy.rs: `rmsprop` and `clip_grad_norm` as PyTorch defines
them (torch.optim.RMSprop's documented algorithm, torch.nn.utils.clip_grad_norm_ between
backward() and step(), SGD and Adam with their L2 weight decay added to the clipped gradient),
re-implemented in numpy (float64; torch is not needed), on a dense layer y = x·W + b with the
mse loss, full batch, 8 steps from the weights the test writes. Run `python3
tools/optim_reference.py` and compare with the numbers in the test.
"""
import numpy as np
np.set_printoptions(precision=17)
X = np.array([[1, 2, 0.5], [0, -1, 1], [2, 0.5, -1], [-1, 1, 1.5]], dtype=np.float64)
Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0.5]], dtype=np.float64)
W0 = np.array([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]])
B0 = np.array([0.1, -0.2])
# The f32 values nnc starts from.
W0 = W0.astype(np.float32).astype(np.float64)
B0 = B0.astype(np.float32).astype(np.float64)

def grads(W, b):
    out = X @ W + b
    d = 2.0 * (out - Y) / out.size
    return X.T @ d, d.sum(0)

def rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False):
    st = {}
    def step(i, p, g, t):
        if weight_decay != 0: g = g + weight_decay * p
        s = st.setdefault(i, dict(sq=np.zeros_like(p), buf=np.zeros_like(p), ga=np.zeros_like(p)))
        s['sq'] = alpha * s['sq'] + (1 - alpha) * g * g
        if centered:
            s['ga'] = alpha * s['ga'] + (1 - alpha) * g
            avg = np.sqrt(s['sq'] - s['ga'] ** 2) + eps
        else:
            avg = np.sqrt(s['sq']) + eps
        if momentum > 0:
            s['buf'] = momentum * s['buf'] + g / avg
            return p - lr * s['buf']
        return p - lr * g / avg
    return step

def sgd(lr):
    return lambda i, p, g, t: p - lr * g

def adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    st = {}
    def step(i, p, g, t):
        if weight_decay != 0: g = g + weight_decay * p
        s = st.setdefault(i, dict(m=np.zeros_like(p), v=np.zeros_like(p)))
        s['m'] = b1 * s['m'] + (1 - b1) * g
        s['v'] = b2 * s['v'] + (1 - b2) * g * g
        mh = s['m'] / (1 - b1 ** t); vh = s['v'] / (1 - b2 ** t)
        return p - lr * mh / (np.sqrt(vh) + eps)
    return step

def train(opt, steps, clip=None):
    W, b = W0.copy(), B0.copy()
    norms = []
    for t in range(1, steps + 1):
        gW, gb = grads(W, b)
        if clip is not None:
            n = np.sqrt((gW ** 2).sum() + (gb ** 2).sum())
            norms.append(n)
            c = clip / (n + 1e-6)
            if c < 1: gW, gb = gW * c, gb * c
        W, b = opt(0, W, gW, t), opt(1, b, gb, t)
    return W, b, norms

cases = [
    ("rmsprop(lr: 0.01)", rmsprop(0.01), None),
    ("rmsprop(lr: 0.01, momentum: 0.9)", rmsprop(0.01, momentum=0.9), None),
    ("rmsprop(lr: 0.01, centered: true)", rmsprop(0.01, centered=True), None),
    ("rmsprop(lr: 0.005, alpha: 0.9, eps: 1e-3, momentum: 0.5, weight_decay: 0.1, centered: true)",
     rmsprop(0.005, alpha=0.9, eps=1e-3, momentum=0.5, weight_decay=0.1, centered=True), None),
    ("sgd(lr: 0.1)", sgd(0.1), 0.5),
    ("sgd(lr: 0.1)", sgd(0.1), 100.0),
    ("adam(lr: 0.01, weight_decay: 0.5)", adam(0.01, weight_decay=0.5), 0.1),
    ("rmsprop(lr: 0.01, momentum: 0.9, centered: true)", rmsprop(0.01, momentum=0.9, centered=True), 0.3),
]
for name, opt, clip in cases:
    W, b, norms = train(opt, 8, clip)
    print(name, "clip", clip)
    print("  W", [float(v) for v in W.ravel()])
    print("  b", [float(v) for v in b.ravel()])
    if norms: print("  norms", [float(v) for v in norms])
