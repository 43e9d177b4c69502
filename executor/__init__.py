"""The executor: real PyTorch training of a scenario's network with its method, traced op by op.

`executor.run(scenario)` trains and returns a `RunResult` (trace, summary, accuracy curve, final
parameters); `executor.profile(scenario)` measures per-layer costs as `pdasgd.scenario.Layer`s. Both load
torch on first use, so `import executor` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run", "profile"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from executor.runtime import run

        return run
    if name == "profile":
        from executor.profile import profile

        return profile
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
