"""Storage for catalogs, images and tables: local paths or ``s3://`` through fsspec.

S3 endpoints and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles), which botocore
reads itself, so a local S3-compatible server works without code changes.

Writes are atomic: local files are written to a temporary name in the target directory and renamed;
an S3 ``PUT`` is atomic by nature (readers see the old object or the new one, never a part).
Transient errors are retried with exponential backoff (:func:`with_retries`); after the last try a
:class:`StorageError` names the URI and the cause, and callers turn it into an error row.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_SCHEMES = ("file", "s3")


class StorageError(OSError):
    """A read or write that failed after all retries; ``str()`` names the URI and the cause."""


def scheme(uri: str) -> str:
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


def is_remote(uri: str) -> bool:
    return scheme(uri) != "file"


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for a local path, ``file://`` URI or ``s3://`` URI."""
    s = scheme(uri)
    if s not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported URI scheme {s!r} in {uri!r}; supported: local paths, file://, s3://")
    if s == "s3":
        # Endpoint from AWS_ENDPOINT_URL (botocore honours it); passed explicitly too for older botocore.
        kwargs = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        fs = fsspec.filesystem("s3", client_kwargs=kwargs, skip_instance_cache=False)
        return fs, uri.removeprefix("s3://").removeprefix("S3://")
    fs = fsspec.filesystem("file")
    path = uri.removeprefix("file://")
    return fs, os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """Join URI segments with ``/`` (also for local paths, which are absolute after ``normalize``)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def normalize(uri: str) -> str:
    """Absolute local path, or the URI unchanged (trailing slash removed)."""
    if is_remote(uri):
        return uri.rstrip("/")
    return os.path.abspath(uri.removeprefix("file://"))


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


# ----------------------------------------------------------------------------------------------------
# Retries and fault injection.


class FaultInjector:
    """Deterministic write failures for chaos drills: the first ``count`` writes to each path
    matching ``pattern`` raise ``OSError``. Configured through ``StorageConfig.inject_write_failures``.
    """

    def __init__(self, pattern: str | None = None, count: int = 0):
        self.pattern = pattern
        self.count = count
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def check(self, path: str) -> None:
        if not self.pattern or self.count <= 0 or not fnmatch.fnmatch(path, self.pattern):
            return
        with self._lock:
            n = self._seen.get(path, 0)
            self._seen[path] = n + 1
        if n < self.count:
            raise OSError(f"injected write failure {n + 1}/{self.count} for {path}")


NO_FAULTS = FaultInjector()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed read/write is tried again (``StorageConfig.policy()``)."""

    retries: int = 3  # extra tries after the first
    backoff_s: float = 0.2  # delay before the first retry; doubles each time


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(retries=0)

# Errors that another try cannot fix: raised at once.
PERMANENT_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def with_retries(fn: Callable[[], T], *, what: str, policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """Run ``fn``; on ``OSError`` retry ``policy.retries`` more times with exponential backoff."""
    retries = policy.retries
    for attempt in range(retries + 1):
        try:
            return fn()
        except PERMANENT_ERRORS:
            raise
        except (OSError, TimeoutError) as exc:  # s3fs/botocore map transport errors to OSError
            if attempt == retries:
                raise StorageError(f"{what} failed after {retries + 1} tries: {exc}") from exc
            delay = policy.backoff_s * (2**attempt)
            logger.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------------
# Bytes and tables.


def read_bytes(uri: str, *, policy: RetryPolicy = DEFAULT_RETRY) -> bytes:
    fs, path = filesystem(uri)

    def _read() -> bytes:
        with fs.open(path, "rb") as f:
            return f.read()

    try:
        return with_retries(_read, what=f"read {uri}", policy=policy)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri} does not exist") from None


