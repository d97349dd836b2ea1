"""The one compiled part: gatehouse/quota/_o200k.c, exact o200k_base counts in ~3.4 MB (the rest
of the build is pyproject.toml's). Optional: without a C compiler and Python's headers the
install still succeeds and the gateway counts with quicktok instead (~56 MB more per worker;
`gatehouse check` and the server's log say so)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gatehouse.quota._o200k", ["gatehouse/quota/_o200k.c"],
                             extra_compile_args=["-O2", "-std=c11"], optional=True)])
