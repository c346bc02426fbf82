"""PyTorch eager + cuDNN baseline for `darts bench search --device cuda`.

A faithful copy of the reference DARTS search code (quark0/darts: operations.py, model_search.py,
architect.py, the step of train_search.py), written from its definitions so that both sides
time the same supernet (C=16, 8 cells, 3x32x32 inputs, 10 classes: 1,930,618 weights) and the
same step: one architecture step (first order: gradient of the validation loss; second order:
the unrolled model and the finite-difference Hessian-vector product), then one weight step
(SGD 0.025 momentum 0.9 wd 3e-4, gradient clipping at 5).

Prints one JSON object per (batch, order) on stdout: median/min seconds per step over --reps
steps after one warm-up, and the peak GPU memory (torch.cuda.max_memory_allocated).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, affine=True):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
                                nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, dil, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, pad, dilation=dil, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, 1, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


OPS = {
    "none": lambda C, s, a: Zero(s),
    "avg_pool_3x3": lambda C, s, a: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, s, a: nn.MaxPool2d(3, stride=s, padding=1),
    "skip_connect": lambda C, s, a: Identity() if s == 1 else FactorizedReduce(C, C, affine=a),
    "sep_conv_3x3": lambda C, s, a: SepConv(C, C, 3, s, 1, affine=a),
    "sep_conv_5x5": lambda C, s, a: SepConv(C, C, 5, s, 2, affine=a),
    "dil_conv_3x3": lambda C, s, a: DilConv(C, C, 3, s, 2, 2, affine=a),
    "dil_conv_5x5": lambda C, s, a: DilConv(C, C, 5, s, 4, 2, affine=a),
}


class MixedOp(nn.Module):
    def __init__(self, C, stride):
        super().__init__()
        self._ops = nn.ModuleList()
        for p in PRIMITIVES:
            op = OPS[p](C, stride, False)
            if "pool" in p:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_pp, C, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, C, 1, 1, 0, affine=False)
        self._steps, self._multiplier = steps, multiplier
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self._ops.append(MixedOp(C, 2 if reduction and j < 2 else 1))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    def __init__(self, C, num_classes, layers, steps=4, multiplier=4, stem_multiplier=3, in_ch=3):
        super().__init__()
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in [layers // 3, 2 * layers // 3]
            if reduction:
                c_curr *= 2
            cell = Cell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        k = sum(2 + i for i in range(steps))
        # Architecture weights are not nn.Parameters (as in the reference): parameters() is the
        # network weights only.
        self.alphas_normal = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_()
        self.alphas_reduce = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_()

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def forward(self, x):
        s0 = s1 = self.stem(x)
        wn = F.softmax(self.alphas_normal, dim=-1)
        wr = F.softmax(self.alphas_reduce, dim=-1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduction else wn)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def loss(self, x, y):
        return F.cross_entropy(self(x), y)


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


class Architect:
    """architect.py: Adam on the alphas; first order, or the unrolled second-order gradient."""

    def __init__(self, model, momentum=0.9, wd=3e-4, lr=3e-4, arch_wd=1e-3):
        self.model, self.momentum, self.wd = model, momentum, wd
        self.opt = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=arch_wd)

    def step(self, xt, yt, xv, yv, eta, net_opt, unrolled):
        self.opt.zero_grad()
        if unrolled:
            self._unrolled(xt, yt, xv, yv, eta, net_opt)
        else:
            self.model.loss(xv, yv).backward()
        self.opt.step()

    def _unrolled(self, xt, yt, xv, yv, eta, net_opt):
        m = self.model
        params = list(m.parameters())
        theta = flat(params).detach()
        try:
            moment = flat(net_opt.state[p]["momentum_buffer"] for p in params).mul(self.momentum)
        except KeyError:
            moment = torch.zeros_like(theta)
        dtheta = flat(torch.autograd.grad(m.loss(xt, yt), params)).detach() + self.wd * theta
        new_theta = theta - eta * (moment + dtheta)
        # The unrolled model is a copy with w' (its BN statistics are discarded with it).
        saved = [p.detach().clone() for p in params]
        buffers = [b.detach().clone() for b in m.buffers()]
        self._assign(params, new_theta)
        loss = m.loss(xv, yv)
        grads = torch.autograd.grad(loss, m.arch_parameters() + params, allow_unused=True)
        dalpha = grads[:2]
        vector = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads[2:], params)]
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
            for b, s in zip(m.buffers(), buffers):
                b.copy_(s)
        implicit = self._hvp(vector, xt, yt)
        for a, g, ig in zip(m.arch_parameters(), dalpha, implicit):
            a.grad = g - eta * ig

    @staticmethod
    def _assign(params, theta):
        with torch.no_grad():
            offset = 0
            for p in params:
                n = p.numel()
                p.copy_(theta[offset:offset + n].view_as(p))
                offset += n

    def _hvp(self, vector, xt, yt, r=1e-2):
        m = self.model
        params = list(m.parameters())
        R = r / flat(vector).norm()
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(v, alpha=R)
        gp = torch.autograd.grad(m.loss(xt, yt), m.arch_parameters())
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.sub_(v, alpha=2 * R)
        gn = torch.autograd.grad(m.loss(xt, yt), m.arch_parameters())
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(v, alpha=R)
        return [(x - y).div_(2 * R) for x, y in zip(gp, gn)]


def time_steps(batch, order, reps, seed, dev):
    torch.manual_seed(seed)
    model = Network(16, 10, 8).to(dev)
    model.alphas_normal = model.alphas_normal.detach().to(dev).requires_grad_()
    model.alphas_reduce = model.alphas_reduce.detach().to(dev).requires_grad_()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model)
    xt, xv = (torch.randn(batch, 3, 32, 32, device=dev) for _ in range(2))
    yt, yv = (torch.randint(0, 10, (batch,), device=dev) for _ in range(2))
    torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(reps + 1):
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        arch.step(xt, yt, xv, yv, 0.025, opt, order == 2)
        opt.zero_grad()
        loss = model.loss(xt, yt)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    times = times[1:]
    return {
        "impl": "pytorch", "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
        "batch": batch, "order": order, "params": params,
        "median_seconds": statistics.median(times), "min_seconds": min(times),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 1e6,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--order", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True  # as train_search.py
    dev = torch.device("cuda")
    for b in a.batch:
        for o in a.order:
            print(json.dumps(time_steps(b, o, a.reps, a.seed, dev)), flush=True)


if __name__ == "__main__":
    main()
