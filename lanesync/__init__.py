"""The `lanesync` command line: one console script over agent, head office and hardware.

It may import every package because it only dispatches; `demo` and `bench` orchestrate the
components as separate processes, the way they run in the field.
"""

from protocol.runtime.version import VERSION

__version__ = VERSION
