"""A tolerant reader for datasets in the RF1M layout (local directory or ``s3://`` prefix).

Layout (DESIGN.md section 3; the published dataset's exact files are unknown)::

    ROOT/label.txt          one "<image path> <label>" per line; label 1-6 or a class name
    ROOT/products/<name>    RGBA product cut-out for image <name> (optional, per image)
    ROOT/captions.jsonl     {"image": <image path>, "caption": "..."} per line (optional)

What is accepted, and how (docs/data.md has the full list with examples):

- Label files: ``label.txt``; else ``labels.txt``, ``label.csv``, ``labels.csv``; else every split
  file present among ``train.txt``, ``val.txt``, ``valid.txt``, ``validation.txt``, ``test.txt``
  (each sample's ``source`` names its file, so :meth:`RF1MIndex.subset` recovers a split). ``root``
  may also be one label file itself (``.../RF1M/test.txt``): then only that file is read.
- Lines: UTF-8 with or without BOM (UTF-16 with BOM too), LF or CRLF; blank lines and lines
  starting with ``#`` are skipped; fields separated by a tab, runs of spaces, a comma or a
  semicolon. The label is the LAST field, so paths may contain spaces; a label may be two words
  (``Space Mismatch``). A first line whose last field is a column name (``label``, ``class``, ...)
  is a header and skipped. Surrounding quotes, ``./`` prefixes and ``\\`` separators are removed.
- Image paths: relative to ROOT; if not found there, under ``ROOT/images/``; else the single file
  under ROOT whose path ends with the given path (or whose path the given one ends with, which
  re-roots absolute paths from another machine). Absolute local paths and URIs that exist are used
  as they are. Each such fallback is counted in the summary.
- Products: ``products/<image path>``, ``products/<path below images/>``, ``products/<file name>``,
  and then the same names with any image extension (``x.jpg`` -> ``products/x.png``; ``.png``
  preferred). No match: the sample has no product, which is allowed.
- Captions: keys ``image`` (or ``path``, ``file``) and ``caption`` (or ``title``, ``text``); the image
  path is resolved like a label-file path.

Problems (unreadable line, unknown label, missing image file, duplicate or conflicting entries, bad
caption lines) are collected as :class:`Problem` with ``file:line``, the line and a reason, and
summarised in the log. Reading raises :class:`RF1MError` only when no usable sample remains.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines import storage
from pipelines.config import InputError
from pipelines.labels import DISPLAY_NAMES, NUM_CLASSES, parse_label
from rfnet.data.samples import Sample

logger = logging.getLogger(__name__)

LABEL_FILES = ("label.txt", "labels.txt", "label.csv", "labels.csv")
SPLIT_FILES = ("train.txt", "val.txt", "valid.txt", "validation.txt", "test.txt")
CAPTIONS_FILE = "captions.jsonl"
PRODUCTS_DIR = "products"
IMAGES_DIR = "images"
# Preference order when a product is found by stem with another extension.
IMAGE_EXTENSIONS = (".png", ".webp", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
HEADER_WORDS = {"label", "labels", "class", "classes", "category", "categories", "target", "cls", "classname"}
IMAGE_KEYS = ("image", "path", "file")
CAPTION_KEYS = ("caption", "title", "text")
MAX_LINE_SHOWN = 200


@dataclass(frozen=True)
class Problem:
    """A line or file the reader could not use: ``location`` (``"label.txt:17"``), the ``line`` as
    read (shortened to 200 characters) and the ``reason`` in words."""

    location: str
    line: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason} | {self.line}"


class RF1MError(InputError):
    """No usable sample (or no label file) at the given root; the message lists what went wrong."""


@dataclass
class RF1MIndex:
    """What :func:`read_rf1m` found: usable ``samples``, ``problems``, and counts of tolerated quirks.

    ``problems`` keeps the first ``max_problems`` entries; ``problem_counts`` counts all of them by
    kind. ``notes`` counts lines that were read but needed a tolerance rule (header, comments, paths
    found under ``images/`` or by suffix, products matched by another extension, ...).
    """

    root: str
    label_files: list[str]
    samples: list[Sample]
    problems: list[Problem]
    problem_counts: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {DISPLAY_NAMES[i]: counts.get(i, 0) for i in range(NUM_CLASSES)}

    def subset(self, label_file: str) -> list[Sample]:
        """Samples declared in one label file, e.g. ``index.subset("test.txt")``."""
        if label_file not in self.label_files:
            raise ValueError(f"{label_file!r} was not read; label files read: {self.label_files}")
        return [s for s in self.samples if s.source.rsplit(":", 1)[0] == label_file]

    def summary(self, max_problems: int = 5) -> str:
        n = len(self.samples)
        classes = ", ".join(f"{name} {count}" for name, count in self.class_counts().items())
        with_product = sum(s.product is not None for s in self.samples)
        with_caption = sum(bool(s.caption) for s in self.samples)
        lines = [
            f"RF1M at {self.root} ({', '.join(self.label_files)}): {n} samples [{classes}]; "
            f"{with_product} with product, {with_caption} with caption."
        ]
        if self.notes:
            lines.append("Tolerated: " + "; ".join(f"{k}: {v}" for k, v in sorted(self.notes.items())) + ".")
        total = sum(self.problem_counts.values())
        if total:
            kinds = "; ".join(f"{k}: {v}" for k, v in self.problem_counts.most_common())
            lines.append(f"{total} problems ({kinds}). First:")
            lines.extend(f"  {p}" for p in self.problems[:max_problems])
            if self.problem_counts.get("unknown label") and any("'0'" in p.reason for p in self.problems):
                lines.append(
                    "  hint: label 0 appears; RF1M labels are 1-based (1 Available ... 6 Shape "
                    "Hallucination). Convert a 0-based file before reading it."
                )
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Files and text.


def _list_tree(root: str) -> list[str]:
    """Every file under ``root``, as paths relative to it (``/``-separated)."""
    fs, path = storage.filesystem(root)
    found = storage.with_retries(lambda: fs.find(path), what=f"list {root}")
    prefix = path.rstrip("/") + "/"
    return [p[len(prefix) :] for p in found if p.startswith(prefix)]


def text_lines(data: bytes) -> list[tuple[int, str | None, bytes]]:
    """``(line number, text or None if not decodable, raw bytes)`` for every line of a text file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM (e.g. Windows Notepad)
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            pass
        else:
            return [(i, line.rstrip("\r"), b"") for i, line in enumerate(text.split("\n"), 1)]
    data = data.removeprefix(b"\xef\xbb\xbf")
    out: list[tuple[int, str | None, bytes]] = []
    for i, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        try:
            out.append((i, raw.decode("utf-8"), raw))
        except UnicodeDecodeError:
            out.append((i, None, raw))
    return out


