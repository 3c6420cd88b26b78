"""Redaction's fast paths (the run log masks every value it stores) mask what the walk did."""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

from klingflow.redaction import MASK, redact, redact_values

SECRET = "sk-live-0123456789"


class Mode(StrEnum):
    STD = "std"


def test_every_kind_of_value_is_masked_or_kept_as_before() -> None:
    value = OrderedDict(
        prompt=f"a cat {SECRET}",
        api_key="short",  # a secret-looking name: masked whole
        usage={"consume": 10, "ratio": 0.5, "free": True, "note": None},
        urls=(f"https://x/{SECRET}", "https://y/\x00"),
        mode=Mode.STD,
    )
    assert redact(value, (SECRET,)) == {
        "prompt": f"a cat {MASK}",
        "api_key": MASK,
        "usage": {"consume": 10, "ratio": 0.5, "free": True, "note": None},
        "urls": [f"https://x/{MASK}", "https://y/\ufffd"],
        "mode": "std",
    }
    assert redact_values({"Authorization": SECRET}, (SECRET,)) == {"Authorization": MASK}
    assert redact({"Authorization": "Bearer x"}) == {"Authorization": MASK}  # asked twice:
    assert redact({"Authorization": "Bearer y"}) == {"Authorization": MASK}  # cached answer
