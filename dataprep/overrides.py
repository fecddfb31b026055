"""Hydra command-line overrides: the one place that reads which config key an override names."""

from __future__ import annotations


def override_key(override: str) -> str:
    """The config key (or config group) an override string names, without its `+`, `++` or `~`
    prefix and without its value: `a.b=1`, `+a.b=1`, `++a.b=1`, `~a.b`, `~a.b=1` and
    `a.b=[1,2]` all name `a.b`; `group@pkg=option` names `group@pkg`. A key holds no `=`, so the
    value (quoted or not, with `=` in it or not) never changes the answer. An override without
    `=` (`~a.b`) deletes its key rather than setting it: callers that care test `"=" in override`."""
    return override.split("=", 1)[0].lstrip("+~")
