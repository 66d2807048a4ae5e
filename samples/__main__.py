"""Run sample services: ``python -m samples <service-name|all> [--port N | --port name=N ...]``."""

from gevent import monkey

monkey.patch_all()  # first of all: everything imported below must see the patched stdlib

import sys  # noqa: E402

from samples.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
