"""Scanner capture on a store box.

Owns evdev keyboard-wedge and serial scanners, their framing and hot-plug, and the interpretation
of raw reads into scans (GTIN, SSCC, GS1 element strings, unknown).
"""
