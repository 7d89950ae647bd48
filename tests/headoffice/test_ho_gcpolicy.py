"""Head office's collector pace (headoffice.ingest.gcpolicy): set once at start."""

from __future__ import annotations

import gc

from headoffice.ingest import gcpolicy


def test_pace_for_ingest_freezes_start_up_and_collects_rarely() -> None:
    before = gc.get_threshold()
    try:
        gcpolicy.pace_for_ingest()
        assert gc.get_threshold() == (gcpolicy.GEN0, gcpolicy.GEN1, gcpolicy.GEN2)
        assert gc.get_freeze_count() > 0  # what start-up loaded is out of every pass
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
