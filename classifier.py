"""A small classifier of a labelled image set, trained on the set's own training images, once, then cached: the
feature network of `evaluate.py --features classifier`. On class-guided samples its accuracy says whether each
image shows the class it was asked for, and its penultimate features give a Frechet distance that knows the set's
images (random-weight features cannot tell good from nearly good on real images). It is not FID: its numbers are
only comparable with themselves, so evaluate.py prints them beside the same numbers for real held-out images.
"""
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from common import CHECKPOINT_VERSION, learning_rate, load_checkpoint, save_checkpoint
from data import to_float


@dataclass
class ClassifierConfig:
    n_classes: int
    img_size: int
    width: int = 32  # channels of the first two convolutions; 2x and 4x after each of two poolings


def network(cfg):  # (B, 3, S, S) in [-1, 1] -> logits (B, n_classes); net[0] gives the features (B, 4 width)
    def conv(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
    w = cfg.width
    features = nn.Sequential(*conv(3, w), *conv(w, w), nn.MaxPool2d(2), *conv(w, 2 * w), *conv(2 * w, 2 * w),
                             nn.MaxPool2d(2), *conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(features, nn.Linear(4 * w, cfg.n_classes))


def train(images, labels, cfg, steps, batch_size=128, lr=2e-3, seed=0, device="cpu"):
    """The classifier trained by AdamW on cross-entropy, random batches of the (uint8) training images, a cosine
    decay of the rate; returned in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = network(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    labels = torch.as_tensor(labels)
    for step in tqdm(range(steps), desc="classifier"):
        batch = torch.randint(len(labels), (batch_size,), generator=g)
        x = to_float(torch.stack([images[i] for i in batch.tolist()])).to(device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, lr, steps // 20, steps, "cosine")
        loss = F.cross_entropy(net(x), labels[batch].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def cached(path, data, images, labels, classes, img_size, steps, device="cpu"):
    """The classifier of `data` at `path`, trained there first if the file does not exist (a one-line note says
    so, on stderr, as tqdm's progress). A file trained on another set, other classes or another image size is a
    one-line error."""
    path = Path(path)
    if path.is_file():
        ckpt = load_checkpoint(path, "classifier")
        if (ckpt["data"], ckpt["classes"], ckpt["config"]["img_size"]) != (str(data), list(classes), img_size):
            raise SystemExit(f"error: {path} is the classifier of {ckpt['data']} ({len(ckpt['classes'])} classes, "
                             f"{ckpt['config']['img_size']} px), not of {data} ({len(classes)} classes, {img_size} "
                             f"px); pass another --classifier path or delete it")
        cfg = ClassifierConfig(**ckpt["config"])
        net = network(cfg)
        net.load_state_dict(ckpt["model"])
        return net.to(device).eval()
    print(f"note: training the classifier of {data} on its {len(labels)} training images ({steps} steps, once: "
          f"kept in {path})", file=sys.stderr)
    cfg = ClassifierConfig(n_classes=len(classes), img_size=img_size)
    net = train(images, labels, cfg, steps, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dict(kind="classifier", version=CHECKPOINT_VERSION, data=str(data), classes=list(classes),
                         config=asdict(cfg), steps=steps, model=net.state_dict()), path)
    return net


@torch.no_grad()
def predict(net, images, device="cpu", batch_size=256):
    """The most likely class (N,) of each uint8 image of a dataset."""
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
    return torch.cat([net(to_float(x.to(device))).argmax(1).cpu() for x in loader])


def accuracy(predicted, labels):
    """The share of images classified as their label, and its standard error sqrt(p (1 - p) / n)."""
    p = (torch.as_tensor(predicted) == torch.as_tensor(labels)).double().mean().item()
    return p, math.sqrt(p * (1 - p) / len(labels))
