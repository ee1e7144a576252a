"""``python -m EmphysemaXAILib``: the same as the ``emphysema-xai`` command."""
import sys

from .cli import main

sys.exit(main())
