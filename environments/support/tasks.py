"""SupportSim tasks: a simulated customer's hidden goal plus the gold outcome.

A task holds the user's goal (who they are, what they know, what they want, in
order), the gold actions (write tool calls that realise the goal) and the
required outputs (strings the agent must say in a ``respond``, such as a
price). This module has the task models and the plain-words descriptions of
goals, items and addresses that the simulated users and the scripted agents
share; `archer_agents.environments.support.task_generator` builds the tasks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from archer_agents.tools.support.models import Address

IntentKind = Literal[
    "cancel",
    "return",
    "exchange",
    "modify_address",
    "modify_items",
    "modify_payment",
    "info",
    "refuse",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ItemWish(_Frozen):
    """One item of an order the user wants to act on."""

    item_id: str = Field(description="The item in the order (hidden from the agent).")
    description: str = Field(description="How the user names it, e.g. 'the T-Shirt (...)'.")
    wanted: list[dict[str, str]] = Field(
        default_factory=list,
        description="Options of the replacement, first choice then fallback (exchange/modify).",
    )
    new_item_id: str | None = Field(None, description="The gold replacement item id.")


class Intent(_Frozen):
    """One thing the user wants, stated when it comes up, detailed when asked."""

    kind: IntentKind
    request: str = Field(description="How the user states it, without ids ('vague').")
    order_id: str | None = Field(None, description="The order concerned, if any.")
    order_hint: str = Field("", description="How the user identifies the order without its id.")
    items: list[ItemWish] = Field(default_factory=list)
    reason: str | None = Field(None, description="Cancellation reason.")
    payment_method_id: str | None = Field(None, description="The payment method to use.")
    payment_phrase: str | None = Field(None, description="How the user names that method.")
    new_address: Address | None = None
    question: str | None = Field(None, description="An information question.")
    answer: str | None = Field(None, description="Its required answer (a required output).")
    forbidden: Literal["cancel", "return"] | None = Field(
        None, description="For 'refuse': the action the user asks for that policy forbids."
    )


class UserGoal(_Frozen):
    """Who the simulated user is, what they know and what they want."""

    user_id: str
    first_name: str
    last_name: str
    zip: str
    email: str
    knows_email: bool = Field(description="False: the user says they do not remember it.")
    knows_order_ids: bool = Field(description="False: they describe the order instead.")
    intents: list[Intent] = Field(min_length=1)

    def instruction(self) -> str:
        """The goal in plain words (for an LLM user, and as the task's instruction)."""
        lines = [
            f"You are {self.first_name} {self.last_name}, zip code {self.zip}.",
            f"Your email is {self.email}."
            if self.knows_email
            else "You do not remember your email address.",
        ]
        for number, intent in enumerate(self.intents, 1):
            lines.append(f"Request {number}: {describe_intent(intent, self.knows_order_ids)}")
        return " ".join(lines)


class GoldAction(_Frozen):
    """A write tool call of the gold plan."""

    name: str
    arguments: dict[str, Any]


class SupportTask(_Frozen):
    """One SupportSim episode's hidden task."""

    task_id: str
    split: Literal["train", "test"]
    template: str
    goal: UserGoal
    gold_actions: list[GoldAction]
    required_outputs: list[str]


def mentions(text: str, output: str) -> bool:
    """Is a required output said in ``text``? Case, commas and dollar signs are ignored."""

    def norm(value: str) -> str:
        return value.lower().replace(",", "").replace("$", "")

    return norm(output) in norm(text)


def describe_options(options: dict[str, str]) -> str:
    return ", ".join(f"{name}: {value}" for name, value in options.items())


def describe_intent(intent: Intent, knows_order_ids: bool) -> str:
    """One sentence of the goal for an LLM user."""
    order = (
        f"order {intent.order_id}"
        if knows_order_ids or not intent.order_hint
        else f"{intent.order_hint} (you do not remember its id)"
    )
    items = " and ".join(item.description for item in intent.items)
    pay = f" using {intent.payment_phrase}" if intent.payment_phrase else ""
    if intent.kind == "cancel":
        return f"cancel {order}; the reason is '{intent.reason}'."
    if intent.kind == "return":
        return f"return {items} from {order}, refund to {intent.payment_phrase}."
    if intent.kind in ("exchange", "modify_items"):
        verb = "exchange" if intent.kind == "exchange" else "change (before it ships)"
        wishes = []
        for item in intent.items:
            wish = f"{item.description} for the one with {describe_options(item.wanted[0])}"
            if len(item.wanted) > 1:
                wish += f" (or, if unavailable, {describe_options(item.wanted[1])})"
            wishes.append(wish)
        return f"{verb} in {order}: {'; '.join(wishes)}; pay any difference{pay}."
    if intent.kind == "modify_address":
        assert intent.new_address is not None
        return f"ship {order} to {format_address(intent.new_address)}."
    if intent.kind == "modify_payment":
        return f"pay {order}{pay} instead."
    if intent.kind == "info":
        about = f" (about {order})" if intent.order_id else ""
        return f"ask: {intent.question}{about}. Make sure you get the answer."
    return f"{intent.request} ({order}). Insist; accept a refusal only if it is explained."


def format_address(address: Address) -> str:
    parts = [address.address1, address.address2, address.city, address.state]
    return ", ".join(p for p in parts if p) + f", {address.country}, {address.zip}"
