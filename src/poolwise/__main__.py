import sys

from poolwise.cli import main

sys.exit(main())
