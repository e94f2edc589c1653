"""Builds wsloss's C++ (and, where torch has CUDA and nvcc is found, CUDA) extension.

Environment: WSLOSS_CUDA=0/1 forces the CUDA kernels off/on; TORCH_CUDA_ARCH_LIST picks
the architectures (default: torch's own list). The extension is compiled against the torch
that is installed (build_backend/installed_torch.py makes it visible in an isolated build).
"""
import glob
import os
import re

from setuptools import find_packages, setup
import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def version() -> str:
    with open(os.path.join(ROOT, "wsloss", "_version.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def cuda_requested() -> bool:
    forced = os.environ.get("WSLOSS_CUDA")
    if forced is not None:
        return forced == "1"
    # Never torch.cuda.is_available(): a build machine may have nvcc and no GPU.
    return torch.version.cuda is not None and CUDA_HOME is not None


def extension():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # The build steps of docs/DESIGN.md §1 must not be contracted into fused multiply-adds.
    cxx_flags = ["-O3", "-std=c++17", "-ffp-contract=off"]
    link_flags = []
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for is inlined into the extension: without -fopenmp it runs serially.
        cxx_flags += ["-fopenmp", "-DAT_PARALLEL_OPENMP=1"]
        link_flags += ["-fopenmp"]
    if cuda_requested():
        sources += rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu")
        return CUDAExtension(
            "wsloss._C",
            sources,
            define_macros=[("WSLOSS_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "--fmad=false"]},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
    return CppExtension("wsloss._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
                        py_limited_api=True)


setup(
    name="wsloss",
    version=version(),
    description="Weakly-supervised segmentation losses on a permutohedral lattice for PyTorch",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["wsloss", "wsloss.*"]),
    package_data={"wsloss": ["py.typed", "_C.pyi"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
    extras_require={"demo": ["scikit-image", "matplotlib", "tqdm"]},
)
