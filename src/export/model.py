"""A network exported by `darts export --format torch`: the evaluation network of one DARTS
genotype or NAS-Bench-201 cell as a PyTorch module whose state-dict names are the checkpoint's,
so the weights in model.safetensors (beside this file) load key for key:

    import model
    net = model.load()          # eval mode; net(images) -> logits

`images` are [N, C, H, W] float32, normalised with CONFIG["mean"] and CONFIG["std"] per
channel, as darts normalises them. Needs torch and safetensors; nothing else.
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = json.loads(r"""__DARTS_CONFIG__""")


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, k, stride, bias=False):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=bias),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """The depthwise-separable block applied twice (the first at the edge's stride)."""

    def __init__(self, c, k, stride):
        super().__init__()
        p = (k - 1) // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride=stride, padding=p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride=1, padding=p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c, k, stride):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride=stride, padding=k - 1, dilation=2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Two stride-2 1x1 convs, the second on the map shifted by one pixel (zero-filled at the
    far edges, so odd sizes work), concatenated."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Zero(nn.Module):
    pass


def make_op(name, c, stride):
    if name == "none":
        return Zero()
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        if name == "max_pool_3x3":
            return nn.MaxPool2d(3, stride=stride, padding=1)
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv_"):
        return SepConv(c, int(name[-1]), stride)
    if name.startswith("dil_conv_"):
        return DilConv(c, int(name[-1]), stride)
    if name.startswith("nor_conv_"):
        return ReLUConvBN(c, c, int(name[-1]), stride)
    raise ValueError(f"unknown op {name}")


def node_sum(edges, zeros_from, stride):
    """The sum of a node's edges (`none` edges add nothing; all `none`: zeros)."""
    outs = [op(x) for op, x in edges if not isinstance(op, Zero)]
    if not outs:
        return zeros_from[:, :, ::stride, ::stride] * 0.0
    total = outs[0]
    for y in outs[1:]:
        total = total + y
    return total


class DartsCell(nn.Module):
    def __init__(self, genes, concat, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1)
        self.genes = [(name, int(src)) for name, src in genes]
        self.strides = [2 if reduction and src < 2 else 1 for _, src in self.genes]
        self._ops = nn.ModuleList(make_op(n, c, s) for (n, _), s in zip(self.genes, self.strides))
        self.concat = list(concat)

    def forward(self, s0, s1):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(0, len(self.genes), 2):
            edges = [(self._ops[e], states[self.genes[e][1]]) for e in (i, i + 1)]
            states.append(node_sum(edges, states[self.genes[i][1]], self.strides[i]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """The DARTS evaluation network (NetworkCIFAR without its auxiliary head)."""

    def __init__(self, genotype, channels, layers, in_channels, num_classes, stem_multiplier=3):
        super().__init__()
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_pp, c_p, c = c_stem, c_stem, channels
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            kind = "reduce" if reduction else "normal"
            genes, concat = genotype[kind], genotype[kind + "_concat"]
            self.cells.append(DartsCell(genes, concat, c_pp, c_p, c, reduction, reduction_prev))
            c_pp, c_p = c_p, len(concat) * c
            reduction_prev = reduction
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


class ResNetBasicblock(nn.Module):
    """NAS-Bench-201's reduction block between stages."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def parse_nb201(arch):
    """'|op~0|+|op~0|op~1|+...' -> [(to, from, op)] in the benchmark's edge order."""
    edges = []
    for to, node in enumerate(arch.strip("|").split("|+|"), start=1):
        for gene in node.split("|"):
            op, src = gene.split("~")
            edges.append((to, int(src), op))
    return edges


class Nb201Cell(nn.Module):
    def __init__(self, arch, c):
        super().__init__()
        self.plan = parse_nb201(arch)
        self.edges = nn.ModuleDict({f"{to}<-{src}": make_op(op, c, 1) for to, src, op in self.plan})

    def forward(self, x):
        nodes = [x]
        for to in range(1, 4):
            edges = [(self.edges[f"{t}<-{s}"], nodes[s]) for t, s, _ in self.plan if t == to]
            nodes.append(node_sum(edges, x, 1))
        return nodes[-1]


class Nb201Network(nn.Module):
    """NAS-Bench-201's macro network (TinyNetwork)."""

    def __init__(self, arch, channels, layers, in_channels, num_classes):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        self.cells = nn.ModuleList()
        c = channels
        for stage in range(3):
            if stage > 0:
                self.cells.append(ResNetBasicblock(c, 2 * c))
                c *= 2
            for _ in range(layers):
                self.cells.append(Nb201Cell(arch, c))
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.lastact(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(config=CONFIG):
    """The network of `config`, with freshly initialised weights."""
    shape = (config["channels"], config["layers"], config["in_channels"], config["num_classes"])
    if config["space"] == "nb201":
        return Nb201Network(config["genotype"], *shape)
    return DartsNetwork(config["genotype"], *shape)


def load(weights=None, config=CONFIG):
    """The network with the exported weights (default: model.safetensors beside this file), in
    evaluation mode."""
    from safetensors.torch import load_file

    if weights is None:
        weights = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.safetensors")
    state = load_file(weights)
    net = build(config)
    # darts keeps no BN num_batches_tracked (it only matters with momentum=None).
    expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    absent, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if absent or unexpected:
        raise KeyError(f"weights do not fit: missing {absent[:3]}, unexpected {unexpected[:3]}")
    net.load_state_dict(state, strict=False)
    return net.eval()
