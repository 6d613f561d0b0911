#!/usr/bin/env bash
# Docker self-test on a machine that reaches package registries but no container registry:
#   1. docker.io and debootstrap (apt-get, when missing) and a running dockerd;
#   2. a base image made locally: debootstrap a minimal Debian (python3, python3-venv) and `docker import` it;
#   3. the image built from it with scripts/docker-run.sh build (BASE_IMAGE=that base); pip's local package sources
#      of this host (file:// indexes and find-links in pip's configuration) are served on 127.0.0.1 for the build,
#      and pip's CA bundle is passed in when pip has one configured;
#   4. `segment` on a shipped sample through scripts/docker-run.sh: outputs checked on the host (files, owner, masks);
#   5. the same without the mounted folder: refused with a message naming the -v flag;
#   6. `figures` for one notebook (00_quickstart by default; SELFTEST_NOTEBOOK=...);
#   7. `lab`: JupyterLab serves explorer.ipynb on the published port.
# Run as root, step 4 also segments as an ordinary uid (4321) and checks the owner of what it wrote.
# Prints the build time and the image size; a summary goes to build/docker-selftest/summary.txt. Exit 0 = passed.
# Environment: OVSEG_IMAGE (default ovseg:selftest), SELFTEST_BASE (default ovseg-base:<debian suite>),
# SELFTEST_SUITE (default: this host's Debian suite, else bookworm), SELFTEST_PORT (the local wheel server, 38765).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/build/docker-selftest"
mkdir -p "$out"
export OVSEG_IMAGE="${OVSEG_IMAGE:-ovseg:selftest}"
suite="${SELFTEST_SUITE:-$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)}"
suite="${suite:-bookworm}"
base="${SELFTEST_BASE:-ovseg-base:$suite}"
notebook="${SELFTEST_NOTEBOOK:-00_quickstart}"
log() { printf '[docker-selftest] %s\n' "$*" | tee -a "$out/summary.txt"; }
fail() { log "FAIL: $*"; exit 1; }
: > "$out/summary.txt"
cleanup_pids=()
cleanup_dirs=()
cleanup() {
    for p in "${cleanup_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for d in "${cleanup_dirs[@]}"; do rm -rf "$d"; done
    rm -f "$root/docker/ca.crt"
}
trap cleanup EXIT

# 1. tools and daemon ---------------------------------------------------------------------------------------------
need=()
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "missing ${need[*]}; fix: sudo apt-get install ${need[*]}"
    log "installing ${need[*]} with apt-get"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "no Docker daemon answers; fix: start it (sudo systemctl start docker, or sudo dockerd &)"
    log "starting dockerd (log: $out/dockerd.log)"
    (dockerd >"$out/dockerd.log" 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not start within 60 s (see $out/dockerd.log)"
fi
log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), storage $(docker info --format '{{.Driver}}')"

# 2. base image ---------------------------------------------------------------------------------------------------
if docker image inspect "$base" >/dev/null 2>&1; then
    log "base image $base exists (docker rmi $base to make it anew)"
else
    [ "$(id -u)" = 0 ] || fail "debootstrap needs root; fix: run this script as root, or pass SELFTEST_BASE=<an image>"
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/ovseg-rootfs.XXXXXX")
    cleanup_dirs+=("$rootfs")
    log "debootstrap $suite (minbase + python3, python3-venv, ca-certificates) into $rootfs"
    t0=$(date +%s)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$rootfs" \
        >"$out/debootstrap.log" 2>&1 || fail "debootstrap failed (see $out/debootstrap.log)"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
    log "base image $base made in $(( $(date +%s) - t0 )) s"
fi

# 3. build ---------------------------------------------------------------------------------------------------------
pip_args=()
serve=$(mktemp -d "${TMPDIR:-/tmp}/ovseg-wheels.XXXXXX")
cleanup_dirs+=("$serve")
i=0
while read -r src; do  # pip's local sources: file:// index URLs and find-links folders of this host's configuration
    path="${src#file://}"
    [ -d "$path" ] || continue
    ln -s "$path" "$serve/$i"
    if [ -d "$path/simple" ] || [ "$(basename "$path")" = simple ]; then
        [ "$(basename "$path")" = simple ] && { rm "$serve/$i"; ln -s "$(dirname "$path")" "$serve/$i"; }
        pip_args+=(--extra-index-url "http://127.0.0.1:PORT/$i/simple")
    else
        pip_args+=(--find-links "http://127.0.0.1:PORT/$i/")
    fi
    i=$((i + 1))
done < <(python3 -m pip config list 2>/dev/null | grep -E '(index-url|find-links)=' | cut -d= -f2- | tr -d "'" |
         tr ' ' '\n' | grep -E '^(file://)?/' | sort -u)
if [ $i -gt 0 ]; then
    # a fixed port keeps PIP_ARGS, and so Docker's layer cache, the same from run to run (a free one if taken)
    port=$(python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "${SELFTEST_PORT:-38765}")
    (cd "$serve" && exec python3 -m http.server "$port" --bind 127.0.0.1 >"$out/wheels-http.log" 2>&1) &
    cleanup_pids+=($!)
    pip_args=("${pip_args[@]//PORT/$port}")
    log "serving $i local package source(s) of pip's configuration on 127.0.0.1:$port for the build"
