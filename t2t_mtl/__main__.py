"""`python -m t2t_mtl` runs the command line."""
import sys

from t2t_mtl.cli import main

sys.exit(main())
