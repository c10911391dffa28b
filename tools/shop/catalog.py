"""MiniShop's products and shopping goals: the product types, the models, the
instruction templates and the reward.

The reward is WebShop's formula with exact matching (`score_purchase`). Test
goals mix the training templates with held-out templates that never appear in
training. The catalog itself is generated from a seed in `generate`, so
nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ProductType:
    """A kind of product: the attributes and option values it can have."""

    name: str
    plural: bool
    attributes: tuple[str, ...]
    sizes: tuple[str, ...]
    """Empty for types sold in one size (then colour is the only option)."""
    price_range: tuple[float, float]


_CLOTHING_SIZES = ("xs", "s", "m", "l", "xl", "xxl")

PRODUCT_TYPES: tuple[ProductType, ...] = (
    ProductType(
        "t-shirt",
        False,
        (
            "machine washable",
            "cotton",
            "slim fit",
            "short sleeve",
            "moisture wicking",
            "organic",
            "crew neck",
            "quick dry",
        ),
        _CLOTHING_SIZES,
        (8.0, 40.0),
    ),
    ProductType(
        "shoes",
        True,
        (
            "waterproof",
            "leather",
            "non-slip",
            "lightweight",
            "memory foam",
            "breathable",
            "rubber sole",
            "slip-on",
        ),
        ("6", "7", "8", "9", "10", "11", "12"),
        (25.0, 120.0),
    ),
    ProductType(
        "headphones",
        True,
        (
            "wireless",
            "noise cancelling",
            "over-ear",
            "bluetooth",
            "foldable",
            "long battery life",
            "built-in microphone",
            "lightweight",
        ),
        (),
        (15.0, 200.0),
    ),
    ProductType(
        "jacket",
        False,
        (
            "waterproof",
            "hooded",
            "insulated",
            "windproof",
            "packable",
            "machine washable",
            "fleece lined",
            "zip pockets",
        ),
        ("s", "m", "l", "xl", "xxl"),
        (30.0, 150.0),
    ),
    ProductType(
        "backpack",
        False,
        (
            "water resistant",
            "laptop sleeve",
            "lightweight",
            "padded straps",
            "anti-theft",
            "usb charging port",
            "large capacity",
        ),
        (),
        (20.0, 90.0),
    ),
    ProductType(
        "jeans",
        True,
        (
            "stretch",
            "slim fit",
            "straight leg",
            "high waist",
            "machine washable",
            "cotton",
            "distressed",
        ),
        ("28", "30", "32", "34", "36"),
        (20.0, 80.0),
    ),
    ProductType(
        "water bottle",
        False,
        ("insulated", "bpa free", "leak proof", "stainless steel", "dishwasher safe", "wide mouth"),
        ("12 oz", "24 oz", "32 oz"),
        (10.0, 45.0),
    ),
    ProductType(
        "phone case",
        False,
        ("shockproof", "slim", "wireless charging compatible", "clear", "magnetic", "kickstand"),
        (),
        (8.0, 35.0),
    ),
    ProductType(
        "socks",
        True,
        ("cotton", "moisture wicking", "cushioned", "no show", "machine washable", "wool"),
        ("s", "m", "l"),
        (5.0, 25.0),
    ),
    ProductType(
        "desk lamp",
        False,
        ("dimmable", "led", "usb charging port", "adjustable arm", "touch control", "eye caring"),
        (),
        (15.0, 70.0),
    ),
    ProductType(
        "hoodie",
        False,
        ("fleece lined", "cotton", "machine washable", "zip up", "pullover", "oversized"),
        _CLOTHING_SIZES,
        (20.0, 70.0),
    ),
    ProductType(
        "sunglasses",
        True,
        ("polarized", "uv protection", "lightweight", "scratch resistant", "foldable"),
        (),
        (10.0, 90.0),
    ),
)

COLOURS = (
    "black", "white", "navy", "grey", "red", "blue", "green", "olive", "beige", "pink", "brown",
    "purple",
)  # fmt: skip
BRANDS = (
    "Northwind", "Acme", "Lumen", "Trailhead", "Bramble", "Cobalt", "Harbor", "Juniper",
    "Kestrel", "Meridian", "Pinecrest", "Quill", "Redwood", "Summit", "Tidewater", "Vantage",
)  # fmt: skip
STYLES = (
    "Classic", "Everyday", "Premium", "Urban", "Sport", "Essential", "Modern", "Vintage",
    "Active", "Pro",
)  # fmt: skip
TYPES_BY_NAME = {t.name: t for t in PRODUCT_TYPES}
_ASIN_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


class Product(BaseModel):
    """One product of the shop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asin: str = Field(description="Stable product id, e.g. 'B0A1B2C3D4'.")
    product_type: str = Field(description="One of the PRODUCT_TYPES names, e.g. 't-shirt'.")
    title: str = Field(description="Unique display title.")
    description: str = Field(description="A sentence or two of marketing text.")
    attributes: tuple[str, ...] = Field(description="Features, matched exactly by goals.")
    options: dict[str, tuple[str, ...]] = Field(
        description="Option dimension ('colour', 'size') -> the values on offer, in order."
    )
    price: float = Field(description="Price in dollars.")

    def search_text(self) -> str:
        """The text the search index ranks: title, description and attributes."""
        return " ".join([self.title, self.description, *self.attributes])


