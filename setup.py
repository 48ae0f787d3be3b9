"""The one compiled part of ProdFS; everything else is in pyproject.toml.

`prodfs/_libzeroopen.c` lets the kernel answer opens and listings itself (see
`prodfs/_zeroopen.py`), and `prodfs/_libfastread.c` and `prodfs/_libfastlookup.c`
answer reads of verified payloads and lookups inside versions without
entering Python, and `prodfs/_libpassthrough.c` lets the kernel read verified
payloads straight from the cache (see `prodfs/_fastpath.py`). It is optional:
if it cannot be built (no gcc or no libfuse3-dev), the install goes on and
every open, listing and read goes to the daemon.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "prodfs._libzeroopen",
            sources=["prodfs/_libzeroopen.c", "prodfs/_libfastread.c", "prodfs/_libfastlookup.c",
                     "prodfs/_libpassthrough.c"],
            include_dirs=["/usr/include/fuse3"],
            libraries=["fuse3"],
            extra_link_args=["-pthread", "-Wl,--version-script=prodfs/_libzeroopen.map"],
            depends=["prodfs/_libzeroopen.map", "prodfs/_libfastread.h"],
            extra_compile_args=["-pthread"],
            optional=True,
        )
    ]
)
