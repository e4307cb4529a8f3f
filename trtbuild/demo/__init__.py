"""The embedded default (not the toolchain); `python -m trtbuild.demo` is `make demo` (see __main__.py)."""
