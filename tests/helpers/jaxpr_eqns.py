"""Every equation of a jaxpr, its sub-jaxprs included (scan and while bodies, remat, custom VJPs):
what the structural tests count."""

from __future__ import annotations

from collections.abc import Iterator


def all_eqns(jaxpr) -> Iterator:
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from all_eqns(inner)
