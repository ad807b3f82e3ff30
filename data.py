"""
The data between the stages. Images in: the built-in 'shapes' (shapes.py), any folder of images (read robustly:
formats, modes, broken files) with a fixed validation split, or a paper preset's folder. Codes out: the files that
vqgan.py writes and absorbing.py reads, OUT/codes.npy (N, h, w) integer codes, OUT/codes.json (the codebook size,
the VQGAN checkpoint, the class names) and OUT/labels.npy when the images have classes.
"""
import contextlib
import json
import math
import os
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from shapes import SHAPE_KINDS, make_shapes

# -----------------------------------------------------------------------------
# Image files

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
    """(why an image file cannot be used, or None; its shorter side). Opening reads only the header; JPEGs are
    decoded at a reduced scale (cheap) to catch truncated files, other formats are checked by Pillow's verify().
    Pillow's decompression-bomb guard (more than Image.MAX_IMAGE_PIXELS pixels) is an error here, not a warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                side = min(img.size)
                if side < min_size:
                    return f"smaller than {min_size}px", side
                if img.format == "JPEG":
                    img.draft("RGB", (max(min_size, 1),) * 2)
                    img.load()
                else:
                    img.verify()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "too large (the decompression-bomb guard)", None
    except Exception:
        return "unreadable", None
    return None, side


def scan_folder(folder, min_size=0, size=None):
    """The usable image files under `folder` (recursive, sorted): unreadable, too large, or smaller than min_size
    on a side are counted and skipped; those smaller than `size`, the side they will be read at, are counted as
    resized up. An animated file gives its first frame."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    good, skipped, small = [], {}, 0
    for p in paths:
        why, side = check_image(p, min_size)
        if why:
            skipped.setdefault(why, []).append(p)
        else:
            good.append(p)
            small += size is not None and side < size
    for why, bad in skipped.items():
        print(f"warning: skipped {len(bad)} image file(s) in {folder}: {why} (first: {bad[0]})", file=sys.stderr)
    if not good:
        raise SystemExit(f"error: no readable image ({', '.join(IMAGE_EXTENSIONS)}) of at least {min_size}px found "
                         f"under {folder}")
    if small:
        print(f"note: {small} of the {len(good)} images in {folder} are smaller than {size}px on a side and are "
              f"resized up to it (--img-size sets the side)", file=sys.stderr)
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


# -----------------------------------------------------------------------------
# The images of a run: shapes, a folder, or a preset's folder. Everything is uint8 (H, W, 3) until the training step
# turns a batch into floats in [-1, 1].

DATA_SOURCES = {
    "ffhq": "FFHQ from https://github.com/NVlabs/ffhq-dataset (images1024x1024 or the 256px thumbnails)",
    "churches": "LSUN church_outdoor from https://github.com/fyu/lsun, exported to image files",
    "bedrooms": "LSUN bedroom from https://github.com/fyu/lsun, exported to image files",
}



