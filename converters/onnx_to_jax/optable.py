"""Print the supported-op table for README.md: ``python -m converters.onnx_to_jax.optable``.

tests/test_readme.py checks that README.md holds exactly this table, so the README cannot drift from the registry.
"""

from __future__ import annotations

from converters.onnx_to_jax import ops as _ops  # noqa: F401 - fills the op registry
from converters.onnx_to_jax.registry import registered_ops

BEGIN = "<!-- supported-ops:begin -->"
END = "<!-- supported-ops:end -->"


def markdown_table() -> str:
    groups: dict[str, list[str]] = {}
    for (domain, op), spec in sorted(registered_ops().items()):
        group = spec.fn.__module__.rsplit(".", 1)[-1]
        groups.setdefault(group, []).append(f"{domain}:{op}" if domain else op)
    lines = [BEGIN, "| group | ONNX ops |", "| --- | --- |"]
    for group in sorted(groups):
        lines.append(f"| {group} ({len(groups[group])}) | {', '.join(groups[group])} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
