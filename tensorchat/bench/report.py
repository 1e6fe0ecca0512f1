"""Present benchmark runs: a text table per run, a JSON document, a latency-vs-load plot."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorchat.bench.runner import RunOutcome, WorkerReport
from tensorchat.bench.stats import PERCENTILES, Distribution, Summary, summarize

# A worker above this share of a core may itself be what limits the measurement.
CLIENT_CPU_WARNING = 0.8


@dataclass(slots=True)
class RunReport:
    """One load level: its shape, summary and the client's own CPU use."""

    outcome: RunOutcome
    summary: Summary

    @classmethod
    def of(cls, outcome: RunOutcome) -> RunReport:
        return cls(outcome, summarize(outcome.results))

    @property
    def client_cpu(self) -> list[float]:
        return [w.cpu_utilization for w in self.outcome.workers]

    def to_json(self) -> dict[str, Any]:
        shape = self.outcome.shape
        return {
            "concurrency": shape.concurrency,
            "request_rate": shape.request_rate,
            "duration_s": shape.duration_s,
            "summary": self.summary.to_json(),
            "client_workers": len(self.outcome.workers),
            "client_cpu_per_worker": [round(c, 3) for c in self.client_cpu],
        }


def _dist_row(name: str, dist: Distribution) -> str:
    cells = [f"{dist.mean:9.2f}"] + [f"{dist.p(q):9.2f}" for q in PERCENTILES]
    return f"  {name:<16}" + "".join(cells) + f"{dist.max:9.2f}"


def format_run(report: RunReport) -> str:
    s = report.summary
    lines = [
        f"== {report.outcome.shape.label} ==",
        f"  requests          {s.completed} ok / {s.requests} sent in {s.duration_s:.2f} s",
        f"  request rate      {s.request_throughput:.2f} req/s",
        f"  output tokens     {s.output_throughput:.1f} tok/s ({s.total_output_tokens} tokens,"
        f" {s.mean_tokens_per_message:.2f} tokens per message)",
    ]
    if s.errors:
        errors = ", ".join(f"{kind}: {count}" for kind, count in s.errors.items())
        lines.append(f"  errors            {errors}")
    header = "".join(f"{h:>9}" for h in ["mean", *(f"p{q:g}" for q in PERCENTILES), "max"])
    lines.append(f"  {'(ms)':<16}{header}")
    lines.append(_dist_row("TTFT", s.ttft_ms))
    lines.append(_dist_row("inter-token", s.itl_ms))
    lines.append(_dist_row("TPOT", s.tpot_ms))
    lines.append(_dist_row("latency", s.latency_ms))
    cpu = report.client_cpu
    if cpu:
        shown = ", ".join(f"{c:.0%}" for c in cpu)
        lines.append(f"  client CPU        {shown} of a core per worker")
        if max(cpu) > CLIENT_CPU_WARNING:
            lines.append(
                "  warning: a client worker was busy most of the time, so the client may be what"
                " limits this measurement: add --workers (and use --http-client raw)"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    import os

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def to_json(config: dict[str, Any], reports: Sequence[RunReport]) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": config,
        "runs": [r.to_json() for r in reports],
    }


def write_json(path: Path, config: dict[str, Any], reports: Sequence[RunReport]) -> None:
    path.write_text(json.dumps(to_json(config, reports), indent=2) + "\n", encoding="utf-8")


def plot(path: Path, reports: Sequence[RunReport], title: str = "") -> None:
    """Latency (TTFT, inter-token, end-to-end; p50 and p99) and throughput against load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_rate = all(r.outcome.shape.request_rate is not None for r in reports)
    xs = [
        (r.outcome.shape.request_rate if by_rate else r.outcome.shape.concurrency) or math.nan
        for r in reports
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0][0], "TTFT (ms)", lambda s: s.ttft_ms),
        (axes[0][1], "inter-token latency (ms)", lambda s: s.itl_ms),
        (axes[1][0], "end-to-end latency (ms)", lambda s: s.latency_ms),
    ]
    for ax, name, pick in panels:
        for q, style in ((50.0, "o-"), (99.0, "s--")):
            ax.plot(xs, [pick(r.summary).p(q) for r in reports], style, label=f"p{q:g}")
        ax.set_ylabel(name)
        ax.legend()
    axes[1][1].plot(xs, [r.summary.output_throughput for r in reports], "o-")
    axes[1][1].set_ylabel("output tokens/s")
    for ax in (a for row in axes for a in row):
        ax.set_xlabel("request rate (req/s)" if by_rate else "concurrency")
        if not by_rate and len(xs) > 1 and min(xs) > 0:
            ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or "tensorchat bench")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["RunReport", "WorkerReport", "format_run", "plot", "to_json", "write_json"]
