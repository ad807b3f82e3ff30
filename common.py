"""
Plumbing shared by the stages: devices and torchrun, image files, atomic checkpoints loaded safely, random
states for an exact resume, the order of training batches, the learning rate, logs and image grids. Nothing
here is part of the method.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps

CHECKPOINT_VERSION = 1


def bf16_is_fast(device):
    """bfloat16 autocast pays on CUDA and on CPUs with bf16 matrix instructions (AVX512-BF16, AMX);
    elsewhere it is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return device.type == "cpu" and ("avx512_bf16" in flags or "amx_bf16" in flags)


def setup_distributed(device="auto"):
    """(rank, world_size, device); joins the process group when started by torchrun (nccl on GPUs, gloo on CPUs)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if "RANK" not in os.environ:
        return 0, 1, torch.device(device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device == "cuda":
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world_size, torch.device(device)


def to_device(t, device):
    """A CPU tensor on `device`. On CUDA the copy goes through pinned memory without blocking: a plain copy from
    pageable memory would make the host wait for the GPU to finish its queue, once per sampling step."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def learning_rate(step, peak, warmup_steps, max_steps, decay):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then constant (the paper's schedule) or, with decay
    'cosine', down to 0 at max_steps along a half cosine: a short run ends at its best weights, not mid-noise."""
    warm = min(1.0, (step + 1) / max(warmup_steps, 1))
    if decay == "constant" or step < warmup_steps:
        return peak * warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(max_steps - warmup_steps, 1)))


# -----------------------------------------------------------------------------
# Image files: reading any folder of images robustly (formats, modes, broken files), and a fixed split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def to_rgb(img):
    """Any Pillow image as 8-bit RGB: 16-bit and float greyscale rescaled, transparency over white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit (or wider) greyscale
        a = np.asarray(img, dtype=np.float64)
        a = a / 257.0 if img.mode.startswith("I;16") or a.max() > 255 else a
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img.convert("RGB")


def load_image(path, img_size):
    """An image file as (img_size, img_size, 3) uint8: short side resized to img_size, centre-cropped."""
    with Image.open(path) as img:
        img.draft("RGB", (img_size, img_size))  # JPEGs decode at a reduced scale when that is enough
        return np.asarray(ImageOps.fit(to_rgb(img), (img_size, img_size), Image.BICUBIC))


def check_image(path, min_size):
    """Why an image file cannot be used, or None. Opening reads only the header; JPEGs are decoded at a reduced
    scale (cheap) to catch truncated files, other formats are checked by Pillow's verify(). Pillow's
    decompression-bomb guard (more than Image.MAX_IMAGE_PIXELS pixels) is an error here, not a warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min(img.size) < min_size:
                    return f"smaller than {min_size}px"
                if img.format == "JPEG":
                    img.draft("RGB", (max(min_size, 1),) * 2)
                    img.load()
                else:
                    img.verify()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "too large (the decompression-bomb guard)"
    except Exception:
        return "unreadable"
    return None


def scan_folder(folder, min_size=0):
    """The usable image files under `folder` (recursive, sorted): unreadable, too large, or smaller than min_size
    on a side are counted and skipped. An animated file gives its first frame."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    good, skipped = [], {}
    for p in paths:
        why = check_image(p, min_size)
        if why:
            skipped.setdefault(why, []).append(p)
        else:
            good.append(p)
    for why, bad in skipped.items():
        print(f"warning: skipped {len(bad)} image file(s) in {folder}: {why} (first: {bad[0]})", file=sys.stderr)
    if not good:
        raise SystemExit(f"error: no readable image ({', '.join(IMAGE_EXTENSIONS)}) of at least {min_size}px found "
                         f"under {folder}")
    return good


def median_side(folder, n_look=200):
    """(the median shorter side of up to n_look image files under `folder`, from their headers; why): how large
    a folder's images are, before anything is decoded. Unreadable files are left to scan_folder."""
    sides = []
    for p in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:n_look]:
        try:
            with Image.open(p) as img:
                sides.append(min(img.size))
        except Exception:
            continue
    if not sides:
        return None, "no readable image to look at"
    return int(np.median(sides)), f"the median shorter side of {len(sides)} of its images"


class ImageFolder(torch.utils.data.Dataset):
    """Image files decoded on demand (in DataLoader workers) to (img_size, img_size, 3) uint8 tensors."""

    def __init__(self, paths, img_size):
        self.paths, self.img_size = list(paths), img_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(load_image(self.paths[i], self.img_size).copy())


def split_paths(paths, root, val_fraction):
    """A deterministic train/validation split: the files whose relative path hashes lowest are held out,
    so adding files to the folder never moves an old file between the two parts."""
    ranked = sorted(paths, key=lambda p: zlib.crc32(str(p.relative_to(root)).encode()))
    n_val = max(1, round(val_fraction * len(paths))) if len(paths) > 1 else 0
    val = set(ranked[:n_val])
    return [p for p in paths if p not in val], [p for p in paths if p in val]

def pretrained(build, url, what, instead):
    """build(), which fetches pretrained weights from `url` through torch.hub on first use and keeps them in its
    cache, as torchvision and pytorch-fid do. Where that fails (offline, a firewall), one line says what to put
    where, and what to do instead. torch.hub's progress goes to stderr, so that --json output stays JSON."""
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # lpips asks torchvision for weights in a deprecated way
            return build()
    except OSError as e:  # URLError, HTTPError and socket errors are OSErrors
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        why = (str(getattr(e, "reason", "")) or str(e)).splitlines()[0][:120]
        raise SystemExit(f"error: cannot download {what} from {url} ({why}); on a machine without internet put that "
                         f"file into {folder}, or {instead}")

