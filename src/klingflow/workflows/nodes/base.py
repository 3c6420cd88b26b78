"""What every node kind shares: `NodeParams`, the generic `Node[Params]`, and field checks.

A node keeps its `with:` block raw, literals and `{{ }}` templates mixed, because most
values exist only at run time. `node.render_params(context)` renders the block and validates
it into the kind's `Params` model (the `Node[...]` argument), so the engine never handles raw
dicts and a bad rendered value stops the node before anything is spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Self, TypeVar, cast

from pydantic import Field, StringConstraints, ValidationError

from klingflow.errors import InvalidRequestError
from klingflow.problems import problems_from
from klingflow.workflows._strict import Strict
from klingflow.workflows.retries import WorkflowRetry
from klingflow.workflows.templates import render

if TYPE_CHECKING:
    from klingflow.piapi.pricing import PriceTable
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = [
    "MAX_FILE_NAME_BYTES",
    "NODE_ID_PATTERN",
    "Node",
    "NodeId",
    "NodeParams",
    "check_file_name",
]

NODE_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN, max_length=64)]


MAX_FILE_NAME_BYTES = 255


def check_file_name(value: str | None) -> str | None:
    """A plain file name in the run's output folder: no folders, `..`, drive or backslash."""
    if value is None:
        return None
    if (
        not value.strip()
        or value.startswith("~")
        or any(mark in value for mark in ("/", "\\", ":", "\x00"))
        or value in (".", "..")
    ):
        raise ValueError(
            f"{value!r} must be a plain file name in the run's output folder "
            "(no '/', '..', '~', ':' or '\\')"
        )
    if len(value.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_FILE_NAME_BYTES} bytes (file systems' limit)")
    return value


class NodeParams(Strict):
    """Base of every node kind's parameters: its `with:` block after rendering."""

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        """Validate a rendered `with:` block; `InvalidRequestError` lists every problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InvalidRequestError(problems_from(error, prefix="with")) from None


P = TypeVar("P", bound=NodeParams)

Estimate = tuple[Decimal | None, str | None]
"""What a paid node would cost (None: unknown before the run) and a note on how it was
priced (None: nothing to say)."""


class Node(Strict, Generic[P]):
    """What every node has: an id, its raw `with:` block, an optional `if` and `retry`.

    A node kind subclasses `Node[ItsParams]` and adds `type: Literal["its.type"]`; the
    `Params` argument becomes `params_model`, which validates the rendered `with:` block.
    It overrides `run` (and, if it spends money, `is_paid` and `estimate_usd`).
    """

    params_model: ClassVar[type[NodeParams]]
    is_paid: ClassVar[bool] = False
    """Whether running the node submits a paid task, so a run's estimate prices it."""

    id: NodeId
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    if_: bool | str | None = Field(default=None, alias="if")
    retry: WorkflowRetry | None = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # `Node[KlingWaitParams]` records its argument; a kind's class inherits from that.
        super().__pydantic_init_subclass__(**kwargs)
        for klass in cls.__mro__:
            args = getattr(klass, "__pydantic_generic_metadata__", {}).get("args", ())
            if args and isinstance(args[0], type) and issubclass(args[0], NodeParams):
                cls.params_model = args[0]
                return

    def should_run(self, context: Mapping[str, Any]) -> bool:
        """Whether `if` holds in `context` (no `if`: always). Raises `TemplateError`.

        Validation makes sure a string `if` is one `{{ expression }}`, so it renders to a value
        (usually a bool), not to text that would always be truthy.
        """
        if self.if_ is None:
            return True
        return bool(render(self.if_, context, node_id=self.id, field="if"))

    def render_params(self, context: Mapping[str, Any]) -> P:
        """`with:` rendered in `context` and validated (`TemplateError`, `InvalidRequestError`)."""
        model = cast("type[P]", self.params_model)
        rendered = render(self.with_, context, node_id=self.id, field="with")
        try:
            return model.from_with(rendered)
        except InvalidRequestError as error:
            named = [(f"nodes.{self.id}.{field}", message) for field, message in error.problems]
            raise InvalidRequestError(named) from None

    async def run(self, rt: Runtime, params: P) -> Any:
        """Do the node's work with its rendered params; the output later nodes read."""
        raise NotImplementedError(f"{type(self).__name__} is run by the executor itself")

    def estimate_usd(self, context: Mapping[str, Any], prices: PriceTable) -> Estimate:
        """What the node would spend with the run's inputs in `context` (paid kinds only)."""
        raise NotImplementedError(f"{type(self).__name__} spends nothing")
