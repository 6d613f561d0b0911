# ovseg in a container: the mini profile runs offline inside the image; the full profile reads its weights from the
# host's Hugging Face cache, mounted at /home/ovseg/.cache/huggingface. Use it through scripts/docker-run.sh
# (build | segment | remove | replace | style | figures | lab | shell), or see README.md, "Docker".
#
#   docker build -t ovseg .                                   # CPU (python:3.11-slim)
#   docker build -t ovseg --build-arg BASE_IMAGE=<image> .    # another base: any Debian/Ubuntu image with or
#                                                             # without Python 3.10+, e.g. an nvidia/cuda runtime image
#   docker run --rm --gpus all ...                            # GPU: the torch wheels from PyPI bring CUDA with them
#
# Build arguments:
#   BASE_IMAGE       the base image (default python:3.11-slim; python3 and venv are installed with apt when missing)
#   TORCH            the torch / torchvision requirement (default: the releases the project is tested on)
#   TORCH_INDEX_URL  a package index for torch alone, e.g. a CPU-only wheel index (default: none, i.e. PyPI)
#   PIP_ARGS         extra pip arguments for every install, e.g. "--extra-index-url URL" for a local mirror
#                    (scripts/docker-selftest.sh uses it to serve the host's wheel cache on 127.0.0.1). Files of
#                    the build context's docker/ folder are at /tmp/ovseg-build during the build: behind a proxy that
#                    re-signs TLS, put its CA bundle at docker/ca.crt (git ignores it) and pass
#                    PIP_ARGS="--cert /tmp/ovseg-build/ca.crt".
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH="torch==2.14.1 torchvision==0.29.1"
ARG TORCH_INDEX_URL=""
ARG PIP_ARGS=""

# 1. Python with venv (python:3.11-slim has it; CUDA / Ubuntu / Debian bases get it from apt).
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c "import sys; assert sys.version_info >= (3, 10), 'ovseg needs Python >= 3.10, the base has ' + sys.version"

# 2. A non-root user. Containers run as the caller's uid (docker-run.sh passes --user), so HOME is open to any uid
#    and the Hugging Face cache has a fixed place to be mounted at.
#    uid 1000 when free (some bases, e.g. Ubuntu 24.04's, already have a user with it).
RUN (useradd --create-home --uid 1000 --shell /bin/bash ovseg 2>/dev/null \
        || useradd --create-home --shell /bin/bash ovseg) \
    && mkdir -p /home/ovseg/.cache/huggingface /work && chmod 1777 /home/ovseg /work
ENV HOME=/home/ovseg \
    HF_HOME=/home/ovseg/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

COPY docker/ /tmp/ovseg-build/

# 3. torch first (the largest layer; rebuilt only when TORCH changes).
RUN python3 -m venv /opt/venv \
    && pip install --quiet $PIP_ARGS --upgrade pip "setuptools>=77" wheel \
    && pip install --quiet $PIP_ARGS ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} $TORCH

# 4. ovseg's dependencies, read from pyproject.toml (rebuilt only when it changes), then sam2 against that torch.
COPY pyproject.toml /tmp/pyproject.toml
#    (tomllib is Python 3.11+; on 3.10 bases pip's vendored tomli reads the file)
RUN python -c "import sys; t = __import__('tomllib') if sys.version_info >= (3, 11) else __import__('pip._vendor.tomli', \
fromlist=['loads']); p = t.loads(open('/tmp/pyproject.toml').read())['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['notebooks']))" > /tmp/requirements.txt \
    && pip install --quiet $PIP_ARGS -r /tmp/requirements.txt $TORCH \
    && SAM2_BUILD_CUDA=0 pip install --quiet $PIP_ARGS --no-build-isolation sam2==1.1.0 $TORCH \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

# 5. ovseg itself with its embedded mini models (editable: the package finds data/ and notebooks/ beside it).
COPY --chown=ovseg:ovseg . /opt/ovseg
RUN pip install --quiet $PIP_ARGS --no-deps -e /opt/ovseg \
    && python -m ovseg weights verify \
    && rm -rf /tmp/ovseg-build

USER ovseg
WORKDIR /work
ENTRYPOINT ["python", "-m", "ovseg.container"]
CMD ["help"]
