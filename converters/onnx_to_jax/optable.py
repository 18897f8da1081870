"""Print the supported-op table for README.md: ``python -m converters.onnx_to_jax.optable``.

tests/test_readme.py checks that README.md holds exactly this table, so the README cannot drift from the registry.
"""

from __future__ import annotations

from converters.onnx_to_jax.registry import _REGISTRY, _ensure_loaded

BEGIN = "<!-- supported-ops:begin -->"
END = "<!-- supported-ops:end -->"


def markdown_table() -> str:
    _ensure_loaded()
    groups: dict[str, list[str]] = {}
    for (domain, op), spec in sorted(_REGISTRY.items()):
        group = spec.fn.__module__.rsplit(".", 1)[-1]
        groups.setdefault(group, []).append(f"{domain}:{op}" if domain else op)
    lines = [BEGIN, "| group | ONNX ops |", "| --- | --- |"]
    for group in sorted(groups):
        lines.append(f"| {group} ({len(groups[group])}) | {', '.join(groups[group])} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