# -----------------------------------------------------------------------------
# Checkpoints, random states, logs and grids


def save_checkpoint(obj, path):
    """Write to a temporary file, then rename: a crash mid-write never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, kind):
    """A checkpoint written by this project's `kind` stage ('vqgan' or 'absorbing'), loaded with
    weights_only=True: tensors and plain values only, so a crafted file cannot run code."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = str(e).splitlines()[0][:200]
        raise SystemExit(f"error: cannot load {path} as a checkpoint ({type(e).__name__}: {why})")
    found = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if found != kind:
        raise SystemExit(f"error: {path} is {'a ' + found if found else 'not a'} checkpoint of this project, "
                         f"but a {kind} checkpoint is needed here")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise SystemExit(f"error: {path} has format version {ckpt['version']}, newer than this code's "
                         f"{CHECKPOINT_VERSION}; update the code")
    return ckpt


def restore(ckpt, parts, rank, world_size):
    """Load each named state (model, optimizer, ...) of a checkpoint and this rank's random state; the step."""
    for name, part in parts.items():
        part.load_state_dict(ckpt[name])
    if len(ckpt["rng"]) == world_size:
        set_rng_states(ckpt["rng"], rank)
    elif rank == 0:
        print(f"note: the checkpoint was written by {len(ckpt['rng'])} processes, not {world_size}: the run goes on, "
              f"but with other random draws than it would have had")
    return ckpt["step"]


def catch_stop_signals():
    """SIGINT (Ctrl-C) and SIGTERM (what torchrun and cluster schedulers send before a kill) set a flag instead of
    ending the process at once; the training loop reads the flag after each step, writes a checkpoint and exits.
    A second signal of the same kind ends the process as usual. Returns the list the signals' names go to."""
    caught = []

    def handler(signum, frame):
        caught.append(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)
    return caught


def any_rank(flag, device):
    """True on every rank if `flag` is true on any (so that all ranks stop at the same step)."""
    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor(float(bool(flag)), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def stop_if_signalled(caught, device, checkpoint, step, ckpt_path):
    """After a step: if any rank caught SIGINT or SIGTERM, write a checkpoint (every rank takes part) and exit."""
    if any_rank(caught, device):
        checkpoint()
        raise SystemExit(f"stopped by {caught[0] if caught else 'another rank'} at step {step}; {ckpt_path} written, "
                         f"--resume continues")


def require_finite(grad_norm, step, ckpt_path):
    """Stop the run, before the update, if the gradient norm is not finite (a NaN or inf loss gives one too). The norm
    is taken after DDP's all-reduce, so every rank stops at the same step; the last checkpoint is left as it is."""
    if not torch.isfinite(grad_norm):
        kept = f"{ckpt_path} keeps the last good weights" if os.path.exists(ckpt_path) else "no checkpoint yet"
        raise SystemExit(f"error: non-finite loss or gradient at step {step + 1}; stopped before the update, {kept}; "
                         f"try a lower --lr or --bf16 off")


def rng_states():
    """The random states of every rank (a list indexed by rank), for an exact resume."""
    state = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    if not dist.is_initialized():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_states(states, rank):
    state = states[rank]
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def mean_over_ranks(metrics):
    """Average a dict of floats over all ranks (for logging the global batch's numbers)."""
    if not dist.is_initialized():
        return metrics
    t = torch.tensor(list(metrics.values()), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(metrics, (t / dist.get_world_size()).tolist()))


def start_log(path, step):
    """Begin the log of a run at `step`: a new run (step 0) starts an empty log; a resumed one drops the lines
    written after its checkpoint, which the resumed run writes again."""
    lines = Path(path).read_text().splitlines(True) if step and Path(path).exists() else []
    Path(path).write_text("".join(line for line in lines if json.loads(line)["step"] <= step))


def append_log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def batch_indices(step, n, batch_size, seed, rank=0, world_size=1):
    """This rank's share of the global batch at `step`: the data is read in epochs, each a permutation
    seeded by (seed, epoch), so a batch depends only on the step number and an interrupted run resumes
    on exactly the batches it would have seen."""
    start = step * batch_size
    positions = range(start + rank * batch_size // world_size, start + (rank + 1) * batch_size // world_size)
    perms = {}
    out = []
    for p in positions:
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        out.append(int(perms[epoch][p % n]))
    return out


class StepBatches(torch.utils.data.Sampler):
    """The index batches of steps start, start + 1, ... for a DataLoader's batch_sampler."""

    def __init__(self, n, start, batch_size, seed, rank=0, world_size=1):
        self.n, self.start, self.batch_size, self.seed = n, start, batch_size, seed
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        step = self.start
        while True:
            yield batch_indices(step, self.n, self.batch_size, self.seed, self.rank, self.world_size)
            step += 1


def save_grid(images, path, nrow=8):
    """Save uint8 (B, H, W, 3) images as one PNG grid, `nrow` images a row (the write is atomic)."""
    from torchvision.utils import make_grid
    grid = make_grid(images.permute(0, 3, 1, 2), nrow=nrow, padding=1, pad_value=255).permute(1, 2, 0)
    tmp = f"{path}.tmp.png"
    Image.fromarray(grid.numpy()).save(tmp)
    os.replace(tmp, path)

def positive_int(s):
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def positive_float(s):
    v = float(s)
    if not v > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


