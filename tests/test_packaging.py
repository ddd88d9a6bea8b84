"""A non-editable install ships conf/ inside the package, and users add configs from their own folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_ships_the_configs_and_runs_without_the_source_tree(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    built = run(["-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir)],
                cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next(wheel_dir.glob("imgcls-*.whl"))
    installed = run(["-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert (target / "imgcls_cli" / "conf" / "train.yaml").is_file()
    assert (target / "imgcls_cli" / "conf" / "model" / "resnet.yaml").is_file()
    # every package of the source tree is in the wheel (a subpackage left out of pyproject.toml fails on import)
    source = {p.parent.relative_to(ROOT) for p in (ROOT / "imgcls_cli").rglob("__init__.py")}
    missing = [str(p) for p in source if not (target / p / "__init__.py").is_file()]
    assert not missing, f"packages missing from the wheel: {missing}"

    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run(["-c", "import imgcls_cli.paths as p; print(p.CONF_DIR)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()) == target / "imgcls_cli" / "conf"
    job = run(["-m", "imgcls_cli", "train", "model=resnet", "--cfg", "job"], cwd=tmp_path, env=env)
    assert job.returncode == 0, job.stderr
    assert "name: resnet" in job.stdout and "epochs:" in job.stdout


def test_a_users_config_folder_adds_a_model_preset(tmp_path):
    model_dir = tmp_path / "myconf" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "tiny_resnet.yaml").write_text(
        "name: resnet\ndepth: 10\nwidth: 8\nstem: auto\nzero_init_residual: false\ndrop_rate: 0.0\n")
    result = run(["-m", "imgcls_cli", "train", "--config-dir", str(tmp_path / "myconf"), "model=tiny_resnet",
                  "dataset=synthetic", "dataset.num_samples=200", "epochs=1", f"hydra.run.dir={tmp_path / 'run'}"],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "depth: 10" in config and "width: 8" in config
