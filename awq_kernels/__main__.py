"""`python -m awq_kernels doctor`."""

import sys

from awq_kernels.cli import main

sys.exit(main())
