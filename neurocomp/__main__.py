import sys

try:
    from neurocomp.cli import main
except KeyboardInterrupt:       # Ctrl-C while Python is still starting the command
    sys.exit(130)

sys.exit(main())
