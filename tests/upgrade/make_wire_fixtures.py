"""Records protocol v1 messages as bytes, encoded by a released lanesync's own codec.

    .venv/bin/python tests/upgrade/make_wire_fixtures.py [COMMIT]

COMMIT (default cab7114, the last release before the catalog fields) is checked out into a
temporary worktree and its protocol package encodes one message of each type; the bytes land
in tests/upgrade/wire_v1/<type>.msgpack. Every later version must still decode and apply them
(test_upgrade_wire.py), so a lane that has not been upgraded yet keeps working.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "wire_v1"

RECORDER = r"""
import json, sys
from pathlib import Path
from protocol import codec
from protocol.chain import entry_hash, genesis
from protocol.documents import encode_body
from protocol.identity import LaneId
from protocol.messages import Ack, Entry, Hello, JournalBatch, Reply, Request, Status

out = Path(sys.argv[1])
lane = LaneId("S001", "L1")
epoch = 4_242_424_242_424_242
doc = json.loads(Path(sys.argv[2]).read_text())[0]  # fixtures/documents.json: a real sale
ts, txn = doc["ts"], doc["txn_id"]
body = encode_body(doc["body"])
prev = genesis(lane, epoch)
entry = Entry(1, "sale", txn, ts, body, entry_hash(prev, 1, "sale", txn, ts, body))
messages = {
    "batch": JournalBatch(lane, epoch, prev, [entry]),
    "hello": Hello(lane, epoch, 1, 1, "0.1.0", ts),
    "ack": Ack(lane, epoch, 1),
    "ack_resend": Ack(lane, epoch, 0, 1, "gap: expected seq 1"),
    "status": Status(lane, "online", "0.1.0", 1, ts),
    "status_offline": Status(lane, "offline", "0.1.0"),
    "request": Request(lane, "0193a000-0000-7000-8000-0000000000aa", "time", {}),
    "reply": Reply(lane, "0193a000-0000-7000-8000-0000000000aa", True, {"now_ms": ts}),
    "reply_refused": Reply(lane, "0193a000-0000-7000-8000-0000000000ab", False,
                           error="unknown operation 'nope'"),
}
for name, msg in messages.items():
    (out / f"{name}.msgpack").write_bytes(codec.encode(msg))
print(sorted(messages))
"""


def main(commit: str = "cab7114") -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / commit
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    RECORDER,
                    str(OUT),
                    str(HERE / "fixtures" / "documents.json"),
                ],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                check=True,
                capture_output=True,
                text=True,
            )
            print(commit, done.stdout.strip())
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=True,
                capture_output=True,
            )
    (OUT / "RECORDED_BY").write_text(f"{commit}\n")


if __name__ == "__main__":
    main(*sys.argv[1:2])
