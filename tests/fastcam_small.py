"""``fastcam`` with tests/conftest.py's small network in place of the 56.5M-parameter
reference network: the command the real-Slurm and CLI end-to-end tests run,
where job mechanics (ranks, logs, chains, studies) are under test and the
network is not. Everything else is the real command line.

    python tests/fastcam_small.py train --mode baseline ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import small_network  # noqa: E402
from fastcam.cli import main  # noqa: E402
from fastcam.train import trainer  # noqa: E402

trainer.build_model = lambda *args, **kwargs: small_network()

if __name__ == "__main__":
    sys.exit(main())
