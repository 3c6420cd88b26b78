"""The account a key spends from, as `/account/info` shows it.

PiAPI clients read two shapes of the account: the current one (`credit_pack_info`) and an
older flat one (`credits`, `account_name`), so the emulator answers with both, from the
balance the task store keeps.
"""

from __future__ import annotations

from typing import Any

from klingflow.emulator.tasks import TaskStore
from klingflow.piapi.models import points_to_usd, usd_to_points

__all__ = ["ACCOUNT_NAME", "account_json"]

ACCOUNT_NAME = "klingflow-emulator"
"""The name of an account that is a single key (no `accounts` entry names it)."""


def account_json(store: TaskStore, key: str) -> dict[str, Any]:
    """Both shapes PiAPI clients read: the current one and the older flat one.

    Each key is its own account unless `accounts` groups keys under one name. Credits
    are points (1 USD = 10,000,000), as `usage`; `null` where the emulator has no
    balance (`balance_usd: None`, unlimited).
    """
    config = store.config
    account = config.account_of(key)
    left = store.balance_points(key)
    spent = store.spent_points.get(account, 0)
    frozen = store.reserved_points.get(account, 0)
    name = account if account != key else ACCOUNT_NAME
    total = None if config.balance_usd is None else usd_to_points(config.balance_usd)
    usd = None if left is None else float(points_to_usd(left))
    return {
        "id": account,
        "name": name,
        "plan": "payg",
        "type": "user",
        "is_enable": True,
        "credit_pack_info": {
            "available_credits": left,
            "used_credits": spent,
            "frozen_credits": frozen,
            "total_credits": total,
        },
        "equivalent_in_usd": usd,
        # The older flat shape, still read by some clients.
        "account_name": name,
        "account_id": account,
        "credits": left,
        "spent_usd": float(points_to_usd(spent)),
    }
