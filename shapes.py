"""
The built-in 'shapes' data: 32x32 images (any size) of one to three separate shapes, all of one kind (circle,
square or triangle) and each in one of four colours, on a plain white or black background. Drawn by a known rule,
so that evaluate.py can judge every generated image against it exactly.

    python -c "import shapes; print(shapes.make_shapes(4)[1])"     # the kinds of the first four images
"""
import numpy as np
from PIL import Image, ImageDraw

SHAPE_KINDS = ("circle", "square", "triangle")
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)]  # red, green, blue, yellow
BACKGROUNDS = [(255, 255, 255), (20, 20, 20)]


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
        s = 0.85 * r  # a square of about the circle's area
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:  # pointing up; its centroid is (cx, cy)
        draw.polygon([(cx, cy - r), (cx - 0.87 * r, cy + 0.5 * r), (cx + 0.87 * r, cy + 0.5 * r)], fill=fill)


def make_shapes(n, img_size=32, seed=0):
    """n images (n, img_size, img_size, 3) uint8 and their labels (n,) int64; the same for the same seed."""
    pairs = [draw_shapes(i, img_size, seed) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)
