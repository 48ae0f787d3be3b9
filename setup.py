"""The one compiled part of ProdFS; everything else is in pyproject.toml.

`prodfs/kernel/_libzeroopen.c` lets the kernel answer opens and listings itself (see
`prodfs/kernel/_zeroopen.py`), and `prodfs/kernel/_libfastread.c` and `prodfs/kernel/_libfastlookup.c`
answer reads of verified payloads and lookups inside versions without
entering Python, and `prodfs/kernel/_libpassthrough.c` lets the kernel read verified
payloads straight from the cache (see `prodfs/kernel/_fastpath.py`). It is optional:
if it cannot be built (no gcc or no libfuse3-dev), the install goes on and
every open, listing and read goes to the daemon.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "prodfs.kernel._libzeroopen",
            sources=["prodfs/kernel/_libzeroopen.c", "prodfs/kernel/_libfastread.c", "prodfs/kernel/_libfastlookup.c",
                     "prodfs/kernel/_libpassthrough.c"],
            include_dirs=["/usr/include/fuse3"],
            libraries=["fuse3"],
            extra_link_args=["-pthread", "-Wl,--version-script=prodfs/kernel/_libzeroopen.map"],
            depends=["prodfs/kernel/_libzeroopen.map", "prodfs/kernel/_libfastread.h"],
            extra_compile_args=["-pthread"],
            optional=True,
        )
    ]
)
