"""The factorised emoji grid: tasks are (category, domain) pairs, read from the emoji-datasource packages.

- **Categories** are the category groups of ``emoji.json`` (emoji-datasource 16.0.0). A category's
  *classes* are its subcategories with at least :data:`MIN_EMOJI` base emoji (no skin-tone
  variants); categories left with fewer than two classes are dropped ("Flags": country flags only,
  and "Component"), which leaves the eight of :data:`CATEGORIES`.
- **Domains** are artists: the same emoji drawn by Twemoji (npm emoji-datasource-twitter, images
  CC-BY 4.0) and by Noto (npm emoji-datasource-google, images Apache-2.0). Apple's images are not
  licensed for such use and Facebook's have no clear licence, so neither is used
  (``docs/compositional.md``). Only emoji that both artists draw are used.
- **A task** ``<category>-<domain>`` classifies one artist's drawings of one category's emoji into
  its subcategories. Held-in pairs follow DomainNet's grid in Tam et al.: category *i* is paired
  with domain ⌊i·D/C⌋ (4 categories per domain); every other pair is held out (:func:`held_in`,
  :func:`held_out`).

The split is by emoji, shared by both artists, and fixed (data seed 0; expert seeds change only the
fine-tuning): per class, :data:`SHOT_EMOJI` emoji make the fixed head's prototypes (drawn by both
artists, so the head of a category serves both of its pairs, as a text head would) and are never
trained on or scored; of the rest, a quarter is test, 15 % validation (at least one each), the rest
train. A test emoji is never trained on in any domain. Images are the 64 px PNGs composited on white
and box-downsampled to 32x32 RGB, as mini-vision's emoji tasks are.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from fusionbench_core.suitekit.catalog import INSTALL_HINT, MissingSourceError
from fusionbench_core.suitekit.splits import data_dir, installed_file, seeded_rng

from ..mini.data import emoji_image, emoji_image_dir

__all__ = [
    "CATEGORIES",
    "DOMAINS",
    "MIN_EMOJI",
    "SHOT_EMOJI",
    "SPLITS",
    "Domain",
    "subset_order",
    "category_classes",
    "category_of",
    "domain_of",
    "held_in",
    "held_out",
    "missing_sources",
    "pair_arrays",
    "pair_name",
    "pairs",
]

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("smileys", "Smileys & Emotion"),
    ("people", "People & Body"),
    ("animals", "Animals & Nature"),
    ("food", "Food & Drink"),
    ("travel", "Travel & Places"),
    ("activities", "Activities"),
    ("objects", "Objects"),
    ("symbols", "Symbols"),
)
"""(short name, ``emoji.json`` category), in ``emoji.json`` order."""


class Domain(tuple):
    """(short name, emoji-datasource artist, package, image licence)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The domain's short name (part of task names)."""
        return self[0]

    @property
    def artist(self) -> str:
        """The artist's name in emoji-datasource (``img/<artist>/64``, ``has_img_<artist>``)."""
        return self[1]

    @property
    def package(self) -> str:
        """The npm package with the images."""
        return self[2]

    @property
    def licence(self) -> str:
        """The images' licence, as the package's README states it."""
        return self[3]


DOMAINS: tuple[Domain, ...] = (
    Domain(("twemoji", "twitter", "emoji-datasource-twitter@16.0.0", "CC-BY 4.0 (Twemoji graphics)")),
    Domain(("noto", "google", "emoji-datasource-google@16.0.0", "Apache-2.0 (Noto Emoji)")),
)
"""The artists whose licences allow the use: Twemoji and Noto."""

MIN_EMOJI = 12
"""A subcategory becomes a class when it has at least this many base emoji drawn by every artist."""
SHOT_EMOJI = 2
"""Emoji per class whose drawings (by every artist) make the fixed head; never trained on or scored."""
SPLITS = ("shots", "train", "validation", "test")
TEST_SHARE, VALIDATION_SHARE = 0.25, 0.15


def pair_name(category: str, domain: str) -> str:
    """``<category>-<domain>``, e.g. ``animals-noto``."""
    return f"{category}-{domain}"


def category_of(pair: str) -> str:
    """The category of a pair name."""
    return pair.rsplit("-", 1)[0]


def domain_of(pair: str) -> str:
    """The domain of a pair name."""
    return pair.rsplit("-", 1)[1]


def pairs() -> list[str]:
    """Every (category, domain) pair, category-major."""
    return [pair_name(c, d.name) for c, _ in CATEGORIES for d in DOMAINS]


