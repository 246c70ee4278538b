"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

``optional=True``: without a C compiler the build goes on and wskreplay uses the
pure-Python XPRESS decompressor."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("wskreplay.formats._xpress", ["wskreplay/formats/_xpress.c"], optional=True)
    ]
)
