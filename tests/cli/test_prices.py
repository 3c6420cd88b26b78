"""`klingflow cost` without a prompt and `klingflow prices`, from the estimates' own table."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from klingflow.piapi import KlingVideoRequest, estimate_cost
from klingflow.piapi.pricing import fixed_price

from .conftest import Invoke


def test_cost_needs_no_prompt(klingflow: Invoke) -> None:
    """`cost --duration 10 --audio --mode pro` prices a Kling 3.0 video at $2.00."""
    result = klingflow("cost", "--duration", "10", "--audio", "--mode", "pro")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("$2.00")
    report = json.loads(klingflow("cost", "--duration", "5", "--json").stdout)
    assert "prompt" not in report["request"]["input"]  # no stand-in shown as if typed
    assert report["estimate_usd"] == "0.50"


def test_prices_lists_every_version_mode_and_audio_setting_as_estimated(
    klingflow: Invoke,
) -> None:
    """Each row of `prices --json` is what `estimate_cost` charges for that video."""
    result = klingflow("prices", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    rows = {(r["version"], r["mode"], r["audio"]): r for r in table["video_generation"]}
    assert rows[("3.0", "pro", True)]["per_second_usd"] == "0.20"
    assert ("2.1", "std", True) not in rows  # no audio before 2.6
    assert {version for version, _, _ in rows} >= {"3.0", "2.6", "2.5", "2.1", "1.0"}
    for (version, mode, audio), row in rows.items():
        for seconds, price in row["by_duration_usd"].items():
            request = KlingVideoRequest(
                prompt="x", version=version, mode=mode, enable_audio=audio, duration=int(seconds)
            )
            assert Decimal(price) == estimate_cost(request)
    assert table["per_generation_usd"]["extend_video"] == str(fixed_price("extend_video"))
    text = klingflow("prices").stdout
    assert "extend_video: $0.26 per generation" in text
    assert re.search(r"^ *3\.0 +pro +audio +\$0\.20 +\$1\.00 +\$2\.00 +\$3\.00", text, re.M)
