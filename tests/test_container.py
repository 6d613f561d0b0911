"""The Docker image's entry point (ovseg.container), scripts/docker-run.sh and the Makefile, without Docker:
docker-run.sh runs against a fake ``docker`` that records its arguments. The real image is built and run by
scripts/docker-selftest.sh (README, "Docker")."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ovseg import container
from ovseg.errors import InputError
from ovseg.paths import REPO_ROOT

MOUNTINFO = """\
550 480 0:52 / / rw,relatime master:290 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A
551 550 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
560 550 254:1 /home/me/my\\040photos /work rw,relatime - ext4 /dev/vda rw
561 550 254:1 /home/me/.cache/huggingface /home/ovseg/.cache/huggingface rw,relatime - ext4 /dev/vda rw
"""


def test_mount_points_read_field_five_with_octal_escapes():
    points = container.mount_points(MOUNTINFO)
    assert points == {"/", "/proc", "/work", "/home/ovseg/.cache/huggingface"}
    assert container.mount_points("562 550 254:1 / /data\\040dir rw - ext4 /dev/vda rw") == {"/data dir"}


def test_work_must_be_a_mount_and_the_error_names_the_v_flag():
    container.check_work_mounted(Path("/work"), MOUNTINFO)  # mounted: no error
    unmounted = "\n".join(line for line in MOUNTINFO.splitlines() if " /work " not in line)
    with pytest.raises(InputError) as err:
        container.check_work_mounted(Path("/work"), unmounted)
    assert '-v "$PWD:/work"' in str(err.value) and "no mount at /work" in str(err.value)


@pytest.mark.parametrize("verb, args, expected", [
    ("segment", ["in/photo.jpg", "red car"], ["segment", "in/photo.jpg", "--prompt", "red car"]),
    ("segment", ["x.png", "red car", "--top-k", "3"], ["segment", "x.png", "--prompt", "red car", "--top-k", "3"]),
    ("remove", ["x.png", "lamp", "--seed", "1"], ["remove", "x.png", "--prompt", "lamp", "--seed", "1"]),
    ("replace", ["x.png", "old monitor", "curved monitor"],
     ["replace", "x.png", "--prompt", "old monitor", "--edit", "curved monitor"]),
    ("style", ["x.png", "chair", "metal chair", "--steps", "50"],
     ["style", "x.png", "--prompt", "chair", "--edit", "metal chair", "--steps", "50"]),
    # options instead of positionals pass through unchanged
    ("segment", ["photos/", "--classes", "car, road"], ["segment", "photos/", "--classes", "car, road"]),
    ("replace", ["x.png", "chair", "--edit", "sofa"], ["replace", "x.png", "--prompt", "chair", "--edit", "sofa"]),
])
def test_verbs_become_the_cli_command_line(verb, args, expected):
    assert container.cli_argv(verb, args) == expected


@pytest.mark.parametrize("args", [[], ["--top-k", "3"]])
def test_an_edit_verb_without_an_image_is_one_usage_line(args):
    with pytest.raises(InputError, match=r"replace takes IMAGE PROMPT EDIT"):
        container.cli_argv("replace", args)


@pytest.mark.parametrize("out, ok", [("out/a", True), ("--out=sub/dir", True), ("../elsewhere", False),
                                     ("/tmp/x", False), ("--out=/abs", False)])
def test_out_must_stay_inside_the_mounted_folder(out, ok):
    args = ["x.png", "p", out] if out.startswith("--out=") else ["x.png", "p", "--out", out]
    if ok:
        container._check_out_inside(args, Path("/work"))
    else:
        with pytest.raises(InputError, match="--out must be inside the mounted working folder /work"):
            container._check_out_inside(args, Path("/work"))


def test_main_refuses_an_unknown_verb_and_an_unmounted_work_folder(tmp_path, capsys):
    assert container.main(["paint", "x.png"]) == 2
    assert "the first argument must be a verb; got 'paint'" in capsys.readouterr().err
    # tmp_path is no mount point in this process's /proc/self/mountinfo: refused before any command runs
    assert container.main(["segment", "x.png", "red"], work=tmp_path) == 2
    assert f"no mount at {tmp_path}" in capsys.readouterr().err


def test_figures_refuses_a_linked_output_folder_before_running_anything(tmp_path, monkeypatch):
    import subprocess as sp

    (tmp_path / "ovseg-out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ovseg-out" / "figures").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(sp, "call", lambda *a, **k: pytest.fail("regen ran"))
    with pytest.raises(InputError, match="ovseg-out/figures must be a folder, not a symbolic link"):
        container._figures([], tmp_path)


def test_help_lists_every_verb(capsys):
    assert container.main(["help"]) == 0
    text = capsys.readouterr().out
    for verb in ("segment", "remove", "replace", "style", "figures", "lab", "shell", "ovseg ARGS"):
        assert verb in text


# ---- scripts/docker-run.sh against a fake docker -------------------------------------------------------------------
FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_DOCKER_LOG.$1"
[ "$1" = image ] && [ "${FAKE_NO_IMAGE:-}" = 1 ] && exit 1
exit 0
"""


