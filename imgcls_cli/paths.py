"""Where the shipped configs live: inside the installed package, or at the top of a source checkout."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf" / "train.yaml").is_file() else _PACKAGE.parent / "conf"
