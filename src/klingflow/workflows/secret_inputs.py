"""A run's secret inputs: `***` wherever the run is shown or stored, sealed for the run itself.

An input declared `secret: true` is a credential the run needs (an `http.request` header)
that nobody should read back. Its value is stored nowhere in clear: the run's `trigger` and
`inputs` hold `***`, and the values are kept in `kf_run_secrets` as one Fernet token (AES
and an HMAC) under a key derived from the PiAPI key. Every process that executes runs holds
that key (it pays with it) and no table does, so a copy of the database reveals no secret,
while a run resumed after a crash, or by another worker, still reads its values.

When a run executes, `open_run` puts the values back into its inputs and trigger for the
templates and makes them known secrets of the task (`redaction.hold_run_secrets`): the node
rows, the run's outputs and DBOS's step outputs written meanwhile hold `***` instead.
A run whose values cannot be opened (the PiAPI key changed since it started) stops with an
error that says so; it is never run with `***` in their place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from klingflow.errors import WorkflowInputError
from klingflow.redaction import MASK, MIN_SECRET_LENGTH, hold_run_secrets, redact_values
from klingflow.workflows.records import RunRecord
from klingflow.workflows.schema import run_secrets
from klingflow.workflows.spec import Workflow
from klingflow.workflows.transactions import Transactions

__all__ = [
    "SecretInputsUnreadable",
    "keep_secrets",
    "mask_secret_inputs",
    "open_run",
    "require_sealing_key",
]

_KEY_PURPOSE = b"klingflow secret inputs v1"


class SecretInputsUnreadable(RuntimeError):
    """A run's secret inputs are gone or were sealed with another PiAPI key."""


def _fernet(api_key: SecretStr) -> Fernet:
    """The sealing key: the PiAPI key's HMAC for this purpose (never the key itself)."""
    raw = api_key.get_secret_value().encode()
    digest = hmac.new(raw, _KEY_PURPOSE, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _secret_names(workflow: Workflow) -> list[str]:
    return [name for name, spec in workflow.inputs.items() if spec.secret]


def mask_secret_inputs(
    workflow: Workflow, payload: Mapping[str, Any], inputs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(trigger, inputs) as stored, secret inputs `***` (their values masked anywhere else
    in the payload too), and the secret values to keep: {name: value}."""
    values = {
        name: inputs[name]
        for name in _secret_names(workflow)
        if isinstance(inputs.get(name), str) and inputs[name]
    }
    searched = tuple(v for v in values.values() if len(v) >= MIN_SECRET_LENGTH)
    trigger = {k: MASK if k in values else redact_values(v, searched) for k, v in payload.items()}
    stored = {k: MASK if k in values else redact_values(v, searched) for k, v in inputs.items()}
    return trigger, stored, values


def keep_secrets(
    log: Transactions, run_id: str, values: Mapping[str, str], api_key: SecretStr | None
) -> None:
    """Seal `values` for run `run_id` (nothing when there are none)."""
    if not values:
        return
    if api_key is None:  # checked by `create_run` before the run is written
        raise SecretInputsUnreadable("a secret input needs the PiAPI key to be sealed")
    token = _fernet(api_key).encrypt(json.dumps(dict(values)).encode()).decode()
    exists = sa.select(run_secrets.c.run_id).where(run_secrets.c.run_id == run_id)
    log.write(
        lambda tx: tx.execute(run_secrets.insert().values(run_id=run_id, sealed=token)),
        committed=lambda c: c.execute(exists).first() is not None,
    )


def require_sealing_key(workflow: Workflow, api_key: SecretStr | None) -> None:
    """Refuse, before anything is written, a run with secret inputs and no key to seal them."""
    if api_key is None and _secret_names(workflow):
        problems = [(f"inputs.{name}", "is secret: set PIAPI_API_KEY, which seals it for the run")
                    for name in _secret_names(workflow)]  # fmt: skip
        raise WorkflowInputError(problems, workflow_name=workflow.name)


def open_run(
    log: Transactions, run: RunRecord, workflow: Workflow, api_key: SecretStr | None
) -> RunRecord:
    """`run` with its secret inputs' values back in its inputs and trigger, and held as
    this task's known secrets; `run` itself when it has none."""
    names = [n for n in _secret_names(workflow) if run.inputs.get(n) == MASK]
    if not names:
        return run
    query = sa.select(run_secrets.c.sealed).where(run_secrets.c.run_id == run.run_id)
    sealed = log.read(lambda c: c.execute(query).scalar_one_or_none())
    listed = ", ".join(names)
    if sealed is None or api_key is None:
        raise SecretInputsUnreadable(
            f"the secret inputs ({listed}) of {run.run_id} were not kept: start the run again"
        )
    try:
        values: dict[str, str] = json.loads(_fernet(api_key).decrypt(sealed.encode()))
    except InvalidToken:
        raise SecretInputsUnreadable(
            f"the secret inputs ({listed}) of {run.run_id} were sealed with another PiAPI key:"
            " start the run again"
        ) from None
    hold_run_secrets(values.values())
    opened = {n: values[n] for n in names if n in values}
    trigger = {k: opened[k] if k in opened and v == MASK else v for k, v in run.trigger.items()}
    return replace(run, inputs={**run.inputs, **opened}, trigger=trigger)
