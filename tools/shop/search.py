"""BM25 ranking for the shop's search box, in plain Python.

WebShop ranks products with BM25 (through Pyserini/Lucene); a few hundred
products need no search engine, so this is the textbook Okapi BM25 with
Lucene's always-positive idf, and ties broken by catalog order so a query
always gives the same ranking.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from archer_agents.tools.shop.catalog import Product

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs: 't-shirt' -> ['t', 'shirt']."""
    return _TOKEN.findall(text.lower())


class BM25Index:
    """Okapi BM25 over a fixed list of documents.

    Args:
        documents: the texts to rank; results refer to them by position.
        k1: term-frequency saturation.
        b: length normalisation (0: none, 1: full).
    """

    def __init__(self, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self._term_counts = [Counter(tokenize(doc)) for doc in documents]
        self._lengths = [sum(counts.values()) for counts in self._term_counts]
        n = len(documents)
        self._avg_length = (sum(self._lengths) / n) if n else 0.0
        document_frequency: Counter[str] = Counter()
        for counts in self._term_counts:
            document_frequency.update(counts.keys())
        self._idf = {
            term: math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for term, df in document_frequency.items()
        }

    def __len__(self) -> int:
        return len(self._term_counts)

    def score(self, query: str, index: int) -> float:
        """BM25 score of document ``index`` for ``query`` (repeated query words count once)."""
        counts = self._term_counts[index]
        length_norm = 1.0 - self.b + self.b * self._lengths[index] / (self._avg_length or 1.0)
        total = 0.0
        for term in dict.fromkeys(tokenize(query)):
            tf = counts.get(term, 0)
            if tf:
                total += self._idf[term] * tf * (self.k1 + 1.0) / (tf + self.k1 * length_norm)
        return total

    def search(self, query: str) -> list[tuple[int, float]]:
        """Documents with a positive score, best first: ``[(index, score), ...]``."""
        terms = set(tokenize(query))
        if not terms:
            return []
        scored = [
            (index, self.score(query, index))
            for index, counts in enumerate(self._term_counts)
            if terms & counts.keys()
        ]
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored


class ProductSearch:
    """The shop's search box: BM25 over each product's title, description and attributes."""

    def __init__(self, products: Sequence[Product]) -> None:
        self.products = tuple(products)
        self.index = BM25Index([p.search_text() for p in self.products])

    def search(self, query: str) -> list[Product]:
        """Products matching at least one query word, best first."""
        return [self.products[i] for i, _ in self.index.search(query)]
