"""``python -m clipgs.cli``."""
import sys

from clipgs.cli.app import main

sys.exit(main())
