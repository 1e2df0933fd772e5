"""``python -m connector.sandbox``: run the provider sandbox in its own process."""

import sys

from connector.sandbox.cli import main

sys.exit(main(sys.argv[1:]))