@pytest.fixture()
def fake_docker(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    (work / "in" / "photo.jpg").write_bytes(b"x")
    env = {"PATH": f"{bindir}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "FAKE_DOCKER_LOG": str(tmp_path / "docker"), "OVSEG_IMAGE": "ovseg:test"}

    def run(*args: str, **extra: str) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
        proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "docker-run.sh"), *args], cwd=work,
                              env={**env, **extra}, capture_output=True, text=True, timeout=30)
        calls = {p.name.split(".", 1)[1]: p.read_text().splitlines() for p in tmp_path.glob("docker.*")}
        return proc, calls

    return run, work


def test_docker_run_mounts_the_current_folder_with_the_callers_uid(fake_docker):
    run, work = fake_docker
    proc, calls = run("segment", "in/photo.jpg", "red car", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    argv = calls["run"]
    assert argv[argv.index("-v") + 1] == f"{work}:/work"
    assert f"{os.getuid()}:{os.getgid()}" == argv[argv.index("--user") + 1]
    assert any(a.endswith(":/home/ovseg/.cache/huggingface") for a in argv)
    # the verb and its arguments reach the image unchanged, after the image name
    assert argv[argv.index("ovseg:test") + 1:] == ["segment", "in/photo.jpg", "red car", "--top-k", "3"]
    assert "-p" not in argv and "--gpus" not in argv


def test_docker_run_lab_publishes_the_port_and_gpus_on_request(fake_docker):
    run, _ = fake_docker
    _, calls = run("lab", "--IdentityProvider.token=t", OVSEG_LAB_PORT="8899", OVSEG_GPUS="all",
                   OVSEG_DOCKER_ARGS="-d --name lab1")
    argv = calls["run"]
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8899:8888"
    assert argv[argv.index("--gpus") + 1] == "all"
    assert argv[argv.index("--name") + 1] == "lab1" and "-d" in argv[:argv.index("ovseg:test")]
    assert argv[argv.index("ovseg:test") + 1:] == ["lab", "--IdentityProvider.token=t"]


def test_docker_run_refuses_an_image_outside_the_mounted_folder(fake_docker, tmp_path):
    run, _ = fake_docker
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"x")
    for path in (str(outside), "../elsewhere.jpg"):
        proc, calls = run("segment", path, "red car")
        assert proc.returncode == 2
        assert "IMAGE must be below the current folder (it is mounted at /work)" in proc.stderr
        assert "run" not in calls


def test_docker_run_build_and_missing_image(fake_docker):
    run, _ = fake_docker
    proc, calls = run("build", "--build-arg", "BASE_IMAGE=debian:local")
    assert proc.returncode == 0
    assert calls["build"] == ["build", "-t", "ovseg:test", "--build-arg", "BASE_IMAGE=debian:local", str(REPO_ROOT)]
    proc, calls = run("segment", "in/photo.jpg", "x", FAKE_NO_IMAGE="1")
    assert proc.returncode == 2 and "no image named ovseg:test; fix: scripts/docker-run.sh build" in proc.stderr


def test_docker_run_without_docker_names_the_package(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no docker on PATH
    proc = subprocess.run([shutil.which("bash"), str(REPO_ROOT / "scripts" / "docker-run.sh"), "segment", "x", "y"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "docker is not installed" in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_targets_wrap_the_same_commands():
    def dry(target: str, *extra: str) -> str:
        cmd = ["make", "-n", "--no-print-directory", "-C", str(REPO_ROOT), target, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    assert dry("install") == "python3 scripts/nox.py -s install"
    assert dry("docker-build") == "scripts/docker-run.sh build"
    assert dry("docker-run", "ARGS=segment in/photo.jpg red") == "scripts/docker-run.sh segment in/photo.jpg red"
    assert dry("docker-run") == "scripts/docker-run.sh help"
    assert dry("lab") == "python3 scripts/nox.py -s lab"
