"""The stream's last stage: the rows as Parquet files, timed on the run's timeline."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

from segray.timeline import node_id


class RowsDatasink(BlockBasedFileDatasink):
    """Ray Data's block-per-file Parquet writer, each file reported to the timeline as a
    batch of the `write` stage (Ray's own `write_parquet` has no hook for that)."""

    def __init__(self, path: str, filesystem, min_rows_per_file: int, timeline=None):
        super().__init__(path, filesystem=filesystem, min_rows_per_file=min_rows_per_file, file_format="parquet")
        self.timeline = timeline

    def write_block_to_file(self, block: BlockAccessor, file) -> None:
        start = time.time()
        table = block.to_arrow()
        pq.write_table(table, file)
        if self.timeline is not None:
            self.timeline.record.remote("write", node_id(), table.num_rows, table.num_rows, start, time.time())
