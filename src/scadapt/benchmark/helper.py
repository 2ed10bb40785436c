"""A helper worker process of :class:`scadapt.benchmark.local_workers.LocalWorkers`: the same
benchmark, cells only, its timing written where it was told.

    python -c HELPER_BOOT SPEC.json   (scadapt.benchmark.local_workers.HELPER_BOOT)

The spec is JSON (the benchmark's settings, never code), written by the process in charge.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from scadapt.benchmark.config import BenchmarkConfig
from scadapt.benchmark.local_workers import worker_share
from scadapt.benchmark.runner import run_cells
from scadapt.infra.interrupts import interrupts_at_safe_points
from scadapt.infra.redaction import redact_logs
from scadapt.tracking.runs import announce_server_retries


def main(spec_path: str) -> int:
    """A helper's life: run cells of the benchmark until none is left."""
    logging.basicConfig(level=logging.WARNING, format="helper %(process)d: %(levelname)s %(message)s")
    redact_logs()
    announce_server_retries()
    spec = json.loads(Path(spec_path).read_text())
    cfg = BenchmarkConfig(**spec["config"])
    with interrupts_at_safe_points(), worker_share(1, int(spec["threads"])):  # the budget share is in the env
        timing = run_cells(cfg, spec["parent_run_id"])  # an interrupt: one line from the boot code (HELPER_BOOT)
    timing.to_csv(spec["timing"], index=False)
    return 0


if __name__ == "__main__":  # the launcher uses HELPER_BOOT; this is for running one by hand
    sys.exit(main(sys.argv[1]))
