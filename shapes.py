"""
The built-in 'shapes' data: 32x32 images (any size) of one to three separate shapes, all of one kind (circle,
square or triangle) and each in one of four colours, on a plain white or black background. Drawn by a known rule,
so that every generated image can be judged against it exactly (judge_shapes, from the same geometry).

    python -c "import shapes; print(shapes.make_shapes(4)[1])"     # the kinds of the first four images
"""
import math

import numpy as np
import scipy.ndimage
from PIL import Image, ImageDraw

SHAPE_KINDS = ("circle", "square", "triangle")
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)]  # red, green, blue, yellow
BACKGROUNDS = [(255, 255, 255), (20, 20, 20)]
# The geometry of a shape of size r, for drawing and judging alike: a square's half-side is SQUARE r (about the
# circle's area); a triangle points up from its apex at (0, -r) to its base at TRIANGLE_BASE r, its half-width
# TRIANGLE r (its centroid at the centre)
SQUARE, TRIANGLE, TRIANGLE_BASE = 0.85, 0.87, 0.5


def draw_shapes(index, img_size=32, seed=0):
    """Image `index` of the built-in dataset: 1-3 shapes, all of one kind (the label), each in one of the four
    colours, on a plain background, never overlapping. A prior that mixes kinds within an image, or
    draws broken shapes, has not learned the global structure."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(SHAPE_KINDS)))
    img = Image.new("RGB", (img_size, img_size), BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    draw = ImageDraw.Draw(img)
    placed = []  # (cx, cy, r) of the shapes drawn so far
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.15, 0.25) * img_size
        cx, cy = rng.uniform(r, img_size - r, size=2)
        if any((cx - x) ** 2 + (cy - y) ** 2 < (r + q + 1) ** 2 for x, y, q in placed):
            continue
        placed.append((cx, cy, r))
        draw_shape(draw, label, cx, cy, r, COLOURS[rng.integers(len(COLOURS))])
    return np.asarray(img), label


def draw_shape(draw, kind, cx, cy, r, fill):
    """One shape of `kind` (an index into SHAPE_KINDS) centred on (cx, cy), of size r, on a PIL ImageDraw."""
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == 1:
        s = SQUARE * r
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        w, b = TRIANGLE * r, TRIANGLE_BASE * r
        draw.polygon([(cx, cy - r), (cx - w, cy + b), (cx + w, cy + b)], fill=fill)


def make_shapes(n, img_size=32, seed=0):
    """n images (n, img_size, img_size, 3) uint8 and their labels (n,) int64; the same for the same seed."""
    pairs = [draw_shapes(i, img_size, seed) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)

# -----------------------------------------------------------------------------
# Judging images against the rule of the built-in data (draw_shapes): a plain white or black
# background, then 1-3 separate shapes, each of one of the four colours, all of one kind. Every generated image is
# either valid, with its kind, or invalid for the first rule it breaks. This measures global structure exactly,
# where FID only compares feature statistics.

SHAPE_REASONS = ("background", "count", "colour", "shape", "mixed kinds")
SHAPE_AREA = (math.pi, (2 * SQUARE) ** 2, TRIANGLE * (1 + TRIANGLE_BASE))  # the area of each kind is c * r^2


def ideal_shapes(kind, cx, cy, r, size):
    """Masks (P, H, W) for size (H, W) of ideal shapes of `kind` as draw_shape draws them, one per row of the
    centres and sizes cx, cy, r (P,); a pixel is inside if its centre is."""
    y, x = np.mgrid[:size[0], :size[1]].astype(np.float64)
    dx, dy, r = x - cx[:, None, None], y - cy[:, None, None], r[:, None, None]  # (P, size, size)
    if kind == 0:
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == 1:
        return np.maximum(abs(dx), abs(dy)) <= SQUARE * r
    # above the base, below the two sides from the apex (0, -r) to the base's corners (+-TRIANGLE r, TRIANGLE_BASE r)
    return (dy <= TRIANGLE_BASE * r) & (dy >= -r + abs(dx) * (1 + TRIANGLE_BASE) / TRIANGLE)


def fit_iou(component, kind):
    """The best IoU of a shape's pixels (H, W) bool with an ideal shape of `kind`, searched around the centroid
    (half-pixel shifts) and the size its area gives (-15% to +15%: drawing rounds the edges outwards)."""
    ys, xs = np.nonzero(component)
    r0 = math.sqrt(len(xs) / SHAPE_AREA[kind])
    shift, scale = np.array([-0.5, 0.0, 0.5]), np.linspace(0.85, 1.15, 7)
    cx, cy, r = (a.ravel() for a in np.meshgrid(xs.mean() + shift, ys.mean() + shift, r0 * scale))  # (63,) each
    ideal = ideal_shapes(kind, cx, cy, r, component.shape)
    return ((ideal & component).sum((1, 2)) / (ideal | component).sum((1, 2))).max()


def box_iou(component, kind):
    """The IoU of a shape's pixels (H, W) bool with the ideal shape of `kind` that fills its bounding box: a circle's
    ellipse, a square's box, a triangle from its apex at the top centre to its base along the bottom. Stricter than
    fit_iou, which searches size and shift: a triangle with its apex rounded off keeps a tall box but loses area."""
    ys, xs = np.nonzero(component)
    top, bottom, left, right = ys.min() - 0.5, ys.max() + 0.5, xs.min() - 0.5, xs.max() + 0.5  # pixel edges
    y, x = np.mgrid[:component.shape[0], :component.shape[1]].astype(np.float64)  # pixel centres
    cx, cy, half_w, half_h = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
    if kind == 0:
        ideal = ((x - cx) / half_w) ** 2 + ((y - cy) / half_h) ** 2 <= 1
    elif kind == 1:
        ideal = (abs(x - cx) <= half_w) & (abs(y - cy) <= half_h)
    else:
        ideal = (y >= top) & (y <= bottom) & (abs(x - cx) <= half_w * (y - top) / (bottom - top))
    return (ideal & component).sum() / (ideal | component).sum()


def shape_regions(img, tolerance=40, min_pixels=12):
    """(reason, shapes) for one uint8 (H, W, 3) image: the shapes as (colour index, pixels (H, W) bool), and reason
    "background" (with no shapes) when the background rule is broken, else None. See judge_shape_image."""
    x = img.astype(np.float64).reshape(-1, 3)
    median = np.median(x, 0)
    bg = np.array(min(BACKGROUNDS, key=lambda c: np.linalg.norm(median - c)), dtype=np.float64)
    if np.linalg.norm(median - bg) > tolerance:
        return "background", []
    directions = np.array(COLOURS) - bg  # (4, 3): from the background to each colour
    a = ((x - bg) @ directions.T / (directions ** 2).sum(1)).clip(0, 1)  # (H*W, 4) mix of each colour
    colour = np.linalg.norm(x[:, None] - bg - a[..., None] * directions, axis=-1).argmin(1)  # (H*W,) best fit
    a = a[np.arange(len(x)), colour]  # (H*W,)
    shapes = []
    for c in range(len(COLOURS)):
        labels, n = scipy.ndimage.label(((colour == c) & (a > 0.5)).reshape(img.shape[:2]))
        shapes += [(c, labels == i) for i in range(1, n + 1) if (labels == i).sum() >= min_pixels]
    marks, n_marks = scipy.ndimage.label((np.linalg.norm(x - bg, axis=1) > tolerance).reshape(img.shape[:2]))
    in_shapes = np.any([s for _, s in shapes], 0) if shapes else np.zeros(img.shape[:2], bool)
    if n_marks > len(np.setdiff1d(marks[in_shapes], [0])):  # a mark that touches no shape
        return "background", []
    return None, shapes


def judge_shape_image(img, min_iou=0.8, tolerance=40, min_pixels=12):
    """(reason, kind) for one uint8 (H, W, 3) image: reason is None and kind a name from SHAPE_KINDS when the
    image obeys the rule, else reason is the first rule broken (one of SHAPE_REASONS) and kind None. Each pixel
    is read as a mix a * colour + (1 - a) * background with a in [0, 1] (edges mix the two), for the one of the
    four colours that explains it best; a shape's pixels are those with a > 1/2.
    - background: the median pixel within `tolerance` of white or black; no stray mark (a connected region of
      pixels more than `tolerance` off the background that touches no shape: a shape's blurred edge is no mark);
    - count: 1-3 shapes, a shape being a connected region of `min_pixels` or more pixels of one colour;
    - colour: each shape's median pixel within `tolerance` of its colour;
    - shape: each within IoU `min_iou` of an ideal circle, square or triangle (fit_iou);
    - mixed kinds: all shapes of one kind."""
    reason, shapes = shape_regions(img, tolerance, min_pixels)
    if reason:
        return reason, None
    if not 1 <= len(shapes) <= 3:
        return "count", None
    kinds = []
    for c, component in shapes:
        if np.median(np.linalg.norm(img[component] - np.array(COLOURS[c]), axis=1)) > tolerance:
            return "colour", None
        ious = [fit_iou(component, k) for k in range(len(SHAPE_KINDS))]
        if max(ious) < min_iou:
            return "shape", None
        kinds.append(int(np.argmax(ious)))
    if len(set(kinds)) > 1:
        return "mixed kinds", None
    return None, SHAPE_KINDS[kinds[0]]


def judge_shapes(images):
    """The rule's verdict on a dataset of uint8 (H, W, 3) images: shape_valid (the valid fraction), shape_kinds
    (how many valid images of each kind) and shape_invalid (how many images broke each rule first)."""
    kinds, reasons = dict.fromkeys(SHAPE_KINDS, 0), dict.fromkeys(SHAPE_REASONS, 0)
    boxed = {k: [] for k in SHAPE_KINDS}  # of each valid image's shapes: box IoU >= 0.8 (sharp corners)?
    for img in images:
        reason, kind = judge_shape_image(np.asarray(img))
        if reason:
            reasons[reason] += 1
        else:
            kinds[kind] += 1
            boxed[kind] += [box_iou(s, SHAPE_KINDS.index(kind)) >= 0.8 for _, s in shape_regions(np.asarray(img))[1]]
    n = sum(kinds.values()) + sum(reasons.values())
    return dict(shape_valid=sum(kinds.values()) / n, shape_kinds=kinds, shape_invalid=reasons, shape_judged=n,
                shape_box_iou={k: float(np.mean(v)) if v else None for k, v in boxed.items()})