def load_data(data, data_dir, img_size, n_shapes=10000, val_fraction=0.05, seed=0):
    """(train, val, labels, classes, val_labels): datasets of uint8 (H, W, 3) images, the training labels (n,), the
    class names (the shapes kinds, a standard set's, or the subfolders of a folder whose images all lie in two or
    more subfolders, the ImageFolder convention) and the validation labels; None, [] and None for a folder without
    classes. A folder's images smaller
    than img_size, down to half of it, are resized up; each class keeps one image for training at least."""
    if data == "shapes":
        n_val = max(1, round(val_fraction * n_shapes))
        train, labels = make_shapes(n_shapes, img_size, seed)
        val, val_labels = make_shapes(n_val, img_size, seed + 1)
        return torch.from_numpy(train), torch.from_numpy(val), labels, list(SHAPE_KINDS), val_labels
    if data in STANDARD_SETS:
        return standard_set(data, data_dir, img_size)
    folder = Path(data_dir or (Path("data") / data if data in DATA_SOURCES else data))
    if not folder.is_dir():
        where = f"; get {DATA_SOURCES[data]} and put the images there (or pass --data-dir)" if data in DATA_SOURCES \
            else ""
        raise SystemExit(f"error: image folder {folder} does not exist{where}")
    paths = scan_folder(folder, img_size // 2, img_size)
    tops = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else None for p in paths]
    classes = sorted(set(tops)) if None not in tops and len(set(tops)) > 1 else []
    parts = [split_paths([p for p, c in zip(paths, tops) if c == k], folder, val_fraction) for k in classes] or \
        [split_paths(paths, folder, val_fraction)]  # each class split on its own: none is left without training
    held_out = {p for _, val in parts for p in val}
    alone = [k for k, (_, val) in zip(classes, parts) if not val]
    if alone:
        print(f"warning: class(es) {', '.join(alone)} of {folder} have one image each: it trains, none is held out",
              file=sys.stderr)
    train, val = [p for p in paths if p not in held_out], [p for p in paths if p in held_out]
    if not val:
        print(f"warning: {folder} has no image to hold out (one image, or one a class): validation falls back to the "
              f"training images", file=sys.stderr)
        val = train
    label_of = dict(zip(paths, tops))
    labels, val_labels = (np.array([classes.index(label_of[p]) for p in part], dtype=np.int64) if classes else None
                          for part in (train, val))
    return ImageFolder(train, img_size), ImageFolder(val, img_size), labels, classes, val_labels


# The small standard sets that torchvision fetches, by --data name: downloaded into data/NAME on first use, or read
# from --data-dir (the files as their site ships them, e.g. Debian's dataset-fashion-mnist in
# /usr/share/datasets/fashion-mnist). Their own test set is the validation part.
STANDARD_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


class ArrayImages(torch.utils.data.Dataset):
    """uint8 images (N, H, W) grey or (N, H, W, 3) as (img_size, img_size, 3) uint8 tensors, resized if needed."""

    def __init__(self, images, img_size):
        self.images, self.img_size = np.asarray(images), img_size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i]).convert("RGB")
        if img.size != (self.img_size, self.img_size):
            img = img.resize((self.img_size, self.img_size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img).copy())


def standard_set(name, data_dir, img_size):
    """(train, val, labels, classes, val_labels) of MNIST, Fashion-MNIST or CIFAR-10 through torchvision's dataset
    classes, their test set as the validation part."""
    import torchvision.datasets
    from torchvision.datasets.utils import extract_archive
    cls = getattr(torchvision.datasets, STANDARD_SETS[name])
    root = Path("data") / name
    if data_dir:  # a local copy: its archives unpacked where torchvision looks, or its folder as torchvision's root
        archives = sorted(Path(data_dir).glob("*.gz"))
        if not Path(data_dir).is_dir() or not archives and not any(Path(data_dir).iterdir()):
            raise SystemExit(f"error: --data-dir {data_dir} holds no copy of {name}")
        if not archives:
            root = Path(data_dir)
        to = root if name == "cifar10" else root / cls.__name__ / "raw"
        to.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            if not (to / archive.stem).exists() and not (to / "cifar-10-batches-py").is_dir():  # not unpacked yet
                extract_archive(str(archive), str(to))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision's download messages
            train, test = (cls(str(root), train=split, download=not data_dir) for split in (True, False))
    except Exception as e:
        cifar = hasattr(cls, "url")  # CIFAR10 names one archive, the MNISTs their mirrors and files
        url, files = (cls.url, [cls.filename]) if cifar else (cls.mirrors[0], [f for f, _ in cls.resources])
        why = (str(e).splitlines() or [type(e).__name__])[0][:150]
        raise SystemExit(f"error: cannot get {name} from {url} ({why}); on a machine without internet put "
                         f"{', '.join(files)} into a folder and pass --data-dir FOLDER")
    images = [d.data.numpy() if torch.is_tensor(d.data) else d.data for d in (train, test)]
    labels, val_labels = (np.asarray(d.targets, dtype=np.int64) for d in (train, test))
    return ArrayImages(images[0], img_size), ArrayImages(images[1], img_size), labels, list(train.classes), val_labels


