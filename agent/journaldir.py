"""What the agent does about a missing journal directory, decided in one place so the agent
and `lanesync doctor` say the same thing.

The packaged unit's StateDirectory= makes /var/lib/lanesync before the agent starts; run any
other way (by hand, another journal.path) the directory may be missing. The agent then creates
it, mode 0750 like the tmpfiles snippet, when its parent exists and the agent may write there:
one missing level is a journal.path pointing at a fresh folder. Anything else (the parent
missing too, or not writable) is refused naming the path and the tmpfiles line that makes it,
because creating a chain of directories there would more likely hide a typo in journal.path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from protocol.errors import ConfigError

MODE = 0o750  # as lanesync.tmpfiles.conf and the unit's StateDirectoryMode=
TMPFILES = "/usr/lib/tmpfiles.d/lanesync.conf"


@dataclass(frozen=True, slots=True)
class JournalDir:
    directory: Path
    action: Literal["exists", "create", "refuse"]
    why: str  # for "create" and "refuse": what the agent does and why

    def error(self) -> ConfigError:
        return ConfigError(
            f"journal.path: the directory {self.directory} does not exist and the agent will "
            f"not create it: {self.why}. Create it with systemd-tmpfiles, a line "
            f"'d {self.directory} 0750 lanesync lanesync -' in {TMPFILES} then "
            f"`systemd-tmpfiles --create`, or set journal.path to an existing directory"
        )


def plan(journal_path: Path) -> JournalDir:
    """What the agent will do about the journal's directory (doctor reports the same)."""
    directory = journal_path.parent
    if directory.is_dir():
        return JournalDir(directory, "exists", "")
    if directory.exists():
        return JournalDir(directory, "refuse", f"{directory} exists but is not a directory")
    parent = directory.parent
    if not parent.is_dir():
        return JournalDir(directory, "refuse", f"its parent {parent} does not exist either")
    if not os.access(parent, os.W_OK | os.X_OK):
        return JournalDir(directory, "refuse", f"its parent {parent} is not writable by this user")
    return JournalDir(
        directory, "create", f"the agent creates it (mode 0750): its parent {parent} exists"
    )


def ensure(journal_path: Path) -> JournalDir:
    """Create the journal's directory when `plan` says so; refuse as it says otherwise."""
    d = plan(journal_path)
    if d.action == "refuse":
        raise d.error()
    if d.action == "create":
        try:
            d.directory.mkdir(mode=MODE)
        except FileExistsError:
            pass  # made meanwhile (another process): fine if it is a directory
        except OSError as exc:
            raise JournalDir(
                d.directory, "refuse", f"mkdir failed: {exc.strerror}"
            ).error() from None
        if not d.directory.is_dir():
            raise JournalDir(d.directory, "refuse", "it is not a directory").error()
        os.chmod(d.directory, MODE)  # mkdir's mode is masked by the umask
    return d
