"""A trigger payload's limits: a batch of 100,000 prompts is a payload like any other, while a
YAML alias bomb (millions of values from a few lines) is refused before anything is stored."""

from __future__ import annotations

import yaml

from klingflow.payloads import MAX_PAYLOAD_VALUES, payload_problems


def test_a_hundred_thousand_rows_of_prompts_fit() -> None:
    rows = [{"prompt": f"a red fox, take {n}", "duration": 5} for n in range(100_000)]
    assert payload_problems({"rows": rows}) == []


def test_an_alias_bomb_is_refused_once_past_the_limit() -> None:
    bomb = "\n".join(
        ['a: &a ["x","x","x","x","x","x","x","x","x"]']
        + [
            f"{n}: &{n} [{', '.join(['*' + p] * 9)}]"
            for p, n in zip("abcdef", "bcdefg", strict=True)
        ]
    )
    problems = payload_problems(yaml.safe_load(bomb))  # 9**7: about 4.8 million values
    assert [message for _, message in problems] == [
        f"the whole holds more than {MAX_PAYLOAD_VALUES:,} values"
    ]
