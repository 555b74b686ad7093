"""lb-mini, lbedge's embedded default: an application built on the public library, not part of it.

A small model lbedge trains on its own synthetic world, for trying the whole stack offline: the world
(:mod:`.world`: seeded scenes seen by RGB, depth, thermal and sound, with captions and recordings), the training
recipe (:mod:`.recipe`: ``lbedge train lb-mini``, ``make lb-mini``), where its bundles live (:mod:`.models`), its
evaluation task (:mod:`.evaluation`: the default of ``lbedge eval``) and its demo on recorded held-out scenes
(:mod:`.demo`: ``lbedge demo --lb-mini``, ``make demo``).

It uses the stages (``lbedge`` runtime, ``lbedge.sensors``, ``lbedge.quantize``, ``lbedge.train``) through their
public API only; no stage imports it (``tests/test_architecture.py`` checks both).
"""

from __future__ import annotations

from .models import MODALITIES, bundle_dirs, default_dir, ensure_text_bundle

__all__ = ["MODALITIES", "bundle_dirs", "default_dir", "ensure_text_bundle"]
