"""How a file's page cache is made up: large folios, or one 4 KiB page per folio.

    python -m bench.folios FILE [FILE ...]    (root: reads /proc/kpageflags)

A warm read copies from the page cache folio by folio, so a file held in 4 KiB
folios reads at about half the speed of one held in large folios on this
machine. Each FILE is read once (to bring it in), mapped, and every page's
flags looked up: the output counts pages that head a large folio, pages inside
one, and pages that are folios of their own. It is how the warm sequential
read's limit was found (docs/benchmarks.md): the same bytes on the local disk
sit in large folios, through any FUSE mount of kernel 6.18 in 4 KiB ones.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
_HEAD, _TAIL = 1 << 15, 1 << 16  # KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL


def census(path: str) -> dict[str, int]:
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return {"pages": 0, "in_large_folios": 0, "large_folios": 0, "small_folios": 0}
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)  # read-only use: no page is copied
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        pages = (size + PAGE - 1) // PAGE
        heads = tails = small = 0
        with open("/proc/self/pagemap", "rb") as pagemap, open("/proc/kpageflags", "rb") as kflags:
            for i in range(pages):
                m[i * PAGE]  # map the page-cache page
                pagemap.seek((base // PAGE + i) * 8)
                entry = struct.unpack("Q", pagemap.read(8))[0]
                if not entry >> 63:
                    continue
                kflags.seek((entry & ((1 << 55) - 1)) * 8)
                flags = struct.unpack("Q", kflags.read(8))[0]
                if flags & _HEAD:
                    heads += 1
                elif flags & _TAIL:
                    tails += 1
                else:
                    small += 1
        return {"pages": pages, "in_large_folios": heads + tails, "large_folios": heads, "small_folios": small}
    finally:
        m.close()


def main(args: list[str] | None = None) -> int:
    paths = sys.argv[1:] if args is None else args
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in paths:
        try:
            c = census(path)
        except OSError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: {c['pages']} pages; {c['in_large_folios']} in {c['large_folios']} large folios, "
              f"{c['small_folios']} in 4 KiB folios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