def held_in() -> list[str]:
    """The held-in pairs: category *i* with domain ⌊i·D/C⌋ (DomainNet's grid in Tam et al.), in category order."""
    c, d = len(CATEGORIES), len(DOMAINS)
    return [pair_name(name, DOMAINS[(i * d) // c].name) for i, (name, _) in enumerate(CATEGORIES)]


def held_out() -> list[str]:
    """Every pair that is not held in, category-major."""
    inside = set(held_in())
    return [p for p in pairs() if p not in inside]


def subset_order(tasks: Sequence[str], permutation: int) -> list[str]:
    """The held-in pairs in the fixed seeded order ``permutation`` (0: the suite's own order)."""
    if permutation == 0:
        return list(tasks)
    order = seeded_rng(permutation, "mini-compositional/subsets").permutation(len(tasks))
    return [tasks[i] for i in order]


def _json_path() -> Path:
    return data_dir() / "emoji-datasource-twitter" / "emoji.json"


def _image_dir(domain: Domain) -> Path:
    return emoji_image_dir(domain.artist)


def missing_sources() -> list[str]:
    """One line per missing source (the two npm packages, pillow); empty when all are installed."""
    out = []
    if installed_file("pillow", "PIL/Image.py") is None:
        out.append(f"mini-compositional needs the pip package pillow; {INSTALL_HINT}")
    if not _json_path().exists():
        out.append(f"mini-compositional needs the npm package emoji-datasource-twitter@16.0.0 (missing {_json_path()}); "
                   f"{INSTALL_HINT}")
    for domain in DOMAINS:
        probe = _image_dir(domain) / "1f600.png"
        if not probe.exists():
            out.append(f"mini-compositional needs the npm package {domain.package} (missing {probe}); {INSTALL_HINT}")
    return out


def _require() -> None:
    missing = missing_sources()
    if missing:
        raise MissingSourceError(missing[0])


@lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
    """Base emoji of the categories drawn by every artist, sorted by code point."""
    _require()
    with open(_json_path(), encoding="utf-8") as fh:
        entries = json.load(fh)
    wanted = {long for _, long in CATEGORIES}
    rows = [{k: e[k] for k in ("unified", "image", "category", "subcategory")} for e in entries
            if e["category"] in wanted and all(e.get(f"has_img_{d.artist}") for d in DOMAINS)]
    return tuple(sorted(rows, key=lambda r: r["unified"]))


def category_classes(category: str) -> tuple[str, ...]:
    """A category's classes: its subcategories with at least :data:`MIN_EMOJI` emoji, largest first (ties by name)."""
    long = dict(CATEGORIES)[category]
    counts = Counter(r["subcategory"] for r in _rows() if r["category"] == long)
    return tuple(name for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= MIN_EMOJI)


@lru_cache(maxsize=None)
def _category_split(category: str) -> dict[str, tuple[tuple[str, int], ...]]:
    """``{split: ((image file, label), ...)}`` of a category: per class shots, test, validation, train (seed 0)."""
    long = dict(CATEGORIES)[category]
    classes = category_classes(category)
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    rng = seeded_rng(0, f"mini-compositional/{category}")
    for label, sub in enumerate(classes):
        members = [r["image"] for r in _rows() if r["category"] == long and r["subcategory"] == sub]
        members = [members[i] for i in rng.permutation(len(members))]
        rest = len(members) - SHOT_EMOJI
        n_te, n_va = max(1, math.floor(TEST_SHARE * rest)), max(1, math.floor(VALIDATION_SHARE * rest))
        cuts = {"shots": members[:SHOT_EMOJI], "test": members[SHOT_EMOJI:SHOT_EMOJI + n_te],
                "validation": members[SHOT_EMOJI + n_te:SHOT_EMOJI + n_te + n_va],
                "train": members[SHOT_EMOJI + n_te + n_va:]}
        for split, files in cuts.items():
            out[split].extend((f, label) for f in files)
    # Interleave the classes in a seeded order, so a prefix of a split keeps every class.
    for split in SPLITS:
        order = seeded_rng(0, f"mini-compositional/{category}/{split}").permutation(len(out[split]))
        out[split] = [out[split][i] for i in order]
    return {split: tuple(items) for split, items in out.items()}


@lru_cache(maxsize=None)
def _image(domain: str, file: str) -> np.ndarray:
    return emoji_image(_image_dir(dict((d.name, d) for d in DOMAINS)[domain]) / file)


def pair_arrays(pair: str, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(uint8[N, 32, 32, 3] images, int64[N] labels, classes)`` of one pair's split (``shots``, ``train``...)."""
    from fusionbench_core.errors import ConfigError

    category, domain = category_of(pair), domain_of(pair)
    if pair not in pairs():
        raise ConfigError(f"unknown mini-compositional task '{pair}'; known: {', '.join(pairs())}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}' of mini-compositional (known: {', '.join(SPLITS)})")
    items = _category_split(category)[split]
    images = (np.stack([_image(domain, f) for f, _ in items]) if items
              else np.zeros((0, 32, 32, 3), np.uint8))
    return images, np.asarray([label for _, label in items], np.int64), len(category_classes(category))


def grid_summary() -> list[dict[str, object]]:
    """One row per category: its classes and the emoji per split (for ``fb suites show`` and the docs)."""
    rows = []
    inside = set(held_in())
    for short, long in CATEGORIES:
        split = _category_split(short)
        rows.append({"category": short, "emoji.json category": long, "classes": list(category_classes(short)),
                     **{s: len(split[s]) for s in SPLITS},
                     "held-in domain": next(domain_of(p) for p in inside if category_of(p) == short)})
    return rows


def describe_domains() -> Sequence[dict[str, str]]:
    """The domains with their packages and licences."""
    return [{"domain": d.name, "artist": d.artist, "package": d.package, "licence": d.licence} for d in DOMAINS]
