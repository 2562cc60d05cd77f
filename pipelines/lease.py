"""The refresh lease: at most one refresh writes an output store at a time.

The lease is one small JSON object, ``OUT/lease.json`` (``owner``, ``acquired_at``, ``expires_at``,
unix seconds). Every change to it is a compare-and-swap on the version of the object the writer last
saw, so two processes can never both believe they hold it:

- **take**: create the object only if it does not exist. S3: ``PutObject`` with
  ``If-None-Match: *`` (the second of two racing creates gets ``412 Precondition Failed``). Local:
  the lease is written to a private temporary file and hard-linked to ``lease.json``; ``link`` fails
  if the name exists, so the create is atomic like ``O_EXCL`` and a reader never sees a half-written
  lease.
- **take over an expired lease**: only conditional on the version that was read and found expired
  (S3: ``PutObject`` with ``If-Match: <ETag>``; local: replace under an exclusive ``flock`` of
  ``OUT/.lease.lock`` after re-checking the file's inode, mtime and size). Of several processes
  that find the same expired lease, exactly one replaces it; the others see a new version and are
  refused.
- **renew** (the runner renews at every flush): conditional on the version this holder wrote
  last. If someone took the lease over meanwhile (this holder stalled past ``expires_at``), the
  renewal fails and the run stops with :class:`LeaseHeld` instead of writing on.
- **release**: delete, conditional on the version this holder wrote last (S3: ``DeleteObject``
  with ``If-Match``).

Clocks: ``expires_at`` is the holder's clock; the expiry check is the reader's. Hosts whose clocks
differ by a sizeable part of the TTL (10 minutes for refresh) can take a live lease early.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pipelines import storage

logger = logging.getLogger(__name__)

# Rounds of take / read / take over before giving up (each lost round means another process changed
# the lease in between, which happens only under heavy contention).
ATTEMPTS = 5


class LeaseHeld(RuntimeError):
    """Another process holds the store's lease, or took it over from this one."""


@dataclass
class Lease:
    """This process's hold on a lease object: ``token`` is the version it wrote last."""

    uri: str
    owner: str
    token: str


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(uri: str, ttl_s: float, *, owner: str | None = None) -> Lease:
    """Take the lease at ``uri`` for ``ttl_s`` seconds, or raise :class:`LeaseHeld`."""
    owner = owner or default_owner()
    obj = _object(uri)
    for _ in range(ATTEMPTS):
        token = obj.create(_payload(owner, ttl_s))
        if token is not None:
            return Lease(uri, owner, token)
        current = obj.read()
        if current is None:  # released between our create and our read: try again
            continue
        record, token = current
        if record.get("owner") == owner:  # our own create, answered after a retried request
            return Lease(uri, owner, token)
        expires_at = float(record.get("expires_at") or 0.0)
        if expires_at > time.time():
            raise LeaseHeld(
                f"another refresh holds the lease on {storage.parent(uri)} (owner {record.get('owner')}, "
                f"expires in {expires_at - time.time():.0f} s); wait for it to finish, or delete {uri} if "
                "that process is gone"
            )
        token = obj.replace(_payload(owner, ttl_s), token)
        if token is not None:
            logger.warning(
                "took over the expired lease on %s from %s (expired %.0f s ago)",
                storage.parent(uri),
                record.get("owner"),
                time.time() - expires_at,
            )
            return Lease(uri, owner, token)
    raise LeaseHeld(f"the lease {uri} changed hands {ATTEMPTS} times while being taken; try again")


def renew(lease: Lease, ttl_s: float) -> None:
    """Extend ``lease`` to ``ttl_s`` seconds from now, or raise :class:`LeaseHeld` if it was lost."""
    obj = _object(lease.uri)
    token = obj.replace(_payload(lease.owner, ttl_s), lease.token)
    if token is None:
        current = obj.read()
        holder = current[0].get("owner") if current else None
        raise LeaseHeld(
            f"the lease on {storage.parent(lease.uri)} was taken over by {holder}"
            if holder
            else f"the lease on {storage.parent(lease.uri)} was removed while this run held it"
        )
    lease.token = token


