"""The prediction rows: their schema and every column list, in one place.

One row per (run, image, model variant), written by the evaluation stage
(`segray.evaluate`) and read by everything downstream through `segray.results.read`.
It sits at the bottom of the import layers: the stage that writes rows and the modules
that read them both import it, and it imports nothing of segray.
"""

from __future__ import annotations

import pyarrow as pa

# Row statuses.
OK = "ok"
NO_DETECTION = "no_detection"  # LangSAM found no box: scored as an empty prediction
ERROR = "error"  # the row's `error` says what and where; its metrics are null

ROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("model", pa.string()),  # the model variant, e.g. "unet" or "langsam/sam_score"
        ("iou", pa.float64()),  # null when status is "error"; this and the metrics below: segray.metrics
        ("dice", pa.float64()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("boundary_iou", pa.float64()),
        ("pred_area", pa.int64()),  # predicted pixels, at the ground truth's resolution
        ("true_area", pa.int64()),  # ground-truth pixels
        ("intersection", pa.int64()),  # pixels in both (pooled IoU = sum of these / sum of unions)
        ("union", pa.int64()),
        ("empty", pa.bool_()),  # the ground truth has no pixel
        ("status", pa.string()),  # OK | NO_DETECTION | ERROR
        ("error", pa.string()),
        ("latency_ms", pa.float64()),  # the model call's wall time shared out over its batch
        ("box_score", pa.float64()),
        ("mask_score", pa.float64()),
        ("num_detections", pa.int64()),
        ("mask_png", pa.binary()),  # the predicted mask, 0/255, at the ground truth's resolution
        ("model_version", pa.string()),  # the exact weights: segray.models.catalogue.version_of
        ("device", pa.string()),  # what the model ran on, as its actor saw it: segray.models.base.describe_device
        # How the pair was decoded (segray.data.decode.decode_pair), both null on an error row:
        ("image_orientation", pa.string()),  # "stored" pixels or turned by the "exif" orientation
        ("mask_note", pa.string()),  # why the mask's person may be wrong (a label map, ...); null when clear
    ]
)

# The per-image metric columns, as `segray.metrics.score_masks` returns them.
METRIC_COLUMNS = ["iou", "dice", "precision", "recall", "boundary_iou", "pred_area", "true_area",
                  "intersection", "union", "empty"]
# The manifest columns each row carries from its image.
IMAGE_COLUMNS = ["image_id", "split", "category"]
# What scoring, the summary, the report and the trend read (the summary names the masks with a note).
SCORE_COLUMNS = ["run_id", *IMAGE_COLUMNS, "model", "model_version", "device", "status", "latency_ms",
                 "iou", "dice", "precision", "recall", "boundary_iou", "intersection", "union", "mask_note"]
# What says a (image, model version) pair is done, in the incremental re-evaluation.
PAIR_COLUMNS = ["image_id", "model_version"]
# Low-cardinality string columns, read as pandas categoricals.
CATEGORICAL_COLUMNS = ["run_id", *IMAGE_COLUMNS, "model", "model_version", "device", "status"]
