"""A stage opened through ProdFS is the stage opened from a ``pvc get`` checkout of the same versions.

The mount is asked what it served (``.prodfs/resolved.json``: every
versionless name and the ``PRI@N`` it resolved to); ``pvc get`` writes
exactly those versions side by side under a directory, as a studio without
ProdFS would lay them out; the same layer opened from both places must
flatten to the same text (see `flat_text` for the one difference allowed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prodfs_demo import DemoShow
from tests.support.mount import Mount
from tests.usd.support import (LAYER, LGT, MODEL, TEX, flat_text, materialize, open_stage, resolved_refs,
                               used_products)

pytestmark = pytest.mark.fuse


@pytest.mark.parametrize("context", ["live", "day3"])
def test_mount_and_checkout_flatten_to_the_same_stage(published: DemoShow, service_url: str,
                                                      show_mounts: dict[str, Mount], tmp_path: Path,
                                                      context: str) -> None:
    mnt = show_mounts[context]
    mounted_stage = open_stage(mnt / LGT / LAYER[LGT])
    used = used_products(mounted_stage, mnt.path)
    assert set(used) == set(LAYER)  # the whole shot, every product by its versionless name
    served = resolved_refs(mnt)
    refs = sorted(served[name] for name in used)

    checkout = tmp_path / "checkout"
    materialize(service_url, refs, checkout)
    checkout_stage = open_stage(checkout / LGT / LAYER[LGT])
    assert used_products(checkout_stage, checkout) == used

    through_mount = flat_text(mounted_stage, [mnt.path])
    from_checkout = flat_text(checkout_stage, [checkout])
    assert through_mount == from_checkout
    # not vacuous: the text holds every version's stamp, and the textures' anchored paths
    for ref in refs:
        assert f'= "{ref}"' in through_mount
    assert f"@<ROOT>/{TEX}/textures/walter_diffuse.png@" in through_mount
    # and the two contexts really are different stages
    expected_model = published.selection(None if context == "live" else published.pins()["day3"])[MODEL]
    assert served[MODEL] == f"{MODEL}@{expected_model}"
