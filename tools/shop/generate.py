"""Generating MiniShop's catalog from a seed: products, then goals built from them.

A seed fixes every product (type, title, attributes, options, price) and every
goal, so training, tests and the browser server see the same shop. Each goal is
built from a target product, so at least one product satisfies it; test goals
mix the training templates with held-out ones (`catalog.INSTRUCTION_TEMPLATES_BY_SPLIT`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from archer_agents.tools.shop.catalog import (
    BRANDS,
    COLOURS,
    INSTRUCTION_TEMPLATES,
    INSTRUCTION_TEMPLATES_BY_SPLIT,
    PRODUCT_TYPES,
    STYLES,
    TYPES_BY_NAME,
    Catalog,
    Goal,
    Product,
    and_join,
)


@dataclass(frozen=True)
class CatalogConfig:
    """How big a generated catalog is, and its seed."""

    seed: int
    n_products: int
    n_train_goals: int
    n_test_goals: int


CATALOG_CONFIGS = {
    "default": CatalogConfig(seed=0, n_products=300, n_train_goals=500, n_test_goals=100),
    "small": CatalogConfig(seed=7, n_products=48, n_train_goals=24, n_test_goals=12),
}


def generate_catalog(config: CatalogConfig) -> Catalog:
    """Build products and goals deterministically from ``config``."""
    rng = random.Random(config.seed)
    products = _generate_products(rng, config.n_products)
    goals = _generate_goals(rng, products, config.n_train_goals, config.n_test_goals)
    return Catalog(products, goals)


@lru_cache(maxsize=8)
def load_catalog(name: str = "default") -> Catalog:
    """A named catalog ('default': a few hundred products; 'small': for tests)."""
    if name not in CATALOG_CONFIGS:
        raise ValueError(f"unknown catalog {name!r}; use one of {sorted(CATALOG_CONFIGS)}")
    return generate_catalog(CATALOG_CONFIGS[name])


def _title_case(words: str) -> str:
    return " ".join(part.capitalize() for part in words.split())


def _generate_products(rng: random.Random, n: int) -> list[Product]:
    products: list[Product] = []
    titles: set[str] = set()
    asins: set[str] = set()
    for i in range(n):
        type_ = PRODUCT_TYPES[i % len(PRODUCT_TYPES)]
        attributes = tuple(
            rng.sample(type_.attributes, rng.randint(3, min(5, len(type_.attributes))))
        )
        colours = tuple(sorted(rng.sample(COLOURS, rng.randint(2, 4)), key=COLOURS.index))
        options: dict[str, tuple[str, ...]] = {"colour": colours}
        if type_.sizes:
            count = rng.randint(min(3, len(type_.sizes)), len(type_.sizes))
            options["size"] = tuple(sorted(rng.sample(type_.sizes, count), key=type_.sizes.index))
        low, high = type_.price_range
        price = math.floor(rng.uniform(low, high)) + 0.99
        title = ""
        while not title or title in titles:
            shown = " ".join(_title_case(a) for a in attributes[: rng.randint(1, 2)])
            title = f"{rng.choice(BRANDS)} {rng.choice(STYLES)} {shown} {_title_case(type_.name)}"
        titles.add(title)
        asin = ""
        while not asin or asin in asins:
            asin = "B0" + "".join(
                rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8)
            )
        asins.add(asin)
        sizes = f" Sizes: {', '.join(options['size'])}." if "size" in options else ""
        description = (
            f"A {type_.name} that is {and_join(attributes)}. Colours: {', '.join(colours)}.{sizes}"
        )
        products.append(
            Product(
                asin=asin,
                product_type=type_.name,
                title=title,
                description=description,
                attributes=attributes,
                options=options,
                price=price,
            )
        )
    return products


def _generate_goals(
    rng: random.Random, products: Sequence[Product], n_train: int, n_test: int
) -> dict[str, list[Goal]]:
    goals: dict[str, list[Goal]] = {"test": [], "train": []}
    seen: set[str] = set()
    plan = [("test", n_test), ("train", n_train)]
    for split, count in plan:
        templates = INSTRUCTION_TEMPLATES_BY_SPLIT[split]
        attempts = 0
        while len(goals[split]) < count:
            attempts += 1
            if attempts > count * 50:
                raise ValueError(
                    f"could not generate {count} distinct {split} goals from "
                    f"{len(products)} products; use more products or fewer goals"
                )
            product = rng.choice(products)
            type_ = TYPES_BY_NAME[product.product_type]
            attributes = tuple(rng.sample(product.attributes, rng.randint(1, 2)))
            options = {k: rng.choice(values) for k, values in product.options.items()}
            bound = (math.floor(product.price / 10) + 1 + rng.randint(0, 1)) * 10
            template = templates[len(goals[split]) % len(templates)]
            instruction = INSTRUCTION_TEMPLATES[template](
                type_, attributes, options, f"{bound:.2f}"
            )
            if instruction in seen:
                continue
            seen.add(instruction)
            goals[split].append(
                Goal(
                    goal_id=f"{split}-{len(goals[split]):04d}",
                    instruction=instruction,
                    product_type=product.product_type,
                    attributes=attributes,
                    options=options,
                    max_price=float(bound),
                    template=template,
                    target_asin=product.asin,
                )
            )
    return goals
