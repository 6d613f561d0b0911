# The thesis code's make targets, as thin wrappers over the project's own commands (no second source of truth):
# scripts/nox.py for the local environment, scripts/docker-run.sh for Docker. ARGS passes arguments through, e.g.
#   make docker-run ARGS='segment data/samples/shapes.png "red circle"'
.PHONY: install test figures lab docker-build docker-run docker-selftest

install:  ## the project environment (.nox/ovseg-env) with the test and notebook extras
	python3 scripts/nox.py -s install

test:  ## the README's test command
	python3 scripts/nox.py -s lint tests

figures:  ## the main job: regenerate figures/ from the notebooks (mini profile)
	python3 scripts/nox.py -s figures

lab:  ## JupyterLab over notebooks/ in the project environment
	python3 scripts/nox.py -s lab

docker-build:  ## build the ovseg image (CPU; ARGS='--build-arg BASE_IMAGE=...' for another base)
	scripts/docker-run.sh build $(ARGS)

docker-run:  ## run a verb in the image, e.g. ARGS='segment input/photo.jpg "red car"' (default: help)
	scripts/docker-run.sh $(if $(ARGS),$(ARGS),help)

docker-selftest:  ## build from a local Debian base and check segment / figures end to end (scripts/docker-selftest.sh)
	scripts/docker-selftest.sh
