"""The one compiled part of ProdFS; everything else is in pyproject.toml.

One extension, `prodfs.kernel._libzeroopen`, from one C file per job
(their contract, and which calls which, in `prodfs/kernel/_libprodfs.h`;
what each answers and how to turn it off in docs/kernel.md):
`_libzeroopen.c` lets the kernel answer opens and listings itself (see
`prodfs/kernel/_zeroopen.py`); `_libfastread.c` and `_libfastlookup.c`
answer reads of verified payloads and lookups inside versions without
entering Python; `_libpassthrough.c` lets the kernel read verified payloads
straight from the cache; `_libslots.c` holds the verified payload files the
last two borrow (see `prodfs/kernel/_fastpath.py`). It is optional: if it
cannot be built (no gcc or no libfuse3-dev), the install goes on and every
open, listing, lookup and read goes to the daemon.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "prodfs.kernel._libzeroopen",
            sources=["prodfs/kernel/_libzeroopen.c", "prodfs/kernel/_libpassthrough.c", "prodfs/kernel/_libfastread.c",
                     "prodfs/kernel/_libfastlookup.c", "prodfs/kernel/_libslots.c"],
            include_dirs=["/usr/include/fuse3"],
            libraries=["fuse3"],
            extra_link_args=["-pthread", "-Wl,--version-script=prodfs/kernel/_libzeroopen.map"],
            depends=["prodfs/kernel/_libzeroopen.map", "prodfs/kernel/_libprodfs.h"],
            extra_compile_args=["-pthread", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
