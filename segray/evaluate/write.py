"""The stream's last stage: the rows as Parquet files, timed on the run's timeline."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

from segray import storage
from segray.timeline import node_id


class RowsDatasink(BlockBasedFileDatasink):
    """Ray Data's block-per-file Parquet writer into the folder `uri`, each file reported to
    the timeline as a batch of the `write` stage (Ray's own `write_parquet` has no hook for
    that). The write tasks open files on the filesystem `storage.resolve` makes in their
    own process: a pickled pyarrow S3FileSystem (pyarrow 26) loses its retry strategy, so
    the driver's would arrive trying each request 3 times, not `storage.S3_ATTEMPTS`. Ray
    retries each file's whole write on the errors of `DataContext.retried_io_errors`."""

    def __init__(self, uri: str, min_rows_per_file: int, timeline=None):
        fs, path = storage.resolve(uri)
        super().__init__(path, filesystem=fs, min_rows_per_file=min_rows_per_file, file_format="parquet")
        self.uri, self.timeline = uri, timeline

    def open_output_stream(self, path: str):
        return storage.resolve(self.uri)[0].open_output_stream(path, **self.open_stream_args)

    def write_block_to_file(self, block: BlockAccessor, file) -> None:
        start = time.time()
        table = block.to_arrow()
        pq.write_table(table, file)
        if self.timeline is not None:
            self.timeline.record.remote("write", node_id(), table.num_rows, table.num_rows, start, time.time())
