"""The Ray backend's deployments file (backends/ray/config.py) and the plan
of deployments it makes (backends/ray/serve.py `plan`): checked without a
cluster; tests/ray.rs runs them on a real one."""

import pytest

from backends.ray import config


def test_the_shipped_file_loads_and_scales_gpu_families_to_zero():
    cfg = config.load(config.DEFAULT_PATH)
    assert cfg.gpu.min_replicas == 0, "an idle cluster must hold no GPU"
    assert cfg.ingress.min_replicas >= 1 and cfg.long.min_replicas >= 1
    assert cfg.families == {}


def test_a_family_takes_gpu_then_its_own_keys():
    cfg = config.parse("[gpu]\nmax_replicas = 5\ntarget_ongoing_requests = 3\n"
                       "[family.whisper]\nmin_replicas = 1\nnum_gpus = 0.5\n")
    assert cfg.family("whisper") == config.Scale(min_replicas=1, max_replicas=5, target_ongoing_requests=3,
                                                 max_ongoing_requests=4, num_cpus=1.0, num_gpus=0.5)
    assert cfg.family("yolo") == cfg.gpu
    assert cfg.family("whisper").autoscaling() == {"min_replicas": 1, "max_replicas": 5, "target_ongoing_requests": 3}


@pytest.mark.parametrize("text, says", [
    ("[foo]\n", "[foo] is not a section"),
    ("[ingress]\nreplicas = 2\n", "ingress.replicas is not a key"),
    ("[long]\nmin_replicas = 3\nmax_replicas = 2\n", "long: min_replicas 3 is above max_replicas 2"),
    ("[gpu]\nmax_replicas = 0\n", "gpu.max_replicas must be > 0"),
    ("[gpu]\nmin_replicas = -1\n", "gpu.min_replicas must be ≥ 0"),
    ("[gpu]\nmax_replicas = 100000\n", "gpu.max_replicas must be at most 1000"),
    ("[ingress]\nmin_replicas = 1.5\n", "ingress.min_replicas must be a whole number"),
    ("[ingress]\nnum_cpus = 'two'\n", "ingress.num_cpus must be a number"),
    ("[family.Yolo]\n", "[family.Yolo]: a family is the first word"),
    ("[ingress\n", "deployments file:"),
])
def test_a_bad_file_is_refused_naming_what_is_wrong(text, says):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text)
    assert says in str(e.value)


def test_an_unreadable_file_names_its_path(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read the Ray deployments file .*missing.toml"):
        config.load(tmp_path / "missing.toml")


def test_the_plan_has_a_deployment_per_gpu_family_with_its_tasks_ram(monkeypatch):
    monkeypatch.setenv("DWA_RAY_NUM_GPUS", "0")
    from backends.ray import serve

    planned = serve.plan(config.parse("[family.yolo]\nmin_replicas = 1\n"))
    families = {n for n in planned if n.startswith("gpu-")}
    assert {"gpu-yolo", "gpu-whisper", "gpu-florence", "gpu-sam2"} <= families
    gpu_tasks = {config.family_of(n) for n, m in serve.TASKS.items()
                 if m.gpu and not m.streaming and not m.replaced_by}
    assert families == {f"gpu-{f}" for f in gpu_tasks}
    assert planned["gpu-yolo"][0].min_replicas == 1
    assert planned["gpu-florence"][0].min_replicas == 0
    assert planned["gpu-yolo"][1] == {"num_cpus": 1.0, "num_gpus": 0.0}
    # The largest ram= of the family's tasks, as Ray memory (bytes).
    assert planned["gpu-sam2"][1]["memory"] == 8 << 30
    assert planned["gpu-whisper"][1]["memory"] == 4 << 30
    assert set(planned) - families == {"Ingress", "LongTasks"}
    # Where jobs go: a GPU task to its family, a CPU one to LongTasks.
    assert serve.deployment_of(serve.TASKS["yolo.pose"]) == "gpu-yolo"
    assert serve.deployment_of(serve.TASKS["download.file"]) == "LongTasks"
    # A former name goes where its current name goes.
    alias = next(m for m in serve.TASKS.values() if m.gpu and m.replaced_by and not m.streaming)
    assert serve.deployment_of(alias) == serve.deployment_of(serve.TASKS[alias.replaced_by]) in planned


def test_a_family_no_task_has_is_refused(monkeypatch):
    monkeypatch.setenv("DWA_RAY_NUM_GPUS", "0")
    from backends.ray import serve

    with pytest.raises(config.ConfigError, match=r"\[family.yollo\] names no GPU task family; the families are .*yolo"):
        serve.plan(config.parse("[family.yollo]\nmin_replicas = 1\n"))
