"""The retail support desk's operations over one database, one method per tool.

`SupportStore` reads and changes a `Database`. A bad id or a wrong state is the
caller's mistake: the method returns ``"Error: ..."`` text and changes nothing;
it never raises for it. Successful calls return JSON text. The LangChain tools
that wrap these methods are in `archer_agents.tools.support.tools`.
"""

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from archer_agents.tools.support.models import (
    CANCEL_REASONS,
    PENDING_STATUSES,
    Address,
    Database,
    GiftCard,
    Order,
    OrderItem,
    PaymentTransaction,
    Product,
    User,
    Variant,
    money,
)


class ToolRefusal(Exception):
    """A call the database refuses; its message becomes the tool's ``Error: ...`` output."""


def _refusals_as_text(method: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        try:
            return method(*args, **kwargs)
        except ToolRefusal as exc:
            return f"Error: {exc}"

    return wrapper


def _json(data: Any) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return json.dumps(data)


def normalize_order_id(order_id: str) -> str:
    """``W1234567`` and ``#W1234567`` name the same order."""
    order_id = order_id.strip()
    return order_id if order_id.startswith("#") else f"#{order_id}"


class SupportStore:
    """The support desk's operations over one database (replaceable through `db`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- lookups shared by the operations ------------------------------------
    def _user(self, user_id: str) -> User:
        user = self.db.users.get(user_id.strip())
        if user is None:
            raise ToolRefusal("user not found")
        return user

    def _order(self, order_id: str) -> Order:
        order = self.db.orders.get(normalize_order_id(order_id))
        if order is None:
            raise ToolRefusal("order not found")
        return order

    def _owner(self, order: Order) -> User:
        return self.db.users[order.user_id]

    @staticmethod
    def _check_method(user: User, payment_method_id: str) -> None:
        if payment_method_id not in user.payment_methods:
            raise ToolRefusal(f"payment method {payment_method_id} not found for this user")

    @staticmethod
    def _check_balance(user: User, payment_method_id: str, amount: float) -> None:
        method = user.payment_methods[payment_method_id]
        if isinstance(method, GiftCard) and amount > 0 and method.balance < amount:
            raise ToolRefusal(
                f"insufficient gift card balance ({method.balance:.2f}) to pay {amount:.2f}"
            )

    def _credit_gift_card(self, user: User, payment_method_id: str, amount: float) -> User:
        """Add ``amount`` (may be negative) to a gift card; other methods are unchanged."""
        method = user.payment_methods[payment_method_id]
        if not isinstance(method, GiftCard) or amount == 0:
            return user
        updated = method.model_copy(update={"balance": money(method.balance + amount)})
        user = user.model_copy(
            update={"payment_methods": {**user.payment_methods, payment_method_id: updated}}
        )
        self.db.users[user.user_id] = user
        return user

    def _store_order(self, order: Order, **changes: Any) -> Order:
        updated = order.model_copy(update=changes)
        self.db.orders[order.order_id] = updated
        return updated

    @staticmethod
    def _item_ids_in(order: Order, item_ids: Sequence[str]) -> dict[str, OrderItem]:
        if len(set(item_ids)) != len(item_ids):
            raise ToolRefusal("duplicate item ids")
        by_id = {item.item_id: item for item in order.items}
        missing = [item_id for item_id in item_ids if item_id not in by_id]
        if missing:
            raise ToolRefusal(f"item(s) {', '.join(missing)} not found in order {order.order_id}")
        return {item_id: by_id[item_id] for item_id in item_ids}

    def _replacements(
        self, order: Order, item_ids: Sequence[str], new_item_ids: Sequence[str]
    ) -> tuple[list[tuple[OrderItem, Variant]], float]:
        """Each old item with its new variant (same product, available), and the price change."""
        if len(item_ids) != len(new_item_ids):
            raise ToolRefusal("the number of items to be exchanged should match")
        old_items = self._item_ids_in(order, item_ids)
        pairs = []
        for old_id, new_id in zip(item_ids, new_item_ids, strict=True):
            old = old_items[old_id]
            product = self.db.products[old.product_id]
            variant = product.variants.get(new_id)
            if new_id == old_id:
                raise ToolRefusal(f"new item {new_id} is the same as the old item")
            if variant is None:
                raise ToolRefusal(f"new item {new_id} is not a variant of product {product.name}")
            if not variant.available:
                raise ToolRefusal(f"new item {new_id} is not available")
            pairs.append((old, variant))
        difference = money(sum(new.price - old.price for old, new in pairs))
        return pairs, difference

    # -- read tools -------------------------------------------------------------
    @_refusals_as_text
    def find_user_id_by_email(self, email: str) -> str:
        """Find a user's id by their e-mail address. Use it first to authenticate the user."""
        wanted = email.strip().lower()
        for user in self.db.users.values():
            if user.email == wanted:
                return user.user_id
        raise ToolRefusal("user not found")

    @_refusals_as_text
    def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
        """Find a user's id by first name, last name and zip code (when the e-mail is unknown)."""
        wanted = (first_name.strip().lower(), last_name.strip().lower(), zip.strip())
        for user in self.db.users.values():
            key = (user.name.first_name.lower(), user.name.last_name.lower(), user.address.zip)
            if key == wanted:
                return user.user_id
        raise ToolRefusal("user not found")

    @_refusals_as_text
    def get_user_details(self, user_id: str) -> str:
        """Get a user's profile: name, e-mail, address, payment methods and order ids."""
        return _json(self._user(user_id))

    @_refusals_as_text
    def get_order_details(self, order_id: str) -> str:
        """Get an order's status, items, address, shipments and payment history."""
        return _json(self._order(order_id))

    @_refusals_as_text
    def get_product_details(self, product_id: str) -> str:
        """Get a product's variants: item ids, options, availability and current price."""
        product: Product | None = self.db.products.get(product_id.strip())
        if product is None:
            raise ToolRefusal("product not found")
        return _json(product)

    @_refusals_as_text
    def list_all_product_types(self) -> str:
        """List every product type's name with its product id."""
        names = sorted((p.name, p.product_id) for p in self.db.products.values())
        return _json(dict(names))

    # -- write tools ------------------------------------------------------------
    @_refusals_as_text
    def cancel_pending_order(self, order_id: str, reason: str) -> str:
        """Cancel a pending order; payments are refunded to the methods that paid them.

        The reason must be 'no longer needed' or 'ordered by mistake'. Confirm the
        details with the user and get an explicit "yes" first.
        """
        order = self._order(order_id)
        if order.status not in PENDING_STATUSES:
            raise ToolRefusal("non-pending order cannot be cancelled")
        if reason not in CANCEL_REASONS:
            raise ToolRefusal(f"invalid reason {reason!r}; use one of {list(CANCEL_REASONS)}")
        paid: dict[str, float] = {}
        for entry in order.payment_history:
            sign = 1.0 if entry.transaction_type == "payment" else -1.0
            method_id = entry.payment_method_id
            paid[method_id] = paid.get(method_id, 0.0) + sign * entry.amount
        refunds = []
        user = self._owner(order)
        for method_id, amount in paid.items():
            amount = money(amount)
            if amount <= 0:
                continue
            refunds.append(
                PaymentTransaction(
                    transaction_type="refund", amount=amount, payment_method_id=method_id
                )
            )
            if method_id in user.payment_methods:
                user = self._credit_gift_card(user, method_id, amount)
        order = self._store_order(
            order,
            status="cancelled",
            cancel_reason=reason,
            payment_history=[*order.payment_history, *refunds],
        )
        return _json(order)

    @_refusals_as_text
    def modify_pending_order_address(
        self,
        order_id: str,
        address1: str,
        address2: str,
        city: str,
        state: str,
        country: str,
        zip: str,
    ) -> str:
        """Change the shipping address of a pending order. Confirm with the user first."""
        order = self._order(order_id)
        if order.status not in PENDING_STATUSES:
            raise ToolRefusal("non-pending order cannot be modified")
        address = Address(
            address1=address1.strip(),
            address2=address2.strip(),
            city=city.strip(),
            state=state.strip(),
            country=country.strip(),
            zip=zip.strip(),
        )
        return _json(self._store_order(order, address=address))

    @_refusals_as_text
    def modify_pending_order_items(
        self,
        order_id: str,
        item_ids: list[str],
        new_item_ids: list[str],
        payment_method_id: str,
    ) -> str:
        """Swap items of a pending order for other available variants of the same products.

        Can be done once per order: collect every change first. The price
        difference is charged to (or refunded to) payment_method_id; a gift
        card must cover it. Confirm with the user first.
        """
        order = self._order(order_id)
        if order.status == "pending (item modified)":
            raise ToolRefusal("the items of this order were already modified once")
        if order.status != "pending":
            raise ToolRefusal("non-pending order cannot be modified")
        pairs, difference = self._replacements(order, item_ids, new_item_ids)
        user = self._owner(order)
        self._check_method(user, payment_method_id)
        self._check_balance(user, payment_method_id, difference)
        new_by_old = {old.item_id: new for old, new in pairs}
        items = [
            item
            if item.item_id not in new_by_old
            else item.model_copy(
                update={
                    "item_id": new_by_old[item.item_id].item_id,
                    "price": new_by_old[item.item_id].price,
                    "options": dict(new_by_old[item.item_id].options),
                }
            )
            for item in order.items
        ]
        history = list(order.payment_history)
        if difference != 0:
            history.append(
                PaymentTransaction(
                    transaction_type="payment" if difference > 0 else "refund",
                    amount=abs(difference),
                    payment_method_id=payment_method_id,
                )
            )
        self._credit_gift_card(user, payment_method_id, -difference)
        order = self._store_order(
            order, items=items, payment_history=history, status="pending (item modified)"
        )
        return _json(order)

    @_refusals_as_text
    def modify_pending_order_payment(self, order_id: str, payment_method_id: str) -> str:
        """Pay a pending order with another of the user's payment methods; the old one is refunded.

        Only for an order with a single payment; a gift card must cover the
        total. Confirm with the user first.
        """
        order = self._order(order_id)
        if order.status not in PENDING_STATUSES:
            raise ToolRefusal("non-pending order cannot be modified")
        if len(order.payment_history) != 1:
            raise ToolRefusal("only an order with a single payment can change its payment method")
        user = self._owner(order)
        self._check_method(user, payment_method_id)
        current = order.payment_history[0]
        if current.payment_method_id == payment_method_id:
            raise ToolRefusal("the new payment method should be different from the current one")
        self._check_balance(user, payment_method_id, current.amount)
        user = self._credit_gift_card(user, payment_method_id, -current.amount)
        if current.payment_method_id in user.payment_methods:
            self._credit_gift_card(user, current.payment_method_id, current.amount)
        history = [
            current,
            PaymentTransaction(
                transaction_type="payment",
                amount=current.amount,
                payment_method_id=payment_method_id,
            ),
            PaymentTransaction(
                transaction_type="refund",
                amount=current.amount,
                payment_method_id=current.payment_method_id,
            ),
        ]
        return _json(self._store_order(order, payment_history=history))

    @_refusals_as_text
    def return_delivered_order_items(
        self, order_id: str, item_ids: list[str], payment_method_id: str
    ) -> str:
        """Request a return of delivered items; the refund goes to payment_method_id.

        The refund method must be the order's original payment method or a gift
        card of the user. Confirm with the user first.
        """
        order = self._order(order_id)
        if order.status != "delivered":
            raise ToolRefusal("non-delivered order cannot be returned")
        user = self._owner(order)
        self._check_method(user, payment_method_id)
        original = order.payment_history[0].payment_method_id
        method = user.payment_methods[payment_method_id]
        if payment_method_id != original and not isinstance(method, GiftCard):
            raise ToolRefusal(
                "payment method should be either the original payment method or a gift card"
            )
        self._item_ids_in(order, item_ids)
        order = self._store_order(
            order,
            status="return requested",
            return_items=sorted(item_ids),
            return_payment_method_id=payment_method_id,
        )
        return _json(order)

    @_refusals_as_text
    def exchange_delivered_order_items(
        self,
        order_id: str,
        item_ids: list[str],
        new_item_ids: list[str],
        payment_method_id: str,
    ) -> str:
        """Request an exchange of delivered items for available variants of the same products.

        Can be done once per order: collect every change first. The price
        difference is charged to (or refunded to) payment_method_id; a gift
        card must cover it. Confirm with the user first.
        """
        order = self._order(order_id)
        if order.status != "delivered":
            raise ToolRefusal("non-delivered order cannot be exchanged")
        pairs, difference = self._replacements(order, item_ids, new_item_ids)
        user = self._owner(order)
        self._check_method(user, payment_method_id)
        self._check_balance(user, payment_method_id, difference)
        pairs.sort(key=lambda pair: pair[0].item_id)
        order = self._store_order(
            order,
            status="exchange requested",
            exchange_items=[old.item_id for old, _ in pairs],
            exchange_new_items=[new.item_id for _, new in pairs],
            exchange_payment_method_id=payment_method_id,
            exchange_price_difference=difference,
        )
        return _json(order)

    def transfer_to_human_agents(self, summary: str) -> str:
        """Hand the conversation to a human agent, with a summary of the issue.

        Only when the request is within policy but cannot be handled with these
        tools. This ends the conversation.
        """
        return "Transfer successful"
