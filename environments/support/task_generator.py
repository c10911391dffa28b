"""SupportSim's task generator: tasks from intent templates over a generated database.

A task is built from one of ten intent templates over a user of its split
(disjoint train and test users). Every gold action is replayed on a working
fork of the database, so a later intent sees the earlier ones' effect and an
action the database refuses stops generation; doing nothing never wins a task.

Templates: ``cancel``, ``return``, ``exchange`` (with a fallback variant when
the first choice is out of stock), ``modify_address``, ``modify_items``,
``modify_payment``, ``info_order`` (tracking number or total paid),
``info_product`` (current price of a variant), ``refuse`` (a forbidden request,
such as cancelling another customer's or a shipped order, then an order question:
refuse, then help) and ``two_intents`` (two requests on two orders in one call).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

from archer_agents.environments.support.tasks import (
    GoldAction,
    Intent,
    ItemWish,
    SupportTask,
    UserGoal,
    describe_options,
)
from archer_agents.tools.support.generate import random_address
from archer_agents.tools.support.models import (
    CANCEL_REASONS,
    PENDING_STATUSES,
    CreditCard,
    Database,
    GiftCard,
    Order,
    User,
    money,
)
from archer_agents.tools.support.tools import apply_writes

TEMPLATES: tuple[str, ...] = (
    "cancel",
    "return",
    "exchange",
    "modify_address",
    "modify_items",
    "modify_payment",
    "info_order",
    "info_product",
    "refuse",
    "two_intents",
)

ORIGINAL_PAYMENT = "the original payment method"
SWAP_TOOLS = {
    "exchange": "exchange_delivered_order_items",
    "modify_items": "modify_pending_order_items",
}


def payment_phrase(user: User, method_id: str) -> str:
    method = user.payment_methods[method_id]
    if isinstance(method, CreditCard):
        return f"my {method.brand} credit card ending in {method.last_four}"
    if isinstance(method, GiftCard):
        return "my gift card"
    return "my PayPal account"


def split_users(db: Database, seed: int, test_fraction: float = 0.3) -> dict[str, list[str]]:
    """Disjoint train/test user pools, fixed for a seed."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    user_ids = sorted(db.users)
    random.Random(f"support-split-{seed}").shuffle(user_ids)
    n_test = max(1, round(len(user_ids) * test_fraction))
    return {"test": sorted(user_ids[:n_test]), "train": sorted(user_ids[n_test:])}


IntentBuild = tuple[Intent, list[GoldAction]]


