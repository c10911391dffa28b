"""The retail support desk's actions as LangChain tools over one `SupportStore`.

`build_support_tools` wraps the store's operations (`archer_agents.tools.support.store`)
as `SupportTool`s with pydantic argument schemas, tagged ``read`` or ``write`` (in
``tool.metadata["kind"]`` and ``tool.tags``); `replay` applies a plan of write
actions to a fork of a database.

This module does not use postponed annotations: LangChain resolves the type
hints of a tool's ``_run`` on every call, and real annotation objects save it
compiling strings each time.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from archer_agents.tools.support.models import Database
from archer_agents.tools.support.store import SupportStore

ToolKind = Literal["read", "write"]


def respond(message: str) -> str:
    """Send a message to the user; the user's reply comes back as the next observation."""
    return message


# -- argument schemas ----------------------------------------------------------------
_ORDER_ID = "The order id, such as '#W0000000' (with the '#')."
_ITEM_IDS = "Item ids of items in the order, such as ['1008292230']."
_NEW_ITEM_IDS = "Replacement item ids, in the same order as item_ids (same products)."
_PAYMENT = "A payment method id of the order's owner, such as 'gift_card_0000000'."


class EmailArgs(BaseModel):
    email: str = Field(description="The user's e-mail address, such as 'yusuf.li4@example.com'.")


class NameZipArgs(BaseModel):
    first_name: str = Field(description="The user's first name, such as 'John'.")
    last_name: str = Field(description="The user's last name, such as 'Doe'.")
    zip: str = Field(description="The user's five-digit zip code, such as '12345'.")


class UserIdArgs(BaseModel):
    user_id: str = Field(description="The user id, such as 'sara_doe_1234'.")


class OrderIdArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)


class ProductIdArgs(BaseModel):
    product_id: str = Field(description="The product id, such as '6086499569'.")


class NoArgs(BaseModel):
    pass


class CancelArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)
    reason: str = Field(description="Either 'no longer needed' or 'ordered by mistake'.")


class AddressArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)
    address1: str = Field(description="Street address, such as '123 Main Street'.")
    address2: str = Field(description="Apartment or suite, such as 'Apt 1'; '' if none.")
    city: str = Field(description="City, such as 'San Francisco'.")
    state: str = Field(description="State code, such as 'CA'.")
    country: str = Field(description="Country, such as 'USA'.")
    zip: str = Field(description="Five-digit zip code, such as '12345'.")


class ModifyItemsArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)
    item_ids: list[str] = Field(min_length=1, description=_ITEM_IDS)
    new_item_ids: list[str] = Field(min_length=1, description=_NEW_ITEM_IDS)
    payment_method_id: str = Field(description=_PAYMENT)


class PaymentArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)
    payment_method_id: str = Field(description=_PAYMENT)


class ReturnArgs(BaseModel):
    order_id: str = Field(description=_ORDER_ID)
    item_ids: list[str] = Field(min_length=1, description=_ITEM_IDS)
    payment_method_id: str = Field(
        description="The order's original payment method id or a gift card id of the user."
    )


class TransferArgs(BaseModel):
    summary: str = Field(description="A short summary of the user's issue.")


class RespondArgs(BaseModel):
    message: str = Field(description="What to say to the user.")


TOOL_SPECS: tuple[tuple[str, type[BaseModel], ToolKind], ...] = (
    ("find_user_id_by_email", EmailArgs, "read"),
    ("find_user_id_by_name_zip", NameZipArgs, "read"),
    ("get_user_details", UserIdArgs, "read"),
    ("get_order_details", OrderIdArgs, "read"),
    ("get_product_details", ProductIdArgs, "read"),
    ("list_all_product_types", NoArgs, "read"),
    ("cancel_pending_order", CancelArgs, "write"),
    ("modify_pending_order_address", AddressArgs, "write"),
    ("modify_pending_order_items", ModifyItemsArgs, "write"),
    ("modify_pending_order_payment", PaymentArgs, "write"),
    ("return_delivered_order_items", ReturnArgs, "write"),
    ("exchange_delivered_order_items", ModifyItemsArgs, "write"),
    ("transfer_to_human_agents", TransferArgs, "read"),
)
"""(tool name = `SupportStore` method, argument schema, read/write) for every database tool."""

WRITE_TOOLS: frozenset[str] = frozenset(name for name, _, kind in TOOL_SPECS if kind == "write")
RESPOND = "respond"
TRANSFER = "transfer_to_human_agents"
TURN_ENDING_TOOLS: frozenset[str] = frozenset({RESPOND, TRANSFER})
"""Tools after which the agent waits: its message went to the customer, or to a human agent."""


class SupportTool(BaseTool):
    """A support operation as a LangChain tool: validated keyword arguments in, text out."""

    func: Callable[..., str]
    """The operation, called with the validated arguments."""

    def _run(self, **kwargs: Any) -> str:
        return self.func(**kwargs)


def _make_tool(
    name: str, func: Callable[..., str], schema: type[BaseModel], kind: ToolKind
) -> BaseTool:
    return SupportTool(
        func=func,
        name=name,
        description=inspect.getdoc(func) or name,
        args_schema=schema,
        metadata={"kind": kind},
        tags=["support", kind],
        return_direct=name in TURN_ENDING_TOOLS,
    )


def build_support_tools(store: SupportStore, *, include_respond: bool = True) -> list[BaseTool]:
    """The support tools bound to ``store`` (plus ``respond`` unless excluded).

    ``respond`` and ``transfer_to_human_agents`` are ``return_direct``: in a
    LangChain agent (``create_agent``) they end the agent's turn, so the
    customer (or the human agent) speaks next.
    """
    tools = [
        _make_tool(name, getattr(store, name), schema, kind) for name, schema, kind in TOOL_SPECS
    ]
    if include_respond:
        tools.append(_make_tool(RESPOND, respond, RespondArgs, "read"))
    return tools


def apply_writes(db: Database, actions: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Apply write actions to ``db`` in place; raise if one is refused (a broken gold plan)."""
    store = SupportStore(db)
    for name, arguments in actions:
        if name not in WRITE_TOOLS:
            raise ValueError(
                f"only write tools can be replayed ({sorted(WRITE_TOOLS)}), got {name!r}"
            )
        output = getattr(store, name)(**arguments)
        if output.startswith("Error"):
            raise ValueError(
                f"gold action {name}({dict(arguments)}) was refused: {output}; "
                "the task generator built an action the database does not allow"
            )


def replay(db: Database, actions: Sequence[tuple[str, Mapping[str, Any]]]) -> Database:
    """A fork of ``db`` with the write actions applied (``db`` itself is unchanged)."""
    fork = db.fork()
    apply_writes(fork, actions)
    return fork
