"""``python -m syncd.lookpart``: the second part of a walk in two processes (``syncd.look``).

Reads its job pickled from stdin, writes its look (or the error it raised) pickled to stdout.
"""

from __future__ import annotations

import pickle
import sys

from syncd.look import _look_part


def main() -> None:
    job = pickle.loads(sys.stdin.buffer.read())
    try:
        answer: object = _look_part(*job)
    except Exception as e:  # (FolderUnavailable above all: the parent raises it)
        answer = e
    sys.stdout.buffer.write(pickle.dumps(answer))


if __name__ == "__main__":
    main()
