"""`python -m videomini.cli` runs the console script."""

from videomini.cli.main import main

main()
