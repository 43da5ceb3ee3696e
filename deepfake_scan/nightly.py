"""The nightly job: an incremental scan, then a report, then an exit code for the scheduler."""

from __future__ import annotations

import json
from dataclasses import dataclass

from deepfake_scan.report import build_report, last_run_rate
from deepfake_scan.scanning import ScanSummary, scan
from deepfake_scan.storage import join


@dataclass
class NightlyResult:
    scan: ScanSummary
    report: dict
    alert: str | None  # why the job should page someone, if it should

    @property
    def exit_code(self) -> int:
        return 1 if self.alert else 0


def run_nightly(
    source: str,
    out: str,
    html: str | None = None,
    json_path: str | None = None,
    fail_above: float | None = None,
    **scan_options: object,
) -> NightlyResult:
    """Scan what is new under ``source`` into ``out`` and report on the whole store.

    The report goes to ``html`` / ``json_path`` (default: ``OUT/report.html`` / ``summary.json``
    beside the store when it is local). ``fail_above``: alert when the run's fake rate is higher.
    """
    summary = scan(source, out, **scan_options)
    local = "://" not in out
    html = html or (join(out, "report.html") if local else None)
    json_path = json_path or (join(out, "summary.json") if local else None)
    report = build_report(out, html)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
    rate = last_run_rate(report)
    alert = None
    if fail_above is not None and rate > fail_above:
        alert = f"fake rate {rate:.2%} of run {summary.run_id} is above {fail_above:.2%}"
    return NightlyResult(summary, report, alert)
