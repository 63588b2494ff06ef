"""How many cores this process may use, for sizing ONNX Runtime's thread pools.

`os.cpu_count()` is the machine's count: in a container limited to 2 CPUs on a 64-core
node it says 64, and 64 intra-op threads per session are then throttled by the CPU quota.
The bound is the smallest of the cgroup v2 quota (`cpu.max`: quota and period in
microseconds, or `max` for none), rounded up, and the CPUs the scheduler lets us run on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def quota_cores(cpu_max: Path = CPU_MAX) -> int | None:
    """The cgroup v2 CPU limit in whole cores (1.5 CPUs is 2), or None without one."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):  # cgroup v1, no cgroup file system, a malformed file
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may use: its affinity mask, capped by the cgroup quota."""
    allowed = len(os.sched_getaffinity(0))
    quota = quota_cores(cpu_max)
    return allowed if quota is None else min(allowed, quota)
