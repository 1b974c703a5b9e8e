"""Where a feature dataset's files are and how they are reached: the names and the
Parquet schema of the format (described in :mod:`satn.store`), and the few
``pyarrow.fs`` operations the builder and the reader share (local disk, ``file://``,
``s3://``, ``gs://`` alike)."""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)

# Bump when the features computed for the same config change (a bug fix, a new
# default inside the extractor): it is part of every dataset key.
FEATURE_VERSION = 1

MANIFEST = "manifest.json"
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
DATA = "data"

META_COLUMNS = (
    "id",
    "path",
    "speaker",
    "session",
    "gender",
    "label",
    "raw_label",
    "transcript",
    "improvised",
    "corpus",
)



class DatasetError(FileNotFoundError):
    """A feature dataset that is missing or incomplete."""



def schema(width: int) -> pa.Schema:
    """The Parquet schema; ``width`` = prod(frame_shape) values per feature row."""
    types = {name: pa.string() for name in META_COLUMNS} | {"improvised": pa.bool_()}
    return pa.schema(
        [(name, types[name]) for name in META_COLUMNS]
        + [("n_frames", pa.int32()), ("features", pa.list_(pa.list_(pa.float32(), width)))]
    )


def resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, uri.rstrip("/")
    if "://" not in uri:  # a plain local path; from_uri wants it absolute
        uri = os.path.abspath(os.path.expanduser(uri))
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def join_uri(base: str, name: str, filesystem: pafs.FileSystem | None) -> str:
    if "://" in base or filesystem is not None:
        return base.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def info(fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    return fs.get_file_info(path)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return info(fs, path).type != pafs.FileType.NotFound


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return info(fs, path).type == pafs.FileType.Directory


def delete(fs: pafs.FileSystem, path: str) -> None:
    kind = info(fs, path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode()


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write to a hidden temporary name, then rename: readers never see half a file."""
    head, tail = posixpath.split(path)
    tmp = join(head, f".tmp-{tail}")
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def walk_files(fs: pafs.FileSystem, root: str) -> Iterator[str]:
    selector = pafs.FileSelector(root, recursive=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            yield info.path


def move_dir(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Rename a directory; where the store cannot (object storage), copy file by file.

    The copy puts manifest.json last, so ``dst`` looks complete only when it is.
    """
    try:
        fs.move(src, dst)
        return
    except (NotImplementedError, OSError) as e:
        log.debug("features: directory rename failed (%s); copying file by file", e)
    files = sorted(walk_files(fs, src), key=lambda p: posixpath.basename(p) == MANIFEST)
    for path in files:
        target = join(dst, posixpath.relpath(path, src))
        fs.create_dir(posixpath.dirname(target), recursive=True)
        fs.copy_file(path, target)
    fs.delete_dir(src)
