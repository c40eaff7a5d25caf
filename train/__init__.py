"""Training commands for the project's models (``python -m train --help``)."""
