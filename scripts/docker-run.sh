#!/usr/bin/env bash
# ovseg in Docker: the thesis code's verbs. Host-side only (image name, mounts, uid, port); the verbs themselves are
# the image's entry point (ovseg/container.py), so `docker run` without this script behaves the same.
#
#   scripts/docker-run.sh build [docker build options]        build the image (CPU; --build-arg BASE_IMAGE=... for CUDA)
#   scripts/docker-run.sh segment IMAGE PROMPT [options]      e.g. segment input/photo.jpg "red car" --top-k 3
#   scripts/docker-run.sh remove  IMAGE PROMPT [options]
#   scripts/docker-run.sh replace IMAGE PROMPT EDIT [options]
#   scripts/docker-run.sh style   IMAGE PROMPT EDIT [options]
#   scripts/docker-run.sh figures [NOTEBOOK ...]              regenerate figures into ./ovseg-out/figures
#   scripts/docker-run.sh lab                                 JupyterLab on http://127.0.0.1:8888 (./ovseg-out/notebooks)
#   scripts/docker-run.sh shell                               a shell in the container
#   scripts/docker-run.sh ovseg ARGS...                       any ovseg command, e.g. ovseg weights list
#
# The current folder is mounted at /work (outputs land in ./ovseg-out/... with your uid); IMAGE is a path below it.
# Environment: OVSEG_IMAGE (image name, default ovseg:latest), OVSEG_GPUS (e.g. all: passes --gpus all),
# OVSEG_LAB_PORT (default 8888), HF_HOME (the host's Hugging Face cache, mounted for the full profile's weights),
# OVSEG_DOCKER_ARGS (more `docker run` options, split at spaces, e.g. "-e OMP_NUM_THREADS=4 --name ovseg").
set -euo pipefail

image="${OVSEG_IMAGE:-ovseg:latest}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
verb="${1:-help}"

die() { echo "docker-run.sh: error: $*" >&2; exit 2; }

command -v docker >/dev/null 2>&1 || die "docker is not installed; fix: install Docker (Debian/Ubuntu: apt-get install docker.io)"

if [ "$verb" = build ]; then
    shift
    exec docker build -t "$image" "$@" "$root"
fi

docker image inspect "$image" >/dev/null 2>&1 ||
    die "no image named $image; fix: scripts/docker-run.sh build (or set OVSEG_IMAGE to the image you built)"

case "$verb" in
    segment|remove|replace|style)
        # the input must be visible in the container: a path below the current folder, which is mounted at /work
        input="${2:-}"
        if [ -n "$input" ] && [ "${input#-}" = "$input" ]; then
            case "$input" in
                /*) rel=$(realpath -m --relative-base="$PWD" -- "$input") ;;
                *) rel=$(realpath -m --relative-base="$PWD" -- "$PWD/$input") ;;
            esac
            [ "${rel#/}" = "$rel" ] && [ "$rel" != ".." ] && [ "${rel#../}" = "$rel" ] ||
                die "IMAGE must be below the current folder (it is mounted at /work); got $input; fix: cd to a folder that holds it"
        fi ;;
esac

hf_cache="${HF_HOME:-$HOME/.cache/huggingface}"
mkdir -p "$hf_cache" "$PWD/ovseg-out"
args=(--rm --init --user "$(id -u):$(id -g)" -v "$PWD:/work" -v "$hf_cache:/home/ovseg/.cache/huggingface")
[ -t 0 ] && [ -t 1 ] && args+=(-it)
[ -n "${OVSEG_GPUS:-}" ] && args+=(--gpus "$OVSEG_GPUS")
[ "$verb" = lab ] && args+=(-p "127.0.0.1:${OVSEG_LAB_PORT:-8888}:8888")
# shellcheck disable=SC2206  # word splitting is the point: OVSEG_DOCKER_ARGS holds several options
[ -n "${OVSEG_DOCKER_ARGS:-}" ] && args+=(${OVSEG_DOCKER_ARGS})
exec docker run "${args[@]}" "$image" "$@"