def to_float(images):
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().contiguous() / 127.5 - 1  # contiguous: channels-last is slow on CPU


def to_uint8(x):
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


# -----------------------------------------------------------------------------
# Codes: written by vqgan.py, read (and checked) by absorbing.py, sample.py and evaluate.py


def write_codes(codes, images, out_dir, ckpt_path, K, labels, classes):
    """OUT/codes.npy (N, h, w) and OUT/codes.json: the codebook size, the latent shape and the VQGAN checkpoint's
    path relative to OUT, which is what absorbing.py reads, and the codes' statistics: the codebook's usage, and
    the redundancy of the codes of `images` (n, S, S, 3) uint8, the first n encoded images. Returns them in a line."""
    perplexity, used = codebook_usage(torch.from_numpy(codes.astype(np.int64)), K)
    bits, agreement, repeated = code_redundancy(images, codes[:len(images)])
    codes = codes.astype(np.int16 if K <= 2 ** 15 else np.int32)
    with open(Path(out_dir) / "codes.npy.tmp", "wb") as f:
        np.save(f, codes)
    os.replace(Path(out_dir) / "codes.npy.tmp", Path(out_dir) / "codes.npy")
    if labels is not None:
        np.save(Path(out_dir) / "labels.npy", labels)
    elif (Path(out_dir) / "labels.npy").is_file():  # an earlier run's labels would not fit these codes
        os.remove(Path(out_dir) / "labels.npy")
    meta = dict(codebook_size=K, latent_shape=list(codes.shape[1:]), n_images=len(codes), classes=classes,
                vqgan=os.path.relpath(ckpt_path, out_dir), perplexity=perplexity, used=used, code_bits=bits,
                code_agreement=agreement, repeated_patches=repeated)
    (Path(out_dir) / "codes.json").write_text(json.dumps(meta, indent=1) + "\n")
    equal = (f"equal patches: {bits:.2f} bits of code given the patch, {100 * agreement:.0f}% get their most "
             f"common code ({100 * repeated:.0f}% of patches repeat)" if repeated else "no two patches are equal")
    return f"codebook perplexity {perplexity:.1f}, {100 * used:.0f}% of {K} codes used; {equal}"


