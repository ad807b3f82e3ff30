"""
Plumbing shared by the stages: devices and torchrun, pretrained weights, atomic checkpoints loaded safely, random
states for an exact resume, the order of training batches, the learning rate, logs, image grids and settings.
Nothing here is part of the method (data.py holds the images and codes).
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image

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


# Newton-Schulz iterations that make G (A, B) nearly orthogonal, U V^T of its SVD U S V^T with each singular value
# sent to about 1 (0.7 to 1.2 in practice): X <- a X + (b X X^T + c (X X^T)^2) X from X = G / ||G||_F, with the
# quintic's coefficients of Jordan et al. (2024) and torch.optim.Muon. On the shorter side's Gram matrix.
def orthogonalise(G, steps=5, dtype=torch.float32, coefficients=(3.4445, -4.775, 2.0315), eps=1e-7):
    a, b, c = coefficients
    X = G.to(dtype)
    X = X.T if G.size(0) > G.size(1) else X
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        gram = X @ X.T
        X = torch.addmm(X, torch.addmm(gram, gram, gram, beta=b, alpha=c), X, beta=a)
    return X.T if G.size(0) > G.size(1) else X


class Muon(torch.optim.Optimizer):
    """Muon, for weight matrices: Nesterov momentum, made orthogonal, step lr * 0.2 sqrt(max(A, B)) (the size of
    AdamW's steps, so that one learning rate serves both) and decoupled weight decay: torch.optim.Muon's update with
    adjust_lr_fn='match_rms_adamw'. Its own class for one reason: torch's orthogonalises in bfloat16, which CPUs
    without bf16 instructions (AVX2) emulate, making a small prior's training steps 4.8x slower; here `dtype` says."""

    def __init__(self, params, lr, weight_decay=0.0, momentum=0.95, dtype=torch.float32):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.dtype = dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mu)  # buf <- mu buf + (1 - mu) g
                update = orthogonalise(p.grad.lerp(buf, mu), dtype=self.dtype)  # Nesterov: (1 - mu) g + mu buf
                p.mul_(1 - lr * group["weight_decay"]).add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))


def pretrained(build, url, what, instead):
    """build(), which fetches pretrained weights from `url` through torch.hub on first use and keeps them in its
    cache, as torchvision and pytorch-fid do. Where that fails (offline, a firewall), one line says what to put
    where, and what to do instead. torch.hub's progress goes to stderr, so that --json output stays JSON. The
    random initialisation the weights replace draws from a fork of the CPU's random stream, not from the run's:
    a resumed run, which restores that stream before building the network, goes on as the whole run did."""
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
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

# -----------------------------------------------------------------------------
# Settings: --help that shows what each preset fills in, the resolved settings of a run, and those of a resumed run


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each flag's default, except where the default is None: there a preset or the data decides, and
    the flag's help says how (preset_values)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def preset_values(presets, key):
    """'names value' of `key` in each preset, the names of presets that agree joined by '/': the default of a
    preset-filled flag, for its --help."""
    groups = {}
    for name, preset in presets.items():
        value = preset[key]
        if isinstance(value, bool):
            value = "on" if value else "off"
        groups.setdefault(" ".join(map(str, value)) if isinstance(value, tuple) else str(value), []).append(name)
    return ", ".join(f"{'/'.join(names)} {value}" for value, names in groups.items())


def print_settings(args, log_path, step):
    """Print a run's resolved settings once (flags, presets and a resumed checkpoint's all applied) and log them."""
    settings = vars(args)
    print("settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    append_log(log_path, dict(step=step, settings=settings))


def resumed_settings(args, ckpt, keep):
    """Set args to a resumed run's own settings, those of its checkpoint, except the flags named in `keep` (the
    machine, the folder, the run's length); --max-steps, when not given, stays the run's own and never goes below
    the step reached. A checkpoint that lacks a setting of this code is of an older format: a one-line error."""
    missing = sorted(set(vars(args)) - set(ckpt["args"]) - set(keep))
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise SystemExit(f"error: the checkpoint has no setting for {flags} (an older format of this code); start a "
                         f"new run, or resume it with the code that wrote it")
    max_steps = args.max_steps or ckpt["args"]["max_steps"]
    vars(args).update({k: v for k, v in ckpt["args"].items() if k not in keep})
    args.max_steps = max(max_steps, ckpt["step"])


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


