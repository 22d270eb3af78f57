"""The `videomini` command line (typer)."""
