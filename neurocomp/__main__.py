import sys

from neurocomp.cli import main

sys.exit(main())