class Goal(BaseModel):
    """A shopping goal: what the instruction asks for, in structured form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal_id: str
    instruction: str = Field(description="The text the agent reads.")
    product_type: str
    attributes: tuple[str, ...] = Field(description="Attributes the product must have.")
    options: dict[str, str] = Field(description="Option dimension -> the value to choose.")
    max_price: float = Field(description="The price must be strictly lower than this.")
    template: int = Field(description="Index into INSTRUCTION_TEMPLATES.")
    target_asin: str = Field(description="The product the goal was generated from.")

    def keywords(self) -> str:
        """Search words for this goal: attributes, product type and colour."""
        words = [*self.attributes, self.product_type]
        if "colour" in self.options:
            words.append(self.options["colour"])
        return " ".join(words)


@dataclass(frozen=True)
class PurchaseScore:
    """WebShop's reward, with its parts, for one purchase against one goal."""

    reward: float
    type_match: bool
    attribute_hits: int
    option_hits: int
    price_ok: bool
    denominator: int

    @property
    def success(self) -> bool:
        return self.reward >= 1.0


def score_purchase(goal: Goal, product: Product, chosen: dict[str, str]) -> PurchaseScore:
    """type match x (attribute hits + option hits + price ok) / (attributes + options + 1).

    Matching is exact: an attribute hits when the product lists it verbatim, an
    option hits when the chosen value equals the goal's value.
    """
    type_match = product.product_type == goal.product_type
    attribute_hits = sum(1 for a in goal.attributes if a in product.attributes)
    option_hits = sum(1 for k, v in goal.options.items() if chosen.get(k) == v)
    price_ok = product.price < goal.max_price
    denominator = len(goal.attributes) + len(goal.options) + 1
    reward = 0.0
    if type_match:
        reward = (attribute_hits + option_hits + int(price_ok)) / denominator
    return PurchaseScore(reward, type_match, attribute_hits, option_hits, price_ok, denominator)


# -- instruction templates ---------------------------------------------------


def _article(type_: ProductType, first_word: str) -> str:
    if type_.plural:
        return ""
    return "an " if first_word[:1] in "aeio" else "a "


def _in_options(options: dict[str, str]) -> str:
    parts = [f"in {options['colour']}"]
    if "size" in options:
        parts.append(f"size {options['size']}")
    return ", ".join(parts)


def _with_options(options: dict[str, str]) -> str:
    if "size" in options:
        return f"with {options['colour']} color and {options['size']} size"
    return f"with {options['colour']} color"


def and_join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


Template = Callable[[ProductType, Sequence[str], dict[str, str], str], str]


def _t0(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    noun = f"{' '.join(attrs)} {t.name}"
    return (
        f"i need {_article(t, noun)}{noun} {_in_options(opts)}, "
        f"and price lower than {price} dollars"
    )


def _t1(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    noun = f"{' '.join(attrs)} {t.name}"
    return (
        f"i am looking for {_article(t, noun)}{noun} {_with_options(opts)}, "
        f"and price lower than {price} dollars"
    )


def _t2(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    verb = "are" if t.plural else "is"
    return (
        f"i want to buy {_article(t, t.name)}{t.name} that {verb} {and_join(attrs)}, "
        f"{_in_options(opts)}, priced under {price} dollars"
    )


def _t3(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    noun = f"{' '.join(attrs)} {t.name}"
    return (
        f"find me {_article(t, noun)}{noun} {_with_options(opts)} "
        f"that costs less than {price} dollars"
    )


def _t4(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    wanted = f"colour {opts['colour']}" + (f" and size {opts['size']}" if "size" in opts else "")
    return (
        f"shopping list: {t.name}, {and_join(attrs)}; {wanted}; must cost less than {price} dollars"
    )


def _t5(t: ProductType, attrs: Sequence[str], opts: dict[str, str], price: str) -> str:
    verb = "are" if t.plural else "is"
    noun = f"{opts['colour']} {t.name}"
    size = f" in size {opts['size']}" if "size" in opts else ""
    return (
        f"my budget is below {price} dollars. get me {_article(t, noun)}{noun}{size} "
        f"that {verb} {and_join(attrs)}"
    )


INSTRUCTION_TEMPLATES: tuple[Template, ...] = (_t0, _t1, _t2, _t3, _t4, _t5)
TRAIN_TEMPLATES = (0, 1, 2, 3)
HELD_OUT_TEMPLATES = (4, 5)
"""Templates used only by test goals, to measure generalisation to new phrasings."""


# -- the catalog ---------------------------------------------------------------


class Catalog:
    """Products (in a fixed order) and goals per split."""

    def __init__(self, products: Sequence[Product], goals: Mapping[str, Sequence[Goal]]) -> None:
        self.products = tuple(products)
        self.by_asin = {p.asin: p for p in self.products}
        if len(self.by_asin) != len(self.products):
            raise ValueError("product asins must be unique")
        self.goals = {split: tuple(goals.get(split, ())) for split in SPLITS}
        self._goal_index = {g.goal_id: g for split in SPLITS for g in self.goals[split]}

    def goal(self, goal_id: str) -> Goal:
        return self._goal_index[goal_id]

    def satisfying_products(self, goal: Goal) -> list[Product]:
        """Every product that earns reward 1 for ``goal`` with the right options chosen."""
        return [
            p
            for p in self.products
            if p.product_type == goal.product_type
            and all(a in p.attributes for a in goal.attributes)
            and all(v in p.options.get(k, ()) for k, v in goal.options.items())
            and p.price < goal.max_price
        ]


INSTRUCTION_TEMPLATES_BY_SPLIT = {
    "train": TRAIN_TEMPLATES,
    "test": TRAIN_TEMPLATES + HELD_OUT_TEMPLATES,
}