def _shown(text: str | None, raw: bytes) -> str:
    shown = text if text is not None else repr(raw)
    return shown if len(shown) <= MAX_LINE_SHOWN else shown[: MAX_LINE_SHOWN - 3] + "..."


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


class LineError(ValueError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


_TOKEN = re.compile(r"\S+")


def _label_reason(value: str) -> str:
    if value.strip().lstrip("-").isdigit():
        return f"label {value!r} is not an RF1M number 1-{NUM_CLASSES}"
    return f"unknown label {value!r} (use 1-{NUM_CLASSES} or a class name such as 'Space Mismatch')"


def split_line(text: str) -> tuple[str, int, str]:
    """``"<path> <label>"`` -> ``(path, class index, label field)``; raises ``LineError``.

    Separators, tried in this order: the last tab; the last one or two whitespace-separated words
    (``Space Mismatch``); the last comma or semicolon. The first split whose label parses wins.
    """
    candidates: list[tuple[str, str]] = []
    if "\t" in text:
        path, _, label = text.rpartition("\t")
        candidates.append((path, label))
    tokens = list(_TOKEN.finditer(text))
    for k in (1, 2):
        if len(tokens) > k:
            start = tokens[-k].start()
            candidates.append((text[:start], text[start:]))
    for sep in (",", ";"):
        if sep in text:
            path, _, label = text.rpartition(sep)
            candidates.append((path, label))
    if not candidates:
        raise LineError("malformed line", "expected '<image path><tab or space><label>', found one field")
    for path, label in candidates:
        path = _unquote(path.strip().rstrip(",;").rstrip())
        label = _unquote(label)
        if not path or not label:
            continue
        try:
            return path, parse_label(label), label
        except ValueError:
            continue
    last = _unquote(candidates[0][1].strip())
    raise LineError("unknown label", _label_reason(last))


def _is_header(text: str) -> bool:
    last = re.split(r"[\t,;\s]+", text.strip())[-1]
    return _unquote(last).lower().replace("_", "").replace("-", "") in HEADER_WORDS


def clean_path(path: str) -> str:
    path = path.replace("\\", "/")
    if "://" in path:
        return path
    absolute = path.startswith("/")
    norm = posixpath.normpath(path)
    if not absolute:
        while norm.startswith("./"):
            norm = norm[2:]
    return norm


# ----------------------------------------------------------------------------------------------------
# Resolving paths against the file listing.


class _Tree:
    """The dataset's file listing, with the lookups the tolerance rules need."""

    def __init__(self, root: str, files: list[str]):
        self.root = root
        self.local = not storage.is_remote(root)
        self.files = set(files)
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.products: dict[str, str] = {}
        self.products_by_stem: dict[str, list[str]] = defaultdict(list)
        for rel in files:
            self.by_name[posixpath.basename(rel)].append(rel)
            if rel.startswith(PRODUCTS_DIR + "/"):
                inner = rel[len(PRODUCTS_DIR) + 1 :]
                self.products[inner] = rel
                self.products_by_stem[posixpath.splitext(inner)[0]].append(rel)
        self.used_products: set[str] = set()

    def uri(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def _by_suffix(self, path: str) -> tuple[str | None, str]:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None, "empty path"
        best: list[tuple[int, str]] = []
        for rel in self.by_name.get(parts[-1], ()):
            cand = rel.split("/")
            n = min(len(cand), len(parts))
            if cand[-n:] != parts[-n:]:
                continue
            best.append((n, rel))
        if not best:
            return None, "not found"
        top = max(n for n, _ in best)
        winners = sorted(rel for n, rel in best if n == top)
        if len(winners) > 1:
            return None, f"ambiguous: {len(winners)} files match ({', '.join(winners[:3])})"
        return winners[0], "suffix"

    def resolve(self, path: str) -> tuple[str | None, str | None, str]:
        """``(uri, path relative to root or None, how)``; ``uri`` is None when not found (``how`` says why)."""
        if "://" in path:
            root_prefix = self.root.rstrip("/") + "/"
            if path.startswith(root_prefix):
                path = path[len(root_prefix) :]
            elif storage.exists(path):
                return path, None, "external URI"
            else:
                return None, None, f"{path} does not exist"
        if path.startswith("/"):
            if self.local:
                root_prefix = self.root.rstrip("/") + "/"
                if path.startswith(root_prefix) and path[len(root_prefix) :] in self.files:
                    return path, path[len(root_prefix) :], "absolute path under root"
                if os.path.isfile(path):
                    return path, None, "absolute path"
            rel, how = self._by_suffix(path)
            if rel is None:
                return None, None, f"absolute path {how} under {self.root}"
            return self.uri(rel), rel, "absolute path re-rooted"
        if path.startswith("../"):
            uri = posixpath.normpath(storage.join(self.root, path)) if self.local else None
            if uri and os.path.isfile(uri):
                return uri, None, "path outside root"
            return None, None, f"{path} points outside {self.root} and does not exist"
        if path in self.files:
            return self.uri(path), path, "exact"
        under_images = f"{IMAGES_DIR}/{path}"
        if under_images in self.files:
            return self.uri(under_images), under_images, "found under images/"
        rel, how = self._by_suffix(path)
        if rel is None:
            return None, None, f"{how}: looked for {self.uri(path)}"
        return self.uri(rel), rel, "found by unique suffix"

    def product_for(self, uri: str, rel: str | None) -> tuple[str | None, str]:
        keys: list[str] = []
        if rel is not None:
            keys.append(rel)
            if rel.startswith(IMAGES_DIR + "/"):
                keys.append(rel[len(IMAGES_DIR) + 1 :])
        keys.append(posixpath.basename(uri))
        for key in keys:
            if key in self.products:
                return self.products[key], "exact"
        for key in keys:
            options = self.products_by_stem.get(posixpath.splitext(key)[0], [])
            if options:
                rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
                options = sorted(options, key=lambda r: (rank.get(posixpath.splitext(r)[1].lower(), 99), r))
                ext = posixpath.splitext(options[0])[1].lower()
                if ext in rank:
                    return options[0], "other extension"
        return None, "none"


# ----------------------------------------------------------------------------------------------------
# The reader.


@dataclass
class _Entry:
    uri: str
    rel: str | None
    label: int
    location: str
    line: str


class _Collector:
    def __init__(self, max_problems: int):
        self.problems: list[Problem] = []
        self.counts: Counter = Counter()
        self.notes: Counter = Counter()
        self.max_problems = max_problems

    def add(self, kind: str, location: str, line: str, reason: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(location, line, reason))


def _find_label_files(root: str, top_level: list[str]) -> list[str]:
    by_lower = {name.lower(): name for name in top_level}
    for name in LABEL_FILES:
        if name in by_lower:
            return [by_lower[name]]
    splits = [by_lower[name] for name in SPLIT_FILES if name in by_lower]
    if splits:
        return splits
    shown = ", ".join(sorted(top_level)[:10]) or "nothing"
    raise RF1MError(
        f"no label file in {root}: looked for {', '.join(LABEL_FILES)}, or split files "
        f"{', '.join(SPLIT_FILES)}; found {shown}. Point --data at the dataset directory (the one "
        "holding label.txt), or at a label file itself."
    )


def _split_root(root: str) -> tuple[str, list[str] | None]:
    """``root`` or ``(parent, [file name])`` when ``root`` names a label file."""
    name = posixpath.basename(root.rstrip("/"))
    if name.lower().endswith((".txt", ".csv")):
        fs, path = storage.filesystem(root)
        if fs.isfile(path):
            return storage.parent(root), [name]
    return root, None


def read_rf1m(
    root: str, *, label_files: Sequence[str] | None = None, max_problems: int = 10_000
) -> RF1MIndex:
    """Read the RF1M-layout dataset at ``root`` (local directory, ``s3://`` prefix, or one label file).

    ``label_files`` overrides label-file discovery (names relative to ``root``). Returns an
    :class:`RF1MIndex`; logs its summary (a warning when there were problems). Raises
    :class:`RF1MError` if ``root`` has no label file or no line gave a usable sample; the message
    lists the first problems.
    """
    root = storage.normalize(root)
    root, named = _split_root(root)
    fs, path = storage.filesystem(root)
    if not fs.isdir(path):
        raise RF1MError(f"dataset root {root} does not exist or is not a directory")
    files = _list_tree(root)
    tree = _Tree(root, files)
    if label_files is None:
        label_files = named or _find_label_files(root, [f for f in files if "/" not in f])
    label_files = list(label_files)
    out = _Collector(max_problems)

    entries: list[_Entry] = []
    for name in label_files:
        data = storage.read_bytes(storage.join(root, name))
        first_content = True
        for number, text, raw in text_lines(data):
            location = f"{name}:{number}"
            if text is None:
                out.add(
                    "not UTF-8", location, _shown(text, raw), "line is not UTF-8 (or UTF-16 with BOM) text"
                )
                continue
            stripped = text.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                out.notes["comment lines"] += 1
                continue
            is_first, first_content = first_content, False
            try:
                path, label, _ = split_line(stripped)
            except LineError as exc:
                if is_first and _is_header(stripped):
                    out.notes["header lines"] += 1
                    continue
                out.add(exc.kind, location, _shown(text, raw), str(exc))
                continue
            uri, rel, how = tree.resolve(clean_path(path))
            if uri is None:
                out.add("image not found", location, _shown(text, raw), f"image file not found ({how})")
                continue
            if how != "exact":
                out.notes[f"image paths {how}"] += 1
            entries.append(_Entry(uri, rel, label, location, _shown(text, raw)))

    samples = _deduplicate(entries, out)
    captions = _read_captions(root, tree, out)
    result: list[Sample] = []
    for entry in samples:
        product, how = tree.product_for(entry.uri, entry.rel)
        if product is not None:
            tree.used_products.add(product)
            if how != "exact":
                out.notes[f"products matched by {how}"] += 1
        result.append(
            Sample(
                image=entry.uri,
                label=entry.label,
                product=tree.uri(product) if product is not None else None,
                caption=captions.get(entry.uri, ""),
                source=entry.location,
            )
        )
    unused = len(set(tree.products.values()) - tree.used_products)
    if unused:
        out.notes["product files matching no image"] += unused
    matched = sum(1 for s in result if s.image in captions)
    if len(captions) > matched:
        out.notes["captions for images not in the label files"] += len(captions) - matched

    order = {name: i for i, name in enumerate([*label_files, CAPTIONS_FILE])}

    def position(problem: Problem) -> tuple[int, int]:
        name, _, number = problem.location.rpartition(":")
        return order.get(name, len(order)), int(number) if number.isdigit() else 0

    out.problems.sort(key=position)
    index = RF1MIndex(root, label_files, result, out.problems, out.counts, out.notes)
    if not result:
        raise RF1MError(f"no usable samples in {root}.\n{index.summary(max_problems=10)}")
    if out.counts:
        logger.warning("%s", index.summary())
    else:
        logger.info("%s", index.summary())
    return index


def _deduplicate(entries: list[_Entry], out: _Collector) -> list[_Entry]:
    """One entry per image: exact repeats keep the first; conflicting labels drop the image."""
    by_uri: dict[str, list[_Entry]] = defaultdict(list)
    for entry in entries:
        by_uri[entry.uri].append(entry)
    kept: list[_Entry] = []
    for entry in entries:
        group = by_uri[entry.uri]
        if len(group) == 1:
            kept.append(entry)
            continue
        first = group[0]
        labels = {e.label for e in group}
        if len(labels) > 1:
            listed = ", ".join(f"{e.location} ({DISPLAY_NAMES[e.label]})" for e in group)
            out.add(
                "conflicting labels",
                entry.location,
                entry.line,
                f"image listed with different labels: {listed}; excluded",
            )
        elif entry is first:
            kept.append(entry)
        else:
            out.add(
                "duplicate image",
                entry.location,
                entry.line,
                f"duplicate of {first.location} (same label); kept the first",
            )
    return kept


def _read_captions(root: str, tree: _Tree, out: _Collector) -> dict[str, str]:
    """Image URI -> caption from ``captions.jsonl`` (first caption wins; conflicts are problems)."""
    if CAPTIONS_FILE not in tree.files:
        return {}
    captions: dict[str, str] = {}
    where: dict[str, str] = {}
    data = storage.read_bytes(storage.join(root, CAPTIONS_FILE))
    for number, text, raw in text_lines(data):
        location = f"{CAPTIONS_FILE}:{number}"
        if text is None:
            out.add("bad caption line", location, _shown(text, raw), "line is not UTF-8 text")
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            out.add(
                "bad caption line",
                location,
                _shown(text, raw),
                f"not valid JSON: {exc.msg} at column {exc.colno}",
            )
            continue
        if not isinstance(record, dict):
            out.add(
                "bad caption line",
                location,
                _shown(text, raw),
                f"expected a JSON object, got {type(record).__name__}",
            )
            continue
        image = next((record[k] for k in IMAGE_KEYS if k in record), None)
        caption = next((record[k] for k in CAPTION_KEYS if k in record), None)
        if not isinstance(image, str) or not image.strip():
            out.add(
                "bad caption line",
                location,
                _shown(text, raw),
                f"needs a string {'/'.join(IMAGE_KEYS)} field",
            )
            continue
        if not isinstance(caption, str):
            out.add(
                "bad caption line",
                location,
                _shown(text, raw),
                f"needs a string {'/'.join(CAPTION_KEYS)} field",
            )
            continue
        uri, _, _ = tree.resolve(clean_path(image.strip()))
        if uri is None:
            out.notes["captions for images not found"] += 1
            continue
        caption = caption.strip()
        if uri in captions:
            if captions[uri] != caption:
                out.add(
                    "conflicting caption",
                    location,
                    _shown(text, raw),
                    f"another caption for this image at {where[uri]}; kept the first",
                )
            continue
        captions[uri] = caption
        where[uri] = location
    return captions
