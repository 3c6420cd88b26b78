"""The fast wait and retry policies every test client uses, in one place.

The emulator runs at time scale 1000 (a 60 s generation takes about 60 ms), so a client
polling at PiAPI's real pace would spend most of each test asleep. These policies keep the
real backoff arithmetic with tiny waits, instead of patching time (house rule 10).
"""

from __future__ import annotations

from klingflow.piapi import RetryPolicy, WaitPolicy

FAST_WAIT = WaitPolicy(
    deadline_seconds=20.0, initial_interval_seconds=0.01, max_interval_seconds=0.05, jitter=0
)
"""Polls every 10-50 ms, without jitter so counts of polls are repeatable; a wait that has not
ended after 20 s fails the test instead of hanging it."""

FAST_RETRY = RetryPolicy(max_retries=4, initial_delay_seconds=0.001, max_delay_seconds=0.01)
"""Real backoff arithmetic with tiny waits: four retries of a safe request in about 40 ms."""
