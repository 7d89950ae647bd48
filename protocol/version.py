"""The lanesync release, as lanes report it in hello and status messages."""

VERSION = "0.1.0"
