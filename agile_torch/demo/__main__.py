"""`python3 -m agile_torch.demo [--host] [--runtime-dir DIR]`: see story.py."""
import sys

from .story import main

sys.exit(main())
