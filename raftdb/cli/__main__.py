"""``python -m raftdb.cli``: the ``raftdb`` command."""

import sys

from raftdb.cli import main

sys.exit(main())
