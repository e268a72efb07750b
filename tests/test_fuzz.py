"""A short fuzz pass over every decoder of remote input (the long run, a million inputs
each: benchmarks/fuzz_decoders.py). Only the exceptions a decoder documents may escape;
see tests/fuzz/targets.py for each target's input and allowed errors."""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from fuzz.harness import fuzz
from fuzz.targets import TARGETS, needs_loop, run_in_loop

#: Inputs per decoder in the suite (a second or two each).
INPUTS = 3000


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_documented_errors_escape(name: str) -> None:
    report = fuzz(name, INPUTS, seed=20240609)
    assert report.inputs == INPUTS
    assert report.unexpected == 0, json.dumps(report.to_json()["findings"], indent=1)
    # the generators reach past the first check: some inputs are accepted or refused deep
    assert report.accepted + report.refused == INPUTS


#: Inputs the fuzzer found that once escaped as an undocumented exception; each must now
#: be refused quietly. (target, input)
FOUND = [
    # json.loads raised RecursionError (not a ValueError) on deep nesting: the frame
    # escaped Connection._on_message instead of being counted as garbage.
    ("control", b"T" + b"[" * 60_000),
    ("control", b"T" + b'{"t":' * 60_000 + b"1"),
]


@pytest.mark.parametrize(("name", "data"), FOUND, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(FOUND)])
def test_inputs_found_by_fuzzing_are_refused_quietly(name: str, data: bytes) -> None:
    def replay() -> None:
        target = TARGETS[name](random.Random(0))
        try:
            with contextlib.suppress(*target.allowed):
                target.run(data)
        finally:
            target.close()

    if needs_loop(name):
        run_in_loop(replay)
    else:
        replay()
