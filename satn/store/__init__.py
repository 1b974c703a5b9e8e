"""The feature dataset: Parquet shards + manifest, on a local disk or object storage.

Layout of one dataset, ``{out}/{corpus_tag}-{kind}-{key}/``::

    manifest.json        written last: the dataset is complete iff it exists
    report.json          every input that was left out: where, reason
    report.csv           the same, for a spreadsheet
    data/part-00000.parquet, data/part-00001.parquet, ...

One Parquet row per utterance: the :class:`~satn.corpora.base.Utterance`
metadata, ``n_frames`` (int32) and ``features``, a
``list<fixed_size_list<float32, D>>`` of ``n_frames`` rows of
D = prod(frame_shape) values ((120,) for log-mel, (32, 129) flattened for
spectrogram segments). ``data/`` is plain Parquet: ``pd.read_parquet(uri +
"/data")`` and ``pyarrow.dataset.dataset(uri + "/data")`` read it without satn.

The key hashes the corpus listing (every utterance field plus each audio
file's size and mtime), the feature config and :data:`FEATURE_VERSION`, so a
rerun with the same inputs returns at once and any change writes a new
dataset. A build works in ``{out}/.partial-{name}/``: each shard is written to
a hidden temporary name and renamed, then its progress note; a rerun after an
interruption keeps the finished shards (shards are deterministic: utterances
sorted by id, ``shard_size`` per shard) and does the rest. Within a shard,
audio is read one shard ahead in a thread and featurised in batches of similar
length; rows keep id order. Two builds of the same dataset must not run at once.

All I/O goes through ``pyarrow.fs``: ``out`` may be a local path, a
``file://`` URI, or an ``s3://`` / ``gs://`` URI that cluster workers share.

The package: :mod:`satn.store.build` (audio -> dataset), :mod:`satn.store.read`
(:class:`FeatureDataset`), :mod:`satn.store.layout` (file names, schema, the
``pyarrow.fs`` operations both share).
"""

from satn.store.build import (
    DatasetInfo,
    Extractor,
    StoreError,
    build_dataset,
    dataset_key,
    dataset_name,
)
from satn.store.layout import (
    DATA,
    FEATURE_VERSION,
    MANIFEST,
    META_COLUMNS,
    REPORT_CSV,
    REPORT_JSON,
    DatasetError,
    schema,
)
from satn.store.read import FeatureDataset, open_dataset

__all__ = ["DATA", "FEATURE_VERSION", "MANIFEST", "META_COLUMNS",
           "REPORT_CSV", "REPORT_JSON", "DatasetError", "DatasetInfo", "Extractor",
           "FeatureDataset", "StoreError", "build_dataset", "dataset_key", "dataset_name",
           "open_dataset", "schema"]
