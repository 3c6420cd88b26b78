"""How a paid node's `with:` block becomes a Kling request, and what the node would cost.

Shared by the paid kinds (`kling.generate_video`, `kling.video`, `piapi.task`) and by
validation, which checks literal `with:` blocks by the same split into the node's own keys
and the request's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pydantic import ValidationError

from klingflow.errors import InvalidRequestError, Problem, TemplateError
from klingflow.piapi.kling import KlingRequest, KlingVideoRequest
from klingflow.piapi.pricing import estimate_cost
from klingflow.problems import problems_from
from klingflow.workflows.nodes.base import Estimate, Node, NodeParams
from klingflow.workflows.templates import render

if TYPE_CHECKING:
    from klingflow.piapi.pricing import PriceTable

__all__ = [
    "PLACEHOLDER_REQUEST",
    "PaidNode",
    "RequestParams",
    "VideoNode",
    "VideoParams",
    "request_input",
    "split_request",
]

PLACEHOLDER_REQUEST = KlingVideoRequest(prompt="placeholder")
"""Stands in for a request that could not be built, so the node's own keys still get checked."""


def request_input(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Kling `input` as written in YAML, where `version: 3.0` is a number: made "3.0"."""
    result = dict(data)
    version = result.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        result["version"] = str(float(version))
    return result


def split_request(
    cls: type[NodeParams], data: Mapping[str, Any], request_keys: frozenset[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a `with:` block into (the node's own keys, the request's keys).

    The node's own keys are its params fields besides `request`; the request's are
    `request_keys`, or every other key when None. Unknown keys stay with the node, whose
    model then reports them.
    """
    own_keys = frozenset(cls.model_fields) - {"request"}

    def is_request_key(key: str) -> bool:
        return key not in own_keys and (request_keys is None or key in request_keys)

    own = {k: v for k, v in data.items() if not is_request_key(k)}
    rest = {k: v for k, v in data.items() if is_request_key(k)}
    return own, rest


class RequestParams(NodeParams):
    """Params that carry the Kling request the node submits (and pays for)."""

    request: KlingRequest

    @classmethod
    def with_request(
        cls, own: dict[str, Any], build: Callable[[], KlingRequest], *, is_flat: bool
    ) -> Self:
        """Validate `own` plus the request `build()` makes, collecting both sides' problems.

        `is_flat`: the request's fields sit directly under `with:` (`input.x` -> `with.x`).
        """
        problems: list[Problem] = []
        request: KlingRequest | None = None
        try:
            request = build()
        except InvalidRequestError as error:
            for field, message in error.problems:
                field = field.removeprefix("input.") if is_flat else field
                problems.append((f"with.{field}", message))
        try:
            stand_in = request if request is not None else PLACEHOLDER_REQUEST
            params = cls.model_validate({**own, "request": stand_in})
        except ValidationError as error:
            problems = problems_from(error, prefix="with") + problems
        if problems:
            raise InvalidRequestError(problems)
        return params


class VideoParams(RequestParams):
    """Params whose request fields sit flat in `with:` and build a `KlingVideoRequest`."""

    request: KlingVideoRequest

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        """Validate a rendered `with:` block: the request's fields and the node's own."""
        own, rest = split_request(cls, data)
        return cls.with_request(
            own, lambda: KlingVideoRequest.from_input(request_input(rest)), is_flat=True
        )


RP = TypeVar("RP", bound=RequestParams)
VP = TypeVar("VP", bound=VideoParams)


class PaidNode(Node[RP], Generic[RP]):
    """A node that submits a paid Kling task: priced before the run with the client's table."""

    is_paid: ClassVar[bool] = True

    def estimate_usd(self, context: Mapping[str, Any], prices: PriceTable) -> Estimate:
        """The rendered request's price, the same estimate the run reserves against its
        budget; when an earlier node's output is needed, see `estimate_unrendered_usd`."""
        try:
            request = self.render_params(context).request
        except TemplateError:
            return self.estimate_unrendered_usd(context, prices)
        return estimate_cost(request, prices=prices), None

    def estimate_unrendered_usd(self, context: Mapping[str, Any], prices: PriceTable) -> Estimate:
        """The price when the `with:` block reads an earlier node: unknown unless a kind
        knows better."""
        return None, "its price depends on an earlier node"


_PRICE_NEUTRAL = {"prompt": "a stand-in prompt", "negative_prompt": "", "name": None}
"""Video fields that never change the price: what stands in when an earlier node fills them
(None: leave the field out)."""


class VideoNode(PaidNode[VP], Generic[VP]):
    """A paid node whose `with:` block is a flat `KlingVideoRequest` (plus the node's keys)."""

    def estimate_unrendered_usd(self, context: Mapping[str, Any], prices: PriceTable) -> Estimate:
        """A prompt (or negative prompt, or file name) that an earlier node writes does not
        change the price: such fields get stand-ins; any other unknown field leaves the price
        unknown."""
        fields: dict[str, Any] = {}
        for key, value in self.with_.items():
            try:
                fields[key] = render(value, context, node_id=self.id, field=f"with.{key}")
            except TemplateError:
                if key not in _PRICE_NEUTRAL:
                    return super().estimate_unrendered_usd(context, prices)
                if _PRICE_NEUTRAL[key] is not None:
                    fields[key] = _PRICE_NEUTRAL[key]
        try:
            params = self.params_model.from_with(fields)
        except InvalidRequestError:
            return super().estimate_unrendered_usd(context, prices)
        assert isinstance(params, VideoParams)
        cost: Decimal = estimate_cost(params.request, prices=prices)
        return cost, "its prompt comes from an earlier node"