def release(lease: Lease) -> None:
    """Delete the lease if it is still ours (a lease taken over by another process is left alone)."""
    if not _object(lease.uri).delete(lease.token):
        logger.warning("the lease %s was no longer held by %s; left as it is", lease.uri, lease.owner)


def read(uri: str) -> dict[str, Any] | None:
    """The current lease record, or ``None`` if there is none."""
    current = _object(uri).read()
    return current[0] if current else None


def _payload(owner: str, ttl_s: float) -> bytes:
    now = time.time()
    return json.dumps({"owner": owner, "acquired_at": now, "expires_at": now + ttl_s}).encode()


def _decode(data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    # An unreadable lease counts as expired: it can only be taken over by compare-and-swap.
    return record if isinstance(record, dict) else {"owner": "<unreadable lease>", "expires_at": 0}


def _object(uri: str) -> _S3Object | _LocalObject:
    return _S3Object(uri) if storage.is_remote(uri) else _LocalObject(uri)


# ----------------------------------------------------------------------------------------------------
# Backends: create-if-absent, read with version, replace-if-version, delete-if-version.


class _S3Object:
    """Conditional requests on one S3 object (``If-None-Match`` / ``If-Match``)."""

    def __init__(self, uri: str):
        self.fs, path = storage.filesystem(uri)
        self.bucket, _, self.key = path.partition("/")

    def _call(self, method: str, **kwargs) -> dict[str, Any] | None:
        """The response, or ``None`` when a condition failed (412), the object is gone (404), or a
        concurrent conditional write won (409 ``ConditionalRequestConflict``)."""
        from fsspec.asyn import sync

        async def call() -> dict[str, Any]:
            response = await self.fs._call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs)
            if "Body" in response:  # read in the same request, so body and ETag are one version
                try:
                    response["Data"] = await response["Body"].read()
                finally:
                    response["Body"].close()
            return response

        try:
            return sync(self.fs.loop, call)
        except OSError as exc:
            status = _http_status(exc)
            if status in (404, 409, 412) or isinstance(exc, FileNotFoundError | FileExistsError):
                return None
            raise

    def create(self, data: bytes) -> str | None:
        response = self._call("put_object", Body=data, IfNoneMatch="*")
        return response["ETag"] if response else None

    def read(self) -> tuple[dict[str, Any], str] | None:
        response = self._call("get_object")
        return (_decode(response["Data"]), response["ETag"]) if response else None

    def replace(self, data: bytes, token: str) -> str | None:
        response = self._call("put_object", Body=data, IfMatch=token)
        return response["ETag"] if response else None

    def delete(self, token: str) -> bool:
        return self._call("delete_object", IfMatch=token) is not None


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of the botocore error behind an s3fs exception, if any."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        exc = exc.__cause__ or exc.__context__
    return None


class _LocalObject:
    """The same operations on a local file: ``link`` creates atomically, an exclusive ``flock`` on a
    sibling lock file makes compare-and-replace and compare-and-delete atomic."""

    def __init__(self, uri: str):
        self.path = os.path.abspath(uri.removeprefix("file://"))
        self.directory = os.path.dirname(self.path)

    @staticmethod
    def _token(st: os.stat_result) -> str:
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def _write_temp(self, data: bytes) -> str:
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, f".lease.{uuid.uuid4().hex}.tmp")
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def create(self, data: bytes) -> str | None:
        tmp = self._write_temp(data)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        return self._token(os.stat(self.path))

    def read(self) -> tuple[dict[str, Any], str] | None:
        try:
            with open(self.path, "rb") as f:
                return _decode(f.read()), self._token(os.fstat(f.fileno()))
        except FileNotFoundError:
            return None

    def _current_token(self) -> str | None:
        try:
            return self._token(os.stat(self.path))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, ".lease.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def replace(self, data: bytes, token: str) -> str | None:
        tmp = self._write_temp(data)
        try:
            with self._locked():
                if self._current_token() != token:
                    return None
                os.replace(tmp, self.path)
                return self._current_token()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, token: str) -> bool:
        with self._locked():
            if self._current_token() != token:
                return False
            os.unlink(self.path)
            return True
