"""The projections head office keeps, in the order a flush applies them: handed to the
database by whoever opens one for writing (the daemon's ingest, import, held releases,
catalog loads), so storage imports none of them (issue 13.3, headoffice.db.projection)."""

from __future__ import annotations

from headoffice.db.projection import Projections
from headoffice.extract.projection import ExtractProjection
from headoffice.stock.projection import StockProjection
from headoffice.transit.projection import TransitProjection

PROJECTIONS: Projections = (StockProjection(), TransitProjection(), ExtractProjection())
