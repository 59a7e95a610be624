"""`python -m archfamily ...`: the command line, the same as the `archfamily` script (the study starts its runs so)."""
from archfamily.cli.main import main

main()
