"""Import SpikingJelly without its start-up banner (a missing optional dataset toolbox, CUDA_HOME) and
without lava-dl.

SpikingJelly 0.0.0.0.14's ``activation_based.base`` tries ``import lava.lib.dl.slayer`` for its
``backend='lava'`` neurons, which pulls in lava-dl's object-detection code and torchvision's model zoo:
about 3 s of every command's start-up (measured: the four imports below take 6.0 s with it, 2.7 s
without, on this project's 2-core machine). neurocomp runs SpikingJelly layers on the torch backend
only, so that import is made to fail while SpikingJelly loads (SpikingJelly then records that slayer
is unavailable, as it does wherever lava-dl is not installed) and is allowed again afterwards: the
netx writer imports lava-dl itself when it is asked for.
"""
import contextlib
import io
import sys
import warnings

_SLAYER = "lava.lib.dl.slayer"


@contextlib.contextmanager
def _without_slayer():
    blocked = _SLAYER not in sys.modules
    if blocked:
        sys.modules[_SLAYER] = None          # `import` raises ImportError on a None entry
    try:
        yield
    finally:
        if blocked and sys.modules.get(_SLAYER, 0) is None:
            del sys.modules[_SLAYER]


def import_spikingjelly() -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(), _without_slayer():
        warnings.simplefilter("ignore")
        import spikingjelly.activation_based.layer  # noqa: F401
        import spikingjelly.activation_based.neuron  # noqa: F401
        try:  # the older API, which SpikingJelly 2.x removed (see frontends.modules)
            import spikingjelly.clock_driven.layer  # noqa: F401
            import spikingjelly.clock_driven.neuron  # noqa: F401
        except ImportError:
            pass
