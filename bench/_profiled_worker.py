"""``python -m consumers`` under cProfile, with the imports left out of the profile:

    python -m bench._profiled_worker OUT.prof

The worker is configured by env vars as usual; the profile is written when it exits (SIGTERM
stops it gracefully). cProfile sees only the event-loop thread, not the job threads.
"""

from __future__ import annotations

import cProfile
import sys

from consumers.__main__ import main  # imported before profiling starts


def profiled(out: str) -> int:
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main()
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(profiled(sys.argv[1]))
