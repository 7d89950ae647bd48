"""POS documents as the agent accepts them: schema and rules per kind, before journaling.

`envelope.validate(doc, ctx)` checks a submitted document against protocol/DOCUMENTS.md and the
seeds' rules (sales, stock, purchase receive), filling what the agent owns. Pure: no I/O here.
"""
