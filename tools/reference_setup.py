#!/usr/bin/env python3
"""Prepare a folder in which nnc trains from exactly the reference scripts' starting point.

The scripts in ../shared/bench/ (PyTorch, JAX, numpy) draw their initial weights and their batch
order from numpy's PCG64 (common.py). nnc has its own generator, so to compare trajectories step
for step this writes:
  - <out>/<model>_init.safetensors: common.py's initial weights under nnc's parameter paths
    (the layouts already agree: dense weights [in, out], conv weights [O, C, k, k]);
  - <out>/train-images-idx3-ubyte, train-labels-idx1-ubyte: the training set in the reference's
    epoch-1 order (seed 0, drop_last), so that nnc with `shuffle: false` sees the same batches;
  - the test files, copied.
Then, e.g. for the CNN:
  see BENCHMARKS.md ("Same start as the reference scripts") for the exact commands.
Needs numpy and safetensors (pip install numpy safetensors).
"""
import argparse
import os
import shutil
import struct
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
import common as C  # noqa: E402


def write_idx(path, arr, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in arr.shape:
            f.write(struct.pack(">I", d))
        f.write(arr.astype(np.uint8).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    c = C.cnn_params(a.seed)
    cnn = {"conv1": c["c1"], "conv2": c["c2"], "dense1": c["f1"], "dense2": c["f2"]}
    mlp = dict(zip(["dense1", "dense2"], C.mlp_params([784, 128, 10], a.seed)))
    for name, layers in [("cnn", cnn), ("mlp", mlp)]:
        tensors = {}
        for layer, (w, b) in layers.items():
            tensors[f"{layer}.weight"] = np.ascontiguousarray(w)
            tensors[f"{layer}.bias"] = np.ascontiguousarray(b)
        save_file(tensors, os.path.join(a.out, f"{name}_init.safetensors"))
    images = C.read_idx(C._find("train_images"))
    labels = C.read_idx(C._find("train_labels"))
    order = np.concatenate(C.epoch_batches(len(images), a.batch, a.seed))
    write_idx(os.path.join(a.out, "train-images-idx3-ubyte"), images[order], 0x803)
    write_idx(os.path.join(a.out, "train-labels-idx1-ubyte"), labels[order], 0x801)
    for key in ("test_images", "test_labels"):
        shutil.copy(C._find(key), a.out)
    print(f"wrote {a.out}: {len(order)} training samples in the reference order, initial weights for cnn and mlp")


if __name__ == "__main__":
    main()
