"""`python -m assay.app.cli`: how tests and background jobs run the CLI of this very checkout."""

from assay.app.cli import main

main()
