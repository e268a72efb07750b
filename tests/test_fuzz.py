"""A short fuzz pass over every decoder of remote input (the long run, a million inputs
each: benchmarks/fuzz_decoders.py). Only the exceptions a decoder documents may escape;
see tests/fuzz/targets.py for each target's input and allowed errors."""

from __future__ import annotations

import json

import pytest
from fuzz.harness import fuzz
from fuzz.targets import TARGETS

#: Inputs per decoder in the suite (a second or two each).
INPUTS = 3000


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_documented_errors_escape(name: str) -> None:
    report = fuzz(name, INPUTS, seed=20240609)
    assert report.inputs == INPUTS
    assert report.unexpected == 0, json.dumps(report.to_json()["findings"], indent=1)
    # the generators reach past the first check: some inputs are accepted or refused deep
    assert report.accepted + report.refused == INPUTS
