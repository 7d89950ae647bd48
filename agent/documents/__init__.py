"""POS documents as the agent accepts them: schema and rules per kind, before journaling.

`envelope.validate(doc, ctx)` checks a submitted document against protocol/DOCUMENTS.md and the
seeds' rules (sales, stock, purchase receive), filling what the agent owns. Pure: no I/O here.

Each kind module registers its rules with the envelope as it loads (envelope.register); the
imports below load them all, so whoever imports any part of agent.documents can validate
every kind.
"""

from agent.documents import purchase, sales, stock

__all__ = ["purchase", "sales", "stock"]
