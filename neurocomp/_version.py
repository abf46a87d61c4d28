"""neurocomp's version, in a module of its own: the package face (``neurocomp/__init__``) calls the
API, so a module below the API that needs the version (the artifact's manifest) reads it here."""
__version__ = "0.1.0"
