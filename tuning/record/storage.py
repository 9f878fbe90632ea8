"""Where a search lives: a local folder (one machine, or a mount every node shares) or a
URI that every node can reach (``s3://bucket/prefix``, ``gs://...``, any filesystem
pyarrow understands). Everything the search writes and reads (its plan, Tune's
experiment state and trial checkpoints, DDP checkpoints, the report) goes through the
``pyarrow.fs`` filesystem of a ``Storage``.

S3-compatible stores (MinIO, Ceph, moto, ...) take ``--storage-endpoint URL`` or the
standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; credentials and region come from
the standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``), which the search passes on to every node.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from spmi.atomic import write_atomic

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_REGION = "us-east-1"


def is_uri(location: str) -> bool:
    """Whether ``location`` names a filesystem by scheme (``file://`` counts as local)."""
    return "://" in location and not location.startswith("file://")


def _endpoint_from_env() -> str | None:
    for name in ENDPOINT_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


@dataclass(frozen=True)
class Storage:
    """A storage root: ``root`` is an absolute local path or a URI without a trailing '/'."""

    root: str
    endpoint: str | None = None
    _fs: list = field(default_factory=list, compare=False, repr=False)  # lazily built (frozen dataclass)

    @property
    def local(self) -> bool:
        return not is_uri(self.root)

    @property
    def scheme(self) -> str:
        return "" if self.local else self.root.split("://", 1)[0]

    def uri(self, *parts: str) -> str:
        """The user-facing location of ``parts`` under the root (a path or a URI)."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    # ------------------------------------------------------------ pyarrow

    @property
    def filesystem(self) -> pafs.FileSystem:
        if not self._fs:
            self._fs.append(self._make_fs())
        return self._fs[0][0]

    def path(self, *parts: str) -> str:
        """The filesystem path (no scheme) of ``parts`` under the root."""
        if not self._fs:
            self._fs.append(self._make_fs())
        base = self._fs[0][1]
        return posixpath.join(base, *[p.strip("/") for p in parts if p]) if parts else base

    def _make_fs(self) -> tuple[pafs.FileSystem, str]:
        if self.local:
            return pafs.LocalFileSystem(), self.root
        if self.scheme == "s3":
            kwargs: dict[str, Any] = {
                "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
                "connect_timeout": 10.0}
            if self.endpoint:
                parsed = urlparse(self.endpoint)
                kwargs["endpoint_override"] = self.endpoint
                kwargs["scheme"] = parsed.scheme or "https"
            return pafs.S3FileSystem(**kwargs), self.root[len("s3://"):]
        fs, path = pafs.FileSystem.from_uri(self.root)
        return fs, path

    def ray_location(self, *parts: str) -> tuple[str, pafs.FileSystem | None]:
        """``(path, filesystem)`` of ``parts`` for Ray (RunConfig's storage_path and
        storage_filesystem, Tuner.restore, ExperimentAnalysis): a local folder as a plain
        path (Ray's default handling), a URI as its filesystem path plus filesystem."""
        if self.local:
            return self.uri(*parts), None
        return self.path(*parts), self.filesystem

    # ------------------------------------------------------------ files

    def info(self, *parts: str) -> pafs.FileInfo:
        return self.filesystem.get_file_info(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.info(*parts).type != pafs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        return self.info(*parts).type == pafs.FileType.File

    def read_bytes(self, *parts: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file whole: locally through a temporary file and a rename (never half
        written); an object store's PUT is atomic by itself."""
        target = self.path(*parts)
        fs = self.filesystem
        fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.local:
            write_atomic(target, lambda f: f.write(data))
            return
        with fs.open_output_stream(target) as f:
            f.write(data)

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode(), *parts)

    def listdir(self, *parts: str) -> list[pafs.FileInfo]:
        """Entries right under ``parts`` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True, recursive=False)
        return self.filesystem.get_file_info(selector)

    def upload_dir(self, local_dir: str | Path, *parts: str) -> None:
        """Copy the files of a local folder to ``parts`` (replacing files of the same name)."""
        dest = self.path(*parts)
        self.filesystem.create_dir(dest, recursive=True)
        pafs.copy_files(str(local_dir), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)

    @contextlib.contextmanager
    def local_copy(self, *parts: str) -> Iterator[Path]:
        """A local path of the file ``parts``: itself when local, else a temporary copy."""
        if self.local:
            yield Path(self.path(*parts))
            return
        with tempfile.TemporaryDirectory(prefix="spmi-") as folder:
            copy = Path(folder) / posixpath.basename(self.path(*parts))
            copy.write_bytes(self.read_bytes(*parts))
            yield copy

    def check(self) -> None:
        """ValueError (one line) when the root cannot be used: an unreachable store, a
        missing bucket, a local root that is a file."""
        where = self.root + (f" (endpoint {self.endpoint})" if self.endpoint else "")
        try:
            fs = self.filesystem
            if self.scheme == "s3":
                bucket = self.path().split("/", 1)[0]
                if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise ValueError(f"--storage-path {self.root}: bucket {bucket!r} not found at "
                                     f"{self.endpoint or 'AWS'}; create it first")
            info = fs.get_file_info(self.path())
        except ValueError:
            raise
        except Exception as err:  # pyarrow raises OSError subclasses with long messages
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"--storage-path {where} is not usable: {first}") from None
        if info.type == pafs.FileType.File:
            raise ValueError(f"--storage-path {self.root} is a file, not a folder")


def open_storage(location: str, endpoint: str | None = None) -> Storage:
    """The Storage of ``--storage-path`` (relative local paths resolved now) and
    ``--storage-endpoint`` (else the AWS endpoint environment variables, for s3://)."""
    location = location.strip()
    if location.startswith("file://"):
        location = urlparse(location).path
    if not is_uri(location):
        if endpoint:
            raise ValueError(f"--storage-endpoint is for s3:// storage; --storage-path {location} is a local folder")
        return Storage(str(Path(location).expanduser().resolve()))
    scheme = location.split("://", 1)[0]
    if scheme == "s3":
        endpoint = endpoint or _endpoint_from_env()
    elif endpoint:
        raise ValueError(f"--storage-endpoint is for s3:// storage, not {scheme}://")
    root = location.rstrip("/")
    if root.endswith("://"):
        raise ValueError(f"--storage-path {location}: name a bucket, e.g. {scheme}://my-bucket/hpo")
    if endpoint and not urlparse(endpoint).scheme:
        raise ValueError(f"--storage-endpoint {endpoint}: give a URL such as http://127.0.0.1:9000")
    return Storage(root, endpoint)
