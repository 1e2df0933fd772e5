"""``python -m connector.dev.sandbox``: run the provider sandbox in its own process."""

import sys

from connector.dev.sandbox.cli import main

sys.exit(main(sys.argv[1:]))
