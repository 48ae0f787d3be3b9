"""What USD itself reads through the mount: paths between products, file formats, packages.

- Paths: the demo's layers point at each other by relative versionless paths
  (``../PRI/layer``); the scratch show's by absolute paths under its
  mountpoint. Both must land on versionless names of the same mount, so the
  mount's context (here a pin) decides every version.
- Formats: ``.usda`` text, ``.usdc`` crate (USD maps it into memory: the
  mapping must be of the file in the mount, and values read from it must be
  the served version's), ``.usd`` whose format USD tells by the first bytes,
  and ``.usdz`` packages read in place.
- Textures next to a layer (``./textures/...``) resolve beside the version of
  the layer that named them, and read back with the served version's bytes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from prodfs_demo import DemoShow, check_stage, texture_bytes
from tests.support.mount import Mount
from tests.usd.conftest import Scratch, day3_date
from tests.usd.props import CRATE_TEXTURE, PROPS, props_values
from tests.usd.support import (ANIM, LAYER, LGT, LOOK, MODEL, TEX, composed, mapped_paths, open_stage,
                               release_stages, resolved_refs, used_products)

pytestmark = pytest.mark.fuse


def _read_asset(resolved_path: str) -> bytes:
    """Read an asset as USD's resolver does (also inside a package: ``pkg.usdz[file]``)."""
    from pxr import Ar

    asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved_path))
    assert asset is not None, resolved_path
    return bytes(asset.GetBuffer())


def _served_number(mount: Mount, pri: str) -> int:
    return int(resolved_refs(mount)[pri].rpartition("@")[2])


def _versionless(stage, root: Path) -> None:  # noqa: ANN001 - a pxr Usd.Stage
    used = used_products(stage, root)
    assert used and all("@" not in name for name in used), used
    # nothing was read from outside the mount (a path that escaped it would show here)
    outside = [layer.realPath for layer in stage.GetUsedLayers()
               if layer.realPath and not Path(layer.realPath).is_relative_to(root)]
    assert outside == []


# -- the demo show, live ------------------------------------------------------------------


def test_relative_versionless_paths_resolve_inside_the_mount(published: DemoShow, live_mount: Mount) -> None:
    from pxr import Sdf

    stage = open_stage(live_mount / LGT / LAYER[LGT])
    layer = Sdf.Layer.Find(str(live_mount / LGT / LAYER[LGT]))
    assert list(layer.subLayerPaths) == [f"../{ANIM}/{LAYER[ANIM]}", f"../{LOOK}/{LAYER[LOOK]}"]
    _versionless(stage, live_mount.path)
    assert check_stage(stage, published.compose(LGT, published.selection())) == []


def test_crate_layer_is_memory_mapped_from_the_mount(published: DemoShow, live_mount: Mount) -> None:
    crate = live_mount / MODEL / LAYER[MODEL]
    with open(crate, "rb") as f:
        assert f.read(8) == b"PXR-USDC"  # really a binary crate
    stage = open_stage(live_mount / LGT / LAYER[LGT])
    layer = next(lay for lay in stage.GetUsedLayers() if lay.realPath == str(crate))
    assert layer.GetFileFormat().formatId == "usdc"
    # USD reads crate files through a memory map: the pages come from the mount's file
    assert str(crate) in mapped_paths(live_mount.path)
    n = _served_number(live_mount, MODEL)
    assert n == published.selection()[MODEL]
    values = published.products[MODEL].versions[n].values
    radius = "/walter/geo/body.radius"
    assert composed(stage, [radius, "/walter.demo:model"]) == {radius: values[radius],
                                                               "/walter.demo:model": f"{MODEL}@{n}"}
    del stage, layer
    gc.collect()


def test_texture_package_next_to_the_layer(live_mount: Mount) -> None:
    stage = open_stage(live_mount / LGT / LAYER[LGT])
    n = _served_number(live_mount, TEX)
    textures = stage.GetPrimAtPath("/walter/mtl/textures")
    names = {"diffuse": "walter_diffuse.png", "normal": "walter_normal.png", "specular": "walter_spec.png"}
    for attr_name, file_name in names.items():
        value = textures.GetAttribute(attr_name).Get()
        assert value is not None, attr_name  # specular exists from tex@2, which the live mount serves
        assert value.path == f"./textures/{file_name}"
        # anchored to the versionless texture product the layer came from
        assert value.resolvedPath == str(live_mount / TEX / "textures" / file_name)
        assert _read_asset(value.resolvedPath) == texture_bytes(TEX, n, file_name)


# -- the scratch show: absolute paths, .usd, .usdz -------------------------------------------


@pytest.fixture(scope="module")
def scratch_day3(scratch: Scratch) -> Iterator[Mount]:
    """The scratch service pinned to day 3, at the mountpoint its absolute paths name."""
    with scratch.mount("--pin", day3_date(scratch.show)) as mnt:
        yield mnt
        release_stages()


def test_absolute_paths_under_the_mountpoint_resolve_in_the_mounts_context(scratch: Scratch,
                                                                           scratch_day3: Mount) -> None:
    from pxr import Sdf

    show = scratch.show
    stage = open_stage(scratch_day3 / LGT / LAYER[LGT])
    layer = Sdf.Layer.Find(str(scratch_day3 / LGT / LAYER[LGT]))
    top = str(scratch.mountpoint)
    assert list(layer.subLayerPaths) == [f"{top}/{ANIM}/{LAYER[ANIM]}", f"{top}/{LOOK}/{LAYER[LOOK]}"]
    _versionless(stage, scratch_day3.path)
    day3 = show.selection(show.pins()["day3"])
    assert day3 != show.selection()
    assert check_stage(stage, show.compose(LGT, day3)) == []
    for name in used_products(stage, scratch_day3.path):
        assert resolved_refs(scratch_day3)[name] == f"{name}@{day3[name]}"


def test_usd_extension_is_read_by_content_and_usdz_in_place(scratch: Scratch, scratch_day3: Mount) -> None:
    top = scratch_day3 / PROPS
    with open(top / "props.usd", "rb") as f:
        assert f.read(8) == b"PXR-USDC"
    with open(top / "notes.usd", "rb") as f:
        assert f.read(9) == b"#usda 1.0"
    stage = open_stage(top / "props.usd")
    assert [str(e) for e in stage.GetCompositionErrors()] == []
    n, model = _served_number(scratch_day3, PROPS), _served_number(scratch_day3, MODEL)
    assert (n, model) == (1, 2)  # props@2 and model@3 come after the pin
    formats = {Path(lay.realPath).name: lay.GetFileFormat().formatId for lay in stage.GetUsedLayers()
               if lay.realPath}
    assert formats == {"props.usd": "usd", "notes.usd": "usd", "crate.usdz": "usdz", "model.usdc": "usdc"}
    assert str(top / "props.usd") in mapped_paths(scratch_day3.path)  # a crate, whatever its extension
    radius = "/walter/geo/body.radius"
    expected = {**props_values(n), radius: scratch.show.products[MODEL].versions[model].values[radius]}
    assert check_stage(stage, expected) == []
    texture = stage.GetPrimAtPath("/walter/props/crate").GetAttribute("crate:texture").Get()
    assert texture.resolvedPath == f"{top / 'crate.usdz'}[textures/{CRATE_TEXTURE}]"
    assert _read_asset(texture.resolvedPath) == texture_bytes(PROPS, n, CRATE_TEXTURE)
    del stage
    gc.collect()
