"""Build steps that pyproject.toml cannot express: the Cython core, the protobuf modules, and
the pthread interposer of `lockfleet trace` (native/, a plain C shared library loaded with
LD_PRELOAD, installed as lockfleet/liblockfleet_preload.so; not a Python extension module).

The protobuf/gRPC modules are generated from proto/ on every build (build_py and the
editable build both run it), so no generated file is ever edited or stale; they are not in git.
"""

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Command, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
PKG_ROOT = ROOT / "service"


def generate_protos(out_root: Path) -> None:
    """Run grpc_tools.protoc over proto/ into out_root (a tree where `lockfleet/` lives)."""
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        return
    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(protos))
    # protoc does not write package markers for the generated folders
    for proto in protos:
        d = out_root / Path(proto).parent
        while d != out_root and d.is_relative_to(out_root / "lockfleet"):
            (d / "__init__.py").touch()
            d = d.parent


class GenerateProtos(Command):
    description = "generate the protobuf/gRPC modules from proto/"
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        generate_protos(PKG_ROOT)


class BuildPy(build_py):
    def run(self):
        # generate into the source tree (for editable installs and sdists) and the build tree
        generate_protos(PKG_ROOT)
        super().run()
        if not self.editable_mode:
            generate_protos(Path(self.build_lib))


PRELOAD = "lockfleet.liblockfleet_preload"


class BuildExt(build_ext):
    def run(self):
        generate_protos(PKG_ROOT)
        super().run()

    def get_ext_filename(self, fullname):
        # the interposer is loaded by the dynamic linker, not imported: a plain library name
        # (called with the dotted name, and with its last part alone)
        if fullname in (PRELOAD, PRELOAD.rpartition(".")[2]):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        return ext.export_symbols if ext.name == PRELOAD else super().get_export_symbols(ext)


CFLAGS = ["-O3", "-fno-strict-aliasing"]
if os.environ.get("LOCKFLEET_NATIVE") == "1":
    CFLAGS.append("-march=native")

extensions = [
    Extension(
        "lockfleet._core",
        sources=["ext/lockfleet/_core.pyx"],
        include_dirs=["ext/lockfleet", numpy.get_include()],
        extra_compile_args=CFLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "lockfleet._columns",
        sources=["ext/lockfleet/_columns.pyx"],
        include_dirs=["ext/lockfleet"],
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "lockfleet._names",
        sources=["ext/lockfleet/_names.pyx"],
        include_dirs=["ext/lockfleet", numpy.get_include()],
        extra_compile_args=CFLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

# The pthread interposer: plain C, no Python API; its exported symbols are the pthread wrappers and
# the lockfleet_trace_* functions the sidecar calls (everything else hidden).
preload = Extension(
    PRELOAD,
    sources=["native/lockfleet_preload.c"],
    depends=["native/lockfleet_trace.h"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-fvisibility=hidden", "-pthread", "-fno-strict-aliasing"],
    extra_link_args=["-pthread"],
    libraries=["dl"],
)

setup(
    ext_modules=[preload] + cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=["ext", "ext/lockfleet"],
        annotate=os.environ.get("LOCKFLEET_ANNOTATE") == "1",
    ),
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt, "protos": GenerateProtos},
)
