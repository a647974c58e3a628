"""Who may call each operation, declared beside its handler as ``opt=access(...)``.

The declaration does not enforce anything: the handler's own checks do (``service.auth``, the
domains' ``access`` modules), and PostgreSQL's row-level security stands behind them. It is what
the handlers are held to: the isolation matrix test (``tests/api/test_isolation_matrix.py``) calls
every operation as every kind of caller on another tenant's resource and compares the answer with
this declaration, and the app refuses to start when a route declares nothing.

Callers are named by how they relate to the resource an operation touches (the enterprise, the
instrument, the request, the certificate, the lab, the notice or webhook in its path or body):

- ``admin``: an admin key.
- ``owner`` / ``other_enterprise``: an enterprise key of the resource's enterprise / of another.
- ``regulator`` / ``other_regulator``: a regulator key whose region covers the resource's
  enterprise / one whose region does not.
- ``lab`` / ``other_lab``: the lab the resource involves (the lab itself, a request addressed to
  it, a document it issued, an instrument it holds a request for) / any other lab.

A caller not allowed gets 403 or 404 (404 whenever it may not know the resource exists), never
the resource; a list it may call shows it none of another tenant's rows.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = ("Access", "Actor", "access")


class Actor(enum.StrEnum):
    ADMIN = "admin"
    OWNER = "owner"
    OTHER_ENTERPRISE = "other_enterprise"
    REGULATOR = "regulator"
    OTHER_REGULATOR = "other_regulator"
    LAB = "lab"
    OTHER_LAB = "other_lab"


class Access(msgspec.Struct, frozen=True):
    """The callers an operation serves on a given resource; everyone else is refused."""

    allowed: frozenset[Actor]

    def allows(self, actor: Actor) -> bool:
        return actor in self.allowed


def access(*actors: Actor) -> dict[str, Any]:
    """Handler ``opt`` declaring who may call it: ``@get(..., opt=access(Actor.ADMIN, Actor.OWNER))``."""
    if not actors:
        raise ValueError("declare at least one caller; a route for nobody should not exist")
    return {"access": Access(frozenset(actors))}
