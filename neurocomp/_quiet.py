"""Import SpikingJelly without its start-up banner (a missing optional dataset toolbox, CUDA_HOME)."""
import contextlib
import io
import warnings


def import_spikingjelly() -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spikingjelly.activation_based.layer  # noqa: F401
        import spikingjelly.activation_based.neuron  # noqa: F401
        import spikingjelly.clock_driven.layer  # noqa: F401
        import spikingjelly.clock_driven.neuron  # noqa: F401
