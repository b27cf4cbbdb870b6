"""Which models may speak about which camera: a model is validated for a camera when it was trained
on that camera's world.

The reference classifier and captioner were trained only on drawn figures: on real footage they say
"a knife" about pedestrians with confidence 0.9. A camera of the synthetic world (``sim:``)
validates synthetic models; any other camera only models trained on real data or made from real
public weights. A model whose manifest does not say (an older toolchain) is validated nowhere.
Unvalidated models still run (their words are published, marked), but raise no alert and never make
the first line of a caption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliance.inference.manifest import REAL, SYNTHETIC

SYNTHETIC_SCHEMES = frozenset({"sim"})


def world_of(scheme: str) -> str:
    """The world a camera of URI scheme ``scheme`` shows."""
    return SYNTHETIC if scheme in SYNTHETIC_SCHEMES else REAL


@dataclass(frozen=True, kw_only=True)
class Trust:
    """One camera's world and, per model slot, the domain it was trained on (None: not said)."""

    world: str
    domains: Mapping[str, str | None]

    def validated(self, slot: str) -> bool:
        return self.domains.get(slot) == self.world
