"""Length distributions, synthetic prompts and JSONL datasets."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from tensorchat.bench.workload import LengthDist, load_dataset, make_prompt, synthetic_requests


@pytest.mark.parametrize("spec", ["128", "uniform:10:20", "normal:100:15"])
def test_length_specs_round_trip(spec: str) -> None:
    assert str(LengthDist.parse(spec)) == spec


BAD = ["", "0", "x", "uniform:5", "uniform:9:3", "normal:10:-1", "p:1:2"]


@pytest.mark.parametrize("spec", BAD)
def test_bad_length_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="bad length"):
        LengthDist.parse(spec)


def test_distributions_sample_in_range_with_the_right_moments() -> None:
    rng = random.Random(1)
    assert {LengthDist.parse("7").sample(rng) for _ in range(20)} == {7}
    uniform = [LengthDist.parse("uniform:10:20").sample(rng) for _ in range(4000)]
    assert min(uniform) == 10 and max(uniform) == 20
    normal = [LengthDist.parse("normal:100:15").sample(rng) for _ in range(4000)]
    assert statistics.mean(normal) == pytest.approx(100, abs=1.5)
    assert statistics.stdev(normal) == pytest.approx(15, abs=1.5)
    assert min(LengthDist.parse("normal:1:50").sample(rng) for _ in range(200)) >= 1


def test_prompt_has_the_asked_number_of_words() -> None:
    assert len(make_prompt(50, random.Random(0)).split()) == 50


def test_synthetic_requests_are_seeded() -> None:
    a = synthetic_requests(5, LengthDist.parse("uniform:5:50"), LengthDist.parse("32"), seed=4)
    b = synthetic_requests(5, LengthDist.parse("uniform:5:50"), LengthDist.parse("32"), seed=4)
    c = synthetic_requests(5, LengthDist.parse("uniform:5:50"), LengthDist.parse("32"), seed=5)
    assert a == b != c
    assert all(spec.max_tokens == 32 and spec.messages[0][0] == "user" for spec in a)


def test_dataset_rows_cycle_and_fill_missing_lengths(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "hello", "max_tokens": 5},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
        {"prompt": "bye", "output_tokens": 9},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    specs = load_dataset(path, 7, LengthDist.parse("3"))
    assert [s.max_tokens for s in specs] == [5, 3, 9, 5, 3, 9, 5]
    assert specs[1].messages == (("system", "s"), ("user", "u"))
    assert specs[1].messages_json()[1] == {"role": "user", "content": "u"}


def test_dataset_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"neither": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_dataset(path, 2, LengthDist.parse("3"))
