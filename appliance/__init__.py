"""notebook-appliance: a multi-user Jupyter notebook service for one Debian box."""

__version__ = "0.1.0"
