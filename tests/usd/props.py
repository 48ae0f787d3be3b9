"""A product the demo show lacks: USD's other file forms, for the format tests.

``spies:asset:walter-props`` version N holds

- ``props.usd``: a binary crate under the generic ``.usd`` extension (USD
  tells the format from the file's first bytes), referencing the model by a
  versionless relative path, sublayering ``notes.usd`` and referencing
  ``crate.usdz``;
- ``notes.usd``: text under the same generic extension;
- ``crate.usdz``: a package (a zip USD reads in place) holding a crate layer
  and the texture it points at, ``crate.usdz[textures/crate.png]``.

It is published to the scratch service only, so the demo show on the shared
service stays exactly what docs/demo.md describes.
"""

from __future__ import annotations

from pathlib import Path

from prodfs_demo import Value, texture_bytes

__all__ = ["PROPS", "build_props", "props_values", "CRATE_TEXTURE"]

PROPS = "spies:asset:walter-props"
MODEL = "spies:asset:walter-model"
CRATE_TEXTURE = "crate.png"


def _crate_size(number: int) -> float:
    return 0.25 * number


def props_values(number: int) -> dict[str, Value]:
    """What ``props.usd`` of version ``number`` alone composes (the model's values come on top)."""
    return {
        "/walter.demo:props": f"{PROPS}@{number}",
        "/walter.props:count": number,
        "/walter/props/crate": True,
        "/walter/props/crate.size": _crate_size(number),
        "/walter/props/crate.crate:texture": f"textures/{CRATE_TEXTURE}",
    }


def build_props(workdir: Path, number: int) -> Path:
    """Write version ``number`` of the props product under ``workdir``; return its top directory."""
    from pxr import Sdf

    top = workdir / PROPS / str(number)
    package = workdir / "package" / str(number)
    (package / "textures").mkdir(parents=True)
    top.mkdir(parents=True)

    notes = Sdf.Layer.CreateAnonymous(".usda")
    walter = Sdf.CreatePrimInLayer(notes, "/walter")
    walter.specifier = Sdf.SpecifierOver
    count = Sdf.AttributeSpec(walter, "props:count", Sdf.ValueTypeNames.Int, Sdf.VariabilityVarying, True)
    count.default = number
    _export(notes, top / "notes.usd", "usda")

    crate = Sdf.Layer.CreateAnonymous(".usdc")
    crate.defaultPrim = "crate"
    cube = Sdf.PrimSpec(crate, "crate", Sdf.SpecifierDef, "Cube")
    Sdf.AttributeSpec(cube, "size", Sdf.ValueTypeNames.Double).default = _crate_size(number)
    texture = Sdf.AttributeSpec(cube, "crate:texture", Sdf.ValueTypeNames.Asset, Sdf.VariabilityVarying, True)
    texture.default = Sdf.AssetPath(f"textures/{CRATE_TEXTURE}")
    _export(crate, package / "crate.usdc", "usdc")
    (package / "textures" / CRATE_TEXTURE).write_bytes(texture_bytes(PROPS, number, CRATE_TEXTURE))
    writer = Sdf.ZipFileWriter.CreateNew(str(top / "crate.usdz"))
    writer.AddFile(str(package / "crate.usdc"), "crate.usdc")  # the first file is the package's layer
    writer.AddFile(str(package / "textures" / CRATE_TEXTURE), f"textures/{CRATE_TEXTURE}")
    writer.Save()

    props = Sdf.Layer.CreateAnonymous(".usdc")
    props.defaultPrim = "walter"
    props.subLayerPaths.append("./notes.usd")
    walter = Sdf.PrimSpec(props, "walter", Sdf.SpecifierDef, "Xform")
    walter.referenceList.prependedItems = [Sdf.Reference(f"../{MODEL}/model.usdc")]
    stamp = Sdf.AttributeSpec(walter, "demo:props", Sdf.ValueTypeNames.String, Sdf.VariabilityVarying, True)
    stamp.default = f"{PROPS}@{number}"
    holder = Sdf.PrimSpec(walter, "props", Sdf.SpecifierDef, "Xform")
    placed = Sdf.PrimSpec(holder, "crate", Sdf.SpecifierDef)
    placed.referenceList.prependedItems = [Sdf.Reference("./crate.usdz")]
    _export(props, top / "props.usd", "usdc")
    return top


def _export(layer, dest: Path, fmt: str) -> None:  # noqa: ANN001 - an Sdf.Layer
    if not layer.Export(str(dest), args={"format": fmt}):
        raise OSError(f"could not write {dest}")
