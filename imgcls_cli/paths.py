"""Where the shipped configs live: inside the installed package, or at the top of a source checkout; whose run
folder a path is."""
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf" / "train.yaml").is_file() else _PACKAGE.parent / "conf"


def another_commands_folder(base: str) -> bool:
    """base is another command's default folder (outputs/train/... while `imgcls lr_find` runs: Hydra resolves
    train.yaml's run directory while merging it into lr_find.yaml, before lr_find's own replaces it). The CLI names
    the running Hydra app imgcls-<command>; outside it (tests composing configs) every folder counts as its own."""
    app, parts = Path(sys.argv[0]).name, Path(base).parts
    if not app.startswith("imgcls-") or parts[:1] != ("outputs",) or len(parts) < 2:
        return False
    return not parts[1].startswith(app.removeprefix("imgcls-"))
