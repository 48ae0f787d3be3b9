"""The in-memory product graph: what the daemon and the resolver know of the store.

Built from the service's Graph JSON (``GET /index``, ``POST /closure``; see
docs/api.md) and kept current from the change feed. Plain data, no I/O, so the
resolver and the namespace can be tested without a service or a mount.

Everything is keyed by the canonical PRI text; ``aliases`` maps every older
name to its canonical one. Times are integer microseconds since the epoch
(exact comparisons, cheap to store).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pvc_client import format_time, from_micros, parse_time, to_micros

__all__ = ["Dep", "VersionInfo", "ProductInfo", "Graph"]


@dataclass(frozen=True, slots=True, order=True)
class Dep:
    """A dependency as published: an exact version of a product."""

    pri: str
    number: int

    def __str__(self) -> str:
        return f"{self.pri}@{self.number}"

    @classmethod
    def parse(cls, text: str) -> Dep:
        pri, _, n = text.rpartition("@")
        return cls(pri, int(n))


@dataclass(frozen=True, slots=True)
class VersionInfo:
    number: int
    created_us: int
    dependencies: tuple[Dep, ...] = ()


@dataclass(slots=True)
class ProductInfo:
    pri: str
    product_id: int
    created_us: int
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    # label -> version number, as of the graph's time (the service answers
    # label positions as of the request, so a pinned graph is already right)
    labels: dict[str, int] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def visible_versions(self, as_of_us: int | None = None) -> list[VersionInfo]:
        """Versions visible at a time, by number (all when ``as_of_us`` is None)."""
        vs = sorted(self.versions.values(), key=lambda v: v.number)
        if as_of_us is None:
            return vs
        return [v for v in vs if v.created_us <= as_of_us]

    def newest(self, as_of_us: int | None = None) -> VersionInfo | None:
        vs = self.visible_versions(as_of_us)
        return vs[-1] if vs else None


class Graph:
    """Products by canonical PRI, plus the alias map and the feed cursor."""

    __slots__ = ("products", "aliases", "cursor", "as_of_us")

    def __init__(
        self,
        products: Mapping[str, ProductInfo] | None = None,
        *,
        cursor: int = 0,
        as_of_us: int | None = None,
    ) -> None:
        self.products: dict[str, ProductInfo] = dict(products or {})
        self.aliases: dict[str, str] = {}
        self.cursor = cursor
        self.as_of_us = as_of_us
        for p in self.products.values():
            for a in p.aliases:
                self.aliases[a] = p.pri

    def canonical(self, pri: str) -> str | None:
        """The canonical name of a PRI or alias, or None when unknown."""
        if pri in self.products:
            return pri
        return self.aliases.get(pri)

    def get(self, pri: str) -> ProductInfo | None:
        c = self.canonical(pri)
        return None if c is None else self.products[c]

    def __iter__(self) -> Iterator[ProductInfo]:
        return iter(self.products.values())

    def __len__(self) -> int:
        return len(self.products)

    def add(self, product: ProductInfo) -> None:
        self.products[product.pri] = product
        for a in product.aliases:
            self.aliases[a] = product.pri

    def rename(self, old: str, new: str) -> None:
        """Apply a rename: the product moves to ``new``; ``old`` stays an alias."""
        p = self.products.pop(old, None)
        if p is None:
            return
        p.pri = new
        p.aliases = tuple(sorted(set(p.aliases) | {old}))
        self.products[new] = p
        for a in p.aliases:
            self.aliases[a] = new
        self.aliases.pop(new, None)

    @classmethod
    def from_json(cls, data: Mapping) -> Graph:
        as_of = data.get("as_of")
        g = cls(cursor=int(data.get("cursor") or 0), as_of_us=to_micros(parse_time(as_of)) if as_of else None)
        g.merge(data)
        return g

    def merge(self, data: Mapping) -> list[str]:
        """Add the products of a Graph answer this graph does not hold yet; return their names.

        A product already held is kept as it is: the feed has kept it
        current since, and the answer may be older than that.
        """
        added = []
        for pri, raw in data.get("products", {}).items():
            if pri in self.products:
                continue
            product = product_from_json(pri, raw)
            # known under an older name (a rename the answer already shows)
            for a in product.aliases:
                if a in self.products:
                    break
            else:
                self.add(product)
                added.append(pri)
        return added

    def to_json(self) -> dict:
        """The Graph JSON of what this graph holds (``from_json`` reads it back)."""
        return {
            "as_of": format_time(from_micros(self.as_of_us)) if self.as_of_us is not None else None,
            "cursor": self.cursor,
            "products": {p.pri: product_to_json(p) for p in self.products.values()},
        }


def product_from_json(pri: str, raw: Mapping) -> ProductInfo:
    versions = {
        int(v["number"]): VersionInfo(
            int(v["number"]),
            to_micros(parse_time(v["created_at"])),
            tuple(Dep.parse(d) for d in v.get("dependencies", ())),
        )
        for v in raw.get("versions", ())
    }
    return ProductInfo(
        pri=pri,
        product_id=int(raw.get("product_id", 0)),
        created_us=to_micros(parse_time(raw["created_at"])) if raw.get("created_at") else min(
            (v.created_us for v in versions.values()), default=0
        ),
        versions=versions,
        labels={str(k): int(v) for k, v in (raw.get("labels") or {}).items() if v is not None},
        aliases=tuple(raw.get("aliases", ())),
    )


def product_to_json(p: ProductInfo) -> dict:
    return {
        "product_id": p.product_id,
        "aliases": list(p.aliases),
        "created_at": format_time(from_micros(p.created_us)),
        "versions": [
            {"number": v.number, "created_at": format_time(from_micros(v.created_us)),
             "dependencies": [str(d) for d in v.dependencies]}
            for v in sorted(p.versions.values(), key=lambda v: v.number)
        ],
        "labels": dict(p.labels),
    }


def iter_deps(products: Iterable[ProductInfo]) -> Iterator[tuple[str, int, Dep]]:
    for p in products:
        for v in p.versions.values():
            for d in v.dependencies:
                yield p.pri, v.number, d
