"""The demo show ``spies``, as data: products, versions, history, labels.

Every version differs from the one before in something a composed stage
shows (a value, a variant selection, a prim's existence), and every version
also stamps ``/walter.demo:<kind>`` with its own ``PRI@N`` so that a person
running ``usdcat`` sees at once which versions a stage composed. The table in
docs/demo.md mirrors this module; keep them together.

Times are offsets from the history's start (day, hour), strictly increasing
per product, and every dependency is older than its dependent (the service
refuses anything else).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ._layers import Attr, Layer, Prim, VariantSet

__all__ = ["VersionDef", "ProductDef", "LabelMoveDef", "HISTORY_DAYS", "define_show", "shot_entity"]

SHOW = "spies"
HISTORY_DAYS = 8  # versions are published on days 0..7 after the start

TEX = "spies:asset:walter-tex"
MODEL = "spies:asset:walter-model"
RIG = "spies:asset:walter-rig"
LOOK = "spies:asset:walter-look"


def shot_entity(k: int) -> str:
    """Shot k (1-based) of sequence 100: ``spies:100:10``, ``spies:100:20``..."""
    return f"{SHOW}:100:{10 * k}"


@dataclass(frozen=True, slots=True)
class VersionDef:
    number: int
    offset: dt.timedelta  # from the start of the history
    dependencies: tuple[str, ...]  # exact "PRI@N", mirroring the layer's arcs
    labels: tuple[str, ...]  # set when published (moving them from older versions)
    message: str
    layer: Layer
    textures: tuple[str, ...] = ()  # file names written under textures/


@dataclass(frozen=True, slots=True)
class ProductDef:
    pri: str
    kind: str  # "asset" or "shot"
    layer_file: str  # at the top of every version's directory
    doc: str
    versions: tuple[VersionDef, ...]


@dataclass(frozen=True, slots=True)
class LabelMoveDef:
    """A label moved after the whole history was published (so only "now" sees it)."""

    pri: str
    label: str
    number: int


def _at(day: int, hour: int) -> dt.timedelta:
    return dt.timedelta(days=day, hours=hour)


def _stamp(kind: str, pri: str, n: int) -> Attr:
    return Attr(f"demo:{kind}", "string", f"{pri}@{n}", custom=True)


RED_V1 = [0.8, 0.1, 0.1]
RED_V3 = [0.9, 0.25, 0.1]
BLUE = [0.1, 0.2, 0.8]
GOLD = [0.9, 0.7, 0.2]


def _tex(n: int) -> VersionDef:
    files = ("walter_diffuse.png", "walter_normal.png") + (("walter_spec.png",) if n >= 2 else ())
    attrs = [
        Attr("resolution", "string", "1k" if n == 1 else "2k", custom=True),
        Attr("diffuse", "asset", "./textures/walter_diffuse.png", custom=True),
        Attr("normal", "asset", "./textures/walter_normal.png", custom=True),
    ]
    if n >= 2:
        attrs.append(Attr("specular", "asset", "./textures/walter_spec.png", custom=True))
    layer = Layer(
        prims=(
            Prim("/walter", "Xform", attrs=(_stamp("tex", TEX, n),)),
            Prim("/walter/mtl", "Scope"),
            Prim("/walter/mtl/textures", "Scope", attrs=tuple(attrs)),
        ),
        absent=("/walter/mtl/textures.specular",),
        doc=f"{TEX}@{n}: texture package (textures/ next to this layer)",
    )
    when, msg = {1: (_at(0, 9), "first texture pass, 1k"), 2: (_at(2, 9), "2k textures, add specular")}[n]
    return VersionDef(n, when, (), ("published",), msg, layer, files)


def _model(n: int) -> VersionDef:
    prims = [
        Prim("/walter", "Xform", attrs=(_stamp("model", MODEL, n),)),
        Prim("/walter/geo", "Scope"),
        Prim("/walter/geo/body", "Sphere", attrs=(Attr("radius", "double", 1.0 if n == 1 else 1.5),)),
    ]
    if n >= 3:
        prims.append(Prim("/walter/geo/hat", "Cube", attrs=(Attr("size", "double", 0.5),)))
    layer = Layer(tuple(prims), probes=("/walter/geo/hat",), doc=f"{MODEL}@{n}: walter's geometry")
    when, labels, msg = {
        1: (_at(0, 10), ("published",), "blocking model"),
        2: (_at(1, 11), ("published", "approved"), "bigger body (radius 1.5)"),
        3: (_at(4, 10), ("published",), "add the hat"),
    }[n]
    return VersionDef(n, when, (), labels, msg, layer)


def _rig(n: int) -> VersionDef:
    model = {1: 1, 2: 3}[n]
    prims = [
        Prim("/walter", "Xform", references=(MODEL,), attrs=(_stamp("rig", RIG, n),)),
        Prim("/walter/rig", "Scope", attrs=(Attr("rig:controls", "int", 2 if n == 1 else 3, custom=True),)),
        Prim("/walter/rig/ctrl_root", "Xform"),
        Prim("/walter/rig/ctrl_spine", "Xform"),
    ]
    if n >= 2:
        prims.append(Prim("/walter/rig/ctrl_hat", "Xform"))
    layer = Layer(tuple(prims), probes=("/walter/rig/ctrl_hat",), doc=f"{RIG}@{n}: walter's rig")
    when, msg = {1: (_at(0, 15), "body rig"), 2: (_at(5, 11), "hat control for model v3")}[n]
    return VersionDef(n, when, (f"{MODEL}@{model}",), ("published",), msg, layer)


def _look(n: int) -> VersionDef:
    model, tex = {1: (1, 1), 2: (2, 2), 3: (3, 2)}[n]
    colors: dict[str, list[float]] = {"red": RED_V1 if n < 3 else RED_V3, "blue": BLUE}
    if n >= 2:
        colors["gold"] = GOLD
    selection = {1: "red", 2: "gold", 3: "blue"}[n]
    surface = "mtl/body/surface"
    variants = VariantSet(
        "look",
        {name: ((surface, Attr("inputs:diffuseColor", "color3f", c)),) for name, c in colors.items()},
        selection,
    )
    layer = Layer(
        prims=(
            Prim("/walter", "Xform", references=(MODEL, TEX), attrs=(_stamp("look", LOOK, n),),
                 variant_set=variants),
            Prim("/walter/mtl", "Scope"),
            Prim("/walter/mtl/body", "Material"),
            Prim(f"/walter/{surface}", "Shader", attrs=(
                Attr("info:id", "token", "UsdPreviewSurface", uniform=True),
                Attr("inputs:roughness", "float", 0.5 if n == 1 else 0.35),
            )),
        ),
        doc=f"{LOOK}@{n}: walter's shading, variant set 'look'",
    )
    when, labels, msg = {
        1: (_at(1, 16), ("published",), "red and blue looks"),
        2: (_at(2, 15), ("published", "approved"), "gold look, on 2k textures"),
        3: (_at(6, 12), (), "warmer red; blue by default"),
    }[n]
    return VersionDef(n, when, (f"{MODEL}@{model}", f"{TEX}@{tex}"), labels, msg, layer)


def _layout(pri: str, n: int) -> VersionDef:
    model = n  # lay@N is built on model@N
    prims = [
        Prim("/walter", "Xform", references=(MODEL,), attrs=(
            _stamp("lay", pri, n),
            Attr("xformOp:translate", "double3", [0.0, 0.0, 0.0] if n == 1 else [2.0, 0.0, 0.0]),
            Attr("xformOpOrder", "token[]", ["xformOp:translate"], uniform=True),
        )),
        Prim("/cam", "Camera", attrs=(Attr("focalLength", "float", 35.0 if n == 1 else 50.0),)),
        Prim("/set", "Xform"),
    ]
    if n >= 3:
        prims.append(Prim("/set/crate", "Cube", attrs=(Attr("size", "double", 1.0),)))
    layer = Layer(tuple(prims), probes=("/set/crate",), doc=f"{pri}@{n}: layout")
    when, labels, msg = {
        1: (_at(1, 10), ("published",), "first layout, 35mm"),
        2: (_at(3, 10), ("published",), "walter moved to x=2, 50mm"),
        3: (_at(6, 10), (), "set dressing: a crate"),
    }[n]
    return VersionDef(n, when, (f"{MODEL}@{model}",), labels, msg, layer)


def _anim(pri: str, lay: str, n: int) -> VersionDef:
    lay_n, rig_n = {1: (1, 1), 2: (2, 1), 3: (3, 2)}[n]
    speed = {1: 1.0, 2: 1.25, 3: 1.5}[n]
    layer = Layer(
        prims=(
            Prim("/walter", specifier="over", references=(RIG,), attrs=(
                _stamp("anim", pri, n),
                Attr("anim:speed", "double", speed, custom=True),
                Attr("anim:clip", "string", "walk" if n == 1 else "run", custom=True),
            )),
        ),
        sublayers=(lay,),
        doc=f"{pri}@{n}: animation over the layout",
    )
    when, labels, msg = {
        1: (_at(2, 10), ("published",), "walk blocking"),
        # anim@2 keeps rig@1 (model@1) while its layout moved to model@2: one side of the diamond
        2: (_at(3, 14), ("published",), "run, faster"),
        3: (_at(7, 10), (), "run at 1.5 on the hat rig"),
    }[n]
    return VersionDef(n, when, (f"{lay}@{lay_n}", f"{RIG}@{rig_n}"), labels, msg, layer)


def _lighting(pri: str, anim: str, n: int) -> VersionDef:
    anim_n, look_n = {1: (1, 1), 2: (2, 2), 3: (2, 2), 4: (3, 3)}[n]
    intensity = {1: 1.0, 2: 1.5, 3: 1.5, 4: 2.0}[n]
    override = {3: "blue", 4: "gold"}.get(n)
    prims = [
        Prim("/walter", specifier="over", attrs=(_stamp("lgt", pri, n),),
             variant_selection=("look", override) if override else None),
        Prim("/lights", "Scope"),
        Prim("/lights/key", "DistantLight", attrs=(Attr("inputs:intensity", "float", intensity),)),
    ]
    if n >= 3:
        prims.append(Prim("/lights/rim", "DistantLight", attrs=(Attr("inputs:intensity", "float", 0.5),)))
    layer = Layer(
        tuple(prims), sublayers=(anim, LOOK), probes=("/lights/rim",),
        doc=f"{pri}@{n}: lighting over animation and look",
    )
    when, labels, msg = {
        1: (_at(2, 16), ("published",), "first light"),
        # lgt@2 and lgt@3 sit on the diamond: anim@2 -> rig@1 -> model@1, look@2 -> model@2
        2: (_at(3, 16), ("published", "approved"), "brighter key"),
        3: (_at(4, 16), ("published",), "rim light; blue look for this shot"),
        4: (_at(7, 16), (), "final: anim v3, gold look, key 2.0"),
    }[n]
    return VersionDef(n, when, (f"{anim}@{anim_n}", f"{LOOK}@{look_n}"), labels, msg, layer)


def _product(pri: str, kind: str, layer_file: str, doc: str, make: Callable[[int], VersionDef],
             count: int) -> ProductDef:
    return ProductDef(pri, kind, layer_file, doc, tuple(make(n) for n in range(1, count + 1)))


def define_show(scale: int = 1) -> tuple[list[ProductDef], list[LabelMoveDef]]:
    """The products of the show (assets first) and the label moves made after the history.

    ``scale`` is the number of shots; each shot has a layout, an animation and a
    lighting product built exactly like shot 10's.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, not {scale}")
    products = [
        _product(TEX, "asset", "tex.usda", "textures of walter", _tex, 2),
        _product(MODEL, "asset", "model.usdc", "walter's geometry (a binary crate layer)", _model, 3),
        _product(RIG, "asset", "rig.usda", "walter's rig, references the model", _rig, 2),
        _product(LOOK, "asset", "look.usda", "walter's shading variants, references model and textures",
                 _look, 3),
    ]
    moves = [LabelMoveDef(MODEL, "approved", 3)]
    for k in range(1, scale + 1):
        entity = shot_entity(k)
        lay, anim, lgt = f"{entity}-lay:main", f"{entity}-anim:walter", f"{entity}-lgt:walter"
        products += [
            _product(lay, "shot", "layout.usda", "layout, references the model",
                     lambda n, p=lay: _layout(p, n), 3),
            _product(anim, "shot", "anim.usda", "animation, sublayers the layout, references the rig",
                     lambda n, p=anim, q=lay: _anim(p, q, n), 3),
            _product(lgt, "shot", "walter.usda", "lighting, sublayers the animation and the look",
                     lambda n, p=lgt, q=anim: _lighting(p, q, n), 4),
        ]
        moves.append(LabelMoveDef(lgt, "approved", 3))
    return products, moves

