"""Runs a target over generated inputs and collects what escaped that should not have.

A finding is keyed by (exception type, the innermost frame in hailing's sources), so a
million inputs that hit one bug give one finding with a count and the smallest example.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .targets import TARGETS, Target, needs_loop, run_in_loop


@dataclass
class Finding:
    exc_type: str
    where: str
    message: str
    example: bytes
    generator: str
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"exception": self.exc_type, "where": self.where, "message": self.message[:300],
                "example_hex": self.example.hex(), "generator": self.generator,
                "count": self.count}


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    accepted: int = 0
    refused: int = 0
    generators: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)

    @property
    def unexpected(self) -> int:
        return sum(f.count for f in self.findings.values())

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "inputs": self.inputs, "seconds": round(self.seconds, 2),
                "inputs_per_second": round(self.inputs / self.seconds) if self.seconds else None,
                "accepted": self.accepted, "refused_with_documented_error": self.refused,
                "generators": dict(self.generators), "unexpected_exceptions": self.unexpected,
                "findings": [f.to_json() for f in self.findings.values()]}


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/hailing/" in f.filename] or frames
    f = ours[-1] if ours else None
    return f"{f.filename.rsplit('/src/', 1)[-1]}:{f.lineno} ({f.name})" if f else "?"


def _loop(target: Target, report: Report, n: int, deadline: float) -> None:
    allowed = target.allowed
    for i in range(n):
        if i % 1024 == 0 and time.monotonic() > deadline:
            break
        gen, data = target.make()
        report.generators[gen] += 1
        report.inputs += 1
        try:
            target.run(data)
        except allowed:
            report.refused += 1
        except Exception as exc:
            key = (type(exc).__name__, _where(exc))
            found = report.findings.get(key)
            if found is None:
                report.findings[key] = Finding(key[0], key[1], str(exc), data, gen)
            else:
                found.count += 1
                if len(data) < len(found.example):
                    found.example, found.generator = data, gen
        else:
            report.accepted += 1


def fuzz(name: str, n: int, seed: int = 0, time_limit: float = float("inf")) -> Report:
    """Feed ``n`` generated inputs (or as many as fit in ``time_limit`` seconds) to the
    target ``name``; the report counts inputs, refusals and findings."""
    report = Report(name)

    def body() -> None:
        target = TARGETS[name](random.Random(seed))
        start = time.monotonic()
        try:
            _loop(target, report, n, start + time_limit)
        finally:
            report.seconds = time.monotonic() - start
            target.close()

    if needs_loop(name):
        run_in_loop(body)
    else:
        body()
    return report
