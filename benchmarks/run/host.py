"""The host CPU, named as training speed depends on it; no torch import (`list` reads it warm, benchmarks/perf/cost.py)."""
from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (it describes them all); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name (e.g. 'AMD EPYC')."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_kind() -> str:
    """The host CPU as speeds depend on it: model name, family/model numbers and widest vector unit (e.g. 'AMD
    EPYC family 25 model 1, avx2'). Two 2-core hosts of this suite's CI differ about 2x in training speed (an
    AVX2-only Zen 3 against hosts with AVX-512), so CPU timings are compared per kind."""
    fields, name = _cpuinfo(), cpu_name()
    if "cpu family" in fields and "model" in fields:
        name += f" family {fields['cpu family']} model {fields['model']}"
    flags = set(fields.get("flags", "").split())
    isa = next((i for i in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if i in flags), None)
    return f"{name}, {isa.replace('avx512f', 'avx512')}" if isa else name
