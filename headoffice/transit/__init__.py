"""The head-office transit server: the central transit inventory and its stock per location.

projection.py builds the tables from journaled documents inside the ingest transaction;
server.py answers lanes' `transit_lookup` / `transit_accept`; report.py lists open transits.
"""
