"""The retail support database as pydantic models.

Records (users, products, orders) are frozen: a tool never edits one in place,
it stores an updated copy (`model_copy(update=...)`) under the same key. That
makes `Database.fork` cheap (three shallow dict copies share every record) and
makes a record's digest a pure function of the object, so the final
fingerprint of an episode re-hashes only the records the episode replaced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OrderStatus = Literal[
    "pending",
    "pending (item modified)",
    "processed",
    "delivered",
    "cancelled",
    "return requested",
    "exchange requested",
]
PENDING_STATUSES: frozenset[str] = frozenset({"pending", "pending (item modified)"})
CANCEL_REASONS: tuple[str, ...] = ("no longer needed", "ordered by mistake")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(_Record):
    """A postal address."""

    address1: str = Field(description="Street address, e.g. '123 Main Street'.")
    address2: str = Field(description="Apartment or suite, e.g. 'Suite 401'; may be empty.")
    city: str = Field(description="City name.")
    state: str = Field(description="Two-letter state code, e.g. 'TX'.")
    country: str = Field(description="Country name, e.g. 'USA'.")
    zip: str = Field(description="Five-digit zip code.")


class CreditCard(_Record):
    """A credit card on file."""

    source: Literal["credit_card"] = "credit_card"
    id: str = Field(description="Payment method id, e.g. 'credit_card_4421486'.")
    brand: str = Field(description="Card brand, e.g. 'visa'.")
    last_four: str = Field(description="Last four digits of the card number.")


class GiftCard(_Record):
    """A store gift card with a spendable balance."""

    source: Literal["gift_card"] = "gift_card"
    id: str = Field(description="Payment method id, e.g. 'gift_card_7219486'.")
    balance: float = Field(description="Remaining balance in dollars.")


class PayPal(_Record):
    """A linked PayPal account."""

    source: Literal["paypal"] = "paypal"
    id: str = Field(description="Payment method id, e.g. 'paypal_2192299'.")


PaymentMethod = Annotated[CreditCard | GiftCard | PayPal, Field(discriminator="source")]


class UserName(_Record):
    """A person's name."""

    first_name: str = Field(description="Given name.")
    last_name: str = Field(description="Family name.")


class User(_Record):
    """A customer account."""

    user_id: str = Field(description="Account id, e.g. 'mia_garcia_4516'.")
    name: UserName = Field(description="The customer's name.")
    email: str = Field(description="Account e-mail address (unique).")
    address: Address = Field(description="Default shipping address.")
    payment_methods: dict[str, PaymentMethod] = Field(
        description="Payment methods on file, keyed by payment method id."
    )
    orders: list[str] = Field(description="Ids of this customer's orders, oldest first.")


class Variant(_Record):
    """One purchasable variant (an item) of a product."""

    item_id: str = Field(description="Ten-digit item id.")
    options: dict[str, str] = Field(description="Option values, e.g. {'color': 'red'}.")
    available: bool = Field(description="Whether the item can be ordered now.")
    price: float = Field(description="Current price in dollars.")


class Product(_Record):
    """A product type and its variants."""

    product_id: str = Field(description="Ten-digit product id.")
    name: str = Field(description="Product type name, e.g. 'T-Shirt'.")
    variants: dict[str, Variant] = Field(description="Variants keyed by item id.")


class OrderItem(_Record):
    """An item as bought in an order (price at the time of purchase)."""

    name: str = Field(description="Product type name.")
    product_id: str = Field(description="Product id.")
    item_id: str = Field(description="Item (variant) id.")
    price: float = Field(description="Price paid in dollars.")
    options: dict[str, str] = Field(description="Option values of the item.")


class PaymentTransaction(_Record):
    """A payment or refund on an order."""

    transaction_type: Literal["payment", "refund"] = Field(description="Money in or out.")
    amount: float = Field(description="Amount in dollars, positive.")
    payment_method_id: str = Field(description="Which payment method was charged or refunded.")


