"""Generate a retail support database from a seed.

Same seed and size, same database, on any machine: every draw comes from one
`random.Random` seeded with a string (hash-seed independent). The default size
is close to tau-bench's retail domain (500 users, 1,000 orders, 50 product
types, about 500 variants); ``small`` is for tests.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Literal

from archer_agents.tools.support.catalog import (
    CARD_BRANDS,
    CITIES,
    FIRST_NAMES,
    LAST_NAMES,
    PRODUCT_TYPES,
    STREETS,
    ProductType,
)
from archer_agents.tools.support.models import (
    CANCEL_REASONS,
    Address,
    CreditCard,
    Database,
    Fulfillment,
    GiftCard,
    Order,
    OrderItem,
    PaymentMethod,
    PaymentTransaction,
    PayPal,
    Product,
    User,
    UserName,
    Variant,
    money,
)


@dataclass(frozen=True)
class DatabaseSize:
    """How big a generated database is."""

    users: int
    """Number of customers."""
    orders: int
    """Number of orders, spread over the customers at random."""
    product_types: int
    """How many of the catalogue's product types to include (at most 50)."""
    variants_per_product: tuple[int, int]
    """Inclusive range of variants drawn per product (capped by its option combinations)."""

    def __post_init__(self) -> None:
        if self.users < 2 or self.orders < 1:
            raise ValueError(f"a database needs at least 2 users and 1 order, got {self}")
        if not 1 <= self.product_types <= len(PRODUCT_TYPES):
            raise ValueError(
                f"product_types must be between 1 and {len(PRODUCT_TYPES)}, "
                f"got {self.product_types}"
            )
        low, high = self.variants_per_product
        if not 2 <= low <= high:
            raise ValueError(
                f"variants_per_product must be (low, high) with 2 <= low <= high, got {low, high}"
            )


SIZES: dict[str, DatabaseSize] = {
    "default": DatabaseSize(users=500, orders=1000, product_types=50, variants_per_product=(7, 16)),
    "small": DatabaseSize(users=30, orders=90, product_types=20, variants_per_product=(4, 8)),
}

ORDER_STATUS_WEIGHTS: dict[str, float] = {
    "pending": 0.3,
    "processed": 0.2,
    "delivered": 0.4,
    "cancelled": 0.1,
}


def resolve_size(size: str | DatabaseSize) -> DatabaseSize:
    """A preset name (``default``, ``small``) or an explicit `DatabaseSize`."""
    if isinstance(size, DatabaseSize):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown database size {size!r}; use one of {sorted(SIZES)}")
    return SIZES[size]


class _Ids:
    """Unique random digit strings (product, item, payment, order and tracking ids)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def digits(self, n: int, prefix: str = "") -> str:
        while True:
            candidate = prefix + str(self.rng.randrange(10 ** (n - 1), 10**n))
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate


def generate_database(seed: int = 0, size: str | DatabaseSize = "default") -> Database:
    """A consistent database: every order's user, items and payment methods exist."""
    dims = resolve_size(size)
    rng = random.Random(f"support-db-{seed}")
    ids = _Ids(rng)
    products = _generate_products(rng, ids, PRODUCT_TYPES[: dims.product_types], dims)
    users = _generate_users(rng, ids, dims.users)
    orders, orders_of = _generate_orders(rng, ids, users, products, dims.orders)
    users = {
        user_id: user.model_copy(update={"orders": orders_of[user_id]})
        for user_id, user in users.items()
    }
    return Database(users=users, products=products, orders=orders)


def _generate_products(
    rng: random.Random, ids: _Ids, types: tuple[ProductType, ...], dims: DatabaseSize
) -> dict[str, Product]:
    products: dict[str, Product] = {}
    for kind in types:
        names = list(kind.options)
        combos = list(itertools.product(*(kind.options[name] for name in names)))
        count = min(rng.randint(*dims.variants_per_product), len(combos))
        variants: dict[str, Variant] = {}
        for combo in rng.sample(combos, count):
            item_id = ids.digits(10)
            price = money(kind.base_price * rng.uniform(0.8, 1.2))
            variants[item_id] = Variant(
                item_id=item_id,
                options=dict(zip(names, combo, strict=True)),
                available=rng.random() < 0.8,
                price=price,
            )
        product_id = ids.digits(10)
        products[product_id] = Product(product_id=product_id, name=kind.name, variants=variants)
    return products


