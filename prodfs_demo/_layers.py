"""A small description of a USD layer, written with the Sdf API.

The demo's content is described as data (`Layer`, `Prim`, `Attr`) rather than
as hand-written ``.usda`` text, so that one description both writes the layer
and predicts what it contributes to a composed stage (`own_values`): the
expectations cannot drift from the files.

Cross-product arcs (sublayers, references) name a *product* (its PRI); the
writer turns them into versionless paths, relative (``../PRI/file``) or
absolute under a mount root, because the version is chosen by whoever serves
the files (the ProdFS mount), never by the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = ["Value", "Attr", "VariantSet", "Prim", "Layer", "write_layer", "own_values", "variant_values"]

# What an expectation holds: JSON-friendly (vectors and colors as lists).
Value = Union[bool, int, float, str, list, None]


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute opinion: ``type`` is an Sdf value type name (``double``, ``color3f``, ``asset``...)."""

    name: str
    type: str
    value: Value
    custom: bool = False
    uniform: bool = False


@dataclass(frozen=True, slots=True)
class VariantSet:
    """A variant set on a prim: each variant holds attribute opinions on descendants.

    ``variants`` maps a variant name to ``(relative prim path, Attr)`` pairs;
    ``selection`` is the authored selection (None: leave it to stronger layers).
    """

    name: str
    variants: Mapping[str, tuple[tuple[str, Attr], ...]]
    selection: str | None = None


@dataclass(frozen=True, slots=True)
class Prim:
    path: str
    type_name: str = ""
    specifier: str = "def"  # "def" or "over"
    references: tuple[str, ...] = ()  # PRIs: their layer's default prim is referenced
    attrs: tuple[Attr, ...] = ()
    variant_set: VariantSet | None = None
    # an authored selection for a variant set defined in a weaker layer
    variant_selection: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    prims: tuple[Prim, ...]
    sublayers: tuple[str, ...] = ()  # PRIs, strongest first
    default_prim: str = "walter"
    # prim paths whose existence is part of the expectations (True when this
    # layer defines them, False when it does not: "a prim added in v3")
    probes: tuple[str, ...] = ()
    # attribute keys ("/prim.attr") that expectations list even when unset
    absent: tuple[str, ...] = ()
    doc: str = ""

    @property
    def arcs(self) -> tuple[str, ...]:
        """Every product this layer points at, in strength order, each once."""
        seen: dict[str, None] = {}
        for pri in self.sublayers:
            seen[pri] = None
        for prim in self.prims:
            for pri in prim.references:
                seen[pri] = None
        return tuple(seen)


def _attr_key(prim_path: str, name: str) -> str:
    return f"{prim_path}.{name}"


def own_values(layer: Layer) -> dict[str, Value]:
    """What this layer alone says about the keys the demo checks.

    Keys: ``/prim.attr`` (a value; None when listed in ``absent``), ``/prim``
    (a probe: does the prim exist) and ``/prim{set}`` (a variant selection).
    """
    out: dict[str, Value] = {}
    defined = {p.path for p in layer.prims if p.specifier == "def"}
    for prim in layer.prims:
        for a in prim.attrs:
            out[_attr_key(prim.path, a.name)] = a.value
        if prim.variant_set is not None and prim.variant_set.selection is not None:
            out[f"{prim.path}{{{prim.variant_set.name}}}"] = prim.variant_set.selection
        if prim.variant_selection is not None:
            out[f"{prim.path}{{{prim.variant_selection[0]}}}"] = prim.variant_selection[1]
    for path in layer.probes:
        out[path] = path in defined
    for key in layer.absent:
        out.setdefault(key, None)
    return out


def variant_values(layer: Layer) -> dict[str, dict[str, dict[str, Value]]]:
    """``{"/prim{set}": {variant: {key: value}}}`` for the variant sets this layer defines."""
    out: dict[str, dict[str, dict[str, Value]]] = {}
    for prim in layer.prims:
        vs = prim.variant_set
        if vs is None:
            continue
        out[f"{prim.path}{{{vs.name}}}"] = {
            name: {_attr_key(_join(prim.path, rel), a.name): a.value for rel, a in opinions}
            for name, opinions in vs.variants.items()
        }
    return out


