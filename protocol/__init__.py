"""Wire protocol shared by the store agent and head office.

Owns message types, the strict msgpack codec, topic names, the journal hash chain and money rules.
Pure code: no I/O, importable by every other package.
"""
