"""A synthetic show history for benchmarks: the JSON lines ``pvc import`` reads.

    python -m bench.gen_history --products N --versions-per-product K [--files F] [--seed S] > FILE.jsonl

The layout is a studio's: shows, each with assets (``SHOW:asset:NAME-model``,
``-rig`` on the model, ``-lookdev`` on the model) and shots
(``SHOW:SEQ:SHOT-layout`` on a few rigs, ``-anim`` on the layout and those
rigs, ``-lgt`` on the anim and the lookdevs, ``-comp`` on the lgt): every
lgt closes diamonds (lgt -> anim -> rig -> model and lgt -> lookdev ->
model). Version K of every product is published in round K, in dependency
order, and depends on the round-K versions (``PRI@K``) of its inputs. Labels:
``approved`` on some versions, ``published`` on each product's last.

The files are not uploaded anywhere: import with ``--allow-missing-blobs``,
or upload `file_content` of each entry first. The same arguments always give
the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["file_content", "history", "layout", "main"]

_SHOWS = ("spies", "heist", "orbit", "tundra", "harbor", "comet", "lantern", "meadow")
_ASSETS = ("walter", "lance", "marcy", "kimura", "car", "jet", "drone", "city", "lab", "tower")
_PER_SHOW = 20_000  # products per show
_BASE_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
_STEP_US = 1_000  # between two lines


def _time(us: int) -> str:
    import datetime

    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def layout(products: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """(PRI, input PRIs) of ``products`` products, inputs always listed before their users."""
    out: list[tuple[str, list[str]]] = []
    show_index = 0
    while len(out) < products:
        base = _SHOWS[show_index % len(_SHOWS)]
        show = base if show_index < len(_SHOWS) else f"{base}{show_index // len(_SHOWS)}"
        show_index += 1
        size = min(_PER_SHOW, products - len(out))
        end = len(out) + size
        assets = max(1, size // 40)  # 3 products each: ~7% of the show
        rigs: list[str] = []
        lookdevs: list[str] = []
        for i in range(assets):
            name = _ASSETS[i % len(_ASSETS)] + ("" if i < len(_ASSETS) else str(i // len(_ASSETS)))
            model = f"{show}:asset:{name}-model"
            rig, lookdev = f"{show}:asset:{name}-rig", f"{show}:asset:{name}-lookdev"
            out += [(model, []), (rig, [model]), (lookdev, [model])]
            rigs.append(rig)
            lookdevs.append(lookdev)
        shot = 0
        while len(out) < end:
            seq, sh = 100 + 10 * (shot // 50), 10 * (shot % 50 + 1)
            entity = f"{show}:{seq}:{sh}"
            cast = rng.sample(range(assets), min(assets, rng.randint(1, 3)))
            layout_pri, anim, lgt = f"{entity}-layout", f"{entity}-anim", f"{entity}-lgt"
            out += [
                (layout_pri, [rigs[c] for c in cast]),
                (anim, [layout_pri] + [rigs[c] for c in cast]),
                (lgt, [anim] + [lookdevs[c] for c in cast]),
                (f"{entity}-comp", [lgt]),
            ]
            shot += 1
        del out[end:]
    return out


def file_content(pri: str, number: int, path: str) -> bytes:
    """The bytes an entry of the generated history stands for."""
    return f"{pri}@{number}:{path}\n".encode()


def _manifest(pri: str, number: int, files: int) -> list[dict[str, Any]]:
    kind = pri.rsplit("-", 1)[1]
    entries: list[dict[str, Any]] = [{"path": "data", "type": "dir", "mode": 0o755}] if files > 1 else []
    for i in range(files):
        path = f"{kind}.usd" if i == 0 else f"data/part{i:03d}.usdc"
        data = file_content(pri, number, path)
        entries.append({"path": path, "type": "file", "mode": 0o644, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    return entries


def history(products: int, versions_per_product: int, files: int = 2, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The history, one publish (a JSON-lines object) at a time, in time order."""
    rng = random.Random(seed)
    products_list = layout(products, rng)
    authors = ("anna", "bo", "chen", "dara", "eli")
    at = _BASE_US
    for number in range(1, versions_per_product + 1):
        for pri, inputs in products_list:
            at += _STEP_US
            labels = []
            if rng.random() < 0.3:
                labels.append("approved")
            if number == versions_per_product:
                labels.append("published")
            yield {"pri": pri, "number": number, "created_at": _time(at), "author": rng.choice(authors),
                   "message": f"{pri.rsplit('-', 1)[1]} v{number}", "manifest": _manifest(pri, number, files),
                   "dependencies": [f"{d}@{number}" for d in inputs], "labels": labels}


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gen_history", description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--versions-per-product", type=int, default=3)
    parser.add_argument("--files", type=int, default=2, help="files per version (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(args)
    if ns.products < 1 or ns.versions_per_product < 1 or ns.files < 0:
        parser.error("--products and --versions-per-product must be >= 1, --files >= 0")
    write = sys.stdout.write
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for line in history(ns.products, ns.versions_per_product, ns.files, ns.seed):
        write(dumps(line) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