def load_codes(path, codebook_size=None):
    """Codes (N, h, w) int64 and the codebook size K, from OUT/codes.npy and the codes.json beside it.
    A wrong file, shape or range is a one-line error: training on bad codes would fail much later."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: codes file {path} does not exist; run vqgan.py first (it writes OUT/codes.npy)")
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as e:
        why = str(e).splitlines()[0][:150]
        raise SystemExit(f"error: cannot read {path} as a .npy array ({type(e).__name__}: {why})")
    if not np.issubdtype(codes.dtype, np.integer):
        raise SystemExit(f"error: {path} holds {codes.dtype} values; codes must be integers")
    if codes.ndim != 3 or 0 in codes.shape:
        raise SystemExit(f"error: {path} has shape {codes.shape}; codes must be (N, h, w) with N, h, w > 0")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    K = codebook_size or meta.get("codebook_size")
    if K is None:
        raise SystemExit(f"error: {meta_path} (written by vqgan.py) is missing, so the codebook size is unknown; "
                         f"pass --codebook-size")
    if meta.get("codebook_size") not in (None, K):
        raise SystemExit(f"error: --codebook-size {K} disagrees with the VQGAN's {meta['codebook_size']} "
                         f"in {meta_path}")
    if codes.min() < 0 or codes.max() >= K:
        raise SystemExit(f"error: {path} has codes in [{codes.min()}, {codes.max()}], outside [0, {K}) "
                         f"for a codebook of {K}")
    vqgan_path = (path.parent / meta["vqgan"]).resolve() if "vqgan" in meta else None
    return torch.from_numpy(codes.astype(np.int64)), K, vqgan_path


def load_labels(codes_path, n):
    """(labels (n,) int64, class names) from the labels.npy and codes.json that vqgan.py writes beside the codes when
    the images have classes (the shapes kinds, or an image folder's subfolders); (None, []) when they have none."""
    path = Path(codes_path).with_name("labels.npy")
    meta_path = Path(codes_path).with_suffix(".json")
    if not path.is_file():
        return None, []
    classes = json.loads(meta_path.read_text()).get("classes") if meta_path.is_file() else None
    labels = np.load(path, allow_pickle=False)
    if not classes:
        raise SystemExit(f"error: {meta_path} names no classes for the labels in {path}; rerun vqgan.py or remove "
                         f"{path}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= len(classes):
        raise SystemExit(f"error: {path} must hold {n} integer labels in [0, {len(classes)}) (one per code grid), "
                         f"got shape {labels.shape} of {labels.dtype}")
    return torch.from_numpy(labels.astype(np.int64)), list(classes)


def split_codes(x, labels=None, val_every=20):
    """(training, validation) parts of x, the code grids (n, ...) or their labels (n,): every `val_every`-th grid
    (0, 20, 40, ...) is held out, fixed whatever the seed, but never the only grid of its class (labels (n,)), which
    the prior must see to learn and to draw that class. With nothing to hold out (one grid, or one a class) both
    parts are all of x, as vqgan.py's one image is: the validation numbers are then training numbers."""
    held_out = torch.arange(len(x)) % val_every == 0
    if labels is not None:
        held_out &= torch.bincount(labels.long())[labels.long()] > 1
    if held_out.all() or not held_out.any():
        return x, x
    return x[~held_out], x[held_out]


def codebook_usage(codes, codebook_size):
    """(perplexity, fraction of codes used) of a batch of codes: exp(entropy) of the code histogram,
    K if every code is used equally, 1 if the codebook has collapsed to a single code."""
    p = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    p = p[p > 0] / p.sum()
    return math.exp(-(p * p.log()).sum().item()), len(p) / codebook_size


def code_redundancy(images, codes):
    """How many codes the encoder spends on one patch content. images (N, S, S, 3) uint8, codes (N, h, w): each
    code's f x f patch is matched with the other patches of exactly the same pixels (plain background, mostly).
    Returns (bits, agreement, coverage): the entropy of the code given the patch content, H(code | content), 0
    when equal patches always get one code; the fraction of those patches that get their content's most common
    code; and the fraction of patches whose content repeats at all (the part of the data measured): (None, None, 0)
    when no patch repeats."""
    N, h, w = codes.shape
    f = images.shape[1] // h
    patches = images.reshape(N, h, f, w, f, 3).transpose(0, 1, 3, 2, 4, 5).reshape(N * h * w, -1)
    _, content, counts = np.unique(patches, axis=0, return_inverse=True, return_counts=True)
    content = content.ravel()
    repeated = counts[content] > 1
    if not repeated.any():
        return None, None, 0.0
    pairs = np.stack([content, codes.ravel().astype(np.int64)])[:, repeated]  # (2, M): (content, code) of each
    pairs, n_pair = np.unique(pairs, axis=1, return_counts=True)
    bits = -(n_pair * np.log2(n_pair / counts[pairs[0]])).sum() / repeated.sum()  # sum p(c, k) log 1 / p(k | c)
    most_common = np.zeros(len(counts), dtype=np.int64)
    np.maximum.at(most_common, pairs[0], n_pair)
    return float(bits) + 0.0, float(most_common.sum() / repeated.sum()), float(repeated.mean())  # + 0.0: no -0.0
