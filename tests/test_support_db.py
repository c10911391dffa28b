"""SupportSim's domain: database generation, fingerprints, and every tool's happy path and errors."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel

from archer_agents.tools.support import (
    WRITE_TOOLS,
    Database,
    SupportStore,
    build_support_tools,
    generate_database,
    replay,
)
from archer_agents.tools.support import models as support_models
from archer_agents.tools.support.models import GiftCard, Order, User


@pytest.fixture(scope="module")
def db() -> Database:
    return generate_database(seed=0, size="small")


@pytest.fixture()
def store(db: Database) -> SupportStore:
    return SupportStore(db.fork())


def orders_where(db: Database, status: str) -> list[Order]:
    return [o for o in db.orders.values() if o.status == status]


def gift_card_of(user: User) -> GiftCard | None:
    return next((m for m in user.payment_methods.values() if isinstance(m, GiftCard)), None)


# -- generation -----------------------------------------------------------------------------
def test_same_seed_same_database_and_other_seed_differs(db: Database) -> None:
    assert generate_database(seed=0, size="small").fingerprint() == db.fingerprint()
    assert generate_database(seed=1, size="small").fingerprint() != db.fingerprint()


def test_default_size_is_close_to_tau_bench_retail() -> None:
    big = generate_database(seed=0)
    variants = sum(len(p.variants) for p in big.products.values())
    assert (len(big.users), len(big.orders), len(big.products)) == (500, 1000, 50)
    assert 450 <= variants <= 650
    statuses = {o.status for o in big.orders.values()}
    assert statuses == {"pending", "processed", "delivered", "cancelled"}


def test_small_size_for_tests(db: Database) -> None:
    assert (len(db.users), len(db.orders), len(db.products)) == (30, 90, 20)


def test_referential_integrity(db: Database) -> None:
    assert len({u.email for u in db.users.values()}) == len(db.users)
    name_zips = {(u.name.first_name, u.name.last_name, u.address.zip) for u in db.users.values()}
    assert len(name_zips) == len(db.users)
    listed = [oid for user in db.users.values() for oid in user.orders]
    assert sorted(listed) == sorted(db.orders)
    for order in db.orders.values():
        assert re.fullmatch(r"#W\d{7}", order.order_id)
        user = db.users[order.user_id]
        assert order.order_id in user.orders
        assert len({i.item_id for i in order.items}) == len(order.items) >= 1
        for item in order.items:
            variant = db.products[item.product_id].variants[item.item_id]
            assert variant.options == item.options
            assert db.products[item.product_id].name == item.name
        for entry in order.payment_history:
            assert entry.payment_method_id in user.payment_methods
            assert entry.amount > 0
        total = round(sum(i.price for i in order.items), 2)
        assert order.payment_history[0].amount == total
        shipped = order.status in ("processed", "delivered")
        assert bool(order.fulfillments) == shipped
        if order.status == "cancelled":
            assert order.payment_history[-1].transaction_type == "refund"
            assert order.cancel_reason in support_models.CANCEL_REASONS
    for product in db.products.values():
        assert all(v.item_id in product.variants for v in product.variants.values())
        assert all(v.price > 0 for v in product.variants.values())


def test_every_model_field_is_described() -> None:
    for name in dir(support_models):
        model = getattr(support_models, name)
        if (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and model.__module__ == (support_models.__name__)
        ):
            for field_name, field in model.model_fields.items():
                if field_name != "source":
                    assert field.description, f"{name}.{field_name} has no description"


def test_fork_shares_records_but_writes_stay_in_the_fork(db: Database) -> None:
    before = db.fingerprint()
    fork = db.fork()
    order = orders_where(db, "pending")[0]
    out = SupportStore(fork).cancel_pending_order(order.order_id, "no longer needed")
    assert not out.startswith("Error")
    assert db.orders[order.order_id].status == "pending"
    assert fork.orders[order.order_id].status == "cancelled"
    assert db.fingerprint() == before != fork.fingerprint()


def test_fingerprint_with_reused_digests_equals_full_fingerprint(db: Database) -> None:
    fork = db.fork()
    SupportStore(fork).cancel_pending_order(
        orders_where(db, "pending")[0].order_id, "no longer needed"
    )
    assert fork.fingerprint(db.record_digests()) == fork.fingerprint()
    assert Database.model_validate(fork.model_dump()).fingerprint() == fork.fingerprint()


def test_records_are_frozen(db: Database) -> None:
    order = next(iter(db.orders.values()))
    with pytest.raises(ValueError):
        order.status = "cancelled"  # type: ignore[misc]


# -- tools ------------------------------------------------------------------------------------
def test_tools_are_tagged_and_documented(store: SupportStore) -> None:
    tools = build_support_tools(store)
    names = {t.name for t in tools}
    assert len(tools) == 14 and "respond" in names
    for tool in tools:
        kind = (tool.metadata or {})["kind"]
        assert kind == ("write" if tool.name in WRITE_TOOLS else "read")
        assert kind in (tool.tags or [])
        assert tool.description and tool.args_schema is not None
    assert {
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    } == WRITE_TOOLS


def test_lookups(store: SupportStore, db: Database) -> None:
    user = next(iter(db.users.values()))
    assert store.find_user_id_by_email(user.email.upper()) == user.user_id
    assert store.find_user_id_by_email("nobody@example.com") == "Error: user not found"
    found = store.find_user_id_by_name_zip(
        user.name.first_name.lower(), user.name.last_name, user.address.zip
    )
    assert found == user.user_id
    assert store.find_user_id_by_name_zip("No", "Body", "00000") == "Error: user not found"
    assert json.loads(store.get_user_details(user.user_id))["email"] == user.email
    assert store.get_user_details("nobody_1") == "Error: user not found"
    order_id = user.orders[0]
    assert json.loads(store.get_order_details(order_id))["order_id"] == order_id
    assert json.loads(store.get_order_details(order_id.lstrip("#")))["order_id"] == order_id
    assert store.get_order_details("#W0000000") == "Error: order not found"
    product = next(iter(db.products.values()))
    assert json.loads(store.get_product_details(product.product_id))["name"] == product.name
    assert store.get_product_details("123") == "Error: product not found"
    assert json.loads(store.list_all_product_types())[product.name] == product.product_id
    assert store.transfer_to_human_agents("help") == "Transfer successful"


def test_tool_objects_return_text_and_errors_through_invoke(store: SupportStore) -> None:
    tools = {t.name: t for t in build_support_tools(store)}
    assert tools["get_order_details"].invoke({"order_id": "nope"}) == "Error: order not found"
    assert tools["respond"].invoke({"message": "hi"}) == "hi"


def test_cancel_refunds_and_refuses_wrong_states(store: SupportStore, db: Database) -> None:
    order = orders_where(db, "pending")[0]
    bad = store.cancel_pending_order(order.order_id, "too expensive")
    assert bad.startswith("Error: invalid reason")
    result = json.loads(store.cancel_pending_order(order.order_id, "ordered by mistake"))
    assert result["status"] == "cancelled" and result["cancel_reason"] == "ordered by mistake"
    refund = result["payment_history"][-1]
    assert refund["transaction_type"] == "refund"
    assert refund["amount"] == order.payment_history[0].amount
    again = store.cancel_pending_order(order.order_id, "ordered by mistake")
    assert again == "Error: non-pending order cannot be cancelled"
    for status in ("processed", "delivered"):
        shipped = orders_where(db, status)[0]
        assert store.cancel_pending_order(shipped.order_id, "no longer needed") == (
            "Error: non-pending order cannot be cancelled"
        )


def with_gift_card(db: Database, user_id: str, balance: float) -> tuple[Database, str]:
    """A fork where ``user_id`` holds a gift card with ``balance``."""
    fork = db.fork()
    user = fork.users[user_id]
    card = gift_card_of(user) or GiftCard(id="gift_card_0000001", balance=0.0)
    methods = {**user.payment_methods, card.id: card.model_copy(update={"balance": balance})}
    fork.users[user_id] = user.model_copy(update={"payment_methods": methods})
    return fork, card.id


def balance(db: Database, user_id: str) -> float:
    card = gift_card_of(db.users[user_id])
    assert card is not None
    return card.balance


def test_gift_card_pays_and_is_refunded_on_cancel(db: Database) -> None:
    order = orders_where(db, "pending")[0]
    total = order.payment_history[0].amount
    fork, card = with_gift_card(db, order.user_id, 5000.0)
    store = SupportStore(fork)
    assert not store.modify_pending_order_payment(order.order_id, card).startswith("Error")
    assert balance(fork, order.user_id) == round(5000.0 - total, 2)
    result = json.loads(store.cancel_pending_order(order.order_id, "no longer needed"))
    assert balance(fork, order.user_id) == 5000.0
    assert [(p["transaction_type"], p["payment_method_id"]) for p in result["payment_history"]][
        -1
    ] == (
        "refund",
        card,
    )


def test_gift_card_must_cover_a_charge(db: Database) -> None:
    order, old, _, _ = _swappable(db, "pending")
    product = db.products[next(i.product_id for i in order.items if i.item_id == old)]
    old_price = product.variants[old].price
    dearer = [v for v in product.variants.values() if v.available and v.price > old_price]
    assert dearer, "the small database should have a dearer variant to test with"
    fork, card = with_gift_card(db, order.user_id, 0.0)
    store = SupportStore(fork)
    before = fork.fingerprint()
    out = store.modify_pending_order_items(order.order_id, [old], [dearer[0].item_id], card)
    assert out.startswith("Error: insufficient gift card balance")
    assert fork.fingerprint() == before


def test_modify_address(store: SupportStore, db: Database) -> None:
    order = orders_where(db, "pending")[0]
    fields = dict(address1="1 A St", address2="", city="X", state="TX", country="USA", zip="11111")
    result = json.loads(store.modify_pending_order_address(order.order_id, **fields))
    assert result["address"] == fields
    delivered = orders_where(db, "delivered")[0]
    assert store.modify_pending_order_address(delivered.order_id, **fields) == (
        "Error: non-pending order cannot be modified"
    )


def _swappable(db: Database, status: str) -> tuple[Order, str, str, str]:
    """An order of ``status`` with an item, an available other variant and an unavailable one."""
    for order in orders_where(db, status):
        for item in order.items:
            variants = db.products[item.product_id].variants.values()
            free = [v.item_id for v in variants if v.available and v.item_id != item.item_id]
            gone = [v.item_id for v in variants if not v.available and v.item_id != item.item_id]
            if free and gone:
                return order, item.item_id, free[0], gone[0]
    raise AssertionError(f"no {status} order with swappable items")


def test_modify_items_once_with_price_difference(store: SupportStore, db: Database) -> None:
    order, old, new, unavailable = _swappable(db, "pending")
    method = order.payment_history[0].payment_method_id
    assert store.modify_pending_order_items(order.order_id, [old], [unavailable], method) == (
        f"Error: new item {unavailable} is not available"
    )
    other_product = (
        next(i for i in order.items if i.item_id != old) if len(order.items) > 1 else None
    )
    if other_product is not None:
        out = store.modify_pending_order_items(
            order.order_id, [old], [other_product.item_id], method
        )
        assert out.startswith("Error: new item") and "is not a variant" in out
    assert store.modify_pending_order_items(order.order_id, [old], [old], method).endswith(
        "is the same as the old item"
    )
    assert store.modify_pending_order_items(order.order_id, [old], [new, new], method) == (
        "Error: the number of items to be exchanged should match"
    )
    assert store.modify_pending_order_items(order.order_id, [old], [new], "paypal_0").startswith(
        "Error: payment method paypal_0 not found"
    )
    result = json.loads(store.modify_pending_order_items(order.order_id, [old], [new], method))
    assert result["status"] == "pending (item modified)"
    assert new in [i["item_id"] for i in result["items"]]
    found = db.find_variant(new)
    assert found is not None
    old_price = next(i.price for i in order.items if i.item_id == old)
    difference = round(found[1].price - old_price, 2)
    if difference:
        assert result["payment_history"][-1]["amount"] == abs(difference)
    assert store.modify_pending_order_items(order.order_id, [new], [old], method) == (
        "Error: the items of this order were already modified once"
    )


def test_modify_payment(store: SupportStore, db: Database) -> None:
    for order in orders_where(db, "pending"):
        user = db.users[order.user_id]
        current = order.payment_history[0].payment_method_id
        others = [
            m.id
            for m in user.payment_methods.values()
            if m.id != current and not isinstance(m, GiftCard)
        ]
        if others:
            break
    else:
        raise AssertionError("no pending order whose user has a second payment method")
    assert store.modify_pending_order_payment(order.order_id, current) == (
        "Error: the new payment method should be different from the current one"
    )
    result = json.loads(store.modify_pending_order_payment(order.order_id, others[0]))
    kinds = [(p["transaction_type"], p["payment_method_id"]) for p in result["payment_history"]]
    assert kinds == [("payment", current), ("payment", others[0]), ("refund", current)]
    assert store.modify_pending_order_payment(order.order_id, current).startswith(
        "Error: only an order with a single payment"
    )


def test_return_rules(store: SupportStore, db: Database) -> None:
    delivered = orders_where(db, "delivered")
    order = delivered[0]
    user = db.users[order.user_id]
    original = order.payment_history[0].payment_method_id
    item = order.items[0].item_id
    pending = orders_where(db, "pending")[0]
    assert store.return_delivered_order_items(pending.order_id, [item], original) == (
        "Error: non-delivered order cannot be returned"
    )
    assert store.return_delivered_order_items(order.order_id, ["0000000000"], original).startswith(
        "Error: item(s) 0000000000 not found"
    )
    assert store.return_delivered_order_items(order.order_id, [item, item], original) == (
        "Error: duplicate item ids"
    )
    for candidate in delivered:
        owner = db.users[candidate.user_id]
        first = candidate.payment_history[0].payment_method_id
        wrong = [
            m.id
            for m in owner.payment_methods.values()
            if m.id != first and not isinstance(m, GiftCard)
        ]
        if wrong:
            out = store.return_delivered_order_items(
                candidate.order_id, [candidate.items[0].item_id], wrong[0]
            )
            assert out == (
                "Error: payment method should be either the original payment method or a gift card"
            )
            break
    result = json.loads(store.return_delivered_order_items(order.order_id, [item], original))
    assert result["status"] == "return requested"
    assert (result["return_items"], result["return_payment_method_id"]) == ([item], original)
    assert user.user_id == result["user_id"]


def test_exchange(store: SupportStore, db: Database) -> None:
    order, old, new, _ = _swappable(db, "delivered")
    method = order.payment_history[0].payment_method_id
    pending = orders_where(db, "pending")[0]
    assert store.exchange_delivered_order_items(
        pending.order_id, [pending.items[0].item_id], [new], method
    ) == ("Error: non-delivered order cannot be exchanged")
    result = json.loads(store.exchange_delivered_order_items(order.order_id, [old], [new], method))
    assert result["status"] == "exchange requested"
    assert (result["exchange_items"], result["exchange_new_items"]) == ([old], [new])
    assert store.exchange_delivered_order_items(order.order_id, [old], [new], method) == (
        "Error: non-delivered order cannot be exchanged"
    )


def test_refused_writes_leave_the_database_unchanged(db: Database) -> None:
    store = SupportStore(db.fork())
    delivered = orders_where(db, "delivered")[0]
    store.cancel_pending_order(delivered.order_id, "no longer needed")
    store.modify_pending_order_payment(delivered.order_id, "paypal_0")
    store.exchange_delivered_order_items(delivered.order_id, ["1"], ["2"], "x")
    assert store.db.fingerprint() == db.fingerprint()


def test_replay_applies_gold_actions_and_refuses_broken_ones(db: Database) -> None:
    order = orders_where(db, "pending")[0]
    action = ("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})
    replayed = replay(db, [action])
    assert replayed.orders[order.order_id].status == "cancelled"
    assert db.orders[order.order_id].status == "pending"
    with pytest.raises(ValueError, match="was refused"):
        replay(db, [action, action])
    with pytest.raises(ValueError, match="only write tools"):
        replay(db, [("get_order_details", {"order_id": order.order_id})])
