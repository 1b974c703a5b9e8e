"""Reading a complete feature dataset: metadata as a DataFrame, features as read-only
views of each shard's Arrow buffer."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from satn.store.layout import (
    DATA,
    MANIFEST,
    META_COLUMNS,
    DatasetError,
    exists,
    is_dir,
    join,
    join_uri,
    read_json,
    resolve,
)


class FeatureDataset:
    """A complete feature dataset, read through ``pyarrow.fs``.

    ``meta`` holds one row per utterance (index 0..n-1, no features);
    ``features(i)`` and ``arrays(rows)`` give float32 arrays of shape
    (n_frames, *frame_shape). Feature arrays are read-only views of the
    shard's Arrow buffer; each shard is read once, on first use, and kept.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, uri: str, manifest: dict[str, Any]):
        self.fs, self.path, self.uri, self.manifest = fs, path, uri, manifest
        self.frame_shape: tuple[int, ...] = tuple(manifest["frame_shape"])
        self.data_uri = join_uri(uri, DATA, None)
        rows = np.array([s["rows"] for s in manifest["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(rows)])  # (n_shards + 1,)
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._meta: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"FeatureDataset({self.uri!r}, rows={len(self)}, frame_shape={self.frame_shape})"

    @property
    def meta(self) -> pd.DataFrame:
        """Metadata columns and ``n_frames``, one row per utterance, index 0..n-1.

        Text and ``improvised`` columns are object columns with None for missing
        values, as in the :class:`Utterance`; ``n_frames`` is int32.
        """
        if self._meta is None:
            cols = [*META_COLUMNS, "n_frames"]
            table = pa.concat_tables(self._read(s["file"], cols) for s in self.manifest["shards"])
            # object columns holding None where the Utterance had None (pandas' str dtype
            # would turn it into NaN), so `row.transcript is None` still reads right
            self._meta = pd.DataFrame(
                {
                    c: table.column(c).to_numpy()
                    if c == "n_frames"
                    else pd.Series(table.column(c).to_numpy(zero_copy_only=False), dtype=object)
                    for c in cols
                }
            )
        return self._meta

    def features(self, i: int) -> np.ndarray:
        """Features of row ``i``: (n_frames, *frame_shape) float32, read-only."""
        return self.arrays([i])[0]

    def arrays(self, rows: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
        """Features of ``rows`` (default: all), in that order: list of (n_frames, *frame_shape)."""
        n = len(self)
        idx = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for a dataset of {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        out = []
        for i, k in zip(idx.tolist(), shard_of.tolist(), strict=True):
            values, offsets = self._shard(k)
            j = i - int(self._starts[k])
            out.append(values[offsets[j] : offsets[j + 1]])
        return out

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``k``'s features as (total_frames, *frame_shape) values and (rows + 1,) offsets."""
        if k not in self._shards:
            col = self._read(self.manifest["shards"][k]["file"], ["features"]).column(0)
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            offsets = arr.offsets.to_numpy()
            offsets = (offsets - offsets[0]).astype(np.int64)
            # list -> fixed_size_list -> float32: flatten() honours slices, .values would not
            flat = arr.flatten().flatten().to_numpy(zero_copy_only=False)
            self._shards[k] = (flat.reshape(-1, *self.frame_shape), offsets)
        return self._shards[k]

    def _read(self, rel: str, columns: list[str]) -> pa.Table:
        return pq.read_table(join(self.path, rel), columns=columns, filesystem=self.fs)


def open_dataset(uri: str, filesystem: pafs.FileSystem | None = None) -> FeatureDataset:
    """Open the complete dataset at ``uri`` (a path or URI as returned in DatasetInfo.uri).

    Raises:
        DatasetError: the directory does not exist, or has no manifest.json (an
            interrupted or still-running build).
    """
    fs, path = resolve(uri, filesystem)
    manifest_path = join(path, MANIFEST)
    head, name = posixpath.split(path)
    partial = join(head, f".partial-{name}")
    if not is_dir(fs, path) and not is_dir(fs, partial):
        raise DatasetError(f"no feature dataset at {uri}: the directory does not exist")
    if not exists(fs, manifest_path):
        where = f" (an interrupted build left {partial})" if is_dir(fs, partial) else ""
        raise DatasetError(
            f"no {MANIFEST}: the dataset at {uri} is incomplete{where}; rerun `satn features`"
        )
    manifest = read_json(fs, manifest_path)
    if manifest.get("format") != "satn-features":
        raise DatasetError(f"{uri}/{MANIFEST} is not a satn feature manifest")
    missing = [s["file"] for s in manifest["shards"] if not exists(fs, join(path, s["file"]))]
    if missing:
        raise DatasetError(
            f"the dataset at {uri} lacks {len(missing)} shard(s) its manifest lists "
            f"(first: {missing[0]}); delete it and rerun `satn features`"
        )
    return FeatureDataset(fs, path, uri, manifest)
