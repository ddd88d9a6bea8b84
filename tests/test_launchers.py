"""Sweeps through Hydra's plugins: joblib's parallel local jobs, the SLURM example launcher config, Optuna's
search (`hparams_search=optuna`), and the one-line error when a plugin is not installed.

The sweeps are real subprocesses (conftest.run_cli); each job trains 300 synthetic images for 3 epochs in fp32
on one thread (a second thread only contends for this machine's two cores). The launcher configs, the help and the
missing-plugin errors need no job: they run through cli.main in one process (conftest.run_in_one_process). No
SLURM here: the SLURM launcher is only composed, never submitted.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import (
    Result,
    assert_no_traceback,
    assert_ok,
    assert_user_error,
    cli_env,
    csv_header,
    read_csv,
    read_json,
    run_cli,
    run_in_one_process,
)

SWEEP_COLUMNS = ["job", "overrides", "status", "best_val_accuracy", "test_accuracy", "wall_seconds"]
TINY = ["dataset=synthetic", "dataset.num_samples=300", "batch_size=32", "model.widths=[8,16,16]", "model.hidden=32",
        "epochs=3", "precision=fp32", "channels_last=false"]
SEARCH_SPACE = {"optimizer.lr": (1e-4, 1e-1), "optimizer.weight_decay": (0.0, 1e-3), "label_smoothing": (0.0, 0.2)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()),
                  key=lambda p: int(p.name.split("_", 1)[0]))


def select(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


# --------------------------------------------------------------------------------------------- joblib
@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory) -> Result:
    """Three jobs on two joblib workers: seeds 0 and 1 complete, seed -1 fails."""
    base = tmp_path_factory.mktemp("joblib")
    return run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,-1", *TINY,
                   f"hydra.sweep.dir={base / 'sweep'}", cwd=base)


def test_joblib_sweep_runs_in_parallel_workers_with_the_same_summary(joblib_sweep):
    result = joblib_sweep
    assert result.returncode == 1, result.describe()  # one job failed, as with the basic launcher
    assert_no_traceback(result)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout
    sweep_dir = result.run_dir  # printed last, after the jobs' own lines
    assert sweep_dir.name == "sweep"

    assert csv_header(sweep_dir / "summary.csv") == SWEEP_COLUMNS
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed"), ("2", "failed")]
    assert [r["overrides"].split(",")[0] for r in rows] == ["seed=0", "seed=1", "seed=-1"]
    jobs = job_dirs(sweep_dir)
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1", "2"]
    for row, job in zip(rows[:2], jobs):
        summary = read_json(job / "summary.json")
        assert summary["status"] == "completed" and (job / "checkpoints" / "best.pt").is_file()
        for key in ("best_val_accuracy", "test_accuracy", "wall_seconds"):
            assert float(row[key]) == pytest.approx(summary[key], rel=1e-5), (key, row)
        assert "epoch 3/3" in (job / "train.log").read_text()  # the job's log, written by its worker
    assert rows[2]["test_accuracy"] == "" and "seed" in read_json(jobs[2] / "summary.json")["error"]
    assert any(line.startswith("error: job 2 (seed=-1") for line in result.stderr_lines), result.describe()

    # The table once (not echoed through Hydra's logger), with the spread of the completed jobs; compare.png.
    assert result.stdout.count("Sweep: 3 jobs, 1 failed") == 1, result.describe()
    assert "mean ± std of 2 completed" in result.stdout
    assert (sweep_dir / "compare.png").is_file()
    assert any("sweep job(s) failed: 2" in line for line in result.stderr_lines), result.describe()


# --------------------------------------------------------------------------------------------- SLURM, plugins
@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict[str, Result]:
    """Composing the launcher configs (nothing runs), the help, and sweeps without the plugins installed."""
    base = tmp_path_factory.mktemp("launcher_configs")
    launcher = [f"hydra.sweep.dir={base / 'sweep'}", "--cfg", "hydra", "-p", "hydra.launcher", "--resolve"]
    composed = run_in_one_process({
        "slurm": (["train", "hydra/launcher=slurm", *launcher], base / "slurm"),
        "slurm_set": (["train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu-long",
                       "hydra.launcher.timeout_min=30", "hydra.launcher.gpus_per_node=2", *launcher],
                      base / "slurm_set"),
        "submitit_slurm": (["train", "hydra/launcher=submitit_slurm", *launcher], base / "submitit_slurm"),
        "help": (["train", "--help"], base / "help"),
    })
    # A regular package named hydra_plugins ahead on the path hides the installed plugins' namespace package.
    shim = base / "no_plugins"
    (shim / "hydra_plugins").mkdir(parents=True)
    (shim / "hydra_plugins" / "__init__.py").write_text("")
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    missing = run_in_one_process({
        "no_joblib": (["train", "-m", "hydra/launcher=joblib", "seed=0,1", *TINY], base / "no_joblib"),
        "no_submitit": (["train", "-m", "hydra/launcher=slurm", "seed=0,1", *TINY], base / "no_submitit"),
        "no_optuna": (["train", "-m", "hparams_search=optuna", *TINY], base / "no_optuna"),
    }, env=env)
    return {**composed, **missing}


def launcher_config(result: Result) -> dict:
    assert_ok(result)
    return yaml.safe_load(result.stdout)


def test_slurm_example_config_extends_the_plugins_launcher(config_runs):
    conf = launcher_config(config_runs["slurm"])
    assert conf["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert conf["partition"] == "gpu"  # the placeholder
    assert (conf["timeout_min"], conf["nodes"], conf["tasks_per_node"], conf["gpus_per_node"]) == (240, 1, 1, 1)
    assert (conf["cpus_per_task"], conf["mem_gb"]) == (8, 32)
    assert conf["name"] == "imgcls-train"
    sweep_dir = config_runs["slurm"].cwd.parent / "sweep"
    assert conf["submitit_folder"] == f"{sweep_dir}/.submitit/%j"
    assert conf["signal_delay_s"] == 120 and conf["additional_parameters"] == {}  # the plugin's other keys

    # The command line still overrides every key.
    changed = launcher_config(config_runs["slurm_set"])
    assert (changed["partition"], changed["timeout_min"], changed["gpus_per_node"]) == ("gpu-long", 30, 2)
    assert changed["mem_gb"] == 32

    # The plugin's own config is not shadowed.
    plain = launcher_config(config_runs["submitit_slurm"])
    assert plain["_target_"] == conf["_target_"]
    assert (plain["partition"], plain["timeout_min"], plain["gpus_per_node"]) == (None, 60, None)


def test_train_help_lists_the_hparams_search_group(config_runs):
    result = config_runs["help"]
    assert_ok(result)
    assert "hparams_search: optuna" in result.stdout.splitlines()
    assert "hparams_search=optuna" in result.stdout and "hydra/launcher=joblib" in result.stdout  # the examples


@pytest.mark.parametrize("name, mentions", [("no_joblib", ["joblib"]), ("no_submitit", ["submitit_slurm"]),
                                            ("no_optuna", ["optuna"])])
def test_a_missing_plugin_is_a_one_line_error(config_runs, name, mentions):
    result = config_runs[name]
    assert_user_error(result, *mentions, "pip install 'imgcls[cluster]'")
    assert not (result.cwd / "outputs").exists()  # nothing ran


# --------------------------------------------------------------------------------------------- Optuna
@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory) -> Result:
    base = tmp_path_factory.mktemp("optuna")
    return run_cli("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY,
                   f"hydra.sweep.dir={base / 'sweep'}", cwd=base)


def test_optuna_searches_the_declared_space_for_the_best_validation_accuracy(optuna_sweep):
    result = optuna_sweep
    assert_ok(result)
    sweep_dir = result.run_dir
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 3
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed"), ("2", "completed")]

    configs = [yaml.safe_load((job / "config.yaml").read_text()) for job in jobs]
    for key, (low, high) in SEARCH_SPACE.items():
        values = [float(select(config, key)) for config in configs]
        assert len(set(values)) == 3, (key, values)  # each trial samples its own
        assert all(low <= v <= high for v in values), (key, values)
        for row, value in zip(rows, values):  # the job ran with what the sweeper sampled for it
            assert f"{key}={value!r}" in row["overrides"].split(","), (key, row)

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == set(SEARCH_SPACE)
    accuracies = [read_json(job / "summary.json")["best_val_accuracy"] for job in jobs]
    assert min(accuracies) < max(accuracies), accuracies  # else the direction would not show
    assert results["best_value"] == pytest.approx(max(accuracies))  # maximized: the validation accuracy
    best = [config for config, acc in zip(configs, accuracies) if acc == pytest.approx(results["best_value"])]
    assert any(all(float(select(config, key)) == pytest.approx(value) for key, value in results["best_params"].items())
               for config in best), (results, configs)
    assert "Sweep: 3 jobs, 0 failed" in result.stdout


@pytest.fixture(scope="module")
def optuna_sweep_with_failures(tmp_path_factory) -> Result:
    """seed is searched too (a choice sweep on the command line joins the search space); seed=-1 fails.

    The sampler's seed 1 draws seed 0, then seed -1 (Optuna's first trials are random, reproducibly).
    """
    base = tmp_path_factory.mktemp("optuna_failures")
    return run_cli("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1",
                   "seed=0,-1", *TINY, f"hydra.sweep.dir={base / 'sweep'}", cwd=base)


def test_optuna_goes_on_after_a_failed_trial(optuna_sweep_with_failures):
    result = optuna_sweep_with_failures
    assert result.returncode == 1, result.describe()  # a failed job, as in any sweep
    assert_no_traceback(result)
    sweep_dir = result.run_dir
    rows = read_csv(sweep_dir / "summary.csv")
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"completed", "failed"}, rows  # the sampler's seed draws both seeds
    for row in rows:
        assert ("seed=-1" in row["overrides"].split(",")) == (row["status"] == "failed"), row
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    completed = [float(r["best_val_accuracy"]) for r in rows if r["status"] == "completed"]
    assert results["best_value"] == pytest.approx(max(completed)) and results["best_params"]["seed"] == 0
