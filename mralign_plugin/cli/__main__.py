import sys

from mralign_plugin.cli import main

sys.exit(main())
