"""Fixed vocabularies the database generator draws from.

Kept as code constants (not a data file) because they are small and typed: the
product types with their option dimensions and a base price, people's names,
and (city, state, zip prefix) triples for addresses.
"""

from __future__ import annotations

from typing import NamedTuple


class ProductType(NamedTuple):
    """A kind of product: its name, option dimensions and a typical price."""

    name: str
    options: dict[str, tuple[str, ...]]
    base_price: float


_SHOE_SIZES = ("6", "7", "8", "9", "10", "11", "12")

PRODUCT_TYPES: tuple[ProductType, ...] = (
    ProductType(
        "T-Shirt",
        {
            "color": ("red", "blue", "black", "white", "green", "purple"),
            "size": ("S", "M", "L", "XL", "XXL"),
            "material": ("cotton", "polyester"),
        },
        50.0,
    ),
    ProductType(
        "Jigsaw Puzzle",
        {
            "pieces": ("500", "1000", "1500", "2000"),
            "theme": ("animals", "art", "fantasy", "landscape"),
            "difficulty level": ("beginner", "intermediate", "expert"),
        },
        45.0,
    ),
    ProductType(
        "Running Shoes",
        {
            "size": _SHOE_SIZES,
            "color": ("black", "white", "red", "yellow"),
            "material": ("mesh", "leather", "synthetic"),
        },
        150.0,
    ),
    ProductType(
        "Water Bottle",
        {
            "capacity": ("500ml", "750ml", "1000ml"),
            "material": ("stainless steel", "plastic", "glass"),
            "color": ("blue", "black", "red", "green"),
        },
        25.0,
    ),
    ProductType(
        "Desk Lamp",
        {
            "color": ("black", "white", "silver"),
            "brightness": ("low", "medium", "high"),
            "power source": ("AC adapter", "USB", "battery"),
        },
        120.0,
    ),
    ProductType(
        "Backpack",
        {
            "color": ("black", "grey", "navy", "green"),
            "size": ("small", "medium", "large"),
            "material": ("nylon", "polyester", "leather"),
            "compartment": ("laptop", "hydration", "camera"),
        },
        190.0,
    ),
    ProductType(
        "Bluetooth Speaker",
        {
            "color": ("black", "blue", "red", "green"),
            "battery life": ("10 hours", "20 hours"),
            "water resistance": ("yes", "no"),
        },
        230.0,
    ),
    ProductType(
        "Office Chair",
        {
            "material": ("mesh", "leather", "fabric"),
            "color": ("black", "gray", "blue", "red"),
            "armrest": ("fixed", "adjustable", "none"),
            "backrest height": ("standard", "high-back"),
        },
        480.0,
    ),
    ProductType(
        "Laptop",
        {
            "screen size": ("13-inch", "15-inch", "17-inch"),
            "processor": ("i5", "i7", "i9"),
            "ram": ("8GB", "16GB", "32GB"),
            "storage": ("256GB SSD", "512GB SSD", "1TB SSD"),
            "color": ("silver", "space grey", "black"),
        },
        2400.0,
    ),
    ProductType(
        "Smart Watch",
        {
            "color": ("black", "silver", "gold", "rose gold"),
            "band material": ("silicone", "leather", "metal"),
            "display": ("AMOLED", "LCD"),
        },
        320.0,
    ),
    ProductType(
        "Headphones",
        {
            "type": ("over-ear", "on-ear", "in-ear"),
            "connectivity": ("wired", "wireless"),
            "color": ("black", "white", "blue", "red"),
        },
        200.0,
    ),
    ProductType(
        "Coffee Maker",
        {
            "color": ("black", "stainless steel", "white"),
            "capacity": ("1 cup", "4 cups", "8 cups", "12 cups"),
            "type": ("drip", "espresso", "french press", "single serve"),
            "features": ("timer", "auto shutoff", "built-in grinder"),
        },
        260.0,
    ),
    ProductType(
        "Hiking Boots",
        {
            "size": _SHOE_SIZES,
            "material": ("leather", "synthetic"),
            "waterproof": ("yes", "no"),
        },
        230.0,
    ),
    ProductType(
        "Sunglasses",
        {
            "frame color": ("black", "brown", "silver", "gold"),
            "lens color": ("green", "brown", "grey", "blue"),
            "lens type": ("polarized", "non-polarized"),
            "frame material": ("plastic", "metal"),
        },
        260.0,
    ),
    ProductType(
        "Skateboard",
        {
            "deck material": ("maple", "bamboo", "plastic"),
            "length": ("28 inch", "31 inch", "34 inch"),
            "design": ("plain", "graphic", "custom"),
        },
        170.0,
    ),
    ProductType(
        "Tea Kettle",
        {
            "material": ("stainless steel", "glass", "ceramic"),
            "capacity": ("1 liter", "1.5 liters", "2 liters"),
            "stovetop compatibility": ("gas", "electric", "induction"),
        },
        90.0,
    ),
    ProductType(
        "Bicycle",
        {
            "frame size": ("small", "medium", "large"),
            "color": ("red", "blue", "black", "green"),
            "type": ("road", "mountain", "hybrid"),
        },
        1500.0,
    ),
    ProductType(
        "Electric Kettle",
        {
            "capacity": ("1L", "1.5L", "2L"),
            "material": ("plastic", "stainless steel", "glass"),
            "color": ("black", "white", "silver"),
        },
        130.0,
    ),
    ProductType(
        "Mechanical Keyboard",
        {
            "switch type": ("linear", "tactile", "clicky"),
            "backlight": ("none", "white", "RGB"),
            "size": ("full size", "80%", "60%"),
        },
        220.0,
    ),
    ProductType(
        "Gaming Mouse",
        {
            "color": ("black", "white", "RGB"),
            "sensor type": ("optical", "laser"),
            "connectivity": ("wired", "wireless"),
        },
        140.0,
    ),
    ProductType(
        "Yoga Mat",
        {
            "thickness": ("4mm", "6mm", "8mm"),
            "material": ("PVC", "natural rubber", "TPE"),
            "color": ("pink", "blue", "green", "purple"),
        },
        100.0,
    ),
    ProductType(
        "Wristwatch",
        {
            "strap material": ("leather", "metal", "silicone"),
            "dial color": ("black", "white", "blue"),
        },
        2000.0,
    ),
    ProductType(
        "Air Purifier",
        {
            "room size": ("small", "medium", "large"),
            "filter type": ("HEPA", "carbon", "ionic"),
            "features": ("night mode", "quiet operation", "smart sensors"),
        },
        520.0,
    ),
    ProductType(
        "Cycling Helmet",
        {
            "size": ("S", "M", "L"),
            "color": ("black", "white", "red", "blue"),
            "ventilation": ("low", "medium", "high"),
        },
        190.0,
    ),
    ProductType(
        "Garden Hose",
        {
            "length": ("25ft", "50ft", "100ft"),
            "material": ("rubber", "vinyl", "latex"),
            "color": ("green", "blue", "black"),
        },
        95.0,
    ),
    ProductType(
        "Portable Charger",
        {
            "capacity": ("5000mAh", "10000mAh", "20000mAh"),
            "output": ("USB-A", "USB-C", "wireless"),
            "color": ("black", "white", "blue"),
        },
        80.0,
    ),
    ProductType(
        "Notebook",
        {
            "size": ("A4", "A5", "pocket"),
            "cover type": ("hard cover", "soft cover"),
            "ruling": ("lined", "dotted", "blank"),
        },
        30.0,
    ),
    ProductType(
        "Action Camera",
        {
            "resolution": ("1080p", "4K", "5K"),
            "waterproof": ("yes", "no"),
            "color": ("black", "silver"),
        },
        420.0,
    ),
    ProductType(
        "Vacuum Cleaner",
        {
            "type": ("upright", "canister", "robotic"),
            "bag type": ("bagged", "bagless"),
            "features": ("pet hair removal", "cordless", "HEPA filter"),
        },
        560.0,
    ),
    ProductType(
        "Fleece Jacket",
        {
            "size": ("S", "M", "L", "XL"),
            "color": ("black", "navy", "red", "grey"),
            "zipper": ("full", "half"),
        },
        130.0,
    ),
    ProductType(
        "Pet Bed",
        {
            "size": ("small", "medium", "large"),
            "material": ("fleece", "memory foam", "polyester"),
            "color": ("grey", "brown", "beige"),
        },
        180.0,
    ),
    ProductType(
        "Sneakers",
        {
            "size": _SHOE_SIZES,
            "color": ("white", "black", "grey", "red"),
            "material": ("canvas", "leather", "synthetic"),
        },
        190.0,
    ),
    ProductType(
        "Digital Camera",
        {
            "resolution": ("20MP", "24MP", "30MP"),
            "zoom": ("3x", "5x", "10x"),
            "storage": ("SD card", "CF card"),
        },
        2800.0,
    ),
    ProductType(
        "Luggage Set",
        {
            "piece count": ("2-piece", "3-piece", "4-piece"),
            "color": ("black", "red", "blue", "silver"),
            "material": ("hardshell", "softshell"),
        },
        540.0,
    ),
    ProductType(
        "Tablet",
        {
            "screen size": ("8-inch", "10-inch", "12-inch"),
            "storage": ("32GB", "64GB", "128GB"),
            "color": ("black", "silver", "gold"),
        },
        800.0,
    ),
    ProductType(
        "Espresso Machine",
        {
            "pressure": ("9 bar", "15 bar", "19 bar"),
            "capacity": ("1L", "1.5L", "2L"),
            "type": ("manual", "capsule", "automatic"),
        },
        2600.0,
    ),
    ProductType(
        "Grill",
        {
            "type": ("charcoal", "gas", "electric"),
            "size": ("portable", "medium", "large"),
            "features": ("side burner", "rotisserie", "none"),
        },
        650.0,
    ),
    ProductType(
        "Perfume",
        {
            "scent family": ("woody", "floral", "fresh", "oriental"),
            "size": ("30ml", "50ml", "100ml"),
            "gender": ("men", "women", "unisex"),
        },
        210.0,
    ),
    ProductType(
        "E-Reader",
        {
            "screen size": ("6-inch", "7-inch", "8-inch"),
            "connectivity": ("Wi-Fi", "Wi-Fi + Cellular"),
            "storage": ("8GB", "32GB"),
        },
        270.0,
    ),
    ProductType(
        "Bookshelf",
        {
            "material": ("wood", "metal", "glass"),
            "color": ("brown", "white", "black"),
            "height": ("3 ft", "4 ft", "5 ft", "6 ft"),
        },
        480.0,
    ),
    ProductType(
        "Wall Clock",
        {
            "diameter": ("10 inches", "12 inches", "14 inches"),
            "color": ("black", "white", "wood"),
            "type": ("analog", "digital"),
        },
        250.0,
    ),
    ProductType(
        "Dumbbell Set",
        {
            "weight range": ("5-25 lbs", "30-50 lbs", "55-75 lbs"),
            "material": ("iron", "rubber", "urethane"),
            "set type": ("fixed", "adjustable"),
        },
        450.0,
    ),
    ProductType(
        "Indoor Security Camera",
        {
            "resolution": ("1080p", "2K", "4K"),
            "field of view": ("110 degrees", "130 degrees", "160 degrees"),
            "connectivity": ("Wi-Fi", "Ethernet"),
        },
        330.0,
    ),
    ProductType(
        "Makeup Kit",
        {
            "skin tone": ("light", "medium", "dark"),
            "kit size": ("basic", "professional"),
            "brand": ("Brand A", "Brand B", "Brand C"),
        },
        240.0,
    ),
    ProductType(
        "Patio Umbrella",
        {
            "size": ("6 ft", "7.5 ft", "9 ft"),
            "color": ("red", "green", "blue", "black"),
            "material": ("polyester", "olefin", "sunbrella"),
            "tilt mechanism": ("manual tilt", "auto tilt"),
        },
        280.0,
    ),
    ProductType(
        "Smartphone",
        {
            "color": ("black", "blue", "white", "gold"),
            "storage": ("64GB", "128GB", "256GB"),
            "RAM": ("4GB", "6GB", "8GB"),
            "screen size": ("5.8-inch", "6.1-inch", "6.5-inch"),
        },
        1100.0,
    ),
    ProductType(
        "Fitness Tracker",
        {
            "color": ("black", "blue", "pink"),
            "battery life": ("5 days", "7 days", "14 days"),
            "GPS": ("yes", "no"),
        },
        180.0,
    ),
    ProductType(
        "Desk",
        {
            "material": ("wood", "glass", "metal"),
            "color": ("black", "white", "brown"),
            "size": ("small", "medium", "large"),
        },
        420.0,
    ),
    ProductType(
        "Cooking Pan",
        {
            "material": ("cast iron", "stainless steel", "non-stick"),
            "size": ("8 inch", "10 inch", "12 inch"),
            "lid": ("with lid", "without lid"),
        },
        70.0,
    ),
    ProductType(
        "Hoodie",
        {
            "size": ("S", "M", "L", "XL"),
            "color": ("black", "grey", "navy", "red"),
            "style": ("pullover", "zip-up"),
            "material": ("cotton", "fleece"),
        },
        90.0,
    ),
)

