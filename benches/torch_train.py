"""PyTorch reference for `darts train`: the DARTS evaluation network and recipe on MNIST-format data.

A faithful copy of the reference DARTS code (quark0/darts: model.py's NetworkCIFAR, Cell,
AuxiliaryHeadCIFAR and drop_path; train.py's loop), written from its definitions, with the
changes the issue's comparison names: per-step cosine annealing to 0, the auxiliary head's pool
sized for 7x7 maps (5x5 stride 2, as `darts train` does), 1 input channel. The ops come from the
search baseline `gpu/darts_torch.py`, so both files share one copy of them.

    python benches/torch_train.py --dataset fashion-mnist --epochs 5 --seed 0
    python benches/torch_train.py --dataset fashion-mnist --load RUN_DIR

The first trains and tests (last stdout line: JSON with test_accuracy, images_per_second,
seconds). The second loads a `darts train --out RUN_DIR` checkpoint's model.safetensors (same
tensor names) and tests it here: it should give the accuracy that `darts eval` gives, which
checks that both implement the same network.
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu"))
from darts_torch import OPS, FactorizedReduce, Identity, ReLUConvBN  # noqa: E402

DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    "reduce_concat": [2, 3, 4, 5],
}


def drop_path(x, drop_prob):
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1).bernoulli_(keep)
    return x.div(keep).mul(mask)


class Cell(nn.Module):
    def __init__(self, genotype, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        genes = genotype["reduce" if reduction else "normal"]
        self._concat = genotype["reduce_concat" if reduction else "normal_concat"]
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(
            OPS[name](c, 2 if reduction and index < 2 else 1, True) for name, index in genes)
        self._indices = [index for _, index in genes]

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            hs = []
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHead(nn.Module):
    def __init__(self, c, num_classes, size):
        super().__init__()
        k, s = (5, size - 5) if size >= 6 else (size - 1, 1)
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), nn.AvgPool2d(k, stride=s, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class Network(nn.Module):
    def __init__(self, c, num_classes, layers, genotype, in_ch, size, auxiliary=True):
        super().__init__()
        self._layers = layers
        c_curr = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
                size //= 2
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == 2 * layers // 3 and auxiliary:
                self.auxiliary_head = AuxiliaryHead(c_p, num_classes, size)
        self.auxiliary = auxiliary
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.drop_path_prob = 0.0

    def forward(self, x):
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self.auxiliary and self.training:
                aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1)), aux


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(root, split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def augment(x, pad, flip, gen):
    """torchvision's RandomCrop(28, padding=pad) then RandomHorizontalFlip, image by image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = offsets[i].tolist()
        img = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = img.flip(-1) if flip and flips[i] else img
    return out


def evaluate(model, x, y, mean, std, batch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits, _ = model((x[i:i + batch] - mean) / std)
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="fashion-mnist")
    p.add_argument("--data-dir", default=os.environ.get("DARTS_DATA_DIR", "../shared/datasets"))
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--lr", type=float, default=0.025)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crop", type=int, default=2, help="random-crop padding (0: none)")
    p.add_argument("--max-steps", type=int, help="stop each epoch after this many batches (quick checks)")
    p.add_argument("--load", help="a darts train run folder: test its model.safetensors instead of training")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    root = os.path.join(args.data_dir, args.dataset)
    x_train, y_train = load(root, "train")
    x_test, y_test = load(root, "test")
    mean, std = x_train.mean().item(), x_train.std().item()
    model = Network(args.channels, 10, args.layers, DARTS_V2, 1, x_train.shape[-1])

    if args.load:
        from safetensors.torch import load_file
        state = load_file(os.path.join(args.load, "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            sys.exit(f"checkpoint does not match the network: missing {missing}, unexpected {unexpected}")
        acc = evaluate(model, x_test, y_test, mean, std, 500)
        print(json.dumps({"test_accuracy": acc, "tensors": len(state)}))
        return

    flip = args.dataset == "fashion-mnist"
    opt = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, weight_decay=3e-4)
    steps = min(math.ceil(len(x_train) / args.batch_size), args.max_steps or math.inf)
    total, t, seconds = steps * args.epochs, 0, 0.0
    for epoch in range(args.epochs):
        model.train()
        model.drop_path_prob = 0.2 * epoch / args.epochs
        order = torch.randperm(len(x_train), generator=gen)
        start = time.perf_counter()
        for s in range(steps):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            x = x_train[idx]
            if args.crop:
                x = augment(x, args.crop, flip, gen)
            x, y = (x - mean) / std, y_train[idx]
            for g in opt.param_groups:
                g["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * t / total))
            opt.zero_grad()
            logits, aux = model(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            t += 1
        seconds += time.perf_counter() - start
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, {steps * args.batch_size / (time.perf_counter() - start):.0f} img/s",
              file=sys.stderr)
    acc = evaluate(model, x_test, y_test, mean, std, 500)
    print(json.dumps({"test_accuracy": acc, "images_per_second": t * args.batch_size / seconds,
                      "seconds": seconds, "epochs": args.epochs, "seed": args.seed}))


if __name__ == "__main__":
    main()