class _TaskBuilder:
    """Builds intents for one split's users; every gold action is checked on a working fork."""

    def __init__(self, db: Database, rng: random.Random, pool: Sequence[str]) -> None:
        self.db = db
        self.rng = rng
        self.pool = list(pool)
        self.intent_builders: dict[str, Callable[[User, Database, set[str]], IntentBuild | None]]
        self.intent_builders = {
            "cancel": self.cancel,
            "return": self.return_items,
            "exchange": self.exchange,
            "modify_address": self.modify_address,
            "modify_items": self.modify_items,
            "modify_payment": self.modify_payment,
            "info_order": self.info_order,
            "info_product": self.info_product,
        }

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def _orders(user: User, work: Database, used: set[str], statuses: set[str]) -> list[Order]:
        return [
            work.orders[oid]
            for oid in user.orders
            if oid not in used and work.orders[oid].status in statuses
        ]

    @staticmethod
    def _hint(user: User, order: Order, work: Database) -> str:
        """'the order with the Laptop' when that names exactly one of the user's orders."""
        for item in order.items:
            holders = [o for o in user.orders if item.name in _names(work.orders[o])]
            if len(holders) == 1:
                return f"the order with the {item.name}"
        return ""

    @staticmethod
    def _finish(work: Database, intent: Intent, actions: list[GoldAction]) -> IntentBuild:
        """Apply the gold actions to the working fork, so the next intent sees their effect."""
        apply_writes(work, [(action.name, action.arguments) for action in actions])
        return intent, actions

    def _payment_for(self, user: User, amount: float, prefer: str | None = None) -> str | None:
        """A method of the user that can pay ``amount`` (a gift card needs the balance)."""
        usable = [
            m.id
            for m in user.payment_methods.values()
            if not isinstance(m, GiftCard) or amount <= 0 or m.balance >= amount
        ]
        if prefer in usable and self.rng.random() < 0.6:
            return prefer
        return self.rng.choice(usable) if usable else None

    # -- intents ------------------------------------------------------------------
    def cancel(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        orders = self._orders(user, work, used, set(PENDING_STATUSES))
        if not orders:
            return None
        order = self.rng.choice(orders)
        reason = self.rng.choice(CANCEL_REASONS)
        intent = Intent(
            kind="cancel",
            request="I'd like to cancel an order.",
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            reason=reason,
        )
        action = GoldAction(
            name="cancel_pending_order", arguments={"order_id": order.order_id, "reason": reason}
        )
        return self._finish(work, intent, [action])

    def return_items(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        orders = self._orders(user, work, used, {"delivered"})
        if not orders:
            return None
        order = self.rng.choice(orders)
        items = self.rng.sample(order.items, self.rng.randint(1, min(3, len(order.items))))
        original = order.payment_history[0].payment_method_id
        gift_cards = [m.id for m in user.payment_methods.values() if isinstance(m, GiftCard)]
        use_gift = bool(gift_cards) and original not in gift_cards and self.rng.random() < 0.4
        method = gift_cards[0] if use_gift else original
        if method not in user.payment_methods:
            return None
        intent = Intent(
            kind="return",
            request="I'd like to return some items from an order I received.",
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            items=[_wish(item.item_id, item.name, item.options) for item in items],
            payment_method_id=method,
            payment_phrase=payment_phrase(user, method) if use_gift else ORIGINAL_PAYMENT,
        )
        action = GoldAction(
            name="return_delivered_order_items",
            arguments={
                "order_id": order.order_id,
                "item_ids": sorted(item.item_id for item in items),
                "payment_method_id": method,
            },
        )
        return self._finish(work, intent, [action])

    def _swap(
        self, user: User, work: Database, used: set[str], kind: Literal["exchange", "modify_items"]
    ) -> IntentBuild | None:
        statuses = {"delivered"} if kind == "exchange" else {"pending"}
        candidates = []
        for order in self._orders(user, work, used, statuses):
            for item in order.items:
                others = [
                    v
                    for v in work.products[item.product_id].variants.values()
                    if v.item_id != item.item_id
                ]
                if any(v.available for v in others):
                    candidates.append((order, item, others))
        if not candidates:
            return None
        order, item, others = self.rng.choice(candidates)
        available = [v for v in others if v.available]
        unavailable = [v for v in others if not v.available]
        if kind == "exchange" and unavailable and self.rng.random() < 0.5:
            first, fallback = self.rng.choice(unavailable), self.rng.choice(available)
            chosen, wanted = fallback, [first.options, fallback.options]
        elif kind == "exchange" and len(others) > 1:
            first = self.rng.choice(available)
            fallback = self.rng.choice([v for v in others if v.item_id != first.item_id])
            chosen, wanted = first, [first.options, fallback.options]
        else:
            chosen = self.rng.choice(available)
            wanted = [chosen.options]
        difference = money(chosen.price - item.price)
        original = order.payment_history[0].payment_method_id
        method = self._payment_for(user, difference, prefer=original)
        if method is None:
            return None
        request = (
            "I'd like to exchange an item from an order I received."
            if kind == "exchange"
            else "I'd like to change an item in an order I just placed."
        )
        wish = _wish(item.item_id, item.name, item.options, wanted=wanted, new=chosen.item_id)
        intent = Intent(
            kind=kind,
            request=request,
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            items=[wish],
            payment_method_id=method,
            payment_phrase=payment_phrase(user, method),
        )
        action = GoldAction(
            name=SWAP_TOOLS[kind],
            arguments={
                "order_id": order.order_id,
                "item_ids": [item.item_id],
                "new_item_ids": [chosen.item_id],
                "payment_method_id": method,
            },
        )
        return self._finish(work, intent, [action])

    def exchange(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        return self._swap(user, work, used, "exchange")

    def modify_items(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        return self._swap(user, work, used, "modify_items")

    def modify_address(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        orders = self._orders(user, work, used, set(PENDING_STATUSES))
        if not orders:
            return None
        order = self.rng.choice(orders)
        address = random_address(self.rng)
        intent = Intent(
            kind="modify_address",
            request="I need to change the shipping address of an order I just placed.",
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            new_address=address,
        )
        action = GoldAction(
            name="modify_pending_order_address",
            arguments={"order_id": order.order_id, **address.model_dump()},
        )
        return self._finish(work, intent, [action])

    def modify_payment(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        candidates = []
        for order in self._orders(user, work, used, set(PENDING_STATUSES)):
            if len(order.payment_history) != 1:
                continue
            current = order.payment_history[0]
            for method in user.payment_methods.values():
                if method.id == current.payment_method_id:
                    continue
                if isinstance(method, GiftCard) and method.balance < current.amount:
                    continue
                candidates.append((order, method.id))
        if not candidates:
            return None
        order, method_id = self.rng.choice(candidates)
        intent = Intent(
            kind="modify_payment",
            request="I'd like to change the payment method of an order I just placed.",
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            payment_method_id=method_id,
            payment_phrase=payment_phrase(user, method_id),
        )
        action = GoldAction(
            name="modify_pending_order_payment",
            arguments={"order_id": order.order_id, "payment_method_id": method_id},
        )
        return self._finish(work, intent, [action])

    def info_order(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        orders = self._orders(user, work, used, {"pending", "processed", "delivered"})
        if not orders:
            return None
        order = self.rng.choice(orders)
        if order.fulfillments and self.rng.random() < 0.5:
            question = "What is the tracking number of one of my orders?"
            answer = order.fulfillments[0].tracking_id[0]
        else:
            question = "How much did I pay in total for one of my orders?"
            answer = f"{order.payment_history[0].amount:.2f}"
        intent = Intent(
            kind="info",
            request=question,
            order_id=order.order_id,
            order_hint=self._hint(user, order, work),
            question=question,
            answer=answer,
        )
        return self._finish(work, intent, [])

    def info_product(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        product = self.rng.choice(sorted(work.products.values(), key=lambda p: p.product_id))
        variant = self.rng.choice(list(product.variants.values()))
        question = (
            f"How much does the {product.name} with {describe_options(variant.options)} "
            "cost right now?"
        )
        intent = Intent(
            kind="info",
            request=question,
            items=[_wish(variant.item_id, product.name, variant.options)],
            question=question,
            answer=f"{variant.price:.2f}",
        )
        return self._finish(work, intent, [])

    def refuse(self, user: User, work: Database, used: set[str]) -> IntentBuild | None:
        """A forbidden request: another user's pending order, or a shipped (processed) order."""
        kind = self.rng.choice(("other_user", "cancel_processed", "return_processed"))
        if kind == "other_user":
            others = [
                o
                for uid in self.pool
                if uid != user.user_id
                for o in self._orders(work.users[uid], work, used, {"pending"})
            ]
            if not others:
                return None
            order = self.rng.choice(others)
            forbidden: Literal["cancel", "return"] = "cancel"
        else:
            orders = self._orders(user, work, used, {"processed"})
            if not orders:
                return None
            order = self.rng.choice(orders)
            forbidden = "cancel" if kind == "cancel_processed" else "return"
        if forbidden == "cancel":
            intent = Intent(
                kind="refuse",
                request="I'd like to cancel an order.",
                order_id=order.order_id,
                reason=self.rng.choice(CANCEL_REASONS),
                forbidden="cancel",
            )
        else:
            items = order.items[:1]
            intent = Intent(
                kind="refuse",
                request="I'd like to return an item from an order.",
                order_id=order.order_id,
                items=[_wish(item.item_id, item.name, item.options) for item in items],
                payment_phrase=ORIGINAL_PAYMENT,
                payment_method_id=order.payment_history[0].payment_method_id,
                forbidden="return",
            )
        return self._finish(work, intent, [])


def _names(order: Order) -> set[str]:
    return {item.name for item in order.items}


def _wish(
    item_id: str,
    name: str,
    options: dict[str, str],
    *,
    wanted: list[dict[str, str]] | None = None,
    new: str | None = None,
) -> ItemWish:
    return ItemWish(
        item_id=item_id,
        description=f"the {name} ({describe_options(options)})",
        wanted=[dict(w) for w in wanted or []],
        new_item_id=new,
    )


_PAIRABLE = ("cancel", "return", "exchange", "modify_address", "modify_payment", "modify_items")


def _build_task(
    builder: _TaskBuilder, template: str, user: User
) -> tuple[list[Intent], list[GoldAction]] | None:
    """The intents and gold actions of one task, or None when ``user`` cannot have it."""
    work = builder.db.fork()
    used: set[str] = set()
    if template in builder.intent_builders:
        plan = [builder.intent_builders[template]]
    elif template == "refuse":
        plan = [builder.refuse, builder.info_order]
    elif template == "two_intents":
        first, second = builder.rng.sample(_PAIRABLE, 2)
        plan = [builder.intent_builders[first], builder.intent_builders[second]]
        if builder.rng.random() < 0.3:
            plan[1] = builder.info_order
    else:
        raise ValueError(f"unknown template {template!r}; use one of {TEMPLATES}")
    intents: list[Intent] = []
    actions: list[GoldAction] = []
    for build in plan:
        built = build(work.users[user.user_id], work, used)  # as earlier intents left it
        if built is None:
            return None
        intent, gold = built
        if intent.order_id is not None:
            used.add(intent.order_id)
        intents.append(intent)
        actions.extend(gold)
    return intents, actions


def generate_tasks(
    db: Database,
    *,
    seed: int = 0,
    n_train: int = 300,
    n_test: int = 100,
    test_fraction: float = 0.3,
) -> dict[str, list[SupportTask]]:
    """``{"train": [...], "test": [...]}``, templates in equal turns, fixed for ``seed``."""
    pools = split_users(db, seed, test_fraction)
    tasks: dict[str, list[SupportTask]] = {}
    for split, count in (("train", n_train), ("test", n_test)):
        rng = random.Random(f"support-tasks-{seed}-{split}")
        builder = _TaskBuilder(db, rng, pools[split])
        seen: set[tuple[Any, ...]] = set()
        tasks[split] = []
        for index in range(count):
            template = TEMPLATES[index % len(TEMPLATES)]
            tasks[split].append(
                _sample_task(builder, template, f"{split}-{index:04d}-{template}", split, seen)
            )
    return tasks


def _sample_task(
    builder: _TaskBuilder, template: str, task_id: str, split: str, seen: set[tuple[Any, ...]]
) -> SupportTask:
    rng, db = builder.rng, builder.db
    for _ in range(400):
        user = db.users[rng.choice(builder.pool)]
        built = _build_task(builder, template, user)
        if built is None:
            continue
        intents, actions = built
        about = tuple((i.kind, i.order_id, i.question) for i in intents)
        signature = (template, user.user_id, about)
        if signature in seen:
            continue
        seen.add(signature)
        knows_ids = rng.random() < 0.75 or any(
            i.order_id is not None and not i.order_hint for i in intents
        )
        goal = UserGoal(
            user_id=user.user_id,
            first_name=user.name.first_name,
            last_name=user.name.last_name,
            zip=user.address.zip,
            email=user.email,
            knows_email=rng.random() < 0.6,
            knows_order_ids=knows_ids,
            intents=intents,
        )
        outputs = [i.answer for i in intents if i.answer is not None]
        return SupportTask(
            task_id=task_id,
            split=split,  # type: ignore[arg-type]
            template=template,
            goal=goal,
            gold_actions=actions,
            required_outputs=outputs,
        )
    raise ValueError(
        f"could not build a distinct {template!r} task for the {split} split from its "
        f"{len(builder.pool)} users; use a larger database size or fewer tasks"
    )
