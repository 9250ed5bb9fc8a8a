"""Who is asking: the authenticated caller, as every service receives it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    uid: str
    admin: bool = False
    via: str = "firebase"  # firebase | dev | ops | recorder
    claims: dict = field(default_factory=dict, compare=False, repr=False)