FIRST_NAMES: tuple[str, ...] = (
    "Aarav", "Ava", "Amelia", "Anya", "Arjun", "Chen", "Daiki", "Emma", "Ethan", "Evelyn",
    "Fatima", "Harper", "Isabella", "Ivan", "James", "Juan", "Liam", "Lucas", "Mason", "Mei",
    "Mia", "Mohamed", "Noah", "Olivia", "Omar", "Raj", "Sofia", "Sophia", "Yara", "Yusuf",
    "Aiko", "Ahmed", "Anna", "Carlos", "Daniel", "Elena", "Fernando", "Grace", "Hiroshi",
    "Ingrid", "Jamal", "Kenji", "Lei", "Lina", "Marcus", "Nadia", "Nia", "Oliver", "Priya",
    "Rosa", "Samuel", "Sara", "Tomas", "Uma", "Victor", "Wei", "Xavier", "Yuki", "Zoe", "Zara",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Ahmed", "Anderson", "Brown", "Davis", "Garcia", "Gonzalez", "Hernandez", "Ito", "Jackson",
    "Johansson", "Johnson", "Khan", "Kim", "Kovacs", "Lee", "Lopez", "Martin", "Moore", "Muller",
    "Nguyen", "Patel", "Rossi", "Sanchez", "Santos", "Silva", "Smith", "Sullivan", "Taylor",
    "Thomas", "Wilson", "Li", "Wang", "Singh", "Kowalski", "Novak", "Okafor", "Petrov", "Ramos",
    "Schmidt", "Tanaka", "Yamamoto", "Young", "Clark", "Lewis", "Walker", "Hall", "Allen",
)  # fmt: skip

