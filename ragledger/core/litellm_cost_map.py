"""litellm's model cost map read from the installed package, never fetched at import.

When imported, litellm downloads its cost map from GitHub unless
LITELLM_LOCAL_MODEL_COST_MAP is set: a network call at import time, slow or hanging
offline. Importing this module sets it (a value the environment already has wins);
every module of ours that imports litellm imports this module first.
"""

from __future__ import annotations

import os

LITELLM_COST_MAP_VARIABLE = "LITELLM_LOCAL_MODEL_COST_MAP"


def use_local_cost_map() -> None:
    """Make litellm read its cost map from the installed package; call before importing it."""
    os.environ.setdefault(LITELLM_COST_MAP_VARIABLE, "True")


use_local_cost_map()
