"""Helpers of the method tests: methods set up for hand-built cases, 'networks' whose logits are a table or
a linear map, and a two-epoch run through the real trainer that must resume exactly from a checkpoint."""
import io

import torch
import torch.nn as nn

from robustbench_ols.data import Batch, TrainLoader
from robustbench_ols.methods import FitInfo, build_method
from robustbench_ols.models import create_model
from robustbench_ols.train.training import train_epoch

CPU = torch.device("cpu")


def make_info(labels, k, *, epochs=2, images=None, meta=None, lr=0.1, seed=0, steps=1):
    y = torch.as_tensor(labels, dtype=torch.long)
    mx, my = meta if meta is not None else (None, None)
    return FitInfo(k, len(y), y, epochs=epochs, steps_per_epoch=steps, device=CPU, dataset="synthetic",
                   seed=seed, train_images=images, lr_at=lambda e: lr, meta_images=mx, meta_labels=my)


def method(name, info, **opts):
    m, _ = build_method(name, {k: str(v) for k, v in opts.items()})
    m.setup(info)
    return m


def random_images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)



def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def smoke(name, *, n=32, k=10, batch=16, meta=None, **opts):
    """Two epochs with the real trainer, then the same run stopped after epoch 0 and resumed from a
    saved (torch.save / torch.load) checkpoint into fresh objects: both must agree exactly."""
    g = torch.Generator().manual_seed(3)
    images, y = random_images(n, 2), torch.randint(0, k, (n,), generator=g)
    loader = TrainLoader(images, y, batch, seed=0)
    noisy = torch.zeros(n, dtype=torch.bool)

    def fresh():
        m = method(name, make_info(y, k, epochs=2, images=images, meta=meta, steps=len(loader)), **opts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model("resnet8", k)
        return m, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def epoch(objs, e):
        m, model, opt = objs
        return train_epoch([model], m, opt, loader, e, is_noisy=noisy, clean=y)

    full = fresh()
    figures = [epoch(full, e) for e in range(2)]
    first = fresh()
    epoch(first, 0)
    buf = io.BytesIO()
    torch.save({"model": first[1].state_dict(), "opt": first[2].state_dict(), "method": first[0].state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=False)
    resumed = fresh()
    resumed[1].load_state_dict(ck["model"])
    resumed[2].load_state_dict(ck["opt"])
    resumed[0].load_state_dict(ck["method"])
    assert same(resumed[0].state_dict(), ck["method"])
    assert epoch(resumed, 1) == figures[1]
    assert same(resumed[1].state_dict(), full[1].state_dict())
    assert same(resumed[0].state_dict(), full[0].state_dict())
    return full[0], figures


class Linear(nn.Module):
    """A batch-norm-free model so a step can be recomputed by hand."""

    def __init__(self, k=3, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc = nn.Linear(12, k)

    def forward(self, x):
        return self.fc(x.reshape(len(x), -1)[:, :12])


def make(name, labels, k, *, epochs=20, noise_rate=0.4, **opts):
    m, _ = build_method(name, {key: str(v) for key, v in opts.items()})
    y = torch.as_tensor(labels, dtype=torch.long)
    m.setup(FitInfo(k, len(y), y, epochs=epochs, steps_per_epoch=1, device=torch.device("cpu"),
                    dataset="synthetic", seed=0, noise_rate=noise_rate))
    return m


class Table(nn.Module):
    """A 'network' whose logits for sample i are row i of a parameter table (x carries the index),
    so the gradient on row i says whether sample i contributed to this network's loss."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def index_batch(labels):
    n = len(labels)
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 32, 32)
    return Batch(x, torch.as_tensor(labels), torch.arange(n))
