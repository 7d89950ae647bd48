"""The store daemon that runs on every lane.

Owns the durable journal (SQLite WAL), the local API the POS application talks to, and the
replicator that drains the journal to head office over MQTT.
"""
