"""The `archfamily` command line (click)."""
