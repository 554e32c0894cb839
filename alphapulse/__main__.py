import sys

from alphapulse.cli import main

sys.exit(main())
