"""A CSVLogger that appends: a resumed run (`ckpt_path=last` in the same run dir) keeps the rows
its killed predecessor wrote up to the resume point, where Lightning's deletes metrics.csv."""
from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._merged = False

    def _check_log_dir_exists(self) -> None:
        pass  # keep the earlier run's metrics.csv (Lightning's writer deletes it here)

    def save(self) -> None:
        if not self._merged and self.metrics and self._fs.isfile(self.metrics_file_path):
            self._keep_rows_before(min(m["step"] for m in self.metrics))
        self._merged = self._merged or bool(self.metrics)
        super().save()

    def _keep_rows_before(self, step: int) -> None:
        """Rows the earlier run logged at or after this run's first step are superseded: drop them."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if float(row["step"]) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(header)  # so new columns rewrite the header over every row


class AppendingCSVLogger(CSVLogger):
    """Lightning's CSVLogger (metrics.csv + hparams.yaml) whose metrics.csv survives a resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