CITIES: tuple[tuple[str, str, str], ...] = (
    ("Austin", "TX", "787"), ("Boston", "MA", "021"), ("Charlotte", "NC", "282"),
    ("Chicago", "IL", "606"), ("Columbus", "OH", "432"), ("Dallas", "TX", "752"),
    ("Denver", "CO", "802"), ("Detroit", "MI", "482"), ("El Paso", "TX", "799"),
    ("Fort Worth", "TX", "761"), ("Houston", "TX", "770"), ("Indianapolis", "IN", "462"),
    ("Jacksonville", "FL", "322"), ("Las Vegas", "NV", "891"), ("Los Angeles", "CA", "900"),
    ("Memphis", "TN", "381"), ("Nashville", "TN", "372"), ("New York", "NY", "100"),
    ("Oklahoma City", "OK", "731"), ("Philadelphia", "PA", "191"), ("Phoenix", "AZ", "850"),
    ("Portland", "OR", "972"), ("San Antonio", "TX", "782"), ("San Diego", "CA", "921"),
    ("San Francisco", "CA", "941"), ("San Jose", "CA", "951"), ("Seattle", "WA", "981"),
    ("Washington", "DC", "200"), ("Milwaukee", "WI", "532"), ("Minneapolis", "MN", "554"),
)  # fmt: skip

STREETS: tuple[str, ...] = (
    "Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Pine Street", "Elm Street",
    "Hillcrest Drive", "Lakeview Road", "Sunset Boulevard", "River Road", "Park Avenue",
    "Highland Avenue", "Chestnut Street", "Willow Lane", "Spruce Street", "Broadway",
    "Washington Avenue", "Lincoln Street", "Jackson Street", "Laurel Lane",
)  # fmt: skip

CARD_BRANDS: tuple[str, ...] = ("visa", "mastercard", "amex", "discover")
