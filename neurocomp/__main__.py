import sys

try:
    from neurocomp.cli import main
    code = main()
except KeyboardInterrupt as e:       # Ctrl-C while Python is still starting the command
    code = 128 + int(getattr(e, "signum", 2))

sys.exit(code)
