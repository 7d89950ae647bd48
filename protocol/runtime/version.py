"""The lanesync release, as lanes report it in hello and status messages.

Read from the installed distribution's metadata, so pyproject.toml's [project] version is the
one place it is written (the Debian package takes it from there too).
"""

from importlib.metadata import version

VERSION = version("lanesync")
