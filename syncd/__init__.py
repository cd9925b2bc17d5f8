"""syncd: access-control events from vendor clouds into SQL, exactly once."""

__version__ = "0.1.0"