def _join(base: str, rel: str) -> str:
    return base if not rel else f"{base.rstrip('/')}/{rel}"


# --- writing (pxr is imported lazily: describing the show needs no USD) ---


def _to_usd(type_name: str, value: Value):  # noqa: ANN202 - returns a pxr value
    from pxr import Gf, Sdf, Vt

    if type_name == "asset":
        return Sdf.AssetPath(str(value))
    if type_name in ("color3f", "float3", "vector3f", "point3f"):
        return Gf.Vec3f(*value)  # type: ignore[misc]
    if type_name in ("double3", "color3d", "vector3d", "point3d"):
        return Gf.Vec3d(*value)  # type: ignore[misc]
    if type_name == "token[]":
        return Vt.TokenArray(list(value))  # type: ignore[arg-type]
    if type_name == "string[]":
        return Vt.StringArray(list(value))  # type: ignore[arg-type]
    return value


def _author_attr(prim_spec, attr: Attr) -> None:  # noqa: ANN001 - Sdf.PrimSpec
    from pxr import Sdf

    vtype = Sdf.ValueTypeNames.Find(attr.type)
    if not vtype:
        raise ValueError(f"unknown USD value type {attr.type!r} for {attr.name}")
    variability = Sdf.VariabilityUniform if attr.uniform else Sdf.VariabilityVarying
    spec = Sdf.AttributeSpec(prim_spec, attr.name, vtype, variability, attr.custom)
    spec.default = _to_usd(attr.type, attr.value)


def _prim_spec(layer, path: str, specifier: str, type_name: str):  # noqa: ANN001, ANN202
    from pxr import Sdf

    spec = Sdf.CreatePrimInLayer(layer, Sdf.Path(path))
    spec.specifier = Sdf.SpecifierDef if specifier == "def" else Sdf.SpecifierOver
    if type_name:
        spec.typeName = type_name
    return spec


def write_layer(layer: Layer, dest: Path, asset_path: Callable[[str], str]) -> None:
    """Write ``layer`` to ``dest`` (``.usda`` text or ``.usdc`` crate, by suffix).

    ``asset_path(pri)`` spells the path to another product's layer.
    Built in an anonymous layer and exported, so nothing is resolved (the
    products it points at need not exist yet) and the bytes depend on the
    description only.
    """
    from pxr import Sdf

    sdf_layer = Sdf.Layer.CreateAnonymous(dest.suffix)
    sdf_layer.defaultPrim = layer.default_prim
    if layer.doc:
        sdf_layer.documentation = layer.doc
    for pri in layer.sublayers:
        sdf_layer.subLayerPaths.append(asset_path(pri))
    for prim in layer.prims:
        spec = _prim_spec(sdf_layer, prim.path, prim.specifier, prim.type_name)
        if prim.references:
            spec.referenceList.prependedItems = [Sdf.Reference(asset_path(pri)) for pri in prim.references]
        for a in prim.attrs:
            _author_attr(spec, a)
        if prim.variant_selection is not None:
            spec.variantSelections[prim.variant_selection[0]] = prim.variant_selection[1]
        vs = prim.variant_set
        if vs is not None:
            spec.variantSetNameList.Prepend(vs.name)
            vset = Sdf.VariantSetSpec(spec, vs.name)
            for name, opinions in vs.variants.items():
                variant = Sdf.VariantSpec(vset, name)
                for rel, a in opinions:
                    target = variant.primSpec
                    for part in [p for p in rel.split("/") if p]:
                        child = target.nameChildren.get(part)
                        target = child if child is not None else Sdf.PrimSpec(target, part, Sdf.SpecifierOver)
                    _author_attr(target, a)
            if vs.selection is not None:
                spec.variantSelections[vs.name] = vs.selection
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not sdf_layer.Export(str(dest)):
        raise OSError(f"could not write {dest}")
