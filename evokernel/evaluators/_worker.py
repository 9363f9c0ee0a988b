"""Entry point of a runner worker process: ``python -m evokernel.evaluators._worker FD``.

Kept apart from ``_runner`` so that running it as ``__main__`` never imports the
runner module twice.
"""

import sys
from multiprocessing.connection import Connection

from ._runner import serve

if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