def _write_once(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs.pipe_file(path, data)


def write_bytes(
    uri: str, data: bytes, *, policy: RetryPolicy = DEFAULT_RETRY, faults: FaultInjector = NO_FAULTS
) -> None:
    """Atomically write ``data`` to ``uri`` (replacing it), retrying transient errors."""
    fs, path = filesystem(uri)

    def _write() -> None:
        faults.check(path)
        _write_once(fs, path, data)

    with_retries(_write, what=f"write {uri}", policy=policy)


def write_text(uri: str, text: str, **kwargs) -> None:
    write_bytes(uri, text.encode("utf-8"), **kwargs)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Files directly under the directory ``uri`` whose name ends with ``suffix``, as full URIs, sorted.

    Temporary files (leading ``.``) are skipped. A missing directory gives ``[]``.
    """
    fs, path = filesystem(uri)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        name = e["name"].rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") == "file" and name.endswith(suffix) and not name.startswith("."):
            out.append(join(uri, name))
    return sorted(out)


def list_dirs(uri: str) -> list[str]:
    """Names of the directories directly under ``uri`` (S3: common prefixes), sorted; ``[]`` if none."""
    fs, path = filesystem(uri)
    try:
        entries = fs.ls(path, detail=True, refresh=True)  # s3fs caches listings; a run just added one
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")


def list_pages(uri: str, page_size: int = 1000) -> Iterator[list[dict]]:
    """Files directly under the directory ``uri``, a page at a time, in name order: ``{"name": file
    name, "size": bytes}`` (and ``"etag"`` on S3). Hidden and temporary files (leading ``.``) are
    skipped. A missing directory gives no page.

    On S3 each page is one ``ListObjectsV2`` response (``page_size`` keys, S3's own order, which is
    the names' code-point order), so a listing of millions of objects is never held at once. A local
    directory is read with ``os.scandir`` and sorted (its names are held while sorting: ~100 bytes per
    file), then handed out in pages of ``page_size``.
    """
    fs, path = filesystem(uri)
    if is_remote(uri):
        bucket, _, key = path.partition("/")
        prefix = f"{key.rstrip('/')}/" if key else ""
        kwargs = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": page_size}
        while True:
            out = fs.call_s3("list_objects_v2", **kwargs)
            page = []
            for obj in out.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if name and not name.startswith(".") and "/" not in name:
                    page.append(
                        {"name": name, "size": obj.get("Size"), "etag": obj.get("ETag", "").strip('"')}
                    )
            if page:
                yield page
            if not out.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
    try:
        with os.scandir(path) as entries:
            names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    except FileNotFoundError:
        return
    for start in range(0, len(names), page_size):
        yield [
            {"name": n, "size": os.path.getsize(os.path.join(path, n))}
            for n in names[start : start + page_size]
        ]


def write_parquet(uri: str, table: pa.Table, **kwargs) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue(), **kwargs)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or only those of ``columns`` it has."""
    data = io.BytesIO(read_bytes(uri))
    if columns is None:
        return pq.read_table(data)
    pf = pq.ParquetFile(data)
    return pf.read(columns=[c for c in columns if c in pf.schema_arrow.names])


def read_parquet_dir(uri: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """Concatenate every ``*.parquet`` directly under ``uri``; ``None`` if there is none."""
    tables = [read_parquet(f) for f in list_files(uri, ".parquet")]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


# ----------------------------------------------------------------------------------------------------
# Listing metadata and content hashes (what refresh compares instead of reading every image).


@dataclass(frozen=True, slots=True)
class FileVersion:
    """What a listing says about one file, without reading it: its size and a version token that
    changes whenever the file is rewritten (S3: the ETag; local: ``<inode>-<mtime in ns>``: an atomic
    replace gets a new inode, an in-place write a new mtime)."""

    size: int
    version: str


def list_versions(directory: str) -> dict[str, FileVersion] | None:
    """``file name -> FileVersion`` for the files directly under ``directory`` (local or ``s3://``).

    One listing per directory: on S3 one ``ListObjectsV2`` request per 1,000 keys (never one HEAD
    per file, and never fsspec's listing cache, which would hide a change made since the last
    listing in this process); locally one ``scandir``. A missing directory gives ``{}``; ``None``
    means the directory could not be listed (e.g. a bucket policy that allows ``GetObject`` but not
    ``ListBucket``): callers then fall back to reading the files.
    """
    fs, path = filesystem(directory)
    try:
        if isinstance(fs, LocalFileSystem):
            return _list_local(path)
        return with_retries(lambda: _list_s3(fs, path), what=f"list {directory}")
    except (OSError, ValueError) as exc:
        logger.warning("cannot list %s (%s); its files will be compared by content", directory, exc)
        return None


def _list_local(path: str) -> dict[str, FileVersion]:
    out: dict[str, FileVersion] = {}
    try:
        entries = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with entries:
        for entry in entries:
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except FileNotFoundError:  # removed while listing
                continue
            out[entry.name] = FileVersion(st.st_size, f"{st.st_ino}-{st.st_mtime_ns}")
    return out


def _list_s3(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, FileVersion]:
    bucket, _, prefix = path.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    out: dict[str, FileVersion] = {}
    kwargs = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    while True:
        page = fs.call_s3("list_objects_v2", **kwargs)
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = FileVersion(int(obj["Size"]), obj["ETag"].strip('"'))
        if not page.get("IsTruncated"):
            return out
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def sha256_file(uri: str, *, policy: RetryPolicy = DEFAULT_RETRY, block: int = 2**20) -> tuple[str, int]:
    """``(hex SHA-256 of the file's bytes, bytes read)``, read in ``block``-sized pieces."""
    fs, path = filesystem(uri)

    def _hash() -> tuple[str, int]:
        fs.invalidate_cache(path)  # the size must come from the object, not from an earlier listing
        digest, n = hashlib.sha256(), 0
        with fs.open(path, "rb") as f:
            while chunk := f.read(block):
                digest.update(chunk)
                n += len(chunk)
        return digest.hexdigest(), n

    try:
        return with_retries(_hash, what=f"read {uri}", policy=policy)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri} does not exist") from None
