import sys

from fwlab.cli import main

sys.exit(main())
