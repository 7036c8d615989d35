"""The one reader of prediction rows, for a run's `predictions/` folder and for the
re-evaluation's results table alike (pyarrow, in the driver: measured here, aggregating
256 rows through Ray Data took 18-35 s, through pyarrow 0.01 s).

Results table layout under RESULTS (a local path or `s3://bucket/prefix`):

  run=<run_id>/*.parquet        rows of the pairs that run computed
  run=<run_id>/_COMMITTED.json  written last: the run's counts; a partition without it is ignored
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from segray import storage
from segray.schema import CATEGORICAL_COLUMNS, SCORE_COLUMNS

PARTITION_PREFIX = "run="
COMMIT_FILE = "_COMMITTED.json"


def partition_uri(results: str, run_id: str) -> str:
    return storage.join(results, PARTITION_PREFIX + run_id)


def partitions(results: str) -> tuple[list[str], list[str]]:
    """(committed, uncommitted) run ids in a results table, each sorted."""
    committed, uncommitted = [], []
    for name in storage.list_dirs(results):
        if name.startswith(PARTITION_PREFIX):
            run_id = name.removeprefix(PARTITION_PREFIX)
            done = storage.exists(storage.join(results, name, COMMIT_FILE))
            (committed if done else uncommitted).append(run_id)
    return committed, uncommitted


def committed_files(results: str) -> list[str]:
    """The Parquet files of every committed partition of a results table."""
    committed, _ = partitions(results)
    files = []
    for run_id in committed:
        folder = partition_uri(results, run_id)
        files += [storage.join(folder, name) for name in storage.list_files(folder) if name.endswith(".parquet")]
    return files


def read_rows(source: str | list[str], columns: list[str] = SCORE_COLUMNS, positions: bool = False) -> pd.DataFrame:
    """`columns` of the rows in `source`: a folder of Parquet files (a run's predictions/;
    a missing folder has no rows) or a list of Parquet file URIs. Masks are never read
    unless asked for. Low-cardinality strings come back as categoricals (categories
    sorted, so sorting by one sorts by name); a column that
    a run from before it existed lacks comes back as NaN.

    With `positions`, each row also gets `_file`/`_row` (its file, as an index into
    `rows.attrs["files"]`, and its row in that file), so that `read_masks` can fetch a
    few masks later."""
    fs, paths, uris = _files(source)
    if not paths:
        return _with_columns(pd.DataFrame(columns=columns), columns, positions)
    dataset = pads.dataset(paths, filesystem=fs, format="parquet")
    present = [c for c in columns if c in dataset.schema.names]
    fragments = list(dataset.get_fragments())
    if positions:
        tables = []
        for number, fragment in enumerate(fragments):
            table = fragment.to_table(columns=present, schema=dataset.schema)
            table = table.append_column("_file", pa.array(np.full(len(table), number, np.int32)))
            tables.append(table.append_column("_row", pa.array(np.arange(len(table), dtype=np.int64))))
        table = pa.concat_tables(tables)
    else:
        table = dataset.to_table(columns=present)
    # one conversion for all files: categoricals share one dictionary (~3x faster than per file)
    rows = table.to_pandas(categories=[c for c in present if c in CATEGORICAL_COLUMNS])
    rows = _with_columns(rows, columns, positions)
    # strings only: pandas deep-copies attrs into every derived frame
    rows.attrs["files"] = [uris[f.path] for f in fragments]
    return rows


def _files(source: str | list[str]) -> tuple[Any, list[str], dict[str, str]]:
    """The filesystem, the Parquet file paths in it, and each path's URI."""
    if isinstance(source, str):
        fs, root = storage.resolve(source)
        if not storage.exists(source):
            return fs, [], {}
        selector = pads.dataset(root, filesystem=fs, format="parquet")  # skips names starting with "." or "_"
        paths = list(selector.files)
        return fs, paths, {p: storage.join(source, posixpath.relpath(p, root)) for p in paths}
    if not source:
        return None, [], {}
    fs = storage.resolve(source[0])[0]
    paths = [storage.resolve(uri)[1] for uri in source]
    return fs, paths, dict(zip(paths, source))


def _with_columns(rows: pd.DataFrame, columns: list[str], positions: bool) -> pd.DataFrame:
    for column in columns:
        if column not in rows:
            rows[column] = np.nan
        if column in CATEGORICAL_COLUMNS:
            # Categories in sorted order, whatever order the files met them in: sorting rows
            # by a categorical column sorts by its categories' order.
            values = rows[column].astype("category")
            rows[column] = values.cat.reorder_categories(sorted(values.cat.categories))
    if positions:
        for column in ("_file", "_row"):
            if column not in rows:
                rows[column] = pd.Series(dtype=np.int64)
    return rows


def read_masks(rows: pd.DataFrame, wanted: pd.DataFrame) -> list[np.ndarray | None]:
    """The predicted masks (bool) of the `wanted` rows (a subset of `read_rows(...,
    positions=True)`), reading only the row groups that hold them. None for a row
    without a mask (a no-detection)."""
    import pyarrow.parquet as pq

    from segray.data.decode import decode_mask

    files = rows.attrs.get("files", [])
    out: list[np.ndarray | None] = [None] * len(wanted)
    for file_number, group in wanted.reset_index(drop=True).groupby("_file"):
        fs, path = storage.resolve(files[int(file_number)])
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
            cache: dict[int, Any] = {}
            for position, row in zip(group.index, group["_row"]):
                g = int(np.searchsorted(starts, row, side="right") - 1)
                if g not in cache:
                    cache[g] = parquet.read_row_group(g, columns=["mask_png"]).column("mask_png")
                png = cache[g][int(row - starts[g])].as_py()
                out[position] = decode_mask(png) if png else None
    return out
