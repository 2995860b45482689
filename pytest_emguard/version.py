"""The plugin's version, in a module of its own so that any module can read it without importing the package's
``__init__`` (whose lazy ``evaluate`` would tie every module to the engine)."""

__version__ = "0.1.0"
