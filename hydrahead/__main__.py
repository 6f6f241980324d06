import sys

from hydrahead.cli import main

sys.exit(main())
