"""What this wsloss install is and can do: ``wsloss.show_config()``, or ``python -m wsloss.info``."""
import os
import sys
from typing import Any, Dict, List, Optional, TextIO

import torch

from . import _C
from ._ops import HAS_CUDA_KERNELS
from ._version import __version__

__all__ = ["build_config", "show_config"]


def _architectures(listed: str) -> List[str]:
    # nvcc's __CUDA_ARCH_LIST__ writes compute capability 9.0 as 900.
    return [f"sm_{int(arch) // 10}" for arch in listed.split(",") if arch]


def build_config() -> Dict[str, Any]:
    """The install as a dict: versions, compiled backends and CUDA architectures, threads, devices."""
    built = _C.build_info()
    devices = []
    if HAS_CUDA_KERNELS and torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            devices.append({"name": torch.cuda.get_device_name(index), "arch": f"sm_{major}{minor}"})
    runtime, archs = int(built["cuda_runtime"]), str(built["cuda_archs"])
    return {
        "wsloss": __version__,
        "path": os.path.dirname(os.path.abspath(__file__)),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "compiled_against_torch": built["torch"],
        "compiler": built["compiler"],
        "cpu_kernels": True,
        "cpu_filter": str(built["cpu_filter"]),
        "openmp": bool(built["openmp"]),
        "threads": torch.get_num_threads(),
        "cuda_kernels": HAS_CUDA_KERNELS,
        "cuda_runtime": f"{runtime // 1000}.{runtime % 1000 // 10}" if runtime else None,
        "cuda_archs": _architectures(archs),
        "cuda_devices": devices,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def show_config(file: Optional[TextIO] = None) -> None:
    """Prints build_config() for a bug report (torch, compiled backends, CUDA archs, threads)."""
    config = build_config()
    archs = ", ".join(config["cuda_archs"])
    if config["cuda_kernels"]:
        cuda = f"yes, CUDA {config['cuda_runtime']}, for {archs}"
    else:
        cuda = "no (built where torch had no CUDA or nvcc was not found)"
    lines = [
        f"wsloss {config['wsloss']} at {config['path']}",
        f"python {config['python']}, torch {config['torch']} (compiled against {config['compiled_against_torch']}, "
        f"with {config['compiler'].split(' (')[0]})",
        f"CPU kernels: yes, {config['threads']} threads (torch.get_num_threads()), "
        f"OpenMP {'on' if config['openmp'] else 'off'}, filter built for {config['cpu_filter']}",
        f"CUDA kernels: {cuda}",
    ]
    for index, device in enumerate(config["cuda_devices"]):
        ok = device["arch"] in config["cuda_archs"]
        lines.append(f"  cuda:{index} {device['name']} ({device['arch']}"
                     f"{'' if ok else ', not in the compiled list: if the kernels fail to load, rebuild with TORCH_CUDA_ARCH_LIST'})")
    if config["cuda_kernels"] and not config["cuda_devices"]:
        lines.append("  no CUDA device visible")
    lines.append(f"deterministic algorithms: {'on' if config['deterministic'] else 'off'}")
    print("\n".join(lines), file=file or sys.stdout)
