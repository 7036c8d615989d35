"""What an unfinished run's `predictions/` already holds, for `--resume`.

A resumed run evaluates only the (image, model version) pairs that have no rows. A pair's
rows (one per variant of the model) are written together, but an interruption can cut a
Parquet file short, or fall between two files of one block. So before the pairs are
counted, a file that cannot be read is removed, and so are the rows of a pair whose
variants are not all there (the file is written again without them): such a pair is
evaluated again, and the finished run has exactly one row per (image, model variant).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segray import storage
from segray.results.read import read_rows

log = logging.getLogger(__name__)

PAIR_ROW_COLUMNS = ["image_id", "model", "model_version"]


def pending(table: pd.DataFrame, versions: list[str], done: dict[str, set[str]]) -> list[pd.DataFrame]:
    """Per model version, the manifest rows whose (image, version) pair is not in `done`
    (version -> image ids with rows)."""
    return [table[~table["image_id"].isin(done.get(version, set()))] for version in versions]


def done_images(predictions: str, variants: dict[str, list[str]]) -> dict[str, set[str]]:
    """Per model version of `variants` (version -> its variants' names), the image ids whose
    rows are all in `predictions`, after removing what an interruption left unfinished."""
    files = readable_files(predictions)
    rows = read_rows(files, PAIR_ROW_COLUMNS, positions=True)
    rows = rows.astype({column: str for column in PAIR_ROW_COLUMNS})
    wanted = {version: set(names) for version, names in variants.items()}
    found = rows.groupby(["model_version", "image_id"])["model"].agg(set)
    incomplete = {pair for pair, names in found.items() if pair[0] in wanted and names != wanted[pair[0]]}
    if incomplete:
        drop_pairs(rows, incomplete)
    done: dict[str, set[str]] = {version: set() for version in wanted}
    for (version, image_id) in found.index:
        if version in done and (version, image_id) not in incomplete:
            done[version].add(image_id)
    return done


def readable_files(predictions: str) -> list[str]:
    """The Parquet files of `predictions` whose footer reads; the others (cut short: no
    footer) are removed. A file that cannot be read at all (the storage failing) raises
    its OSError: it may be whole."""
    uris = [storage.join(predictions, name) for name in storage.list_files(predictions) if name.endswith(".parquet")]
    readable = []
    for uri in uris:
        fs, path = storage.resolve(uri)
        try:
            with fs.open_input_file(path) as handle:
                pq.read_metadata(handle)
            readable.append(uri)
        except pa.ArrowInvalid as error:  # no footer: cut short
            log.warning("removing %s, which an interruption cut short (%s): its pairs are evaluated again", uri, error)
            storage.delete_file(uri)
    return readable


def drop_pairs(rows: pd.DataFrame, pairs: set[tuple[str, str]]) -> None:
    """Rewrite each file holding rows of `pairs` ((model version, image id)) without them."""
    keys = list(zip(rows["model_version"], rows["image_id"]))
    hit = rows[[key in pairs for key in keys]]
    files = rows.attrs["files"]
    for file_number, group in hit.groupby("_file"):
        uri = files[int(file_number)]
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
        keep = np.ones(table.num_rows, bool)
        keep[group["_row"].to_numpy()] = False
        log.warning("rewriting %s without %d rows of pairs an interruption left incomplete", uri, len(group))
        with fs.open_output_stream(path) as handle:
            pq.write_table(table.filter(pa.array(keep)), handle)
