"""Build corral's optional C extensions; all other metadata lives in pyproject.toml.

``optional=True``: without a working C compiler the build warns and corral installs in pure
mode (corral.accel then falls back to corral._pure). See docs/speed.md.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "corral._speedups",
            ["src/corral/_speedups.c"],
            depends=["src/corral/_frame.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "corral._hotpath",
            ["src/corral/_hotpath.c"],
            depends=["src/corral/_frame.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "corral._http",
            ["src/corral/_http.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