fi
cert="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
if [ -n "$cert" ] && [ -f "$cert" ]; then
    cp "$cert" "$root/docker/ca.crt"
    pip_args+=(--cert /tmp/ovseg-build/ca.crt)
    log "pip's CA bundle ($cert) passed to the build"
fi
log "building $OVSEG_IMAGE from $base (build log: $out/build.log)"
t0=$(date +%s)
DOCKER_BUILDKIT=0 "$root/scripts/docker-run.sh" build --network host --build-arg BASE_IMAGE="$base" \
    --build-arg PIP_ARGS="${pip_args[*]}" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; fail "docker build failed"; }
build_s=$(( $(date +%s) - t0 ))
size=$(docker image inspect "$OVSEG_IMAGE" --format '{{.Size}}')
log "built $OVSEG_IMAGE in $build_s s; image size $(( size / 1000000 )) MB"

# 4. segment a shipped sample ----------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/ovseg-docker-work.XXXXXX")
cleanup_dirs+=("$work")
cp "$root/data/samples/shapes.png" "$work/"
t0=$(date +%s)
(cd "$work" && "$root/scripts/docker-run.sh" segment shapes.png "red circle" --top-k 3) | tee -a "$out/summary.txt" ||
    fail "segment exited non-zero"
seg="$work/ovseg-out/shapes-segment"
for f in result.json overlay.png; do [ -s "$seg/$f" ] || fail "segment did not write $seg/$f"; done
owner=$(stat -c %u "$seg/result.json")
[ "$owner" = "$(id -u)" ] || fail "outputs are owned by uid $owner, not the caller's uid $(id -u)"
n=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["masks"]))' "$seg/result.json")
[ "$n" -ge 1 ] || fail "result.json lists no mask for 'red circle'"
log "segment: $n mask(s) in $seg/result.json, files owned by uid $owner, $(( $(date +%s) - t0 )) s"

if [ "$(id -u)" = 0 ]; then  # root's uid is root in the container too: check an ordinary uid as well
    other="$work/uid4321"
    mkdir -p "$other" && cp "$root/data/samples/shapes.png" "$other/" && chown -R 4321:4321 "$other"
    docker run --rm --user 4321:4321 -v "$other:/work" "$OVSEG_IMAGE" segment shapes.png "red circle" >/dev/null ||
        fail "segment as uid 4321 exited non-zero"
    owner=$(stat -c %u "$other/ovseg-out/shapes-segment/result.json")
    [ "$owner" = 4321 ] || fail "segment as uid 4321 wrote files owned by uid $owner"
    log "segment as uid 4321 (not root): outputs owned by uid $owner"
fi

# 5. without the mounted folder: one line naming -v ------------------------------------------------------------------
set +e
msg=$(docker run --rm "$OVSEG_IMAGE" segment shapes.png "red circle" 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] && [[ "$msg" == *'-v "$PWD:/work"'* ]] || fail "a run without the mount gave exit $rc and: $msg"
log "without -v: exit $rc, $msg"

# 6. figures for one notebook ------------------------------------------------------------------------------------
t0=$(date +%s)
(cd "$work" && "$root/scripts/docker-run.sh" figures "$notebook") >"$out/figures.log" 2>&1 ||
    { tail -20 "$out/figures.log"; fail "figures $notebook failed (see $out/figures.log)"; }
made=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))["files"]
print(sum(1 for r in m.values() if r.get("notebook") == "notebooks/" + sys.argv[2] + ".ipynb"))' \
    "$work/ovseg-out/figures/MANIFEST.json" "$notebook")
[ "$made" -ge 1 ] || fail "figures $notebook recorded no output in MANIFEST.json"
log "figures $notebook: $made output(s) in ./ovseg-out/figures, $(( $(date +%s) - t0 )) s"
# 7. JupyterLab answers on the published port, over the notebooks copied to ./ovseg-out/notebooks -----------------
lab_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
docker rm -f ovseg-selftest-lab >/dev/null 2>&1 || true
(cd "$work" && OVSEG_LAB_PORT=$lab_port OVSEG_DOCKER_ARGS="-d --name ovseg-selftest-lab" \
    "$root/scripts/docker-run.sh" lab --IdentityProvider.token=selftest >/dev/null) || fail "lab did not start"
code=000
for _ in $(seq 60); do
    code=$(python3 -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except Exception:
    print("000")' "http://127.0.0.1:$lab_port/api/contents/explorer.ipynb?token=selftest&content=0")
    [ "$code" = 200 ] && break
    sleep 1
done
docker rm -f ovseg-selftest-lab >/dev/null 2>&1 || true
[ "$code" = 200 ] || fail "JupyterLab did not serve explorer.ipynb on 127.0.0.1:$lab_port (HTTP $code)"
[ -f "$work/ovseg-out/notebooks/explorer.ipynb" ] || fail "lab did not copy the notebooks to ./ovseg-out/notebooks"
log "lab: JupyterLab served explorer.ipynb on 127.0.0.1:$lab_port (notebooks in ./ovseg-out/notebooks)"
log "PASS (build $build_s s, image $(( size / 1000000 )) MB)"
