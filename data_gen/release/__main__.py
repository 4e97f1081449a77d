"""``python -m data_gen.release build|verify|publish`` (the same as ``python -m data_gen release ...``)."""

import sys

from data_gen.release.cli import main

if __name__ == "__main__":
    sys.exit(main())
