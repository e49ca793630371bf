"""TensorBoard event files of a run: each finished round's metrics.csv row as scalars.

``tensorboard --logdir runs`` then shows every run, live and side by side (a run's events are
in ``<run dir>/tensorboard/``). The step is the round. Tags, grouped by what they measure:

- ``loss/pooled``; for each metric m of the task: ``m/pooled``, ``m/client_avg`` and
  ``m/<hospital>`` (the same numbers as metrics.csv's ``pooled_m``, ``client_avg_m``,
  ``<hospital>_m``);
- ``epsilon/<hospital>``: what the hospital has spent so far at the run's DP level (none
  without DP);
- ``round/seconds``, ``round/participants``, ``round/declined``, ``round/rejected``.

Empty and non-finite cells (a round written without its evaluation, the NaN AUC of a one-class
test set, an unbounded epsilon) are left out: TensorBoard draws no point there, metrics.csv
keeps the cell.

The events are written with TensorFlow's own summary writer, a round's scalars in one Summary
proto with the metadata TensorBoard's scalar plugin reads (what ``tf.summary.scalar``
writes), so writing needs TensorFlow only, which the server process has loaded already (Keras
builds and saves the model); TensorBoard is needed only to look at them.
"""

import logging
import math
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
ROUND_COLUMNS = ("seconds", "participants", "declined", "rejected")


def scalar_tags(metric_names: Iterable[str], hospitals: Iterable[str]) -> dict[str, str]:
    """Return metrics.csv column -> TensorBoard tag, for the columns the log writes."""
    hospitals = list(hospitals)
    tags = {"pooled_loss": "loss/pooled"}
    for metric in metric_names:
        tags[f"pooled_{metric}"] = f"{metric}/pooled"
        tags[f"client_avg_{metric}"] = f"{metric}/client_avg"
        tags.update({f"{hospital}_{metric}": f"{metric}/{hospital}" for hospital in hospitals})
    tags.update({f"epsilon_{hospital}": f"epsilon/{hospital}" for hospital in hospitals})
    tags.update({column: f"round/{column}" for column in ROUND_COLUMNS})
    return tags


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class TensorBoardLog:
    """Writes a run's rounds as TensorBoard scalars, flushed after each round (so it is live).

    Created when the run starts, it removes the event files already in `log_dir`: a resumed run
    writes its checkpoint's rows again (as metrics.csv starts over with them), so TensorBoard
    shows each round once, with the values metrics.csv holds.
    """

    def __init__(self, log_dir: Path, *, metric_names: Iterable[str],
                 hospitals: Iterable[str]) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2, tensor_pb2, types_pb2

        log_dir.mkdir(parents=True, exist_ok=True)
        for stale in log_dir.glob("events.out.tfevents.*"):
            stale.unlink()
        self.tags = scalar_tags(metric_names, hospitals)
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(log_dir))
        # What tf.summary.scalar attaches: TensorBoard's scalars plugin, version 0 (b"").
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        self._summary, self._tensor = summary_pb2.Summary, tensor_pb2.TensorProto
        self._float = types_pb2.DT_FLOAT
        self._rows: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def write_round(self, row: dict[str, Any]) -> None:
        """Queue one metrics.csv row's scalars at step = its round; a thread of the log
        writes and flushes them, off the rounds' critical path (TensorFlow's eager summary ops
        take about 10 ms a round, which the next round's exchange would otherwise wait for).
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="tensorboard-log",
                                            daemon=True)
            self._thread.start()
        self._rows.put(dict(row))

    def wait_written(self) -> None:
        """Block until every queued row is written and flushed (readable by TensorBoard)."""
        self._rows.join()

    def _drain(self) -> None:
        while (row := self._rows.get()) is not None:
            try:
                self._write(row)
            except Exception:  # noqa: BLE001 - the run goes on; metrics.csv has the row
                logger.exception("TensorBoard: round %s not written", row.get("round"))
            finally:
                self._rows.task_done()

    def _write(self, row: dict[str, Any]) -> None:
        """One Summary proto holding the row's scalars, written by one op (30 eager summary
        ops a round took about 10 ms of this process's interpreter, beside the rounds).
        """
        summary = self._summary()
        for column, tag in self.tags.items():
            value = _finite(row.get(column))
            if value is not None:  # a float32 scalar tensor, as tf.summary.scalar writes it
                summary.value.add(tag=tag, metadata=self._metadata,
                                  tensor=self._tensor(dtype=self._float, float_val=[value]))
        with self._writer.as_default():
            self._tf.summary.experimental.write_raw_pb(summary.SerializeToString(),
                                                       step=int(row["round"]))
        self._writer.flush()

    def close(self) -> None:
        """Write what is queued, flush and close the event file."""
        if self._thread is not None:
            self._rows.put(None)
            self._thread.join()
            self._thread = None
        self._writer.close()
