"""Where and with what a run was made: git state, library versions, device, host, times."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys

import torch
import torchvision

from benchmarks.plugins import provenance as plugins
from benchmarks.run.host import cpu_kind

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_kind()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    """Provenance fields that do not change during a process (results/ and REPORT.md do not make it dirty)."""
    status = _git("status", "--porcelain", "--", ".", ":(exclude)results", ":(exclude)REPORT.md")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "device": device_name(device),
        "device_type": device.type,
        "cpu": cpu_kind(),  # the host CPU also under a GPU (data loading); CPU speeds are compared per kind
        "host": socket.gethostname(),
        "argv": sys.argv[1:],
        **({"plugins": plugins()} if plugins() else {}),  # methods from outside the repository (benchmarks/plugins.py)
    }
