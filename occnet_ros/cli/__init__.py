"""Command-line programs; each module has ``main()``."""
