# The README's two commands: `make run` (set up, build, run the demo) and
# `make test` (set up, build, run every test). Both are idempotent.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PYTHON := $(VENV)/bin/python
# The serving node's venv: numpy and LiteRT, no TensorFlow (requirements-serve.txt; README: Deploying to robots).
SERVE_VENV := $(ROOT)/.venv-serve
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# An installed Noetic wins over Debian's packages.
ROS_SETUP := $(wildcard /opt/ros/noetic/setup.bash)
APT_PACKAGES := catkin ros-message-generation ros-message-runtime rosout rosbash \
	python3-rospy python3-roslaunch python3-rostest python3-rostopic python3-rosservice \
	python3-rosmsg python3-rosnode python3-rosparam python3-rosbag \
	python3-actionlib python3-actionlib-tools python3-actionlib-msgs \
	python3-std-msgs python3-std-srvs python3-diagnostic-msgs python3-diagnostic-updater \
	python3-dynamic-reconfigure libdynamic-reconfigure-config-init-mutex-dev \
	python3-opencv python3-pil python3-cv-bridge python3-sensor-msgs ros-sensor-msgs libsensor-msgs-dev \
	python3-geometry-msgs \
	ros-std-msgs ros-std-srvs ros-actionlib-msgs ros-diagnostic-msgs \
	libactionlib-msgs-dev libstd-msgs-dev libstd-srvs-dev libdiagnostic-msgs-dev \
	python3-venv python3-dev g++ make cmake
SETTINGS := ros_tensorflow/src/ros_tensorflow/tf_free/settings.py
IN_WORKSPACE := set +u && source $(ROOT)/devel/setup.bash &&
PACKAGE_FILES := $(shell find ros_tensorflow ros_tensorflow_msgs -name '*.txt' -o -name '*.xml' -o -name '*.msg' \
	-o -name '*.srv' -o -name '*.action' -o -name 'setup.py' -o -path '*/nodes/*' -o -path '*/env-hooks/*' -o -name '*.cfg')

.PHONY: deps build run test lint bench stress clean serve

deps: .stamps/apt .stamps/venv

.stamps/apt: Makefile
ifeq ($(ROS_SETUP),)
	@missing=$$( (dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(APT_PACKAGES) 2>/dev/null || true) \
		| awk '$$1 == "ii" {print $$2}' | sort | comm -13 - <(tr ' ' '\n' <<< "$(APT_PACKAGES)" | sort)); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endif
	@mkdir -p .stamps && touch $@

.stamps/venv: requirements.txt
	[ -x $(PYTHON) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt
	@mkdir -p .stamps && touch $@

.stamps/venv-serve: requirements-serve.txt
	[ -x $(SERVE_VENV)/bin/python ] || /usr/bin/python3 -m venv --system-site-packages $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-serve.txt
	@mkdir -p .stamps && touch $@

# A robot's install: the workspace built for the serving venv, so serve_node.py runs without TensorFlow. The
# training node needs `make build` (it rebuilds the workspace for .venv: devel/setup.bash is dated back for that).
serve: .stamps/apt .stamps/venv-serve
	$(if $(ROS_SETUP),source $(ROS_SETUP) &&) PATH=$(SERVE_VENV)/bin:$$PATH \
		catkin_make -C $(ROOT) -DPYTHON_EXECUTABLE=$(SERVE_VENV)/bin/python >/dev/null
	touch -d @0 devel/setup.bash
	@echo "built for the serving node: source devel/setup.bash; roslaunch ros_tensorflow serve.launch model_path:=..."

# The venv first on PATH: cfg/*.cfg run as `#!/usr/bin/env python3` and need Debian's ROS modules.
# The .cfg is generated from settings.py: touched when settings.py changes, so catkin generates it again.
devel/setup.bash: .stamps/apt .stamps/venv $(PACKAGE_FILES) $(SETTINGS)
	$(if $(filter $(SETTINGS),$?),touch ros_tensorflow/cfg/*.cfg &&) \
	$(if $(ROS_SETUP),source $(ROS_SETUP) &&) PATH=$(VENV)/bin:$$PATH \
		catkin_make -C $(ROOT) -DPYTHON_EXECUTABLE=$(PYTHON) >/dev/null
	@touch $@

build: devel/setup.bash

run: build
	$(IN_WORKSPACE) roslaunch ros_tensorflow node.launch demo:=true

# ruff, then the layers' import contracts (pyproject.toml [tool.importlinter]; README: Architecture).
lint: .stamps/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(ROOT)/ros_tensorflow/src $(VENV)/bin/lint-imports --config $(ROOT)/pyproject.toml

# The serving node's tests run it in .venv-serve, where TensorFlow cannot be imported. Test modules run on
# TEST_WORKERS workers (pytest-xdist), a module's tests on one worker, each worker with a master of its own.
TEST_WORKERS ?= 2
test: build lint .stamps/venv-serve
	$(IN_WORKSPACE) SERVE_PYTHON=$(SERVE_VENV)/bin/python $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 \
		ros_tensorflow/test

bench: build .stamps/venv-serve
	$(IN_WORKSPACE) PYTHONPATH=$(ROOT)/ros_tensorflow/test:$$PYTHONPATH TF_CPP_MIN_LOG_LEVEL=2 \
		SERVE_PYTHON=$(SERVE_VENV)/bin/python $(PYTHON) ros_tensorflow/bench/bench.py $(ROWS)

stress: build
	$(IN_WORKSPACE) PYTHONPATH=$(ROOT)/ros_tensorflow/test:$$PYTHONPATH TF_CPP_MIN_LOG_LEVEL=2 \
		$(PYTHON) ros_tensorflow/bench/stress.py $(SCENARIOS)

clean:
	rm -rf build devel install .stamps src/CMakeLists.txt