def random_address(rng: random.Random) -> Address:
    """A plausible US address."""
    city, state, zip_prefix = rng.choice(CITIES)
    suite = rng.random()
    address2 = (
        f"Suite {rng.randint(100, 999)}"
        if suite < 0.4
        else f"Apt {rng.randint(1, 40)}"
        if suite < 0.7
        else ""
    )
    return Address(
        address1=f"{rng.randint(100, 9999)} {rng.choice(STREETS)}",
        address2=address2,
        city=city,
        state=state,
        country="USA",
        zip=f"{zip_prefix}{rng.randint(0, 99):02d}",
    )


def _generate_users(rng: random.Random, ids: _Ids, count: int) -> dict[str, User]:
    users: dict[str, User] = {}
    emails: set[str] = set()
    names_zips: set[tuple[str, str, str]] = set()
    while len(users) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        address = random_address(rng)
        user_id = f"{first}_{last}_{rng.randint(1000, 9999)}".lower()
        email = f"{first}.{last}{rng.randint(1, 9999)}@example.com".lower()
        key = (first, last, address.zip)
        if user_id in users or email in emails or key in names_zips:
            continue
        emails.add(email)
        names_zips.add(key)
        users[user_id] = User(
            user_id=user_id,
            name=UserName(first_name=first, last_name=last),
            email=email,
            address=address,
            payment_methods=_generate_payment_methods(rng, ids),
            orders=[],
        )
    return users


def _generate_payment_methods(rng: random.Random, ids: _Ids) -> dict[str, PaymentMethod]:
    methods: list[PaymentMethod] = []
    if rng.random() < 0.75:
        for _ in range(rng.choice((1, 1, 2))):
            methods.append(
                CreditCard(
                    id=ids.digits(7, "credit_card_"),
                    brand=rng.choice(CARD_BRANDS),
                    last_four=f"{rng.randint(0, 9999):04d}",
                )
            )
    if rng.random() < 0.45:
        methods.append(GiftCard(id=ids.digits(7, "gift_card_"), balance=float(rng.randint(0, 300))))
    if rng.random() < 0.4 or not methods:
        methods.append(PayPal(id=ids.digits(7, "paypal_")))
    return {method.id: method for method in methods}


def _generate_orders(
    rng: random.Random,
    ids: _Ids,
    users: dict[str, User],
    products: dict[str, Product],
    count: int,
) -> tuple[dict[str, Order], dict[str, list[str]]]:
    user_ids = list(users)
    product_list = list(products.values())
    statuses = list(ORDER_STATUS_WEIGHTS)
    weights = list(ORDER_STATUS_WEIGHTS.values())
    orders: dict[str, Order] = {}
    orders_of: dict[str, list[str]] = {user_id: [] for user_id in user_ids}
    for _ in range(count):
        user = users[rng.choice(user_ids)]
        chosen = rng.sample(product_list, min(rng.randint(1, 5), len(product_list)))
        items = []
        for product in chosen:
            variant = rng.choice(list(product.variants.values()))
            items.append(
                OrderItem(
                    name=product.name,
                    product_id=product.product_id,
                    item_id=variant.item_id,
                    price=variant.price,
                    options=dict(variant.options),
                )
            )
        total = money(sum(item.price for item in items))
        status = rng.choices(statuses, weights)[0]
        method = _payment_for(rng, user, total)
        history = [_transaction("payment", total, method)]
        if status == "cancelled":
            history.append(_transaction("refund", total, method))
        fulfillments = []
        if status in ("processed", "delivered"):
            fulfillments.append(
                Fulfillment(tracking_id=[ids.digits(12)], item_ids=[item.item_id for item in items])
            )
        order_id = ids.digits(7, "#W")
        orders[order_id] = Order(
            order_id=order_id,
            user_id=user.user_id,
            address=user.address,
            items=items,
            status=status,  # type: ignore[arg-type]
            fulfillments=fulfillments,
            payment_history=history,
            cancel_reason=rng.choice(CANCEL_REASONS) if status == "cancelled" else None,
        )
        orders_of[user.user_id].append(order_id)
    return orders, orders_of


def _transaction(
    kind: Literal["payment", "refund"], amount: float, method: str
) -> PaymentTransaction:
    return PaymentTransaction(transaction_type=kind, amount=amount, payment_method_id=method)


def _payment_for(rng: random.Random, user: User, total: float) -> str:
    """A payment method of the user; gift cards only when their balance would have covered it."""
    usable = [
        method.id
        for method in user.payment_methods.values()
        if not isinstance(method, GiftCard) or method.balance >= total
    ]
    return rng.choice(usable or list(user.payment_methods))