class Fulfillment(_Record):
    """A shipment of some of an order's items."""

    tracking_id: list[str] = Field(description="Carrier tracking numbers (twelve digits).")
    item_ids: list[str] = Field(description="Items in this shipment.")


class Order(_Record):
    """A customer order and everything that happened to it."""

    order_id: str = Field(description="Order id, e.g. '#W2611340'.")
    user_id: str = Field(description="Owner's account id.")
    address: Address = Field(description="Shipping address.")
    items: list[OrderItem] = Field(description="Items bought (item ids are distinct).")
    status: OrderStatus = Field(description="Where the order stands.")
    fulfillments: list[Fulfillment] = Field(description="Shipments (processed/delivered only).")
    payment_history: list[PaymentTransaction] = Field(description="Payments and refunds.")
    cancel_reason: str | None = Field(None, description="Why it was cancelled, if it was.")
    return_items: list[str] | None = Field(None, description="Items requested for return.")
    return_payment_method_id: str | None = Field(None, description="Where a return refunds.")
    exchange_items: list[str] | None = Field(None, description="Items requested for exchange.")
    exchange_new_items: list[str] | None = Field(None, description="Replacement item ids.")
    exchange_payment_method_id: str | None = Field(
        None, description="Pays or receives the exchange's price difference."
    )
    exchange_price_difference: float | None = Field(
        None, description="New minus old price of the exchanged items."
    )


def money(value: float) -> float:
    """Round a dollar amount to cents, so replays in any order compare equal.

    Adding 0.0 turns a rounded -0.0 into 0.0, which serialises the same way.
    """
    return round(value, 2) + 0.0


def canonical_json(record: BaseModel) -> str:
    """Sorted-key compact JSON of a record: the text its digest is taken over."""
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


TABLES: tuple[str, ...] = ("users", "products", "orders")

RecordDigests = dict[str, dict[str, tuple[BaseModel, str]]]
"""``table -> id -> (record object, sha256 of its canonical JSON)``."""


def _digest(record: BaseModel) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


class Database(BaseModel):
    """Users, products and orders, keyed by id.

    Only the three dicts change: tools replace a record by an updated copy.
    Never assign to a record's fields (they are frozen) or mutate its lists or
    dicts in place: forks share records.
    """

    model_config = ConfigDict(extra="forbid")

    users: dict[str, User] = Field(description="Customers keyed by user id.")
    products: dict[str, Product] = Field(description="Products keyed by product id.")
    orders: dict[str, Order] = Field(description="Orders keyed by order id.")

    def fork(self) -> Database:
        """An independent database sharing every (immutable) record with this one."""
        return Database.model_construct(
            users=dict(self.users), products=dict(self.products), orders=dict(self.orders)
        )

    def record_digests(self, reuse: RecordDigests | None = None) -> RecordDigests:
        """Digest of every record, reusing ``reuse``'s digest where the object is the same."""
        reuse = reuse or {}
        digests: RecordDigests = {}
        for table in TABLES:
            known_rows = reuse.get(table, {})
            rows: Mapping[str, BaseModel] = getattr(self, table)
            table_digests = digests[table] = {}
            for key, record in rows.items():
                known = known_rows.get(key)
                if known is not None and known[0] is record:
                    table_digests[key] = known
                else:
                    table_digests[key] = (record, _digest(record))
        return digests

    def fingerprint(self, reuse: RecordDigests | None = None) -> str:
        """sha256 over the per-record digests of canonical JSON, in table and id order.

        Equal fingerprints mean equal data. With ``reuse`` (the digests of the
        database this one was forked from) only replaced records are re-hashed.
        """
        digests = self.record_digests(reuse)
        lines = [
            f"{table}/{key} {rows[key][1]}"
            for table, rows in digests.items()
            for key in sorted(rows)
        ]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def find_variant(self, item_id: str) -> tuple[Product, Variant] | None:
        """The product and variant of an item id, if it exists (linear in products)."""
        for product in self.products.values():
            variant = product.variants.get(item_id)
            if variant is not None:
                return product, variant
        return None
