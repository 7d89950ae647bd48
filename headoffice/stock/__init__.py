"""Head-office stock per location from every document kind (issue 15 item 6).

`moves` reads what a document does to stock, `projection` applies it in the ingest
transaction (by the transaction types' inventory effect), `report` and `cli` show it.
"""
