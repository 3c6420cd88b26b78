"""A trigger payload's limits: a batch of 100,000 prompts is a payload like any other, while a
YAML alias bomb (millions of values from a few lines) is refused before anything is stored."""

from __future__ import annotations

import pytest
import yaml

from klingflow.payloads import (
    MAX_PAYLOAD_DEPTH,
    MAX_PAYLOAD_VALUES,
    nesting_problem,
    payload_problems,
)


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


@pytest.mark.parametrize("levels", [MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1])
@pytest.mark.parametrize("inner", ["", "1", "{a: b}", "[]"])
@pytest.mark.parametrize("layout", ["flow", "block"])
def test_the_early_depth_check_refuses_exactly_what_the_payload_check_would(
    levels: int, inner: str, layout: str
) -> None:
    """The check before parsing (for `[[[[...` files) never refuses a file the payload check
    would take, and refuses every one it would refuse."""
    if layout == "flow":
        text = "[" * levels + inner + "]" * levels
    else:  # block mappings, one level per indent
        text = "".join(f"{'  ' * n}k{n}:\n" for n in range(levels)) + "  " * levels + inner
    refused = payload_problems(yaml.safe_load(text)) != []
    assert (nesting_problem(text) is not None) == refused
